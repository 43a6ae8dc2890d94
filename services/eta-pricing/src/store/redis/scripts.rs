//! The Redis keys and Lua scripts of eta-pricing, one method per call. What they mean
//! for a replica is [`super::RedisStore`]'s business.
//!
//! # Keys
//! Every multi-key script touches keys of one hash tag (one Redis Cluster slot).
//! - Demand, spread over [`SHARDS`] tags by resolution-7 cell (`N` = [`shard_of`]):
//!   - `gm:{pN}:dem:<bucket>`: hash cell → demand events in that time bucket (a tenth of
//!     `pricing.surge.demand_window_s` / 3, see [`crate::surge::Window`]); expires with the
//!     window. Every replica's quotes and ride requests land here, so whoever computes a
//!     round sees all demand.
//!   - `gm:{pN}:qm:<cell>:<rider>`: a rider's counted quote in a cell, `PX` the window:
//!     quotes count once per rider, cell and window across replicas ([`LUA_QUOTE`]).
//! - Surge, one tag:
//!   - `gm:{surge}:round`: the last round claimed. A round is `now / interval`; the first
//!     replica whose tick finds a round unclaimed claims it ([`LUA_CLAIM`]) and computes it.
//!   - `gm:{surge}:snap`: hash `ver` (incremented per publication) and `round` (the
//!     round's JSON: per-cell published multiplier and smoothed value, demand, supply).
//!     Published only while the round is still the last claimed ([`LUA_PUBLISH`]). Every
//!     replica polls `ver` and loads the round when it changed.
//! - Learned speeds, [`SHARDS`] tags by cell (`N`):
//!   - `gm:{spN}:spd`: hash `<cell>:<hour>` → `"D T n"`, the shared exponentially
//!     weighted sums of a slot (hour 168: all hours).
//!   - `gm:{spN}:spd:ver`: a counter; `gm:{spN}:spd:chg`: zset slot → counter value of its
//!     last change. Replicas flush batches of their own samples ([`LUA_SPEEDS`] merges
//!     them exactly as [`geomatch_eta::Slot::merge`]) and read back what changed since the
//!     counter value they last saw.

use geomatch_common::redis::{call, Redis, RedisError};
use geomatch_eta::Slot;
use geomatch_index::CellIndex;
use redis::Script;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::metrics::PricingMetrics;

/// Hash tags demand and speeds are spread over. Fixed: changing it re-homes the data.
pub const SHARDS: usize = 16;
/// Slots per speed flush script call: small enough that one reader page (below) always
/// holds at least one whole call, and that one call (about 7 µs of Redis per slot) never
/// holds Redis up for long. The calls go one at a time, not as one pipeline: Redis runs
/// a client's pipelined commands back to back, and a flush of thousands of slots in one
/// pipeline stalled every other client (ride requests) for tens of milliseconds.
const FLUSH_CHUNK: usize = 32;
/// Changed slots read per shard per call (one call at a time, as above).
const PULL_PAGE: usize = 256;

const LUA_QUOTE: &str = r#"
-- KEYS: rider mark, demand bucket; ARGV: window_ms, cell, bucket ttl_ms
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
"#;

const LUA_CLAIM: &str = r#"
-- KEYS: round; ARGV: round. 1 when this caller claimed it.
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if last >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#;

const LUA_PUBLISH: &str = r#"
-- KEYS: round, snap; ARGV: round, json. The new version, or 0 when a later round was
-- claimed meanwhile (this one is dropped).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local v = redis.call('HINCRBY', KEYS[2], 'ver', 1)
redis.call('HSET', KEYS[2], 'round', ARGV[2])
return v
"#;

const LUA_PULL: &str = r#"
-- KEYS: changes zset, speeds hash; ARGV: after (exclusive counter value), limit
-- The next page of changed slots: {slot, counter, ...} and their values.
local page = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES',
  'LIMIT', 0, tonumber(ARGV[2]))
if #page == 0 then return {{}, {}} end
local fields = {}
for i = 1, #page, 2 do fields[#fields + 1] = page[i] end
return {page, redis.call('HMGET', KEYS[2], unpack(fields))}
"#;

