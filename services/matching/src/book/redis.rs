//! The Redis book: rides, offers and driver locks shared by every matching replica.
//!
//! Every state change is one Lua script, so it is atomic across replicas. Keys (all under
//! the hash tag `{r}`, so each script touches one Cluster slot; dispatch state is small —
//! a few hundred bytes per open ride — and one Redis core runs these scripts at well over
//! the request rates of a metro, so the growth path past one shard is one tag per region):
//! - `gm:{r}:ride:<id>` hash: `base` (JSON fixed at creation), `rider`, `state`, `offer`,
//!   `attempts`, `radius`, `driver`, `token`, `eta`, `since`, `tip`; with `…:tr` (list of
//!   `state|at_ms|by` transitions) and `…:ex` (set of drivers who declined or timed out);
//! - `gm:{r}:offer:<id>` hash: `ride`, `driver`, `token`, `distance`, `eta`, `expires`;
//! - `gm:{r}:drv:<driver>` hash: `token` (the fencing token: incremented by every claim of
//!   the driver), `offer` or `ride` while the driver holds one — the driver lock (read by
//!   [`DriverLocks`] for location ingest);
//! - `gm:{r}:open:<rider>`: the rider's open ride; `gm:{r}:idem:<len>:<rider>:<key>`: hash
//!   `body`, `ride` (written with the ride, in the create script) and `pending` (since when
//!   the request is being answered; the claim of its first offer removes it) of an
//!   `Idempotency-Key`;
//! - sorted sets `gm:{r}:deadlines` (offer → expiry), `gm:{r}:due` (scheduled ride →
//!   dispatch time), `gm:{r}:idle` (dispatching ride without an offer → since); set
//!   `gm:{r}:open` of rides not yet ended; `gm:{r}:batch`, the batch window's turn.
//!
//! An accept succeeds only while the driver's lock still holds that offer under the
//! offer's token; trip steps only while the driver's lock holds the ride under the token it
//! was accepted with. Scripts publish driver engagement on [`ENGAGED`] so that every
//! replica's index stops proposing engaged drivers (a hint only: the lock decides).
//!
//! Times are the caller's `now`, except the expiry of keys (idempotency keys, ended
//! rides), which is Redis's own TTL.

use std::collections::HashSet;

use geomatch_common::ports::{Engagement, PortFuture};
use geomatch_common::redis::{Redis, RedisError};
use geomatch_index::Status;
use prometheus::HistogramVec;
use redis::Script;

use super::model::{
    BookError, Claim, Created, IdemKey, IdemSeen, NewRide, OfferEnd, OfferRecord, Offering,
    Refusable, RideBase, RideDoc, Step, Stepped, IDEM_PENDING_MS, RETENTION_MS,
};
use crate::ride::{DispatchError, DriverId, OfferId, RideId, RideState, Transition};

const P: &str = "gm:{r}:";
/// Pub/sub channel of driver engagement changes: `offered|id`, `busy|id`, `available|id`.
pub(crate) const ENGAGED: &str = "gm:dispatch:engaged";

const LUA_CREATE: &str = r#"
-- KEYS: ride, tr, open:<rider>, idle, due, open set, idem
-- ARGV: id, base, rider, since, state, dispatch_at, tip, body, idem_ttl_s, answered ('1'),
--       pending_ms, now
local seen = IDEM_SEEN(KEYS[7], ARGV[8], ARGV[12], ARGV[11])
if seen then return seen end
local cur = redis.call('GET', KEYS[3])
if cur then return {'open', cur} end
redis.call('HSET', KEYS[7], 'body', ARGV[8], 'ride', ARGV[1])
if ARGV[10] ~= '1' then redis.call('HSET', KEYS[7], 'pending', ARGV[12]) end
redis.call('EXPIRE', KEYS[7], ARGV[9])
redis.call('HSET', KEYS[1], 'base', ARGV[2], 'rider', ARGV[3], 'state', ARGV[5],
  'attempts', 0, 'radius', 0, 'since', ARGV[4], 'tip', ARGV[7])
redis.call('RPUSH', KEYS[2], 'requested|' .. ARGV[4] .. '|')
if ARGV[5] == 'dispatching' then
  redis.call('RPUSH', KEYS[2], 'dispatching|' .. ARGV[4] .. '|')
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
else
  redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1])
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
return {'ok'}
"#;

