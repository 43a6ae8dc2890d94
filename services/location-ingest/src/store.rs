//! Redis mode: the drivers' shared state, written atomically by Lua scripts.
//!
//! # Keys
//! Drivers are spread over [`SHARDS`] hash-tagged shards, so that one script touches keys of
//! one Redis Cluster slot only and the stream load spreads over the cluster:
//! - `gm:{sN}:drv:<id>`: hash with the driver's position, ordering state (seq, device time),
//!   status, vehicle class, seats and rate-limit bucket;
//! - `gm:{sN}:seen`: sorted set of driver ids by last update (server ms), for expiry;
//! - `gm:{sN}:loc`: stream of location and status events, which the other services tail to
//!   keep their own index replicas current.
//!
//! People-nearby profiles report through the same script under their own keys
//! (`gm:{sN}:prf:<id>`, `gm:{sN}:pseen`, `gm:{sN}:ploc`; see [`KindKeys`]): the driver
//! expiry sweep never sees them, and replicas know an event's kind by its stream.
//!
//! One script call per update does everything atomically: rate limit, ordering (so that
//! concurrent ingest replicas never move a driver backwards), plausibility, write, stream
//! append. The answer is sent only after Redis accepted the write.

use std::time::{Duration, Instant};

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use geomatch_common::config::{IngestSettings, RedisSettings};
use geomatch_index::{Attributes, EntryId, Kind, Status};
use redis::Script;

use crate::ingest::DriverView;
use crate::metrics::IngestMetrics;
use crate::report::Report;

/// Number of key shards (hash tags). Fixed: changing it re-homes every driver.
pub const SHARDS: u32 = 16;
/// Approximate length each location stream is trimmed to.
const STREAM_MAXLEN: u32 = 100_000;
/// How long a driver's hash outlives its last update: long enough that a late, stale
/// report is still recognised as stale.
const STATE_TTL_MS: u64 = 24 * 3600 * 1000;
/// Upper bound on any one Redis call, on top of the pool's own timeouts.
const CALL_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

/// What Redis decided about one report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StoreVerdict {
    Accepted,
    Stale,
    RateLimited { retry_after_ms: u64 },
    Implausible { speed_kmh: f64 },
}

/// Compares two non-negative decimal integers given as strings (Lua numbers are doubles,
/// which would round sequence numbers above 2^53).
const LUA_NUMCMP: &str = r#"
local function numcmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
"#;

const LUA_PUSH: &str = r#"
-- KEYS: driver hash, seen zset, stream
-- ARGV: id, now_ms, lat, lng, seq|'', ts|'', rate, burst, max_mps, state_ttl_ms, maxlen
local h, seen, stream = KEYS[1], KEYS[2], KEYS[3]
local id, now = ARGV[1], tonumber(ARGV[2])
local lat, lng = tonumber(ARGV[3]), tonumber(ARGV[4])
local seq, ts = ARGV[5], ARGV[6]
local rate, burst, max_mps = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local s = redis.call('HMGET', h, 'tokens', 'tok_at', 'lat', 'lng', 'seq', 'ts', 'at')
-- rate limit: token bucket, consumed by every report (stale ones too)
local tokens = tonumber(s[1]) or burst
local tok_at = tonumber(s[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - tok_at) / 1000 * rate)
if tokens < 1 then
  return {'limited', tostring(math.ceil((1 - tokens) / rate * 1000))}
end
redis.call('HSET', h, 'tokens', tostring(tokens - 1), 'tok_at', tostring(math.max(tok_at, now)))
-- ordering: by seq when both have one, else by device time, else accept
local sseq, sts = s[5], s[6]
if seq ~= '' and sseq and sseq ~= '' then
  if numcmp(seq, sseq) <= 0 then return {'stale'} end
elseif ts ~= '' and sts and sts ~= '' then
  if tonumber(ts) < tonumber(sts) then return {'stale'} end
end
-- plausibility: implied speed from the stored position
local plat, plng = tonumber(s[3]), tonumber(s[4])
if plat then
  local dt
  if ts ~= '' and sts and sts ~= '' then dt = tonumber(ts) - tonumber(sts) else dt = now - tonumber(s[7]) end
  dt = math.max(dt / 1000, 1)
  local r = math.pi / 180
  local a = math.sin((lat - plat) * r / 2) ^ 2 + math.cos(plat * r) * math.cos(lat * r) * math.sin((lng - plng) * r / 2) ^ 2
  local d = 2 * 6371008.8 * math.asin(math.min(1, math.sqrt(a)))
  if d / dt > max_mps then return {'implausible', tostring(d / dt * 3.6)} end
