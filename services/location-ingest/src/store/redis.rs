//! Redis mode: the drivers' shared state, written atomically by Lua scripts.
//!
//! # Keys
//! Drivers are spread over [`SHARDS`] hash-tagged shards, so that one script touches keys of
//! one Redis Cluster slot only and the load spreads over a cluster:
//! - `gm:{sN}:drv`: hash of the shard's drivers, id → the driver's state packed in a few
//!   bytes (see [`StoredDriver`]: position, ordering state, status, vehicle class, seats,
//!   rate-limit bucket);
//! - `gm:{sN}:seen`: sorted set of live driver ids by last update (server ms), for expiry;
//!   refreshed at most every [`SEEN_SLACK_MS`] per driver (the sweep re-checks the state);
//! - `gm:{sN}:gone`: sorted set of expired driver ids by last update: their state is kept
//!   [`STATE_KEEP_MS`] so that a late report is still recognised as stale, then forgotten;
//! - `gm:{sN}:loc`: stream of location, status and offline events, which the other services
//!   tail to keep their own index replicas current (see [`PackedLocation`] for the location
//!   events' format); trimmed to the last [`STREAM_KEEP_MS`].
//!
//! People-nearby profiles push through the same script under keys of their own
//! (`gm:{sN}:prf`, `pseen`, `pgone`, `ploc`; see [`KindKeys`]): the driver expiry sweep
//! never sees them, and followers know an event's kind by its stream.
//!
//! # Cost
//! Redis runs one script per shard and batch (a single report is a batch of one): it reads
//! every reported driver's state with one `HMGET`, judges each report in turn (rate limit,
//! ordering so that concurrent ingest replicas never move a driver backwards, plausibility),
//! then writes with one `HSET`, one `ZADD` and one stream entry carrying every accepted
//! report. Commands issued from Lua cost microseconds each, so none is issued per report;
//! the state is packed with Lua's `struct` library for the same reason (numbers to and from
//! text are slow in Lua). The HTTP answer is sent only after Redis accepted the write.
//!
//! # This process's index
//! What Redis accepted here is applied to this process's index at once (status changes
//! and local expiry too); the follower (`crate::follower`) brings what other replicas
//! wrote and skips this store's own `locations` events (see [`RedisStore::writer`]).

use std::sync::Arc;

use geomatch_common::config::IngestSettings;
use geomatch_common::redis::{query_pipe, Redis};
use geomatch_index::{
    cell_of, Attributes, Entry, EntryId, Filter, Index, Kind, Position, Resolution, Status,
    Upserted,
};
use redis::Script;

use crate::metrics::IngestMetrics;
use crate::model::{IngestError, Verdict};
use crate::report::Report;

/// Number of key shards (hash tags). Fixed: changing it re-homes every driver.
pub(crate) const SHARDS: u32 = 16;
/// How far back (ms of Redis time) each location stream keeps its events: a follower may
/// lag this much without missing any. Trimming is approximate (whole stream nodes), so a
/// little more is kept.
pub(crate) const STREAM_KEEP_MS: u64 = 30_000;
/// How long an expired driver's state is kept: long enough that a late, stale report is
/// still recognised as stale.
pub(crate) const STATE_KEEP_MS: u64 = 24 * 3600 * 1000;
/// A driver's last-seen score is rewritten only when it is older than this; the expiry
/// sweep reads the driver's true last update before expiring it, so this only saves work.
pub(crate) const SEEN_SLACK_MS: u64 = 5_000;
/// Most reports one push-script call handles (Redis runs nothing else meanwhile).
const SCRIPT_BATCH: usize = 256;

/// A Redis call that failed (the one error type of every service's Redis calls).
type StoreError = geomatch_common::redis::RedisError;

/// What every script starts with.
/// - `STATE`: the `struct` format of a driver's state, [`StoredDriver::decode`]'s layout:
///   version (1), lat, lng, seq (high and low 32 bits, -1 when none), device time (-1 when
///   none), last update (server ms), rate-limit tokens and their time, time of the last
///   `seen` score, status code, vehicle class, seats, expired (0/1). Doubles are exact for
///   all of these (seq is split because it may exceed 2^53).
/// - `minid`: the stream id `keep_ms` before Redis's own clock: a stream is trimmed to the
///   entries newer than that (by time, not by count, because one entry carries one report
///   or a whole batch's worth).
const LUA_COMMON: &str = r#"
local STATE = '<BdddddddddBBBB'
local function minid(keep_ms)
  local t = redis.call('TIME')
  return string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(keep_ms))