const LUA_READ: &str = r#"
-- KEYS: ride, tr, ex
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('SMEMBERS', KEYS[3])}
"#;

const LUA_CLAIM: &str = r#"
-- KEYS: ride, ex, idle, deadlines[, idem: the request this claim answers]
-- ARGV: ride_id, offer_id, expires_ms, max_attempts, radius, then (driver, distance, eta)...
if KEYS[5] then redis.call('HDEL', KEYS[5], 'pending') end
local r = KEYS[1]
local s = redis.call('HMGET', r, 'state', 'offer', 'attempts')
if s[1] ~= 'dispatching' or s[2] or tonumber(s[3]) >= tonumber(ARGV[4]) then
  return {'not_wanted'}
end
local taken = {'taken'}
for i = 6, #ARGV, 3 do
  local d = ARGV[i]
  if redis.call('SISMEMBER', KEYS[2], d) == 0 then
    local dk = PREFIX .. 'drv:' .. d
    local h = redis.call('HMGET', dk, 'offer', 'ride')
    if h[1] or h[2] then
      table.insert(taken, d)
    else
      local token = redis.call('HINCRBY', dk, 'token', 1)
      redis.call('HSET', dk, 'offer', ARGV[2])
      redis.call('HSET', PREFIX .. 'offer:' .. ARGV[2], 'ride', ARGV[1], 'driver', d,
        'token', token, 'distance', ARGV[i + 1], 'eta', ARGV[i + 2], 'expires', ARGV[3])
      redis.call('HSET', r, 'offer', ARGV[2], 'radius', ARGV[5])
      redis.call('HINCRBY', r, 'attempts', 1)
      redis.call('ZREM', KEYS[3], ARGV[1])
      redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
      redis.call('PUBLISH', ENGAGED, 'offered|' .. d)
      return {'offered', d, tostring(token), ARGV[i + 1], ARGV[i + 2]}
    end
  end
end
return taken
"#;

const LUA_CLOSE: &str = r#"
-- KEYS: offer, deadlines, idle; ARGV: offer_id, driver ('' = any), timeout ('1'), now
local o = redis.call('HMGET', KEYS[1], 'ride', 'driver', 'token', 'distance', 'eta', 'expires')
if not o[1] then return {'gone'} end
if ARGV[2] ~= '' and ARGV[2] ~= o[2] then return {'forbidden'} end
if ARGV[3] == '1' and tonumber(o[6]) > tonumber(ARGV[4]) then return {'gone'} end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
local dk = PREFIX .. 'drv:' .. o[2]
if redis.call('HGET', dk, 'offer') == ARGV[1] then
  redis.call('HDEL', dk, 'offer')
  redis.call('PUBLISH', ENGAGED, 'available|' .. o[2])
end
local r = PREFIX .. 'ride:' .. o[1]
redis.call('SADD', r .. ':ex', o[2])
if redis.call('HGET', r, 'offer') == ARGV[1] then
  redis.call('HDEL', r, 'offer')
  if redis.call('HGET', r, 'state') == 'dispatching' then
    redis.call('ZADD', KEYS[3], ARGV[4], o[1])
  end
end
return {'closed', o[1], o[2], o[3], o[4], o[5], o[6]}
"#;

const LUA_ACCEPT: &str = r#"
-- KEYS: offer, deadlines; ARGV: offer_id, driver, now
-- Returns {status...}, then on success the accepted ride (DOC).
local o = redis.call('HMGET', KEYS[1], 'ride', 'driver', 'token', 'eta', 'expires')
if not o[1] then return {{'gone'}} end
if o[2] ~= ARGV[2] then return {{'forbidden'}} end
if tonumber(o[5]) <= tonumber(ARGV[3]) then return {{'gone'}} end
local r = PREFIX .. 'ride:' .. o[1]
local s = redis.call('HMGET', r, 'state', 'offer')
if s[1] ~= 'dispatching' or s[2] ~= ARGV[1] then return {{'gone'}} end
local dk = PREFIX .. 'drv:' .. o[2]
local d = redis.call('HMGET', dk, 'token', 'offer', 'ride')
if d[1] ~= o[3] or d[2] ~= ARGV[1] or d[3] then return {{'unavailable'}} end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('HDEL', dk, 'offer')
redis.call('HSET', dk, 'ride', o[1])
redis.call('HDEL', r, 'offer')
redis.call('HSET', r, 'state', 'accepted', 'driver', o[2], 'token', o[3], 'eta', o[4])
redis.call('RPUSH', r .. ':tr', 'accepted|' .. ARGV[3] .. '|' .. o[2])
redis.call('PUBLISH', ENGAGED, 'busy|' .. o[2])
local d = DOC(r)
return {{'accepted', o[1]}, d[1], d[2], d[3]}
"#;

