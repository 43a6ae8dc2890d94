//! Redis mode: keeps this process's index replica current from the shared state, so that
//! every replica of every service (matching, eta-pricing, other ingest replicas) answers
//! from the same drivers. On start a snapshot (every shard's state hash), then the location
//! streams tailed from where the snapshot began; events already applied are dropped by the
//! index's own ordering (seq, then device time). Lag is exported as a gauge.
//!
//! Stream events (field `type`): `locations` (a batch of accepted reports, packed: see
//! `PackedLocation` in [`crate::store::redis`]), `location` (one report, as written
//! before reports were packed), `status` and `offline`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_redis::Pool;
use geomatch_common::{Clock, Deps};
use geomatch_index::{Attributes, EntryId, Index, Kind, Position, Update};
use prometheus::{IntCounter, IntGauge};
use redis::streams::StreamReadReply;

use crate::store::redis::{status_from, unpack_locations, KindKeys, StoredDriver, KINDS, SHARDS};

/// Entries read per stream per call.
const READ_COUNT: usize = 1_000;
/// How long one XREAD waits for news (below the pool's call ceiling).
const BLOCK_MS: usize = 500;

/// Metrics of the replica.
#[derive(Clone)]
struct FollowerMetrics {
    /// Server time now minus server time of the last applied event, ms.
    lag_ms: IntGauge,
    events: IntCounter,
}

impl FollowerMetrics {
    fn new(metrics: &geomatch_common::Metrics) -> Result<Self, prometheus::Error> {
        let m = FollowerMetrics {
            lag_ms: IntGauge::new(
                "replica_lag_ms",
                "Age of the last location event applied to this process's index",
            )?,
            events: IntCounter::new(
                "replica_events_total",
                "Location stream events applied to this process's index",
            )?,
        };
        metrics.register(m.lag_ms.clone())?;
        metrics.register(m.events.clone())?;
        Ok(m)
    }
}

pub(crate) struct Follower {
    pool: Pool,
    index: Arc<Index>,
    metrics: FollowerMetrics,
    /// Where the lag is measured from.
    clock: Clock,
    /// `locations` events this process wrote itself: already in its index.
    own_writer: Option<String>,
}

fn field<'a>(m: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    m.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

impl Follower {
    /// Redis mode: the follower of this process's index, skipping the `locations` events
    /// of `own_writer` (this process's store, which applies what Redis accepted to the
    /// index itself). `None` in embedded mode: there is nothing to follow.
    pub(crate) fn of(deps: &Deps, own_writer: Option<&str>) -> anyhow::Result<Option<Self>> {
        let Some(redis) = &deps.redis else {
            return Ok(None);
        };
        Ok(Some(Follower {
            pool: redis.pool().clone(),
            index: deps.index.clone(),
            metrics: FollowerMetrics::new(&deps.metrics).context("registering replica metrics")?,
            clock: deps.clock.clone(),
            own_writer: own_writer.map(str::to_owned),
        }))
    }