end
redis.call('HSET', h, 'lat', ARGV[3], 'lng', ARGV[4], 'seq', seq, 'ts', ts, 'at', ARGV[2])
redis.call('HDEL', h, 'expired')
redis.call('HSETNX', h, 'status', 'offline')
redis.call('PEXPIRE', h, ARGV[10])
redis.call('ZADD', seen, now, id)
redis.call('XADD', stream, 'MAXLEN', '~', ARGV[11], '*', 'type', 'location', 'id', id,
  'lat', ARGV[3], 'lng', ARGV[4], 'seq', seq, 'ts', ts, 'at', ARGV[2])
return {'accepted'}
"#;

const LUA_STATUS: &str = r#"
-- KEYS: driver hash, stream; ARGV: id, status, class, seats, now_ms, maxlen
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'expired') == '1' then
  return 'no_location'
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'class', ARGV[3], 'seats', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'type', 'status', 'id', ARGV[1],
  'status', ARGV[2], 'class', ARGV[3], 'seats', ARGV[4], 'at', ARGV[5])
return 'ok'
"#;

const LUA_SWEEP: &str = r#"
-- KEYS: seen zset, stream; ARGV: cutoff_ms, limit, maxlen, shard tag prefix
-- Claims (removes) up to `limit` drivers last seen before the cutoff, marks them offline
-- and announces it; returns id, last_seen pairs.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #ids, 2 do
  local id, at = ids[i], ids[i + 1]
  redis.call('ZREM', KEYS[1], id)
  local h = ARGV[4] .. id
  if redis.call('EXISTS', h) == 1 then redis.call('HSET', h, 'status', 'offline', 'expired', '1') end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'offline', 'id', id, 'at', at)
  table.insert(out, id)
  table.insert(out, at)
end
return out
"#;

/// Drivers claimed per shard per sweep call.
const SWEEP_BATCH: u32 = 1000;

/// The Redis side of ingest.
pub struct RedisStore {
    pool: Pool,
    push: Script,
    status: Script,
    sweep: Script,
    metrics: IngestMetrics,
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

/// The keys of one kind of entry. Drivers and profiles share the push script but not its
/// keys: profiles have their own stream (so followers know the kind), their own seen set
/// (so the driver expiry sweep never claims them) and a longer state TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindKeys {
    pub kind: Kind,
    /// `drv` or `prf`: the entry hash is `gm:{sN}:<prefix>:<id>`.
    pub prefix: &'static str,
    pub seen: &'static str,
    pub stream: &'static str,
    pub state_ttl_ms: u64,
}

/// How long a profile's state outlives its last report (people.not_seen_for_s is at most
/// this).
pub const PROFILE_STATE_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

pub const KINDS: [KindKeys; 2] = [
    KindKeys {
        kind: Kind::Driver,
        prefix: "drv",
        seen: "seen",
        stream: "loc",
        state_ttl_ms: STATE_TTL_MS,
    },
    KindKeys {
        kind: Kind::Profile,
        prefix: "prf",
        seen: "pseen",
        stream: "ploc",
        state_ttl_ms: PROFILE_STATE_TTL_MS,
    },
];

impl KindKeys {
    pub fn of(kind: Kind) -> KindKeys {
        KINDS[kind as usize]
    }
    pub fn entry(&self, id: &EntryId) -> String {
        format!("gm:{{s{}}}:{}:{}", shard_of(id), self.prefix, id)
    }
    pub fn seen(&self, shard: u32) -> String {
        format!("gm:{{s{shard}}}:{}", self.seen)
    }
    pub fn stream(&self, shard: u32) -> String {
        format!("gm:{{s{shard}}}:{}", self.stream)
    }
}

pub fn driver_key(id: &EntryId) -> String {
    format!("gm:{{s{}}}:drv:{}", shard_of(id), id)
}

pub fn seen_key(shard: u32) -> String {
    format!("gm:{{s{shard}}}:seen")
}

pub fn stream_key(shard: u32) -> String {
    format!("gm:{{s{shard}}}:loc")
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Offline => "offline",
        Status::Available => "available",
        Status::Offered => "offered",
        Status::Busy => "busy",
    }
}

/// A status as stored in a driver hash or stream event (unknown reads as offline).
pub(crate) fn status_from(s: &str) -> Status {
    match s {
        "available" => Status::Available,
        "offered" => Status::Offered,
        "busy" => Status::Busy,
        _ => Status::Offline,
    }
}