end
"#;

const LUA_PUSH: &str = r#"
-- One call per shard and batch: every report of the batch that falls in this shard, in
-- order, each judged against its driver's state as the reports before it left it. Nothing
-- is written before all are judged.
-- KEYS: state hash, seen zset, gone zset, stream
-- ARGV: now_ms, rate, burst, max_mps, seen_slack_ms, stream_keep_ms, writer,
--       reports (40 bytes each: lat, lng, seq_hi, seq_lo, ts as little-endian doubles,
--       -1 for none), then per report: id, its line for the stream
local state, seen, gone, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
local rate, burst, max_mps, slack = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local reports = ARGV[8]
local n = (#ARGV - 8) / 2
local sin, cos, asin, sqrt, min, max = math.sin, math.cos, math.asin, math.sqrt, math.min, math.max
local rad = math.pi / 180
local BOUND = math.pi / 2 * 6371008.8
local unpack_, pack = struct.unpack, struct.pack
local ids = {}
for i = 1, n do ids[i] = ARGV[7 + 2 * i] end
local stored = redis.call('HMGET', state, unpack(ids))
local latest, seen_args, revived, lines, out = {}, {}, {}, {}, {}
local pos = 1
for i = 1, n do
  local id = ids[i]
  local lat, lng, sh, sl, ts
  lat, lng, sh, sl, ts, pos = unpack_('<ddddd', reports, pos)
  local v = latest[id] or stored[i]
  local ver, plat, plng, ssh, ssl, sts, sat, tokens, tok_at, seen_at, st, cl, se, ex
  if v then
    ver, plat, plng, ssh, ssl, sts, sat, tokens, tok_at, seen_at, st, cl, se, ex = unpack_(STATE, v)
    if ver ~= 1 then return redis.error_reply('driver state of unknown version ' .. ver) end
  else
    ssh, ssl, sts, tokens, tok_at, seen_at, st, cl, se, ex = -1, 0, -1, burst, now, -1, 0, 0, 0, 0
  end
  -- rate limit: token bucket, consumed by every report (stale ones too)
  tokens = min(burst, tokens + max(0, now - tok_at) / 1000 * rate)
  if tokens < 1 then
    out[i] = 'limited ' .. math.ceil((1 - tokens) / rate * 1000)
  else
    tokens, tok_at = tokens - 1, max(tok_at, now)
    local verdict
    -- ordering: by seq when both have one, else by device time, else accept
    if sh >= 0 and ssh >= 0 then
      if sh < ssh or (sh == ssh and sl <= ssl) then verdict = 'stale' end
    elseif ts >= 0 and sts >= 0 then
      if ts < sts then verdict = 'stale' end
    end
    -- plausibility: implied speed from the stored position
    if not verdict and v then
      local dt
      if ts >= 0 and sts >= 0 then dt = ts - sts else dt = now - sat end
      dt = max(dt / 1000, 1)
      -- The haversine distance is at most pi/2 * R * sqrt(dlat^2 + dlng^2) (radians):
      -- when even that is within reach, the report is plausible without trigonometry.
      local dlat, dlng, reach = (lat - plat) * rad, (lng - plng) * rad, max_mps * dt / BOUND
      if dlat * dlat + dlng * dlng > reach * reach then
        local x = sin(dlat / 2) ^ 2 + cos(plat * rad) * cos(lat * rad) * sin(dlng / 2) ^ 2
        local speed = 2 * 6371008.8 * asin(min(1, sqrt(x))) / dt
        if speed > max_mps then verdict = 'implausible ' .. (speed * 3.6) end
      end
    end
    if verdict then
      latest[id] = pack(STATE, 1, plat, plng, ssh, ssl, sts, sat, tokens, tok_at, seen_at, st, cl, se, ex)
      out[i] = verdict
    else
      if ex == 1 then revived[#revived + 1] = id end
      if seen_at < 0 or ex == 1 or now - seen_at >= slack then
        seen_at = now
        seen_args[#seen_args + 1] = ARGV[1]
        seen_args[#seen_args + 1] = id
      end
      latest[id] = pack(STATE, 1, lat, lng, sh, sl, ts, now, tokens, tok_at, seen_at, st, cl, se, 0)
      lines[#lines + 1] = ARGV[8 + 2 * i]
      out[i] = 'accepted'
    end
  end
end
local w = {}
for id, nv in pairs(latest) do
  w[#w + 1] = id
  w[#w + 1] = nv
end
if #w > 0 then redis.call('HSET', state, unpack(w)) end
if #seen_args > 0 then redis.call('ZADD', seen, unpack(seen_args)) end
if #revived > 0 then redis.call('ZREM', gone, unpack(revived)) end
if #lines > 0 then
  redis.call('XADD', stream, 'MINID', '~', minid(ARGV[6]), '*', 'type', 'locations',
    'at', ARGV[1], 'by', ARGV[7], 'items', table.concat(lines, '\n'))
end
return out
"#;

const LUA_STATUS: &str = r#"
-- KEYS: state hash, stream
-- ARGV: id, status name, status code, class, seats, now_ms, stream_keep_ms
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 'no_location' end
local ver, lat, lng, sh, sl, ts, at, tokens, tok_at, seen_at, st, cl, se, ex = struct.unpack(STATE, v)
if ver ~= 1 then return redis.error_reply('driver state of unknown version ' .. ver) end
if ex == 1 then return 'no_location' end
redis.call('HSET', KEYS[1], ARGV[1], struct.pack(STATE, 1, lat, lng, sh, sl, ts, at, tokens,
  tok_at, seen_at, tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), 0))
redis.call('XADD', KEYS[2], 'MINID', '~', minid(ARGV[7]), '*', 'type', 'status', 'id', ARGV[1],
  'status', ARGV[2], 'class', ARGV[4], 'seats', ARGV[5], 'at', ARGV[6])
return 'ok'
"#;

const LUA_SWEEP: &str = r#"
-- KEYS: state hash, seen zset, gone zset, stream
-- ARGV: cutoff_ms, limit, stream_keep_ms, forget_before_ms
-- Looks at up to `limit` drivers whose last-seen score is before the cutoff. One heard
-- from since (the score is refreshed only now and then) gets its true time as score; the
-- others are claimed: marked offline and expired, moved to `gone`, announced. Then forgets
-- drivers gone since before `forget_before_ms`. Returns how many were looked at, then
-- id, last update pairs of the claimed ones.
local cutoff, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, limit)
local out = {tostring(#ids)}
local trim
for _, id in ipairs(ids) do
  local v = redis.call('HGET', KEYS[1], id)
  if not v then
    redis.call('ZREM', KEYS[2], id)
  else
    local ver, lat, lng, sh, sl, ts, at, tokens, tok_at, seen_at, st, cl, se, ex = struct.unpack(STATE, v)
    if ver ~= 1 then return redis.error_reply('driver state of unknown version ' .. ver) end
    local at_s = string.format('%d', at)
    if at >= cutoff then
      redis.call('ZADD', KEYS[2], at_s, id)
    else
      redis.call('ZREM', KEYS[2], id)
      redis.call('HSET', KEYS[1], id, struct.pack(STATE, 1, lat, lng, sh, sl, ts, at, tokens,
        tok_at, seen_at, 0, cl, se, 1))
      redis.call('ZADD', KEYS[3], at_s, id)
      trim = trim or minid(ARGV[3])
      redis.call('XADD', KEYS[4], 'MINID', '~', trim, '*', 'type', 'offline', 'id', id, 'at', at_s)
      out[#out + 1] = id
      out[#out + 1] = at_s
    end
  end
end
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[4], 'LIMIT', 0, limit)
if #old > 0 then
  redis.call('HDEL', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[3], unpack(old))
end
return out
"#;

/// Drivers claimed per shard per sweep call.
const SWEEP_BATCH: u32 = 1000;

/// The Redis side of ingest.
pub(crate) struct RedisStore {
    /// The process's handle (calls with a ceiling each).
    redis: Redis,
    /// This process's replica: what Redis accepted here is applied to it at once (the
    /// follower brings what other replicas wrote).
    index: Arc<Index>,
    push: Script,
    status: Script,
    sweep: Script,
    metrics: IngestMetrics,
    /// Names this store's `locations` events (field `by`): the process's own follower
    /// skips them, its index already has them.
    writer: String,
    /// The rules the push script applies: token bucket, and the plausibility limit (m/s).
    rate_per_s: f64,
    burst: f64,
    max_mps: f64,
}

fn shard_of(id: &EntryId) -> u32 {
    // FNV-1a: stable across processes and versions (unlike std's RandomState).
    let mut h: u32 = 0x811c_9dc5;
    for b in id.as_str().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % SHARDS
}

/// The keys of one kind of entry. Drivers and profiles share the scripts but not their
/// keys: profiles have their own state hash, seen and gone sets (so the driver expiry
/// sweep never claims them) and stream (so followers know the kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KindKeys {
    pub kind: Kind,
    /// Key suffixes: `gm:{sN}:<state>` etc.
    pub state: &'static str,
    pub seen: &'static str,
    pub gone: &'static str,
    pub stream: &'static str,
}

/// How long a profile's state is kept after it leaves (`people.not_seen_for_s` passed):
/// late reports are still ordered against it.
pub(crate) const PROFILE_STATE_KEEP_MS: u64 = 30 * 24 * 3600 * 1000;

pub(crate) const KINDS: [KindKeys; 2] = [
    KindKeys {
        kind: Kind::Driver,
        state: "drv",
        seen: "seen",
        gone: "gone",
        stream: "loc",
    },
    KindKeys {
        kind: Kind::Profile,
        state: "prf",
        seen: "pseen",
        gone: "pgone",
        stream: "ploc",
    },
];

impl KindKeys {
    pub fn of(kind: Kind) -> KindKeys {
        match kind {
            Kind::Driver => KINDS[0],
            Kind::Profile => KINDS[1],
        }
    }
    pub fn state(&self, shard: u32) -> String {
        format!("gm:{{s{shard}}}:{}", self.state)
    }
    pub fn seen(&self, shard: u32) -> String {
        format!("gm:{{s{shard}}}:{}", self.seen)
    }
    pub fn gone(&self, shard: u32) -> String {
        format!("gm:{{s{shard}}}:{}", self.gone)
    }
    pub fn stream(&self, shard: u32) -> String {
        format!("gm:{{s{shard}}}:{}", self.stream)
    }
}

/// A random id for one store (several may share a process, as replicas do in tests).
fn new_writer_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// A status's code in a packed driver state.
fn status_code(s: Status) -> u8 {
    match s {
        Status::Offline => 0,
        Status::Available => 1,
        Status::Offered => 2,
        Status::Busy => 3,
    }
}

fn status_of_code(c: u8) -> Status {
    match c {
        1 => Status::Available,
        2 => Status::Offered,
        3 => Status::Busy,
        _ => Status::Offline,
    }
}

/// A driver's state as the scripts pack it in the shard's hash (`STATE` in the scripts):
/// little-endian, a version byte (1), nine doubles (lat, lng, seq high and low 32 bits or
/// -1, device time or -1, last update, rate-limit tokens, their time, time of the last
/// `seen` score), then four bytes (status code, vehicle class, seats, expired).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredDriver {
    pub position: Position,
    pub seq: Option<u64>,
    pub device_ts_ms: Option<i64>,
    /// Server time of the last accepted report, ms.
    pub updated_at_ms: i64,
    pub status: Status,
    pub attrs: Attributes,
    /// Not heard from within the TTL: kept only to order late reports.
    pub expired: bool,
}

const STATE_LEN: usize = 1 + 9 * 8 + 4;

impl StoredDriver {
    pub fn decode(v: &[u8]) -> Result<StoredDriver, StoreError> {
        let bad = || StoreError::Reply(format!("driver state of {} bytes", v.len()));
        if v.len() != STATE_LEN || v[0] != 1 {
            return Err(bad());
        }
        let f = |i: usize| {
            let at = 1 + i * 8;
            f64::from_le_bytes(v[at..at + 8].try_into().unwrap_or_default())
        };
        let position = Position::new(f(0), f(1)).map_err(|_| bad())?;
        let (hi, lo) = (f(2), f(3));
        let seq = (hi >= 0.0).then_some(((hi as u64) << 32) | lo as u64);
        let ts = f(4);
        let bytes = &v[STATE_LEN - 4..];
        Ok(StoredDriver {
            position,
            seq,
            device_ts_ms: (ts >= 0.0).then_some(ts as i64),
            updated_at_ms: f(5) as i64,
            status: status_of_code(bytes[0]),
            attrs: Attributes {
                vehicle_class: bytes[1],
                seats: bytes[2],
            },
            expired: bytes[3] == 1,
        })
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Offline => "offline",
        Status::Available => "available",
        Status::Offered => "offered",
        Status::Busy => "busy",
    }
}

/// A status as named in a stream event (unknown reads as offline).
pub(crate) fn status_from(s: &str) -> Status {
    match s {
        "available" => Status::Available,
        "offered" => Status::Offered,
        "busy" => Status::Busy,
        _ => Status::Offline,
    }
}

impl RedisStore {
    pub(crate) fn new(
        redis: Redis,
        index: Arc<Index>,
        settings: &IngestSettings,
        metrics: IngestMetrics,
    ) -> Self {
        RedisStore {
            redis,
            index,
            push: Script::new(&format!("{LUA_COMMON}{LUA_PUSH}")),
            status: Script::new(&format!("{LUA_COMMON}{LUA_STATUS}")),
            sweep: Script::new(&format!("{LUA_COMMON}{LUA_SWEEP}")),
            metrics,
            writer: new_writer_id(),
            rate_per_s: settings.rate_per_s,
            burst: settings.burst,
            max_mps: settings.max_speed_kmh / 3.6,
        }
    }

    /// What this store's `locations` events carry as `by`.
    pub(crate) fn writer(&self) -> &str {
        &self.writer
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (result, took) = geomatch_common::redis::call(&self.redis, f).await;
        self.metrics.redis_seconds.observe(took.as_secs_f64());
        if result.is_err() {
            self.metrics.redis_errors.inc();
        }
        result
    }

    /// Runs the push script for many reports: one script call per shard the reports fall
    /// in (at most [`SCRIPT_BATCH`] reports each), all calls in one pipeline (one round
    /// trip). What a batch request does, and a single report as a batch of one. Verdicts
    /// come back in the order of `reports`; the accepted reports are then applied to this
    /// process's index.
    pub(crate) async fn push_many(
        &self,
        kind: Kind,
        reports: &[(EntryId, Report)],
        now: i64,
    ) -> Result<Vec<Verdict>, IngestError> {
        let mut verdicts = self.run_push(kind, reports, now).await?;
        for ((id, r), v) in reports.iter().zip(&mut verdicts) {
            if let Verdict::Accepted { previous } = v {
                // Redis has ordered it; the local replica follows (its own ordering check
                // only drops what the stream already delivered).
                *previous = match self.index.upsert(&r.update(id, kind, now)) {
                    Ok(Upserted::Moved { previous }) => Some(previous),
                    _ => None,
                };
            }
        }
        Ok(verdicts)
    }

    async fn run_push(
        &self,
        kind: Kind,
        reports: &[(EntryId, Report)],
        now: i64,
    ) -> Result<Vec<Verdict>, StoreError> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let keys = KindKeys::of(kind);
        // Each shard's reports keep their order: two reports of one driver in one batch are
        // judged one after the other, as if sent apart.
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); SHARDS as usize];
        for (i, (id, _)) in reports.iter().enumerate() {
            by_shard[shard_of(id) as usize].push(i);
        }
        let calls: Vec<(u32, &[usize])> = by_shard
            .iter()
            .enumerate()
            .flat_map(|(shard, ix)| ix.chunks(SCRIPT_BATCH).map(move |c| (shard as u32, c)))
            .collect();
        let mut pipe = redis::pipe();
        let mut line = String::new();
        for (shard, chunk) in &calls {
            pipe.cmd("EVALSHA")
                .arg(self.push.get_hash())
                .arg(4)
                .arg(keys.state(*shard))
                .arg(keys.seen(*shard))
                .arg(keys.gone(*shard))
                .arg(keys.stream(*shard))
                .arg(now)
                .arg(self.rate_per_s)
                .arg(self.burst)
                .arg(self.max_mps)
                .arg(SEEN_SLACK_MS)
                .arg(STREAM_KEEP_MS)
                .arg(&self.writer);
            let mut numbers = Vec::with_capacity(chunk.len() * 40);
            for &i in *chunk {
                let r = &reports[i].1;
                let (hi, lo) = r.seq.map_or((-1.0, 0.0), |q| {
                    ((q >> 32) as f64, (q & 0xffff_ffff) as f64)
                });
                let ts = r.device_ts_ms.map_or(-1.0, |t| t as f64);
                for x in [r.position.lat(), r.position.lng(), hi, lo, ts] {
                    numbers.extend_from_slice(&x.to_le_bytes());
                }
            }
            pipe.arg(numbers);
            for &i in *chunk {
                let (id, r) = &reports[i];
                line.clear();
                PackedLocation::write_line(&mut line, id, r);
                pipe.arg(id.as_str()).arg(line.as_str());
            }
        }
        let script = &self.push;
        let replies: Vec<Vec<String>> = self
            // A NOSCRIPT (first use, or Redis restarted) is safe to resend: every call of
            // the pipeline is the same script, so none of them ran.
            .call(|mut c| async move { query_pipe(&mut c, &pipe, &[script]).await })
            .await?;
        if replies.len() != calls.len() {
            return Err(StoreError::Reply(format!(
                "{} replies to {} script calls",
                replies.len(),
                calls.len()
            )));
        }
        let mut verdicts = vec![None; reports.len()];
        for ((_, chunk), reply) in calls.iter().zip(&replies) {
            if reply.len() != chunk.len() {
                return Err(StoreError::Reply(format!(
                    "{} verdicts for {} reports",
                    reply.len(),
                    chunk.len()
                )));
            }
            for (&i, v) in chunk.iter().zip(reply) {
                verdicts[i] = Some(verdict(v)?);
            }
        }
        verdicts
            .into_iter()
            .map(|v| v.ok_or_else(|| StoreError::Reply("no verdict".into())))
            .collect()
    }

    /// Sets status and attributes and applies them to this process's index (if it holds
    /// the driver yet; the stream brings it otherwise); the stored state after.
    pub(crate) async fn set_status(
        &self,
        id: &EntryId,
        status: Status,
        attrs: Option<Attributes>,
        now: i64,
    ) -> Result<Entry, IngestError> {
        let shard = shard_of(id);
        let keys = KindKeys::of(Kind::Driver);
        let stored = attrs.unwrap_or_default();
        let mut inv = self.status.prepare_invoke();
        inv.key(keys.state(shard))
            .key(keys.stream(shard))
            .arg(id.as_str())
            .arg(status_name(status))
            .arg(status_code(status))
            .arg(stored.vehicle_class)
            .arg(stored.seats)
            .arg(now)
            .arg(STREAM_KEEP_MS);
        let reply: String = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        if reply != "ok" {
            return Err(IngestError::LocationRequired(id.clone()));
        }
        let _ = self.index.set_status(id, status, attrs);
        self.get(id)
            .await?
            .ok_or_else(|| IngestError::NotFound(id.clone()))
    }

    /// Takes drivers not heard from since `cutoff` out of this process's index, then marks
    /// them offline in Redis, in every shard, and forgets those gone for longer than
    /// [`STATE_KEEP_MS`]; returns the ones this call claimed in Redis (so that each expiry
    /// is claimed once across replicas), with their last update time.
    pub(crate) async fn sweep_expired(
        &self,
        cutoff: i64,
        now: i64,
    ) -> Result<Vec<(EntryId, i64)>, IngestError> {
        // Profiles go stale on people nearby's own, much longer clock.
        self.index
            .evict_older_than_where(cutoff, &Filter::any().kind(Kind::Driver));
        let forget_before = now - STATE_KEEP_MS as i64;
        Ok(self.sweep_kind(Kind::Driver, cutoff, forget_before).await?)
    }

    /// Takes profiles last seen before `cutoff` out of the live set (announced on the
    /// profiles' streams, so every replica's index lets them go); their state is kept
    /// [`PROFILE_STATE_KEEP_MS`]. Returns how many.
    pub(crate) async fn trim_profiles_seen(
        &self,
        cutoff: i64,
        now: i64,
    ) -> Result<usize, IngestError> {
        let forget_before = now - PROFILE_STATE_KEEP_MS as i64;
        Ok(self
            .sweep_kind(Kind::Profile, cutoff, forget_before)
            .await?
            .len())
    }

    async fn sweep_kind(
        &self,
        kind: Kind,
        cutoff_ms: i64,
        forget_before: i64,
    ) -> Result<Vec<(EntryId, i64)>, StoreError> {
        let keys = KindKeys::of(kind);
        let mut all = Vec::new();
        for shard in 0..SHARDS {
            loop {
                let mut inv = self.sweep.prepare_invoke();
                inv.key(keys.state(shard))
                    .key(keys.seen(shard))
                    .key(keys.gone(shard))
                    .key(keys.stream(shard))
                    .arg(cutoff_ms)
                    .arg(SWEEP_BATCH)
                    .arg(STREAM_KEEP_MS)
                    .arg(forget_before);
                let reply: Vec<String> = self
                    .call(|mut c| async move { inv.invoke_async(&mut c).await })
                    .await?;
                let looked_at: u32 = reply.first().and_then(|n| n.parse().ok()).unwrap_or(0);
                for pair in reply.get(1..).unwrap_or_default().chunks_exact(2) {
                    if let Ok(id) = EntryId::parse(&pair[0]) {
                        all.push((id, pair[1].parse().unwrap_or(0)));
                    }
                }
                if looked_at < SWEEP_BATCH {
                    break;
                }
            }
        }
        Ok(all)
    }

    /// The stored state of a live driver (an expired one is kept only to order late
    /// reports: `None`). Its cell is at resolution 9.
    pub(crate) async fn get(&self, id: &EntryId) -> Result<Option<Entry>, IngestError> {
        let key = KindKeys::of(Kind::Driver).state(shard_of(id));
        let field = id.as_str();
        let state: Option<Vec<u8>> = self
            .call(|mut c| async move {
                redis::cmd("HGET")
                    .arg(&key)
                    .arg(field)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(state) = state else { return Ok(None) };
        let d = StoredDriver::decode(&state)?;
        if d.expired {
            return Ok(None);
        }
        Ok(Some(Entry {
            id: id.clone(),
            position: d.position,
            cell: cell_of(&d.position, Resolution::Nine),
            status: d.status,
            kind: Kind::Driver,
            attrs: d.attrs,
            updated_at_ms: d.updated_at_ms,
            seq: d.seq,
            device_ts_ms: d.device_ts_ms,
        }))
    }
}

/// One location of a `locations` stream event. The push script appends one such event per
/// call, carrying every report it accepted: fields `type` = `locations`, `at` (server ms the
/// reports were received), `by` (the writing store, [`RedisStore::writer`]) and `items`,
/// one line per report, `<id> <lat> <lng> <seq> <ts>`,
/// with `seq` and `ts` empty when the report had none. Driver ids never contain spaces or
/// newlines, so the packing needs no escaping.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackedLocation {
    pub id: EntryId,
    pub position: Position,
    pub seq: Option<u64>,
    pub device_ts_ms: Option<i64>,
}

/// The locations of a `locations` event's `items`, in order; `None` for a line that does
/// not parse (it is skipped, the others still apply).
pub(crate) fn unpack_locations(items: &str) -> impl Iterator<Item = Option<PackedLocation>> + '_ {
    fn optional<T: std::str::FromStr>(v: &str) -> Option<Option<T>> {
        if v.is_empty() {
            Some(None)
        } else {
            v.parse().ok().map(Some)
        }
    }
    items.split('\n').map(|line| {
        let mut f = line.split(' ');
        let id = EntryId::parse(f.next()?).ok()?;
        let lat = f.next()?.parse().ok()?;
        let lng = f.next()?.parse().ok()?;
        let seq = optional(f.next()?)?;
        let device_ts_ms = optional(f.next()?)?;
        if f.next().is_some() {
            return None;
        }
        Some(PackedLocation {
            id,
            position: Position::new(lat, lng).ok()?,
            seq,
            device_ts_ms,
        })
    })
}

impl PackedLocation {
    /// Appends a report's line (without the newline) as the push script packs it.
    pub fn write_line(out: &mut String, id: &EntryId, r: &Report) {
        use std::fmt::Write;
        let _ = write!(out, "{} {} {} ", id, r.position.lat(), r.position.lng());
        if let Some(q) = r.seq {
            let _ = write!(out, "{q}");
        }
        out.push(' ');
        if let Some(t) = r.device_ts_ms {
            let _ = write!(out, "{t}");
        }
    }
}

/// A verdict as the push script words it: `accepted`, `stale`, `limited <retry ms>`,
/// `implausible <km/h>`. An accepted report's previous state is this process's to add.
fn verdict(reply: &str) -> Result<Verdict, StoreError> {
    let (word, value) = reply.split_once(' ').unwrap_or((reply, ""));
    match word {
        "accepted" => Ok(Verdict::Accepted { previous: None }),
        "stale" => Ok(Verdict::Stale),
        "limited" => Ok(Verdict::RateLimited {
            retry_after_ms: value.parse::<f64>().map_or(1000, |v| v.max(1.0) as u64),
        }),
        "implausible" => Ok(Verdict::Implausible {
            speed_kmh: value.parse().unwrap_or(f64::NAN),
        }),
        _ => Err(StoreError::Reply(reply.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_driver_share_a_cluster_slot_tag() {
        let id = EntryId::parse("drv-42").unwrap();
        let s = shard_of(&id);
        let k = KindKeys::of(Kind::Driver);
        for key in [k.state(s), k.seen(s), k.gone(s), k.stream(s)] {
            assert!(key.starts_with(&format!("gm:{{s{s}}}:")), "{key}");
        }
        assert_eq!(shard_of(&id), s, "stable");
        let spread: std::collections::HashSet<u32> = (0..1000)
            .map(|i| shard_of(&EntryId::parse(&format!("d{i}")).unwrap()))
            .collect();
        assert_eq!(spread.len(), SHARDS as usize);
    }

    #[test]
    fn packed_locations_unpack_in_order_with_optional_seq_and_time() {
        let items = "d-1 37.5 127.25 7 1763769600000\nd.2 -33.9 151.2  \nd:3 0 0 12 ";
        let got: Vec<_> = unpack_locations(items).collect();
        assert_eq!(got.len(), 3);
        let first = got[0].clone().unwrap();
        assert_eq!(first.id.as_str(), "d-1");
        assert_eq!((first.position.lat(), first.position.lng()), (37.5, 127.25));
        assert_eq!(
            (first.seq, first.device_ts_ms),
            (Some(7), Some(1_763_769_600_000))
        );
        let second = got[1].clone().unwrap();
        assert_eq!(second.id.as_str(), "d.2");
        assert_eq!((second.seq, second.device_ts_ms), (None, None));
        let third = got[2].clone().unwrap();
        assert_eq!((third.seq, third.device_ts_ms), (Some(12), None));
    }

    #[test]
    fn a_malformed_packed_line_is_skipped_alone() {
        let items =
            "ok 1 2 3 4\nbad 91 0  \nshort 1 2\nx 1 2 notanumber \nlong 1 2 3 4 5\nok2 3 4  ";
        let ids: Vec<Option<String>> = unpack_locations(items)
            .map(|l| l.map(|l| l.id.to_string()))
            .collect();
        assert_eq!(
            ids,
            [
                Some("ok".into()),
                None,
                None,
                None,
                None,
                Some("ok2".into())
            ]
        );
    }

    #[test]
    fn a_packed_state_decodes_field_by_field() {
        let mut v = vec![1u8];
        let seq: u64 = (7 << 32) | 5;
        for x in [37.5, 127.25, 7.0, 5.0, 1.7e12, 1.8e12, 3.5, 1.8e12, 1.8e12] {
            v.extend_from_slice(&f64::to_le_bytes(x));
        }
        v.extend_from_slice(&[1, 2, 4, 0]);
        let d = StoredDriver::decode(&v).unwrap();
        assert_eq!((d.position.lat(), d.position.lng()), (37.5, 127.25));
        assert_eq!(d.seq, Some(seq));
        assert_eq!(d.device_ts_ms, Some(1_700_000_000_000));
        assert_eq!(d.updated_at_ms, 1_800_000_000_000);
        assert_eq!(d.status, Status::Available);
        assert_eq!((d.attrs.vehicle_class, d.attrs.seats), (2, 4));
        assert!(!d.expired);
        // No seq, no device time, expired.
        v[17..25].copy_from_slice(&(-1.0f64).to_le_bytes());
        v[33..41].copy_from_slice(&(-1.0f64).to_le_bytes());
        v[76] = 1;
        let d = StoredDriver::decode(&v).unwrap();
        assert_eq!((d.seq, d.device_ts_ms, d.expired), (None, None, true));
        // Another version or length is refused, not misread.
        v[0] = 2;
        assert!(StoredDriver::decode(&v).is_err());
        assert!(StoredDriver::decode(&v[..40]).is_err());
    }

    #[test]
    fn verdicts_are_read_from_the_scripts_words() {
        assert_eq!(
            verdict("accepted"),
            Ok(Verdict::Accepted { previous: None })
        );
        assert_eq!(verdict("stale"), Ok(Verdict::Stale));
        assert_eq!(
            verdict("limited 200"),
            Ok(Verdict::RateLimited {
                retry_after_ms: 200
            })
        );
        assert_eq!(
            verdict("implausible 1234.5"),
            Ok(Verdict::Implausible { speed_kmh: 1234.5 })
        );
        assert!(verdict("what").is_err());
    }
}