const LUA_STEP: &str = r#"
-- KEYS: ride, tr, deadlines, idle, due, open set, ex
-- ARGV: ride_id, to, from (',a,b,'), driver ('' = any), by, now, terminal ('1'), retention_s
-- Returns {status...}, then on success the ride after the step (DOC).
local r = KEYS[1]
local st = redis.call('HGET', r, 'state')
if not st then return {{'not_found'}} end
if ARGV[4] ~= '' then
  local dk = PREFIX .. 'drv:' .. ARGV[4]
  local d = redis.call('HMGET', dk, 'ride', 'token')
  local mine = redis.call('HMGET', r, 'driver', 'token')
  if mine[1] ~= ARGV[4] or d[1] ~= ARGV[1] or d[2] ~= mine[2] then return {{'forbidden'}} end
end
local off = redis.call('HGET', r, 'offer')
if not string.find(ARGV[3], ',' .. st .. ',', 1, true) or (ARGV[2] == 'no_driver_found' and off) then
  return {{'state', st}}
end
local out = {'ok'}
if off then
  local ok = PREFIX .. 'offer:' .. off
  local o = redis.call('HMGET', ok, 'ride', 'driver', 'token', 'distance', 'eta', 'expires')
  if o[1] then
    redis.call('DEL', ok)
    local dk = PREFIX .. 'drv:' .. o[2]
    if redis.call('HGET', dk, 'offer') == off then
      redis.call('HDEL', dk, 'offer')
      redis.call('PUBLISH', ENGAGED, 'available|' .. o[2])
    end
    out = {'ok', off, o[1], o[2], o[3], o[4], o[5], o[6]}
  end
  redis.call('ZREM', KEYS[3], off)
  redis.call('HDEL', r, 'offer')
end
redis.call('HSET', r, 'state', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[2] .. '|' .. ARGV[6] .. '|' .. ARGV[5])
if ARGV[7] == '1' then
  local d = redis.call('HGET', r, 'driver')
  if d then
    local dk = PREFIX .. 'drv:' .. d
    if redis.call('HGET', dk, 'ride') == ARGV[1] then
      redis.call('HDEL', dk, 'ride')
      redis.call('PUBLISH', ENGAGED, 'available|' .. d)
    end
  end
  local open = PREFIX .. 'open:' .. redis.call('HGET', r, 'rider')
  if redis.call('GET', open) == ARGV[1] then redis.call('DEL', open) end
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('SREM', KEYS[6], ARGV[1])
  redis.call('EXPIRE', r, ARGV[8])
  redis.call('EXPIRE', KEYS[2], ARGV[8])
  redis.call('EXPIRE', KEYS[7], ARGV[8])
end
local d = DOC(r)
return {out, d[1], d[2], d[3]}
"#;

const LUA_TIP: &str = r#"
-- KEYS: ride; ARGV: tip
local s = redis.call('HMGET', KEYS[1], 'state', 'tip')
if not s[1] then return {'not_found'} end
if s[1] == 'cancelled' or s[1] == 'no_driver_found' then return {'state', s[1]} end
if tonumber(ARGV[1]) < tonumber(s[2] or '0') then return {'lowered', s[2]} end
redis.call('HSET', KEYS[1], 'tip', ARGV[1])
return {'ok'}
"#;

const LUA_START_DUE: &str = r#"
-- KEYS: due, idle; ARGV: now, limit
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local r = PREFIX .. 'ride:' .. id
  if redis.call('HGET', r, 'state') == 'requested' then
    redis.call('HSET', r, 'state', 'dispatching', 'since', ARGV[1])
    redis.call('RPUSH', r .. ':tr', 'dispatching|' .. ARGV[1] .. '|')
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    table.insert(out, id)
  end
end
return out
"#;

const LUA_IDEM: &str = r#"
-- KEYS: idem; ARGV: body, now, pending_ms
return IDEM_SEEN(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) or {'unused'}
"#;