impl RedisStore {
    pub fn new(settings: &RedisSettings, metrics: IngestMetrics) -> Result<Self, StoreError> {
        let mut cfg = Config::from_url(settings.url.clone());
        cfg.pool = Some(PoolConfig {
            max_size: settings.pool_size,
            timeouts: Timeouts {
                wait: Some(settings.wait_timeout()),
                create: Some(settings.connect_timeout()),
                recycle: Some(settings.connect_timeout()),
            },
            ..PoolConfig::default()
        });
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| StoreError::Redis(e.to_string()))?;
        Ok(RedisStore {
            pool,
            push: Script::new(&format!("{LUA_NUMCMP}{LUA_PUSH}")),
            status: Script::new(LUA_STATUS),
            sweep: Script::new(LUA_SWEEP),
            metrics,
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// PING, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|mut c| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(CALL_TIMEOUT, async {
            let conn = self
                .pool
                .get()
                .await
                .map_err(|e| StoreError::Redis(e.to_string()))?;
            f(conn).await.map_err(|e| StoreError::Redis(e.to_string()))
        })
        .await
        .unwrap_or(Err(StoreError::Timeout(CALL_TIMEOUT)));
        self.metrics
            .redis_seconds
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.redis_errors.inc();
        }
        result
    }

    /// Runs the push script for one report.
    pub async fn push(
        &self,
        id: &EntryId,
        r: &Report,
        now: i64,
        s: &IngestSettings,
    ) -> Result<StoreVerdict, StoreError> {
        let verdicts = self
            .push_many(Kind::Driver, &[(id.clone(), *r)], now, s)
            .await?;
        verdicts
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Reply("no verdict".into()))
    }

    /// Runs the push script for many reports in one pipeline (one round trip): what a
    /// batch request does. Verdicts come back in the order of `reports`.
    pub async fn push_many(
        &self,
        kind: Kind,
        reports: &[(EntryId, Report)],
        now: i64,
        s: &IngestSettings,
    ) -> Result<Vec<StoreVerdict>, StoreError> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let keys = KindKeys::of(kind);
        let invocations: Vec<_> = reports
            .iter()
            .map(|(id, r)| {
                let shard = shard_of(id);
                let mut inv = self.push.prepare_invoke();
                inv.key(keys.entry(id))
                    .key(keys.seen(shard))
                    .key(keys.stream(shard))
                    .arg(id.as_str())
                    .arg(now)
                    .arg(r.position.lat())
                    .arg(r.position.lng())
                    .arg(r.seq.map(|v| v.to_string()).unwrap_or_default())
                    .arg(r.device_ts_ms.map(|v| v.to_string()).unwrap_or_default())
                    .arg(s.rate_per_s)
                    .arg(s.burst)
                    .arg(s.max_speed_kmh / 3.6)
                    .arg(keys.state_ttl_ms)
                    .arg(STREAM_MAXLEN);
                inv
            })
            .collect();
        let mut pipe = redis::pipe();
        for inv in &invocations {
            pipe.invoke_script(inv);
        }
        let script = &self.push;
        let replies: Vec<Vec<String>> = self
            .call(|mut c| async move {
                match pipe.query_async(&mut c).await {
                    // EVALSHA of a script Redis does not know (first use, or Redis was
                    // restarted): load it and send the pipeline once more.
                    Err(e) if e.to_string().to_ascii_lowercase().contains("noscript") => {
                        script.load_async(&mut c).await?;
                        pipe.query_async(&mut c).await
                    }
                    other => other,
                }
            })
            .await?;
        replies.iter().map(|r| verdict(r)).collect()
    }

    /// Whether dispatch holds the driver (an outstanding offer, or a ride), from
    /// matching's driver lock.
    pub async fn engagement(&self, id: &EntryId) -> Result<Option<Status>, StoreError> {
        let key = geomatch_common::redis_keys::dispatch_driver(id.as_str());
        let (offer, ride): (Option<String>, Option<String>) = self
            .call(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("offer")
                    .arg("ride")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(match (offer, ride) {
            (_, Some(_)) => Some(Status::Busy),
            (Some(_), None) => Some(Status::Offered),
            (None, None) => None,
        })
    }

    /// Sets status and attributes; `Ok(false)` when the driver has no stored position.
    pub async fn set_status(
        &self,
        id: &EntryId,
        status: Status,
        attrs: Option<Attributes>,
    ) -> Result<bool, StoreError> {
        let shard = shard_of(id);
        let attrs = attrs.unwrap_or_default();
        let mut inv = self.status.prepare_invoke();
        inv.key(driver_key(id))
            .key(stream_key(shard))
            .arg(id.as_str())
            .arg(status_name(status))
            .arg(attrs.vehicle_class)
            .arg(attrs.seats)
            .arg(crate::ingest::now_ms())
            .arg(STREAM_MAXLEN);
        let reply: String = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(reply == "ok")
    }

    /// Marks drivers not seen since `cutoff_ms` offline, in every shard; returns the ones
    /// this call claimed, with their last-seen time.
    pub async fn sweep_expired(&self, cutoff_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let mut all = Vec::new();
        for shard in 0..SHARDS {
            loop {
                let mut inv = self.sweep.prepare_invoke();
                inv.key(seen_key(shard))
                    .key(stream_key(shard))
                    .arg(cutoff_ms)
                    .arg(SWEEP_BATCH)
                    .arg(STREAM_MAXLEN)
                    .arg(format!("gm:{{s{shard}}}:drv:"));
                let reply: Vec<String> = self
                    .call(|mut c| async move { inv.invoke_async(&mut c).await })
                    .await?;
                let claimed = reply.len() / 2;
                for pair in reply.chunks_exact(2) {
                    all.push((pair[0].clone(), pair[1].parse().unwrap_or(0)));
                }
                if claimed < SWEEP_BATCH as usize {
                    break;
                }
            }
        }
        Ok(all)
    }

    /// Forgets profiles last seen before `cutoff_ms` from the profiles' seen sets (their
    /// hashes expire by TTL); returns how many.
    pub async fn trim_profiles_seen(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let keys = KindKeys::of(Kind::Profile);
        let mut pipe = redis::pipe();
        for shard in 0..SHARDS {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(keys.seen(shard))
                .arg("-inf")
                .arg(format!("({cutoff_ms}"));
        }
        let removed: Vec<usize> = self
            .call(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        Ok(removed.iter().sum())
    }

    /// The stored state of a driver.
    pub async fn get(
        &self,
        id: &EntryId,
        classes: &[String],
    ) -> Result<Option<DriverView>, StoreError> {
        let key = driver_key(id);
        let fields: Vec<Option<String>> = self
            .call(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&[
                        "lat", "lng", "seq", "ts", "at", "status", "class", "seats", "expired",
                    ])
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let get = |i: usize| fields.get(i).cloned().flatten().filter(|v| !v.is_empty());
        let (Some(lat), Some(lng), Some(at)) = (get(0), get(1), get(4)) else {
            return Ok(None);
        };
        if get(8).is_some() {
            // Expired: kept only for ordering, not a driver any more.
            return Ok(None);
        }
        let num = |v: String| v.parse::<f64>().map_err(|_| StoreError::Reply(v));
        let (lat, lng) = (num(lat)?, num(lng)?);
        let position = geomatch_index::Position::new(lat, lng)
            .map_err(|e| StoreError::Reply(e.to_string()))?;
        let class = get(6).and_then(|c| c.parse::<usize>().ok()).unwrap_or(0);
        Ok(Some(DriverView {
            driver_id: id.to_string(),
            lat,
            lng,
            h3_cell: geomatch_index::cell_of(&position, geomatch_index::Resolution::Nine)
                .to_string(),
            status: status_from(&get(5).unwrap_or_default()),
            vehicle_class: classes.get(class).cloned().unwrap_or_default(),
            seats: get(7).and_then(|s| s.parse().ok()).unwrap_or(0),
            seq: get(2).and_then(|s| s.parse().ok()),
            ts_ms: get(3).and_then(|s| s.parse().ok()),
            updated_at_ms: at.parse().unwrap_or(0),
        }))
    }
}

fn verdict(reply: &[String]) -> Result<StoreVerdict, StoreError> {
    match reply.first().map(String::as_str) {
        Some("accepted") => Ok(StoreVerdict::Accepted),
        Some("stale") => Ok(StoreVerdict::Stale),
        Some("limited") => Ok(StoreVerdict::RateLimited {
            retry_after_ms: reply.get(1).and_then(|v| v.parse().ok()).unwrap_or(1000),
        }),
        Some("implausible") => Ok(StoreVerdict::Implausible {
            speed_kmh: reply
                .get(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN),
        }),
        _ => Err(StoreError::Reply(format!("{reply:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_driver_share_a_cluster_slot_tag() {
        let id = EntryId::parse("drv-42").unwrap();
        let s = shard_of(&id);
        assert!(driver_key(&id).starts_with(&format!("gm:{{s{s}}}:")));
        assert_eq!(shard_of(&id), s, "stable");
        let spread: std::collections::HashSet<u32> = (0..1000)
            .map(|i| shard_of(&EntryId::parse(&format!("d{i}")).unwrap()))
            .collect();
        assert_eq!(spread.len(), SHARDS as usize);
    }
}
