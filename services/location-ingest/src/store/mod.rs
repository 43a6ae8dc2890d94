//! The mode seam of location ingest: where accepted state lives, and the rules that must
//! run atomically with the write (rate limit, ordering, plausibility).
//!
//! - [`MemoryStore`] (embedded mode): the in-process index is the truth; a token bucket
//!   per id in memory; ordering and plausibility under the entry's lock (`upsert_if`).
//! - [`RedisStore`] (Redis mode): Redis is the truth, written by Lua scripts that apply
//!   the same rules for every replica at once; this process's index is a replica of it,
//!   updated with what Redis accepted (and by the follower with what others wrote).
//!
//! # The contract (both stores; `tests` in `contract.rs` run it against each)
//! - [`Store::push_many`]: one [`Verdict`] per report, in order; reports of one id are
//!   judged one after the other as if sent apart. Each report takes a rate-limit token
//!   (stale ones too), then is stale if older than the stored state (by seq when both
//!   have one, equal included; else by device time), then implausible if the move from
//!   the stored position implies more than `max_speed_kmh` (by device clocks when both
//!   have one, else server times; at least 1 s apart). Time is the `now` passed in.
//! - [`Store::set_status`]: needs a stored, live position ([`IngestError::LocationRequired`]).
//! - [`Store::get`]: a driver's live state, `None` when unknown or expired.
//! - [`Store::sweep_expired`]: drivers (never profiles) last updated before `cutoff` leave;
//!   each is claimed once (across replicas), a later report brings it back.
//! - Drivers and profiles never share state: the sweep and the profiles' trim each see
//!   one kind only.

use std::sync::Arc;

use geomatch_common::config::IngestSettings;
use geomatch_common::redis::Redis;
use geomatch_common::Deps;
use geomatch_index::{Attributes, Entry, EntryId, Index, Kind, Status};

use crate::metrics::IngestMetrics;
use crate::model::{IngestError, Verdict};
use crate::report::Report;

mod memory;
pub(crate) mod redis;

pub(crate) use self::memory::MemoryStore;
pub(crate) use self::redis::RedisStore;

/// Where ingest writes; chosen once by the mode. Every method is one atomic step per
/// report or driver (see the module's contract).
pub(crate) enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    /// The store of the process's mode: Redis's when `deps.redis` is set, else memory.
    pub(crate) fn new(deps: &Deps, metrics: IngestMetrics) -> Store {
        Self::of(
            deps.redis.clone(),
            deps.index.clone(),
            &deps.settings.ingest,
            metrics,
        )
    }

    /// A store over `index`, in Redis when `redis` is given.
    pub(crate) fn of(
        redis: Option<Redis>,
        index: Arc<Index>,
        settings: &IngestSettings,
        metrics: IngestMetrics,
    ) -> Store {
        match redis {
            None => Store::Memory(MemoryStore::new(index, settings)),
            Some(redis) => Store::Redis(RedisStore::new(redis, index, settings, metrics)),
        }
    }

    /// What this store's `locations` events carry as `by` (Redis mode): this process's
    /// follower skips them, its index already has them.
    pub(crate) fn writer(&self) -> Option<&str> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(s) => Some(s.writer()),
        }
    }

    /// Judges and stores valid reports of `kind` received at `now`: one verdict per report,
    /// in order. `Err` only when the store could not be asked (Redis unreachable): then
    /// none of them was stored.
    pub(crate) async fn push_many(
        &self,
        kind: Kind,
        reports: &[(EntryId, Report)],
        now: i64,
    ) -> Result<Vec<Verdict>, IngestError> {
        match self {
            Store::Memory(s) => s.push_many(kind, reports, now),
            Store::Redis(s) => s.push_many(kind, reports, now).await,
        }
    }

    /// Sets a driver's status and attributes (`None` keeps them); the driver's state after.
    /// [`IngestError::LocationRequired`] when it has no live position. The memory store also
    /// refuses a driver dispatch holds ([`IngestError::Engaged`]): there the index status is
    /// dispatch's lock; in Redis mode the lock is dispatch's own (the `Engagement` port).
    pub(crate) async fn set_status(
        &self,
        id: &EntryId,
        status: Status,
        attrs: Option<Attributes>,
        now: i64,
    ) -> Result<Entry, IngestError> {
        match self {
            Store::Memory(s) => s.set_status(id, status, attrs),
            Store::Redis(s) => s.set_status(id, status, attrs, now).await,
        }
    }

    /// A driver's live state; `None` when unknown or expired.
    pub(crate) async fn get(&self, id: &EntryId) -> Result<Option<Entry>, IngestError> {
        match self {
            Store::Memory(s) => Ok(s.get(id)),
            Store::Redis(s) => s.get(id).await,
        }
    }

    /// Takes drivers last updated before `cutoff` offline and out of the index; returns the
    /// ones this call claimed (each exactly once across replicas) with their last update.
    /// Also forgets what is kept per driver and no longer needed at `now` (idle rate-limit
    /// buckets; in Redis, states expired for long).
    pub(crate) async fn sweep_expired(
        &self,
        cutoff: i64,
        now: i64,
    ) -> Result<Vec<(EntryId, i64)>, IngestError> {
        match self {
            Store::Memory(s) => Ok(s.sweep_expired(cutoff, now)),
            Store::Redis(s) => s.sweep_expired(cutoff, now).await,
        }
    }

    /// Redis mode: takes profiles last seen before `cutoff` out of the shared live set,
    /// announced so that every replica's index lets them go; returns how many. Memory: 0,
    /// nothing to do (the index is the only place, and people nearby evicts its profiles).
    pub(crate) async fn trim_profiles_seen(
        &self,
        cutoff: i64,
        now: i64,
    ) -> Result<usize, IngestError> {
        match self {
            Store::Memory(_) => Ok(0),
            Store::Redis(s) => s.trim_profiles_seen(cutoff, now).await,
        }
    }
}

#[cfg(test)]
mod contract;
