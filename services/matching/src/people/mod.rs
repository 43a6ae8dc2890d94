//! People nearby: profiles near each other who might like each other. Recommendations come
//! from the shared index (entries of kind `profile`, whose locations location-ingest
//! receives under the same rules as drivers'); swipes, matches, blocks and daily counters
//! live in a [`PeopleStore`]: this process's memory (embedded mode) or Redis (Redis mode).
//!
//! # Layout
//! - [`build`] (this file): the front door, routes + OpenAPI + the stale-profile eviction.
//! - [`People`] (this file): the transport-free operations; it never names a store variant.
//! - `store/`: [`PeopleStore`], the mode seam, with its contract on the type; `memory.rs`,
//!   `redis.rs` (its keys and why a swipe is three single-slot steps), `contract.rs` (the
//!   same cases against both stores).
//! - `model.rs`: actions, verdicts, limits, request and answer bodies; `profile.rs`: the
//!   profile body, its validation, what others see (`Card`) and the packed preferences
//!   tested both ways for every candidate.
//! - `cursor.rs`: the opaque recommendations cursor; `date.rs`: birth dates, ages, UTC days.
//! - `routes.rs` (thin HTTP, the route table), `openapi.rs`, `error.rs`.
//!
//! Authentication: a profile is a person's user account. Its token has role `rider` and
//! the profile id as subject; service and admin tokens may act on any profile. Profile ids
//! share one namespace with driver ids in the index.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use geomatch_common::service::every;
use geomatch_common::{Clock, Deps, Part, PeopleSettings};
use geomatch_index::{EntryId, Filter, Index, Kind};

mod cursor;
mod date;
mod error;
mod model;
mod openapi;
mod profile;
mod routes;
mod store;

use date::ymd_of;
use error::PeopleError;
use model::{
    BlockBody, Ctx, LikeView, LikesAnswer, LikesCount, Limits, MatchView, MatchesAnswer,
    RecommendationsPage, SwipeAnswer, SwipeBody, SwipeVerdict,
};
use profile::{OwnView, ProfileBody};

pub use model::Action;
pub use profile::{Gender, Profile};
pub use store::{MemoryStore, PeopleStore};

/// How often profiles not seen for `people.not_seen_for_s` leave this process's index.
const EVICT_EVERY: Duration = Duration::from_secs(60);

/// People nearby for a process: [`People`] on the store of its mode (memory, or Redis on
/// `deps.redis`), its routes and OpenAPI, and a task evicting stale profiles from this
/// process's index once a minute. (In Redis mode the profiles' seen sets are trimmed by
/// location-ingest, which owns those keys.)
pub fn build(deps: &Deps) -> anyhow::Result<Part> {
    let people = web::Data::new(People::new(
        deps.index.clone(),
        store::for_mode(deps.redis.clone()),
        deps.settings.people.clone(),
        deps.clock.clone(),
    ));
    let sweep = people.clone().into_inner();
    let evict = every(EVICT_EVERY, deps.clock.clone(), move |now| {
        let people = sweep.clone();
        async move {
            let gone = people.evict_stale(now);
            if gone > 0 {
                tracing::info!(profiles = gone, "stale profiles left the index");
            }
        }
    });
    Ok(Part::new()
        .routes(move |cfg| routes::configure(cfg, people.clone()))
        .openapi(openapi::paths(), openapi::schemas())
        .task("people stale-profile eviction", evict))
}

/// People nearby, transport-free. Every operation takes the server time (`now_ms`); the
/// routes read it from the process's clock.
pub struct People {
    index: Arc<Index>,
    store: PeopleStore,
    settings: PeopleSettings,
    clock: Clock,
}

impl People {
    pub fn new(
        index: Arc<Index>,
        store: PeopleStore,
        settings: PeopleSettings,
        clock: Clock,
    ) -> Self {
        People {
            index,
            store,
            settings,
            clock,
        }
    }

    /// The store (benchmarks load profiles into a memory store in bulk).
    pub fn store(&self) -> &PeopleStore {
        &self.store
    }

    /// The process's time, for the routes.
    fn now(&self) -> i64 {
        self.clock.now()
    }