const LUA_SPEEDS: &str = r#"
-- KEYS: speeds hash, version counter, changes zset
-- ARGV: alpha, max slots in this hash, then (slot, distance, time, samples) per slot
local alpha, maxf = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('INCR', KEYS[2])
local held = redis.call('HLEN', KEYS[1])
for i = 3, #ARGV, 4 do
  local f = ARGV[i]
  local bd, bt, bk = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local cur = redis.call('HGET', KEYS[1], f)
  local d, t, k = 0, 0, 0
  if cur then
    local a, b, c = string.match(cur, '(%S+) (%S+) (%S+)')
    d, t, k = tonumber(a), tonumber(b), tonumber(c)
  end
  if cur or held < maxf then
    if not cur then held = held + 1 end
    local keep = (1 - alpha) ^ bk
    d = keep * d + bd
    t = keep * t + bt
    k = math.min(k + bk, 4294967295)
    redis.call('HSET', KEYS[1], f, string.format('%.17g %.17g %d', d, t, k))
    redis.call('ZADD', KEYS[3], v, f)
  end
end
return v
"#;

/// Spreads cells over the shards (Fibonacci hashing of the cell index: stable across
/// processes and versions).
pub fn shard_of(cell: CellIndex) -> usize {
    (u64::from(cell).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
}

pub fn demand_key(shard: usize, bucket: i64) -> String {
    format!("gm:{{p{shard}}}:dem:{bucket}")
}

pub fn quote_mark_key(cell: CellIndex, rider: &str) -> String {
    format!("gm:{{p{}}}:qm:{cell}:{rider}", shard_of(cell))
}

pub const ROUND_KEY: &str = "gm:{surge}:round";
pub const SNAP_KEY: &str = "gm:{surge}:snap";

pub fn speeds_key(shard: usize) -> String {
    format!("gm:{{sp{shard}}}:spd")
}

fn speeds_version_key(shard: usize) -> String {
    format!("gm:{{sp{shard}}}:spd:ver")
}

fn speeds_changes_key(shard: usize) -> String {
    format!("gm:{{sp{shard}}}:spd:chg")
}

/// One computed surge round, as published to every replica.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SharedRound {
    pub round: i64,
    pub computed_at_ms: i64,
    /// (cell, published hundredths, time-smoothed multiplier) of every cell not calm.
    pub cells: Vec<(u64, u16, f64)>,
    pub demand: Vec<(u64, u32)>,
    pub supply: Vec<(u64, u32)>,
}

/// eta-pricing's calls to Redis, on the process's Redis handle.
pub struct Scripts {
    redis: Redis,
    quote: Script,
    claim: Script,
    publish: Script,
    speeds: Script,
    pull: Script,
    metrics: PricingMetrics,
}

fn slot_field(cell: CellIndex, hour: u8) -> String {
    format!("{cell}:{hour}")
}

fn parse_field(field: &str) -> Option<(CellIndex, u8)> {
    let (cell, hour) = field.split_once(':')?;
    Some((cell.parse().ok()?, hour.parse().ok()?))
}

fn parse_slot(value: &str) -> Option<Slot> {
    let mut it = value.split(' ');
    let slot = Slot {
        distance: it.next()?.parse().ok()?,
        time: it.next()?.parse().ok()?,
        samples: it.next()?.parse().ok()?,
    };
    (slot.distance.is_finite() && slot.time.is_finite()).then_some(slot)
}

impl Scripts {
    pub fn new(redis: Redis, metrics: PricingMetrics) -> Self {
        Scripts {
            redis,
            quote: Script::new(LUA_QUOTE),
            claim: Script::new(LUA_CLAIM),
            publish: Script::new(LUA_PUBLISH),
            speeds: Script::new(LUA_SPEEDS),
            pull: Script::new(LUA_PULL),
            metrics,
        }
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (result, took) = call(&self.redis, f).await;
        self.metrics.redis_seconds.observe(took.as_secs_f64());
        if result.is_err() {
            self.metrics.redis_errors.inc();
        }
        result
    }

