//! Where people nearby keeps its state: the one mode seam of people nearby. The core
//! ([`crate::people::People`]) validates and maps answers; every difference between
//! embedded and Redis mode is a method of [`PeopleStore`].
//!
//! - [`memory`]: [`MemoryStore`], one lock in this process (embedded mode).
//! - [`redis`]: [`RedisStore`], keys in Redis shared by every replica (Redis mode); its
//!   module doc explains the keys, the Cluster choice and why a swipe is three steps.

use std::sync::Arc;

use geomatch_common::redis::Redis;
use geomatch_index::{EntryId, Index, PageKey};

use super::error::PeopleError;
use super::model::{Action, Ctx, Liked, Limits, Matched, RecommendationsPage, SwipeVerdict};
use super::profile::Profile;

mod memory;
mod redis;

#[cfg(test)]
mod contract;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;

/// People nearby's state: profiles, swipes, matches, blocks and daily counters.
///
/// The contract (both stores keep it; `contract.rs` runs the same cases against each):
/// - **Profiles**: `put_profile` stores a validated profile and keeps its premium flag;
///   `set_premium` changes only an existing profile (`None` otherwise).
/// - **Swipes**: one swipe per (swiper, target), ever (`Already` after). A blocked pair
///   (either way) answers `Hidden` and records nothing. Likes and superlikes each have a
///   budget per UTC day of `now` (`Limited`, nothing recorded); passes have none.
/// - **Matches**: a like or superlike answering the other's like or superlike creates
///   exactly one match (`Matched`, for that swipe only; timed `now`), however the two
///   likes race. `unmatch` ends it for both (false when there was none); a block ends it.
/// - **Likes received**: a like or superlike waiting for an answer counts in
///   `likes_count` and is listed by `likes` (newest first); answering it (any swipe),
///   matching or a block takes it off.
/// - **Recommendations**: `recommend` pages through the index's profiles nearest first,
///   then by id, strictly after `after`, leaving out oneself, anyone the viewer swiped,
///   blocked either way, not seen since `ctx.fresh_since_ms`, and anyone for whom both
///   sides' preferences do not hold. At most `ctx.limit`; a cursor unless the candidates
///   ran out. `ProfileRequired` / `LocationRequired` when the viewer has no profile / no
///   location (in that order).
///
/// Time comes in as `now_ms`: no store reads a clock. The Redis store answers
/// `PeopleError::Unavailable` when Redis fails; the memory store never fails otherwise.
/// Static dispatch: the embedded path awaits nothing.
pub enum PeopleStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

/// The store of a process's mode: Redis when it has a Redis handle, memory otherwise.
pub fn for_mode(redis: Option<Redis>) -> PeopleStore {
    match redis {
        None => PeopleStore::Memory(MemoryStore::default()),
        Some(redis) => PeopleStore::Redis(RedisStore::new(redis)),
    }
}

impl PeopleStore {
    /// Stores `profile` under `id`, keeping the premium flag it had; returns what is stored.
    pub(super) async fn put_profile(
        &self,
        id: &EntryId,
        profile: Profile,
    ) -> Result<Profile, PeopleError> {
        match self {
            PeopleStore::Memory(m) => Ok(m.put_profile(id, profile)),
            PeopleStore::Redis(r) => r.put_profile(id, &profile).await,
        }
    }

    pub(super) async fn profile(&self, id: &EntryId) -> Result<Option<Arc<Profile>>, PeopleError> {
        match self {
            PeopleStore::Memory(m) => Ok(m.profile(id)),
            PeopleStore::Redis(r) => Ok(r.profile(id).await?.map(Arc::new)),
        }
    }

    /// Sets the premium flag of an existing profile; `None` when there is no profile.
    pub(super) async fn set_premium(
        &self,
        id: &EntryId,
        premium: bool,
    ) -> Result<Option<Profile>, PeopleError> {
        match self {
            PeopleStore::Memory(m) => Ok(m.set_premium(id, premium)),
            PeopleStore::Redis(r) => r.set_premium(id, premium).await,
        }
    }

    /// A page of recommendations for `me` from `index` (see the type's contract). Memory:
    /// one `nearest_page` screening every candidate under the store's read lock. Redis:
    /// rounds of index candidates, each screened in one pipeline.
    pub(super) async fn recommend(
        &self,
        index: &Index,
        me: &EntryId,
        after: Option<PageKey>,
        ctx: &Ctx,
    ) -> Result<RecommendationsPage, PeopleError> {
        match self {
            PeopleStore::Memory(m) => m.recommend(index, me, after, ctx),
            PeopleStore::Redis(r) => r.recommend(index, me, after, ctx).await,
        }
    }

    /// `me` swipes `target` at `now_ms` under the daily `limits` (both profiles exist:
    /// the caller checked).
    pub(super) async fn swipe(
        &self,
        me: &EntryId,
        target: &EntryId,
        action: Action,
        now_ms: i64,
        limits: Limits,
    ) -> Result<SwipeVerdict, PeopleError> {
        match self {
            PeopleStore::Memory(m) => Ok(m.swipe(me, target, action, now_ms, limits)),
            PeopleStore::Redis(r) => r.swipe(me, target, action, now_ms, limits).await,
        }
    }

    /// `me`'s matches, newest first, at most `max`.
    pub(super) async fn matches(
        &self,
        me: &EntryId,
        max: usize,
    ) -> Result<Vec<Matched>, PeopleError> {
        match self {
            PeopleStore::Memory(m) => Ok(m.matches(me, max)),
            PeopleStore::Redis(r) => r.matches(me, max).await,
        }
    }

    /// Ends the match of `me` and `other` for both; false when there was none.
    pub(super) async fn unmatch(&self, me: &EntryId, other: &EntryId) -> Result<bool, PeopleError> {
        match self {
            PeopleStore::Memory(m) => Ok(m.unmatch(me, other)),
            PeopleStore::Redis(r) => r.unmatch(me, other).await,
        }
    }

    /// Hides the two from each other for good: no swipe or recommendation either way, no
    /// match, no pending like.
    pub(super) async fn block(&self, me: &EntryId, other: &EntryId) -> Result<(), PeopleError> {
        match self {
            PeopleStore::Memory(m) => {
                m.block(me, other);
                Ok(())
            }
            PeopleStore::Redis(r) => r.block(me, other).await,
        }
    }

    /// How many likes `me` received and has not answered.
    pub(super) async fn likes_count(&self, me: &EntryId) -> Result<usize, PeopleError> {
        match self {
            PeopleStore::Memory(m) => Ok(m.likes_count(me)),
            PeopleStore::Redis(r) => r.likes_count(me).await,
        }
    }

    /// The likes `me` received and has not answered, newest first, at most `max`.
    pub(super) async fn likes(&self, me: &EntryId, max: usize) -> Result<Vec<Liked>, PeopleError> {
        match self {
            PeopleStore::Memory(m) => Ok(m.likes(me, max)),
            PeopleStore::Redis(r) => r.likes(me, max).await,
        }
    }
}