    fn limits(&self) -> Limits {
        Limits {
            likes: self.settings.daily_likes,
            superlikes: self.settings.daily_superlikes,
        }
    }

    async fn put_profile(
        &self,
        id: &EntryId,
        body: ProfileBody,
        now_ms: i64,
    ) -> Result<OwnView, PeopleError> {
        let today = ymd_of(now_ms);
        let profile = body.validate(id.as_str(), today, now_ms)?;
        let stored = self.store.put_profile(id, profile).await?;
        Ok(stored.own_view(today))
    }

    async fn get_profile(&self, id: &EntryId, now_ms: i64) -> Result<OwnView, PeopleError> {
        self.store
            .profile(id)
            .await?
            .map(|p| p.own_view(ymd_of(now_ms)))
            .ok_or_else(|| PeopleError::NotFound(id.to_string()))
    }

    async fn set_premium(
        &self,
        id: &EntryId,
        premium: bool,
        now_ms: i64,
    ) -> Result<OwnView, PeopleError> {
        self.store
            .set_premium(id, premium)
            .await?
            .map(|p| p.own_view(ymd_of(now_ms)))
            .ok_or_else(|| PeopleError::NotFound(id.to_string()))
    }

    /// A page of recommendations for `me`: nearest first (then by id), only profiles where
    /// both sides' preferences hold, never oneself, anyone swiped, blocked either way, or
    /// not seen for `people.not_seen_for_s`. `cursor` is the previous page's `next_cursor`.
    pub async fn recommendations(
        &self,
        me: &EntryId,
        limit: Option<usize>,
        cursor: Option<&str>,
        now_ms: i64,
    ) -> Result<RecommendationsPage, PeopleError> {
        let max = self.settings.page_size_max;
        let limit = limit.unwrap_or(self.settings.page_size);
        if !(1..=max).contains(&limit) {
            return Err(PeopleError::Limit { got: limit, max });
        }
        let after = cursor.map(cursor::decode).transpose()?;
        let ctx = Ctx {
            today: ymd_of(now_ms),
            fresh_since_ms: now_ms.saturating_sub(self.settings.not_seen_for_s as i64 * 1000),
            limit,
            max_examined: self.settings.max_examined,
        };
        self.store.recommend(&self.index, me, after, &ctx).await
    }

    /// Like, pass or superlike `target`. A like answering the target's like creates the
    /// match, exactly once, whichever replica each like reached.
    async fn swipe(
        &self,
        me: &EntryId,
        body: SwipeBody,
        now_ms: i64,
    ) -> Result<SwipeAnswer, PeopleError> {
        let target = error::profile_id(&body.target_id)?;
        if target == *me {
            return Err(PeopleError::SelfTarget);
        }
        if self.store.profile(me).await?.is_none() {
            return Err(PeopleError::ProfileRequired(me.to_string()));
        }
        if self.store.profile(&target).await?.is_none() {
            return Err(PeopleError::NotFound(target.to_string()));
        }
        let limits = self.limits();
        let verdict = self
            .store
            .swipe(me, &target, body.action, now_ms, limits)
            .await?;
        match verdict {
            SwipeVerdict::Recorded | SwipeVerdict::Matched => Ok(SwipeAnswer {
                target_id: target.to_string(),
                action: body.action,
                matched: verdict == SwipeVerdict::Matched,
            }),
            SwipeVerdict::Already => Err(PeopleError::AlreadySwiped(target.to_string())),
            // A block is not revealed: the blocked side sees no such profile.
            SwipeVerdict::Hidden => Err(PeopleError::NotFound(target.to_string())),
            SwipeVerdict::Limited(Action::Superlike) => Err(PeopleError::daily_limit(
                "superlikes",
                limits.superlikes,
                now_ms,
            )),
            SwipeVerdict::Limited(_) => {
                Err(PeopleError::daily_limit("likes", limits.likes, now_ms))
            }
        }
    }