/// The ride under hash `r` as the step scripts return it: the hash, its transitions and
/// its excluded drivers (as [`LUA_READ`]), so that a step needs no read after it.
const LUA_DOC: &str = r#"
local function DOC(r)
  return {redis.call('HGETALL', r), redis.call('LRANGE', r .. ':tr', 0, -1),
    redis.call('SMEMBERS', r .. ':ex')}
end
"#;

/// Shared by the scripts that look at a used `Idempotency-Key` (hash `body`, `ride`, and
/// `pending` = since when its request is being answered): nil when unused.
const LUA_IDEM_SEEN: &str = r#"
local function IDEM_SEEN(k, body, now, pending_ms)
  local v = redis.call('HMGET', k, 'body', 'ride', 'pending')
  if not v[1] then return nil end
  if v[1] ~= body then return {'reused'} end
  if not v[2] or (v[3] and tonumber(v[3]) + tonumber(pending_ms) > tonumber(now)) then
    return {'in_progress'}
  end
  return {'replay', v[2]}
end
"#;
/// A script and the step name its latency is recorded under.
struct BookScript {
    name: &'static str,
    script: Script,
}

fn script(name: &'static str, body: &str) -> BookScript {
    let prelude =
        format!("local PREFIX = '{P}'\nlocal ENGAGED = '{ENGAGED}'\n{LUA_IDEM_SEEN}{LUA_DOC}");
    BookScript {
        name,
        script: Script::new(&format!("{prelude}{body}")),
    }
}

fn key(parts: &[&str]) -> String {
    let mut k = String::from(P);
    k.push_str(&parts.join(":"));
    k
}

/// The driver lock of `driver`.
fn driver_key(driver: &str) -> String {
    key(&["drv", driver])
}

fn ride_keys(id: &RideId) -> [String; 3] {
    let r = key(&["ride", id.as_str()]);
    let tr = format!("{r}:tr");
    let ex = format!("{r}:ex");
    [r, tr, ex]
}

fn bad(what: &str) -> BookError {
    BookError(format!("malformed dispatch state in Redis: {what}"))
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_owned()
}

/// `…:idem:<rider length>:<rider>:<key>`: the length keeps riders whose ids contain `:`
/// from meeting each other's keys.
fn idem_key(idem: &IdemKey<'_>) -> String {
    key(&["idem", &idem.rider.len().to_string(), idem.rider, idem.key])
}

/// A script's verdict on a used key (`reused`, `in_progress`, `replay <ride>`), if that is
/// what `reply` is.
fn idem_reply(reply: &[String]) -> Result<Option<IdemSeen>, BookError> {
    Ok(match reply.first().map(String::as_str) {
        Some("reused") => Some(IdemSeen::Reused),
        Some("in_progress") => Some(IdemSeen::InProgress),
        Some("replay") => Some(IdemSeen::Replay(
            reply
                .get(1)
                .map(|r| RideId::from(r.as_str()))
                .ok_or_else(|| bad("idempotency replay"))?,
        )),
        _ => None,
    })
}

/// An offer from a script's reply: ride, driver, token, distance, eta, expires.
fn offer_from(id: &OfferId, f: &[String]) -> Result<OfferRecord, BookError> {
    let [ride, driver, token, distance, eta, expires] = f else {
        return Err(bad("offer"));
    };
    Ok(OfferRecord {
        id: id.clone(),
        ride: ride.as_str().into(),
        driver: driver.as_str().into(),
        token: token.parse().map_err(|_| bad("offer token"))?,
        distance_m: distance.parse().map_err(|_| bad("offer distance"))?,
        eta_s: eta.parse().map_err(|_| bad("offer eta"))?,
        expires_at_ms: expires.parse().map_err(|_| bad("offer expiry"))?,
    })
}

/// The state named in a script's `{'state', <name>}` reply.
fn state_in(reply: &[String]) -> Result<RideState, BookError> {
    reply
        .get(1)
        .and_then(|s| RideState::parse(s))
        .ok_or_else(|| bad("state"))
}

/// Dispatch state in Redis; see the module documentation for the layout.
pub(crate) struct RedisBook {
    redis: Redis,
    latency: HistogramVec,
    create: BookScript,
    read: BookScript,
    claim: BookScript,
    close: BookScript,
    accept: BookScript,
    step: BookScript,
    tip: BookScript,
    start_due: BookScript,
    idem: BookScript,
}

