//! Embedded mode: the in-process index is the truth. The rate limit is a token bucket
//! per id in memory; ordering and plausibility run under the entry's lock
//! ([`Index::upsert_if`]), so the check and the move are one atomic step.

use std::sync::Arc;

use geomatch_common::config::IngestSettings;
use geomatch_index::{
    Attributes, Entry, EntryId, Filter, Index, IndexError, Kind, Previous, Status, Upserted,
};

use crate::model::{IngestError, Verdict};
use crate::ratelimit::{Limit, RateLimiter};
use crate::report::Report;

pub(crate) struct MemoryStore {
    index: Arc<Index>,
    limiter: RateLimiter<EntryId>,
    /// The plausibility limit, m/s.
    max_mps: f64,
}

impl MemoryStore {
    pub(crate) fn new(index: Arc<Index>, settings: &IngestSettings) -> Self {
        MemoryStore {
            index,
            limiter: RateLimiter::new(Limit {
                rate_per_s: settings.rate_per_s,
                burst: settings.burst,
            }),
            max_mps: settings.max_speed_kmh / 3.6,
        }
    }

    pub(crate) fn push_many(
        &self,
        kind: Kind,
        reports: &[(EntryId, Report)],
        now: i64,
    ) -> Result<Vec<Verdict>, IngestError> {
        reports
            .iter()
            .map(|(id, r)| match self.limiter.check(id, now) {
                Err(retry_after_ms) => Ok(Verdict::RateLimited { retry_after_ms }),
                Ok(()) => self.upsert(kind, id, r, now),
            })
            .collect()
    }

    /// Ordering and plausibility against the stored state, and the move, in one step.
    fn upsert(
        &self,
        kind: Kind,
        id: &EntryId,
        r: &Report,
        now: i64,
    ) -> Result<Verdict, IngestError> {
        let update = r.update(id, kind, now);
        let mut implied = 0.0;
        let upserted = self
            .index
            .upsert_if(&update, |prev| {
                implied = implied_speed_mps(prev, r, now);
                implied <= self.max_mps
            })
            // Only an out-of-range seq is refused here, and validation rules it out.
            .map_err(|e| IngestError::Unavailable(e.to_string()))?;
        Ok(match upserted {
            Upserted::Inserted => Verdict::Accepted { previous: None },
            Upserted::Moved { previous } => Verdict::Accepted {
                previous: Some(previous),
            },
            Upserted::Stale { .. } => Verdict::Stale,
            Upserted::Refused { .. } => Verdict::Implausible {
                speed_kmh: implied * 3.6,
            },
        })
    }

    pub(crate) fn set_status(
        &self,
        id: &EntryId,
        status: Status,
        attrs: Option<Attributes>,
    ) -> Result<Entry, IngestError> {
        // A driver holding an offer or on a ride is dispatch's to release, not its own: the
        // index status is dispatch's lock here.
        self.index
            .compare_and_set_status(id, &[Status::Offline, Status::Available], status, attrs)
            .map_err(|e| match e {
                IndexError::NotFound(_) => IngestError::LocationRequired(id.clone()),
                IndexError::StatusConflict { actual, .. } => IngestError::Engaged(actual),
                other => IngestError::Unavailable(other.to_string()),
            })
    }

    pub(crate) fn get(&self, id: &EntryId) -> Option<Entry> {
        self.index.get(id)
    }

    pub(crate) fn sweep_expired(&self, cutoff: i64, now: i64) -> Vec<(EntryId, i64)> {
        // Profiles go stale on people nearby's own, much longer clock.
        let gone = self
            .index
            .evict_older_than_where(cutoff, &Filter::any().kind(Kind::Driver))
            .into_iter()
            .map(|e| (e.id, e.updated_at_ms))
            .collect();
        self.limiter.sweep(now);
        gone
    }
}

/// Speed implied by moving from the stored state to this report: by device clocks when
/// both have one, else by server receive times; at least one second apart, so GPS jitter
/// between two close reports is never "fast".
fn implied_speed_mps(prev: &Previous, r: &Report, now: i64) -> f64 {
    let dt_s = (r.elapsed_ms(prev, now) as f64 / 1000.0).max(1.0);
    prev.position.distance_m(&r.position) / dt_s
}