    async fn matches(&self, me: &EntryId, now_ms: i64) -> Result<MatchesAnswer, PeopleError> {
        let today = ymd_of(now_ms);
        let matches = self
            .store
            .matches(me, self.settings.max_list)
            .await?
            .into_iter()
            .map(|(p, at)| MatchView {
                card: p.card(today),
                matched_at_ms: at,
            })
            .collect();
        Ok(MatchesAnswer { matches })
    }

    async fn unmatch(&self, me: &EntryId, other: &str) -> Result<(), PeopleError> {
        let other = error::profile_id(other)?;
        if self.store.unmatch(me, &other).await? {
            Ok(())
        } else {
            Err(PeopleError::NoMatch(other.to_string()))
        }
    }

    async fn block(&self, me: &EntryId, body: BlockBody) -> Result<(), PeopleError> {
        let other = error::profile_id(&body.target_id)?;
        if other == *me {
            return Err(PeopleError::SelfTarget);
        }
        self.store.block(me, &other).await
    }

    /// How many people liked `me` and wait for an answer: free for everyone.
    async fn likes_count(&self, me: &EntryId) -> Result<LikesCount, PeopleError> {
        let count = self.store.likes_count(me).await?;
        Ok(LikesCount { count })
    }

    /// Who they are: premium only.
    async fn likes(&self, me: &EntryId, now_ms: i64) -> Result<LikesAnswer, PeopleError> {
        let profile = self
            .store
            .profile(me)
            .await?
            .ok_or_else(|| PeopleError::ProfileRequired(me.to_string()))?;
        if !profile.premium {
            return Err(PeopleError::PremiumRequired);
        }
        let today = ymd_of(now_ms);
        let likes = self
            .store
            .likes(me, self.settings.max_list)
            .await?
            .into_iter()
            .map(|(p, at, superlike)| LikeView {
                card: p.card(today),
                liked_at_ms: at,
                superlike,
            })
            .collect();
        Ok(LikesAnswer { likes })
    }

    /// Takes profiles not seen for `people.not_seen_for_s` out of this process's index
    /// (they are not recommended anyway). [`build`]'s task runs it once a minute.
    pub fn evict_stale(&self, now_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(self.settings.not_seen_for_s as i64 * 1000);
        self.index
            .evict_older_than_where(cutoff, &Filter::any().kind(Kind::Profile))
            .len()
    }
}

#[cfg(test)]
mod tests {
    use geomatch_common::Settings;
    use geomatch_index::{Position, Update};

    use super::*;

    fn id(s: &str) -> EntryId {
        EntryId::parse(s).expect("a valid id")
    }

    #[tokio::test]
    async fn build_serves_the_routes_and_evicts_only_stale_profiles_from_the_index() {
        let clock = Clock::manual(1_795_255_200_000);
        let deps = Deps::new(Settings::default(), clock.clone()).expect("deps");
        let now = clock.now();
        let stale = now - deps.settings.people.not_seen_for_s as i64 * 1000 - 1;
        let at = Position::new(37.5665, 126.978).expect("a position");
        for (name, kind, seen) in [
            ("old", Kind::Profile, stale),
            ("recent", Kind::Profile, stale + 2),
            ("driver", Kind::Driver, stale),
        ] {
            deps.index
                .upsert(&Update::moved(id(name), kind, at, seen))
                .expect("upserted");
        }
        let mut part = build(&deps).expect("a part");
        assert!(part
            .openapi_parts()
            .0
            .contains_key("/v1/profiles/{profile_id}/recommendations"));
        let mut tasks = part.take_tasks();
        assert_eq!(tasks.len(), 1);
        let (_, task) = tasks.pop().expect("the eviction task");
        // `every` runs its first step at once (within the timer's millisecond): no waiting
        // for the minute.
        let running = tokio::spawn(task);
        let started = std::time::Instant::now();
        while deps.index.get(&id("old")).is_some() && started.elapsed().as_secs() < 5 {
            tokio::task::yield_now().await;
        }
        running.abort();
        assert!(deps.index.get(&id("old")).is_none());
        assert!(deps.index.get(&id("recent")).is_some());
        assert!(deps.index.get(&id("driver")).is_some(), "profiles only");
    }
}