impl RedisBook {
    /// On the process's shared Redis handle; each call's latency goes to `latency` (by
    /// step).
    pub(crate) fn new(redis: Redis, latency: HistogramVec) -> Self {
        RedisBook {
            redis,
            latency,
            create: script("create", LUA_CREATE),
            read: script("read", LUA_READ),
            claim: script("claim", LUA_CLAIM),
            close: script("close", LUA_CLOSE),
            accept: script("accept", LUA_ACCEPT),
            step: script("step", LUA_STEP),
            tip: script("tip", LUA_TIP),
            start_due: script("start_due", LUA_START_DUE),
            idem: script("idem", LUA_IDEM),
        }
    }

    async fn call<T, F, Fut>(&self, step: &'static str, f: F) -> Result<T, BookError>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        // The shared timeout discipline: an error within 800 ms, answered as 503.
        let (result, took) = geomatch_common::redis::call(&self.redis, f).await;
        self.latency
            .with_label_values(&[step])
            .observe(took.as_secs_f64());
        result.map_err(|e| BookError(e.to_string()))
    }

    async fn run(
        &self,
        script: &BookScript,
        keys: &[String],
        args: &[String],
    ) -> Result<Vec<String>, BookError> {
        self.run_as(script, keys, args).await
    }

    /// [`Self::run`] with a reply of any shape.
    async fn run_as<T: redis::FromRedisValue>(
        &self,
        script: &BookScript,
        keys: &[String],
        args: &[String],
    ) -> Result<T, BookError> {
        let mut inv = script.script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        self.call(script.name, |mut c| async move {
            inv.invoke_async(&mut c).await
        })
        .await
    }

    /// Runs a step script whose reply is `{{status...}}`, or `{{status...}, ride}` (the
    /// ride after the step, as [`LUA_DOC`] reads it); the status and the ride.
    async fn run_with_doc(
        &self,
        script: &BookScript,
        keys: &[String],
        args: &[String],
    ) -> Result<(Vec<String>, Option<RideDoc>), BookError> {
        let mut parts: Vec<Vec<String>> = self.run_as(script, keys, args).await?;
        if parts.is_empty() {
            return Err(bad("step reply"));
        }
        let status = parts.remove(0);
        let doc = match <[Vec<String>; 3]>::try_from(parts) {
            Ok([fields, transitions, excluded]) => doc_from(fields, transitions, excluded)?,
            Err(_) => None,
        };
        Ok((status, doc))
    }

    pub(super) async fn idem_seen(
        &self,
        idem: &IdemKey<'_>,
        now: i64,
    ) -> Result<Option<IdemSeen>, BookError> {
        let reply = self
            .run(
                &self.idem,
                &[idem_key(idem)],
                &[
                    idem.body.to_owned(),
                    now.to_string(),
                    IDEM_PENDING_MS.to_string(),
                ],
            )
            .await?;
        match idem_reply(&reply)? {
            Some(seen) => Ok(Some(seen)),
            None if reply.first().map(String::as_str) == Some("unused") => Ok(None),
            None => Err(bad("idempotency reply")),
        }
    }