    /// A quote by `rider` in `cell` at time `bucket`: counted unless the rider's last
    /// counted quote in the cell is still within the window (across all replicas).
    pub async fn record_quote(
        &self,
        rider: &str,
        cell: CellIndex,
        bucket: i64,
        window_ms: i64,
        bucket_ms: i64,
    ) -> Result<bool, RedisError> {
        let mut inv = self.quote.prepare_invoke();
        inv.key(quote_mark_key(cell, rider))
            .key(demand_key(shard_of(cell), bucket))
            .arg(window_ms)
            .arg(cell.to_string())
            .arg(window_ms + bucket_ms);
        let counted: i64 = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(counted == 1)
    }

    /// Adds demand events (ride requests): `(cell, bucket) → count`.
    pub async fn add_demand(
        &self,
        events: &FxHashMap<(CellIndex, i64), u32>,
        ttl_ms: i64,
    ) -> Result<(), RedisError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for ((cell, bucket), n) in events {
            let key = demand_key(shard_of(*cell), *bucket);
            pipe.hincr(&key, cell.to_string(), *n)
                .ignore()
                .pexpire(&key, ttl_ms)
                .ignore();
        }
        self.call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    /// Demand per cell in `buckets` (every shard).
    pub async fn demand(&self, buckets: &[i64]) -> Result<FxHashMap<CellIndex, u32>, RedisError> {
        let mut pipe = redis::pipe();
        for shard in 0..SHARDS {
            for b in buckets {
                pipe.hgetall(demand_key(shard, *b));
            }
        }
        let replies: Vec<Vec<(String, u32)>> = self
            .call(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        let mut out = FxHashMap::default();
        for (cell, n) in replies.into_iter().flatten() {
            if let Ok(cell) = cell.parse::<CellIndex>() {
                let e = out.entry(cell).or_insert(0u32);
                *e = e.saturating_add(n);
            }
        }
        Ok(out)
    }

    /// Claims surge round `round` for this replica; `false` when it was already claimed.
    pub async fn claim_round(&self, round: i64) -> Result<bool, RedisError> {
        let mut inv = self.claim.prepare_invoke();
        inv.key(ROUND_KEY).arg(round);
        let claimed: i64 = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(claimed == 1)
    }

    /// Publishes a claimed round; `None` when a later round was claimed meanwhile.
    pub async fn publish_round(&self, round: &SharedRound) -> Result<Option<i64>, RedisError> {
        let json = serde_json::to_string(round).map_err(|e| RedisError::Reply(e.to_string()))?;
        let mut inv = self.publish.prepare_invoke();
        inv.key(ROUND_KEY).key(SNAP_KEY).arg(round.round).arg(json);
        let v: i64 = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok((v > 0).then_some(v))
    }

    /// The version of the published round (0 before the first).
    pub async fn round_version(&self) -> Result<i64, RedisError> {
        let v: Option<i64> = self
            .call(|mut c| async move {
                redis::cmd("HGET")
                    .arg(SNAP_KEY)
                    .arg("ver")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// The published round and its version.
    pub async fn load_round(&self) -> Result<Option<(i64, SharedRound)>, RedisError> {
        let (ver, json): (Option<i64>, Option<String>) = self
            .call(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(SNAP_KEY)
                    .arg("ver")
                    .arg("round")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let (Some(ver), Some(json)) = (ver, json) else {
            return Ok(None);
        };
        let round = serde_json::from_str(&json).map_err(|e| RedisError::Reply(e.to_string()))?;
        Ok(Some((ver, round)))
    }

    /// Merges a replica's batch of speed samples into the shared slots (at most
    /// `max_slots` slots in all; new ones beyond it are dropped).
    pub async fn flush_speeds(
        &self,
        batch: Vec<(CellIndex, u8, Slot)>,
        alpha: f64,
        max_slots: usize,
    ) -> Result<(), RedisError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut by_shard: Vec<Vec<(CellIndex, u8, Slot)>> = vec![Vec::new(); SHARDS];
        for s in batch {
            by_shard[shard_of(s.0)].push(s);
        }
        let per_shard = max_slots.div_ceil(SHARDS);
        for (shard, slots) in by_shard.iter().enumerate() {
            for chunk in slots.chunks(FLUSH_CHUNK) {
                let mut inv = self.speeds.prepare_invoke();
                inv.key(speeds_key(shard))
                    .key(speeds_version_key(shard))
                    .key(speeds_changes_key(shard))
                    .arg(alpha)
                    .arg(per_shard);
                for (cell, hour, slot) in chunk {
                    inv.arg(slot_field(*cell, *hour))
                        .arg(slot.distance)
                        .arg(slot.time)
                        .arg(slot.samples);
                }
                self.call(|mut c| async move { inv.invoke_async::<i64>(&mut c).await })
                    .await?;
            }
        }
        Ok(())
    }

    /// The shared slots changed since `seen[shard]` (a counter value per shard), updating
    /// `seen`. Call until it returns `false` for "more pages may follow".
    pub async fn changed_speeds(
        &self,
        seen: &mut [i64; SHARDS],
        out: &mut Vec<(CellIndex, u8, Slot)>,
    ) -> Result<bool, RedisError> {
        let mut more = false;
        for (shard, last) in seen.iter_mut().enumerate() {
            let mut inv = self.pull.prepare_invoke();
            inv.key(speeds_changes_key(shard))
                .key(speeds_key(shard))
                .arg(*last)
                .arg(PULL_PAGE);
            let (page, values): (Vec<(String, i64)>, Vec<Option<String>>) = self
                .call(|mut c| async move { inv.invoke_async(&mut c).await })
                .await?;
            for ((field, _), val) in page.iter().zip(values) {
                if let (Some((cell, hour)), Some(slot)) =
                    (parse_field(field), val.as_deref().and_then(parse_slot))
                {
                    out.push((cell, hour, slot));
                }
            }
            let top = page.iter().map(|(_, v)| *v).max().unwrap_or(*last);
            if page.len() == PULL_PAGE {
                // The page may end inside one flush call's slots: read that call's again.
                // A call holds at most FLUSH_CHUNK < PULL_PAGE slots, so this progresses.
                *last = (*last).max(top - 1);
                more = true;
            } else {
                *last = (*last).max(top);
            }
        }
        Ok(more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geomatch_index::{cell_of, Position, Resolution};

    #[test]
    fn keys_of_one_script_share_a_cluster_hash_tag() {
        let cell = cell_of(&Position::new(37.5, 127.0).unwrap(), Resolution::Seven);
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        let s = shard_of(cell);
        assert_eq!(
            tag(&quote_mark_key(cell, "u1")),
            tag(&demand_key(s, 123)),
            "the quote script's two keys"
        );
        assert_eq!(tag(ROUND_KEY), tag(SNAP_KEY), "claim and publish");
        assert_eq!(tag(&speeds_key(3)), tag(&speeds_version_key(3)));
        assert_eq!(tag(&speeds_key(3)), tag(&speeds_changes_key(3)));
        let spread: std::collections::HashSet<usize> = cell
            .grid_disk::<Vec<_>>(10)
            .into_iter()
            .map(shard_of)
            .collect();
        assert_eq!(
            spread.len(),
            SHARDS,
            "neighbouring cells spread over the shards"
        );
    }

    #[test]
    fn slot_fields_and_values_round_trip() {
        let cell = cell_of(&Position::new(-33.9, 151.2).unwrap(), Resolution::Seven);
        assert_eq!(parse_field(&slot_field(cell, 168)), Some((cell, 168)));
        assert_eq!(parse_field("nonsense"), None);
        let slot = Slot {
            distance: 12.345_678_901_234_567,
            time: 0.1,
            samples: 7,
        };
        // What the flush script writes (`%.17g`) reads back exactly.
        let written = format!("{:.17e} {:.17e} {}", slot.distance, slot.time, slot.samples);
        assert_eq!(parse_slot(&written), Some(slot));
        assert_eq!(parse_slot("1 2"), None);
        assert_eq!(parse_slot("nan 1 1"), None);
    }
}