    /// Snapshot, then tail forever; reconnects (with a fresh snapshot) after errors.
    pub(crate) async fn run(self) {
        loop {
            if let Err(e) = self.follow().await {
                tracing::warn!(error = %e, "replica follower failed; restarting in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn follow(&self) -> redis::RedisResult<()> {
        let mut conn =
            self.pool.get().await.map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Io, "pool", e.to_string()))
            })?;
        // Where each stream ends now: everything after it is tailed, everything before
        // is in the snapshot.
        // Every kind's stream of every shard; an event's kind is its stream's.
        let streams: Vec<(Kind, String)> = KINDS
            .iter()
            .flat_map(|k| (0..SHARDS).map(move |shard| (k.kind, k.stream(shard))))
            .collect();
        let mut ids = Vec::with_capacity(streams.len());
        for (_, key) in &streams {
            let last: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
                .arg(key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut *conn)
                .await?;
            ids.push(
                last.first()
                    .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone()),
            );
        }
        let loaded = self.snapshot(&mut conn).await?;
        tracing::info!(
            drivers = loaded,
            "replica snapshot loaded; tailing the location streams"
        );
        let keys: Vec<String> = streams.iter().map(|(_, k)| k.clone()).collect();
        loop {
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(&keys)
                .arg(&ids)
                .query_async(&mut *conn)
                .await?;
            let Some(reply) = reply else { continue };
            for stream in reply.keys {
                let Some(at) = keys.iter().position(|k| *k == stream.key) else {
                    continue;
                };
                let kind = streams[at].0;
                for event in stream.ids {
                    let map: HashMap<String, String> = event
                        .map
                        .iter()
                        .filter_map(|(k, v)| {
                            redis::from_redis_value_ref::<String>(v)
                                .ok()
                                .map(|v| (k.clone(), v))
                        })
                        .collect();
                    self.apply(kind, &map);
                    ids[at] = event.id;
                }
            }
        }
    }

    async fn snapshot(&self, conn: &mut deadpool_redis::Connection) -> redis::RedisResult<usize> {
        let mut loaded = 0;
        for (kind, key) in KINDS
            .iter()
            .flat_map(|k: &KindKeys| (0..SHARDS).map(move |shard| (k.kind, k.state(shard))))
        {
            let mut cursor: u64 = 0;
            loop {
                let (next, flat): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
                    .arg(&key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut **conn)
                    .await?;
                for pair in flat.chunks_exact(2) {
                    let id = std::str::from_utf8(&pair[0])
                        .ok()
                        .and_then(|i| EntryId::parse(i).ok());
                    let (Some(id), Ok(d)) = (id, StoredDriver::decode(&pair[1])) else {
                        continue;
                    };
                    if d.expired {
                        continue;
                    }
                    let update = Update {
                        seq: d.seq,
                        device_ts_ms: d.device_ts_ms,
                        ..Update::moved(id.clone(), kind, d.position, d.updated_at_ms)
                    };
                    if self.index.upsert(&update).is_ok() {
                        loaded += 1;
                        let _ = self.index.set_status(&id, d.status, Some(d.attrs));
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(loaded)
    }

    /// Applies one event (or snapshot row); returns how many drivers it was understood
    /// for (a `locations` event carries many).
    fn apply(&self, kind: Kind, m: &HashMap<String, String>) -> usize {
        let now = self.clock.now();
        let at: i64 = field(m, "at").and_then(|v| v.parse().ok()).unwrap_or(now);
        self.metrics.lag_ms.set((now - at).max(0));
        let applied = match field(m, "type") {
            Some("locations")
                if self.own_writer.is_some() && self.own_writer.as_deref() == field(m, "by") =>
            {
                0
            }
            Some("locations") => unpack_locations(field(m, "items").unwrap_or(""))
                .flatten()
                .filter(|l| {
                    let update = Update {
                        seq: l.seq,
                        device_ts_ms: l.device_ts_ms,
                        ..Update::moved(l.id.clone(), kind, l.position, at)
                    };
                    self.index.upsert(&update).is_ok()
                })
                .count(),
            event => {
                let Some(id) = field(m, "id").and_then(|i| EntryId::parse(i).ok()) else {
                    return 0;
                };
                usize::from(self.apply_one(kind, event, id, m, at))
            }
        };
        self.metrics.events.inc_by(applied as u64);
        applied
    }

    /// Applies a one-driver event: `location`, `status` or `offline`.
    fn apply_one(
        &self,
        kind: Kind,
        event: Option<&str>,
        id: EntryId,
        m: &HashMap<String, String>,
        at: i64,
    ) -> bool {
        match event {
            Some("location") => {
                let pos = field(m, "lat")
                    .zip(field(m, "lng"))
                    .and_then(|(a, o)| Some((a.parse().ok()?, o.parse().ok()?)))
                    .and_then(|(a, o)| Position::new(a, o).ok());
                let Some(position) = pos else { return false };
                let update = Update {
                    seq: field(m, "seq").and_then(|v| v.parse().ok()),
                    device_ts_ms: field(m, "ts").and_then(|v| v.parse().ok()),
                    ..Update::moved(id, kind, position, at)
                };
                self.index.upsert(&update).is_ok()
            }
            Some("status") => {
                let attrs = Attributes {
                    vehicle_class: field(m, "class").and_then(|v| v.parse().ok()).unwrap_or(0),
                    seats: field(m, "seats").and_then(|v| v.parse().ok()).unwrap_or(0),
                };
                let status = status_from(field(m, "status").unwrap_or("offline"));
                self.index.set_status(&id, status, Some(attrs)).is_ok()
            }
            Some("offline") => {
                self.index.remove(&id);
                true
            }
            _ => false,
        }
    }
}