    pub(super) async fn idem_finish(&self, idem: &IdemKey<'_>) -> Result<(), BookError> {
        let k = idem_key(idem);
        self.call("idem_finish", |mut c| async move {
            redis::cmd("HDEL")
                .arg(&k)
                .arg("pending")
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub(super) async fn create(&self, new: &NewRide<'_>, now: i64) -> Result<Created, BookError> {
        let ride = new.ride;
        let [r, tr, _] = ride_keys(&ride.base.id);
        let base = serde_json::to_string(&ride.base).map_err(|e| BookError(e.to_string()))?;
        let reply = self
            .run(
                &self.create,
                &[
                    r,
                    tr,
                    key(&["open", &ride.base.rider]),
                    key(&["idle"]),
                    key(&["due"]),
                    key(&["open"]),
                    idem_key(new.idem),
                ],
                &[
                    ride.base.id.to_string(),
                    base,
                    ride.base.rider.clone(),
                    ride.since_ms.to_string(),
                    ride.state.name().to_owned(),
                    new.dispatch_at.to_string(),
                    ride.tip_minor.to_string(),
                    new.idem.body.to_owned(),
                    new.idem.ttl_s.to_string(),
                    flag(new.answered),
                    IDEM_PENDING_MS.to_string(),
                    now.to_string(),
                ],
            )
            .await?;
        if let Some(seen) = idem_reply(&reply)? {
            return Ok(Created::Seen(seen));
        }
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Created::Made),
            Some("open") => Ok(Created::Open(
                reply
                    .get(1)
                    .map(|r| RideId::from(r.as_str()))
                    .ok_or_else(|| bad("open ride"))?,
            )),
            _ => Err(bad("create reply")),
        }
    }

    pub(super) async fn ride(&self, id: &RideId) -> Result<Option<RideDoc>, BookError> {
        let (fields, transitions, excluded): (Vec<String>, Vec<String>, Vec<String>) =
            self.run_as(&self.read, &ride_keys(id), &[]).await?;
        doc_from(fields, transitions, excluded)
    }

    pub(super) async fn claim(&self, o: &Offering<'_>) -> Result<Claim, BookError> {
        let [r, _, ex] = ride_keys(o.ride);
        let mut keys = vec![r, ex, key(&["idle"]), key(&["deadlines"])];
        keys.extend(o.answers.map(idem_key));
        let mut args = vec![
            o.ride.to_string(),
            o.offer.to_string(),
            o.expires_at_ms.to_string(),
            o.max_attempts.to_string(),
            o.radius.to_string(),
        ];
        for c in o.candidates {
            args.push(c.driver.to_string());
            args.push(format!("{:.1}", c.distance_m));
            args.push(c.eta_s.to_string());
        }
        let reply = self.run(&self.claim, &keys, &args).await?;
        match reply.first().map(String::as_str) {
            Some("offered") => {
                let [_, driver, token, distance, eta] = &reply[..] else {
                    return Err(bad("claim reply"));
                };
                Ok(Claim::Offered(OfferRecord {
                    id: o.offer.clone(),
                    ride: o.ride.clone(),
                    driver: driver.as_str().into(),
                    token: token.parse().map_err(|_| bad("token"))?,
                    distance_m: distance.parse().map_err(|_| bad("distance"))?,
                    eta_s: eta.parse().map_err(|_| bad("eta"))?,
                    expires_at_ms: o.expires_at_ms,
                }))
            }
            Some("not_wanted") => Ok(Claim::NotWanted),
            Some("taken") => Ok(Claim::AllTaken(
                reply[1..].iter().map(|d| d.as_str().into()).collect(),
            )),
            _ => Err(bad("claim reply")),
        }
    }

    pub(super) async fn close_offer(
        &self,
        offer: &OfferId,
        driver: Option<&DriverId>,
        how: OfferEnd,
        now: i64,
    ) -> Refusable<OfferRecord> {
        let reply = self
            .run(
                &self.close,
                &[
                    key(&["offer", offer.as_str()]),
                    key(&["deadlines"]),
                    key(&["idle"]),
                ],
                &[
                    offer.to_string(),
                    driver.map_or_else(String::new, DriverId::to_string),
                    flag(how == OfferEnd::TimedOut),
                    now.to_string(),
                ],
            )
            .await?;
        match reply.first().map(String::as_str) {
            Some("closed") => Ok(Ok(offer_from(offer, &reply[1..])?)),
            Some("forbidden") => Ok(Err(DispatchError::Forbidden)),
            Some("gone") => Ok(Err(DispatchError::OfferGone)),
            _ => Err(bad("close reply")),
        }
    }

    pub(super) async fn accept(
        &self,
        offer: &OfferId,
        driver: &DriverId,
        now: i64,
    ) -> Refusable<RideDoc> {
        let (reply, doc) = self
            .run_with_doc(
                &self.accept,
                &[key(&["offer", offer.as_str()]), key(&["deadlines"])],
                &[offer.to_string(), driver.to_string(), now.to_string()],
            )
            .await?;
        match reply.first().map(String::as_str) {
            Some("accepted") => {
                let ride = reply.get(1).ok_or_else(|| bad("accept reply"))?;
                match doc {
                    Some(doc) => Ok(Ok(doc)),
                    None => Ok(Err(DispatchError::RideNotFound(ride.as_str().into()))),
                }
            }
            Some("forbidden") => Ok(Err(DispatchError::Forbidden)),
            Some("gone") => Ok(Err(DispatchError::OfferGone)),
            Some("unavailable") => Ok(Err(DispatchError::DriverUnavailable)),
            _ => Err(bad("accept reply")),
        }
    }

    pub(super) async fn step(&self, ride: &RideId, step: Step<'_>, now: i64) -> Refusable<Stepped> {
        let [r, tr, ex] = ride_keys(ride);
        let from: String = step.from.iter().fold(",".to_owned(), |mut s, f| {
            s.push_str(f.name());
            s.push(',');
            s
        });
        let (reply, doc) = self
            .run_with_doc(
                &self.step,
                &[
                    r,
                    tr,
                    key(&["deadlines"]),
                    key(&["idle"]),
                    key(&["due"]),
                    key(&["open"]),
                    ex,
                ],
                &[
                    ride.to_string(),
                    step.to.name().to_owned(),
                    from,
                    step.driver.map_or_else(String::new, DriverId::to_string),
                    step.by.unwrap_or("").to_owned(),
                    now.to_string(),
                    flag(step.to.is_terminal()),
                    (RETENTION_MS / 1000).to_string(),
                ],
            )
            .await?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                let withdrawn = match reply.get(1) {
                    Some(offer) => Some(offer_from(&offer.as_str().into(), &reply[2..])?),
                    None => None,
                };
                match doc {
                    Some(ride) => Ok(Ok(Stepped { ride, withdrawn })),
                    None => Ok(Err(DispatchError::RideNotFound(ride.clone()))),
                }
            }
            Some("not_found") => Ok(Err(DispatchError::RideNotFound(ride.clone()))),
            Some("forbidden") => Ok(Err(DispatchError::Forbidden)),
            Some("state") => Ok(Err(DispatchError::WrongState(
                state_in(&reply)?.name(),
                step.to.name(),
            ))),
            _ => Err(bad("step reply")),
        }
    }

    pub(super) async fn set_tip(&self, ride: &RideId, tip_minor: u64) -> Refusable<RideDoc> {
        let [r, _, _] = ride_keys(ride);
        let reply = self.run(&self.tip, &[r], &[tip_minor.to_string()]).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => match self.ride(ride).await? {
                Some(doc) => Ok(Ok(doc)),
                None => Ok(Err(DispatchError::RideNotFound(ride.clone()))),
            },
            Some("not_found") => Ok(Err(DispatchError::RideNotFound(ride.clone()))),
            Some("state") => Ok(Err(DispatchError::WrongState(
                state_in(&reply)?.name(),
                "not cancelled",
            ))),
            Some("lowered") => Ok(Err(DispatchError::TipLowered(
                reply.get(1).and_then(|t| t.parse().ok()).unwrap_or(0),
            ))),
            _ => Err(bad("tip reply")),
        }
    }

    pub(super) async fn offer(&self, offer: &OfferId) -> Result<Option<OfferRecord>, BookError> {
        let k = key(&["offer", offer.as_str()]);
        let fields: Vec<Option<String>> = self
            .call("offer", |mut c| async move {
                redis::cmd("HMGET")
                    .arg(&k)
                    .arg(&["ride", "driver", "token", "distance", "eta", "expires"])
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if fields.iter().any(Option::is_none) {
            return Ok(None);
        }
        let fields: Vec<String> = fields.into_iter().flatten().collect();
        offer_from(offer, &fields).map(Some)
    }

    pub(super) async fn offer_of_driver(
        &self,
        driver: &DriverId,
    ) -> Result<Option<OfferRecord>, BookError> {
        let k = driver_key(driver.as_str());
        let offer: Option<String> = self
            .call("offer_of_driver", |mut c| async move {
                redis::cmd("HGET")
                    .arg(&k)
                    .arg("offer")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        match offer {
            Some(o) => self.offer(&o.into()).await,
            None => Ok(None),
        }
    }

    pub(super) async fn expired_offers(&self, now: i64) -> Result<Vec<OfferId>, BookError> {
        let k = key(&["deadlines"]);
        let ids: Vec<String> = self
            .call("expired_offers", |mut c| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&k)
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(1000)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(ids.into_iter().map(OfferId::from).collect())
    }

    pub(super) async fn start_due(&self, now: i64) -> Result<Vec<RideId>, BookError> {
        let ids = self
            .run(
                &self.start_due,
                &[key(&["due"]), key(&["idle"])],
                &[now.to_string(), "1000".to_owned()],
            )
            .await?;
        Ok(ids.into_iter().map(RideId::from).collect())
    }

    pub(super) async fn idle(&self) -> Result<Vec<(RideId, i64)>, BookError> {
        let k = key(&["idle"]);
        let flat: Vec<(String, f64)> = self
            .call("idle", |mut c| async move {
                redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(9999)
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(flat
            .into_iter()
            .map(|(id, at)| (id.into(), at as i64))
            .collect())
    }

    pub(super) async fn open_count(&self) -> Result<u64, BookError> {
        let k = key(&["open"]);
        self.call("open_count", |mut c| async move {
            redis::cmd("SCARD").arg(&k).query_async(&mut c).await
        })
        .await
    }

    /// Takes a lock on a batch window: only one replica assigns each batch.
    pub(super) async fn batch_turn(&self, window_ms: u64) -> Result<bool, BookError> {
        let k = key(&["batch"]);
        let won: Option<String> = self
            .call("batch_turn", |mut c| async move {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(std::process::id())
                    .arg("NX")
                    .arg("PX")
                    .arg(window_ms.max(1))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(won.is_some())
    }
}

/// A ride from the three parts [`LUA_READ`] and [`LUA_DOC`] return; `None` when its hash
/// is gone.
fn doc_from(
    fields: Vec<String>,
    transitions: Vec<String>,
    excluded: Vec<String>,
) -> Result<Option<RideDoc>, BookError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut base = None;
    let mut doc_state = None;
    let (mut offer, mut driver, mut token, mut eta) = (None, None, None, None);
    let (mut attempts, mut radius, mut since, mut tip) = (0, 0, 0, 0);
    for pair in fields.chunks_exact(2) {
        let v = &pair[1];
        match pair[0].as_str() {
            "base" => {
                base = Some(serde_json::from_str::<RideBase>(v).map_err(|_| bad("ride base"))?)
            }
            "state" => doc_state = RideState::parse(v),
            "offer" => offer = Some(OfferId::from(v.as_str())),
            "driver" => driver = Some(DriverId::from(v.as_str())),
            "token" => token = v.parse().ok(),
            "eta" => eta = v.parse().ok(),
            "attempts" => attempts = v.parse().unwrap_or(0),
            "radius" => radius = v.parse().unwrap_or(0),
            "since" => since = v.parse().unwrap_or(0),
            "tip" => tip = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let transitions = transitions
        .iter()
        .map(|t| {
            let mut it = t.splitn(3, '|');
            let state = it
                .next()
                .and_then(RideState::parse)
                .ok_or_else(|| bad("transition"))?;
            let at_ms = it
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| bad("transition time"))?;
            let by = it.next().filter(|b| !b.is_empty()).map(str::to_owned);
            Ok(Transition { state, at_ms, by })
        })
        .collect::<Result<Vec<_>, BookError>>()?;
    Ok(Some(RideDoc {
        base: base.ok_or_else(|| bad("ride without base"))?,
        state: doc_state.ok_or_else(|| bad("ride state"))?,
        transitions,
        driver,
        token,
        pickup_eta_s: eta,
        offer,
        attempts,
        radius,
        since_ms: since,
        tip_minor: tip,
        excluded: excluded
            .into_iter()
            .map(DriverId::from)
            .collect::<HashSet<_>>(),
    }))
}

/// Reads the driver lock for location ingest: a driver holding an offer or a ride cannot
/// change its own status, and its state shows the engagement.
pub(super) struct DriverLocks {
    redis: Redis,
}

impl DriverLocks {
    pub(super) fn new(redis: Redis) -> Self {
        DriverLocks { redis }
    }
}

impl Engagement for DriverLocks {
    fn engagement<'a>(
        &'a self,
        driver: &'a str,
    ) -> PortFuture<'a, Result<Option<Status>, RedisError>> {
        Box::pin(async move {
            let k = driver_key(driver);
            let (held, _) = geomatch_common::redis::call(&self.redis, |mut c| async move {
                redis::cmd("HMGET")
                    .arg(&k)
                    .arg("offer")
                    .arg("ride")
                    .query_async::<(Option<String>, Option<String>)>(&mut c)
                    .await
            })
            .await;
            Ok(match held? {
                (_, Some(_)) => Some(Status::Busy),
                (Some(_), None) => Some(Status::Offered),
                (None, None) => None,
            })
        })
    }
}
