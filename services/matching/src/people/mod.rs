//! People nearby: profiles near each other who might like each other. Recommendations come
//! from the shared index (entries of kind `profile`, whose locations location-ingest
//! receives under the same rules as drivers'); swipes, matches, blocks and daily counters
//! live in this process (embedded mode) or in Redis (Redis mode).
//!
//! # Layout
//! - [`profile`]: the profile body, its validation, what others see ([`profile::Card`]) and
//!   the packed preferences tested both ways for every candidate.
//! - [`People`] (this file): the transport-free operations.
//! - [`embedded`], [`redis`]: the two stores; `redis` explains its keys and why a swipe is
//!   three single-slot steps.
//! - [`cursor`]: the opaque recommendations cursor; [`date`]: birth dates, ages, UTC days.
//! - [`routes`] (thin HTTP), [`openapi`], [`error`].
//!
//! Authentication: a profile is a person's user account. Its token has role `rider` and
//! the profile id as subject; service and admin tokens may act on any profile. Profile ids
//! share one namespace with driver ids in the index.

use std::sync::Arc;

use actix_web::web;
use geomatch_common::PeopleSettings;
use geomatch_index::{EntryId, Filter, Index, Kind, Neighbor, PageKey, Position};
use serde::{Deserialize, Serialize};

pub mod cursor;
pub mod date;
pub mod embedded;
pub mod error;
pub mod openapi;
pub mod profile;
pub mod redis;
pub mod routes;

use date::ymd_of;
use embedded::Embedded;
pub use error::PeopleError;
use profile::{Card, OwnView, Profile, ProfileBody};

use self::redis::RedisPeople;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Like,
    Pass,
    Superlike,
}

impl Action {
    /// Like and superlike both count as liking for a match.
    pub fn is_like(self) -> bool {
        !matches!(self, Action::Pass)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Like => "like",
            Action::Pass => "pass",
            Action::Superlike => "superlike",
        }
    }
}

/// The daily budgets a swipe is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub likes: u32,
    pub superlikes: u32,
}

/// What a store decided about a swipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwipeVerdict {
    Recorded,
    /// This like answered the other's like: the match was created now, by this swipe.
    Matched,
    Already,
    /// Blocked, either way.
    Hidden,
    /// The daily budget of this action is used up.
    Limited(Action),
}

/// Body of `POST /v1/profiles/{profile_id}/swipes`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwipeBody {
    pub target_id: String,
    pub action: Action,
}

/// Body of `POST /v1/profiles/{profile_id}/blocks`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BlockBody {
    pub target_id: String,
}

/// Body of `PUT /v1/profiles/{profile_id}/premium`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PremiumBody {
    pub premium: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwipeAnswer {
    pub target_id: String,
    pub action: Action,
    /// True when this swipe created the match (the other side had liked already).
    pub matched: bool,
}

/// One recommendation: what others see, and the distance in whole kilometres (at least 1;
/// never coordinates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    #[serde(flatten)]
    pub card: Card,
    pub distance_km: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationsPage {
    pub profiles: Vec<Recommendation>,
    /// Pass as `cursor` for the next page; absent when there is nothing more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchView {
    #[serde(flatten)]
    pub card: Card,
    pub matched_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchesAnswer {
    pub matches: Vec<MatchView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LikeView {
    #[serde(flatten)]
    pub card: Card,
    pub liked_at_ms: i64,
    pub superlike: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LikesAnswer {
    pub likes: Vec<LikeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LikesCount {
    pub count: usize,
}

/// Where people-nearby state lives.
pub enum PeopleStore {
    Embedded(Embedded),
    Redis(RedisPeople),
}

/// Candidates asked of the index per round in Redis mode, at most (each round is one Redis
/// round trip for the whole batch).
const MAX_BATCH: usize = 1_000;

/// Rounds a distance to whole kilometres, at least 1 (so "0 km" never gives away that
/// someone is within 500 m).
pub fn distance_km(m: f64) -> u32 {
    ((m / 1000.0).round() as u32).max(1)
}

/// People nearby, transport-free. Every method takes the server time.
pub struct People {
    index: Arc<Index>,
    store: PeopleStore,
    settings: PeopleSettings,
}

impl People {
    pub fn new(index: Arc<Index>, store: PeopleStore, settings: PeopleSettings) -> Self {
        People {
            index,
            store,
            settings,
        }
    }

    pub fn settings(&self) -> &PeopleSettings {
        &self.settings
    }

    fn limits(&self) -> Limits {
        Limits {
            likes: self.settings.daily_likes,
            superlikes: self.settings.daily_superlikes,
        }
    }

    /// The embedded store, for benchmarks that load profiles in bulk.
    pub fn embedded(&self) -> Option<&Embedded> {
        match &self.store {
            PeopleStore::Embedded(e) => Some(e),
            PeopleStore::Redis(_) => None,
        }
    }

    pub async fn put_profile(
        &self,
        id: &EntryId,
        body: ProfileBody,
        now_ms: i64,
    ) -> Result<OwnView, PeopleError> {
        let today = ymd_of(now_ms);
        let profile = body.validate(id.as_str(), today, now_ms)?;
        let stored = match &self.store {
            PeopleStore::Embedded(e) => e.put_profile(id, profile),
            PeopleStore::Redis(r) => r.put_profile(id, &profile).await?,
        };
        Ok(stored.own_view(today))
    }

    async fn profile(&self, id: &EntryId) -> Result<Option<Profile>, PeopleError> {
        match &self.store {
            PeopleStore::Embedded(e) => Ok(e.profile(id).map(|p| (*p).clone())),
            PeopleStore::Redis(r) => r.profile(id).await,
        }
    }

    pub async fn get_profile(&self, id: &EntryId, now_ms: i64) -> Result<OwnView, PeopleError> {
        self.profile(id)
            .await?
            .map(|p| p.own_view(ymd_of(now_ms)))
            .ok_or_else(|| PeopleError::NotFound(id.to_string()))
    }

    pub async fn set_premium(
        &self,
        id: &EntryId,
        premium: bool,
        now_ms: i64,
    ) -> Result<OwnView, PeopleError> {
        let p = match &self.store {
            PeopleStore::Embedded(e) => e.set_premium(id, premium),
            PeopleStore::Redis(r) => r.set_premium(id, premium).await?,
        };
        p.map(|p| p.own_view(ymd_of(now_ms)))
            .ok_or_else(|| PeopleError::NotFound(id.to_string()))
    }

    /// The viewer's position: its entry of kind profile in the index.
    fn position_of(&self, me: &EntryId) -> Result<Position, PeopleError> {
        self.index
            .get(me)
            .filter(|e| e.kind == Kind::Profile)
            .map(|e| e.position)
            .ok_or_else(|| PeopleError::LocationRequired(me.to_string()))
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
            filter: Filter::any().kind(Kind::Profile),
            limit,
        };
        match &self.store {
            PeopleStore::Embedded(e) => self.recommend_embedded(e, me, after, &ctx),
            PeopleStore::Redis(r) => self.recommend_redis(r, me, after, &ctx).await,
        }
    }

    /// Embedded: one index query whose `keep` runs every rule under the store's read lock,
    /// so only eligible profiles enter the page. After `people.max_examined` candidates
    /// `keep` admits anything, which fills the page and ends the scan; those are checked
    /// again below and the answer may be short, with a cursor to go on from.
    fn recommend_embedded(
        &self,
        store: &Embedded,
        me: &EntryId,
        after: Option<PageKey>,
        ctx: &Ctx,
    ) -> Result<RecommendationsPage, PeopleError> {
        let st = store.read();
        let mine = st
            .profiles
            .get(me)
            .ok_or_else(|| PeopleError::ProfileRequired(me.to_string()))?;
        let at = self.position_of(me)?;
        let person = st.people.get(me);
        // Exclusions first: a hash-set lookup each, however many were swiped.
        let excluded = |n: &Neighbor| {
            let id = &n.entry.id;
            n.entry.updated_at_ms < ctx.fresh_since_ms
                || id == me
                || person.is_some_and(|p| p.excludes(id))
        };
        let fits = |n: &Neighbor| -> Option<&embedded::Stored> {
            let them = st.profiles.get(&n.entry.id)?;
            mine.prefs
                .mutual(&them.prefs, n.distance_m, ctx.today)
                .then_some(them)
        };
        let eligible = |n: &Neighbor| if excluded(n) { None } else { fits(n) };
        // Only candidates whose preferences had to be tested count towards the cap, so a
        // viewer who swiped everyone nearby still gets a full page, just later.
        let mut examined = 0usize;
        let cap = self.settings.max_examined;
        let page = self.index.nearest_page(
            &at,
            ctx.limit,
            &ctx.filter,
            Some(mine.prefs.max_m()),
            after.as_ref(),
            |n| {
                if excluded(n) {
                    return false;
                }
                examined += 1;
                fits(n).is_some() || examined > cap
            },
        );
        let exhausted = page.len() < ctx.limit;
        let mut profiles = Vec::with_capacity(page.len());
        let mut last = None;
        for (n, key) in page {
            if let Some(them) = eligible(&n) {
                profiles.push(Recommendation {
                    card: them.profile.card(ctx.today),
                    distance_km: distance_km(n.distance_m),
                });
            }
            last = Some(key);
        }
        Ok(RecommendationsPage {
            profiles,
            next_cursor: if exhausted {
                None
            } else {
                last.as_ref().map(cursor::encode)
            },
        })
    }

    /// Redis: rounds of index candidates (fresh, not oneself), each screened in one Redis
    /// round trip (swiped and blocked tested with `SMISMEMBER`, profiles fetched), then the
    /// preferences; rounds double in size until the page is full, the candidates run out,
    /// or `people.max_examined` were looked at.
    async fn recommend_redis(
        &self,
        store: &RedisPeople,
        me: &EntryId,
        mut after: Option<PageKey>,
        ctx: &Ctx,
    ) -> Result<RecommendationsPage, PeopleError> {
        let mine = store
            .profile(me)
            .await?
            .ok_or_else(|| PeopleError::ProfileRequired(me.to_string()))?
            .prefs();
        let at = self.position_of(me)?;
        let mut profiles = Vec::with_capacity(ctx.limit);
        let mut k = (ctx.limit * 2).min(MAX_BATCH);
        let mut examined = 0;
        loop {
            let page = self.index.nearest_page(
                &at,
                k,
                &ctx.filter,
                Some(mine.max_m()),
                after.as_ref(),
                |n| n.entry.updated_at_ms >= ctx.fresh_since_ms && n.entry.id != *me,
            );
            examined += page.len();
            let exhausted = page.len() < k;
            let ids: Vec<EntryId> = page.iter().map(|(n, _)| n.entry.id.clone()).collect();
            let screened = store.screen(me, &ids).await?;
            for ((n, key), them) in page.into_iter().zip(screened) {
                if let Some(them) = them {
                    if mine.mutual(&them.prefs(), n.distance_m, ctx.today) {
                        profiles.push(Recommendation {
                            card: them.card(ctx.today),
                            distance_km: distance_km(n.distance_m),
                        });
                    }
                }
                after = Some(key);
                if profiles.len() == ctx.limit {
                    return Ok(RecommendationsPage {
                        profiles,
                        next_cursor: after.as_ref().map(cursor::encode),
                    });
                }
            }
            if exhausted {
                return Ok(RecommendationsPage {
                    profiles,
                    next_cursor: None,
                });
            }
            if examined >= self.settings.max_examined {
                return Ok(RecommendationsPage {
                    profiles,
                    next_cursor: after.as_ref().map(cursor::encode),
                });
            }
            k = (k * 2).min(MAX_BATCH);
        }
    }

    /// Like, pass or superlike `target`. A like answering the target's like creates the
    /// match, exactly once, whichever replica each like reached.
    pub async fn swipe(
        &self,
        me: &EntryId,
        body: SwipeBody,
        now_ms: i64,
    ) -> Result<SwipeAnswer, PeopleError> {
        let target = error::profile_id(&body.target_id)?;
        if target == *me {
            return Err(PeopleError::SelfTarget);
        }
        if self.profile(me).await?.is_none() {
            return Err(PeopleError::ProfileRequired(me.to_string()));
        }
        if self.profile(&target).await?.is_none() {
            return Err(PeopleError::NotFound(target.to_string()));
        }
        let limits = self.limits();
        let verdict = match &self.store {
            PeopleStore::Embedded(e) => e.swipe(me, &target, body.action, now_ms, limits),
            PeopleStore::Redis(r) => r.swipe(me, &target, body.action, now_ms, limits).await?,
        };
        match verdict {
            SwipeVerdict::Recorded | SwipeVerdict::Matched => Ok(SwipeAnswer {
                target_id: target.to_string(),
                action: body.action,
                matched: verdict == SwipeVerdict::Matched,
            }),
            SwipeVerdict::Already => Err(PeopleError::AlreadySwiped(target.to_string())),
            // A block is not revealed: the blocked side sees no such profile.
            SwipeVerdict::Hidden => Err(PeopleError::NotFound(target.to_string())),
            SwipeVerdict::Limited(action) => Err(PeopleError::DailyLimit {
                what: if action == Action::Superlike {
                    "superlikes"
                } else {
                    "likes"
                },
                limit: if action == Action::Superlike {
                    limits.superlikes
                } else {
                    limits.likes
                },
                reset_at_ms: date::next_midnight_ms(now_ms),
            }),
        }
    }

    pub async fn matches(&self, me: &EntryId, now_ms: i64) -> Result<MatchesAnswer, PeopleError> {
        let today = ymd_of(now_ms);
        let max = self.settings.max_list;
        let matches = match &self.store {
            PeopleStore::Embedded(e) => e
                .matches(me, max)
                .into_iter()
                .map(|(p, at)| MatchView {
                    card: p.card(today),
                    matched_at_ms: at,
                })
                .collect(),
            PeopleStore::Redis(r) => r
                .matches(me, max)
                .await?
                .into_iter()
                .map(|(p, at)| MatchView {
                    card: p.card(today),
                    matched_at_ms: at,
                })
                .collect(),
        };
        Ok(MatchesAnswer { matches })
    }

    pub async fn unmatch(&self, me: &EntryId, other: &str) -> Result<(), PeopleError> {
        let other = error::profile_id(other)?;
        let removed = match &self.store {
            PeopleStore::Embedded(e) => e.unmatch(me, &other),
            PeopleStore::Redis(r) => r.unmatch(me, &other).await?,
        };
        if removed {
            Ok(())
        } else {
            Err(PeopleError::NoMatch(other.to_string()))
        }
    }

    pub async fn block(&self, me: &EntryId, body: BlockBody) -> Result<(), PeopleError> {
        let other = error::profile_id(&body.target_id)?;
        if other == *me {
            return Err(PeopleError::SelfTarget);
        }
        match &self.store {
            PeopleStore::Embedded(e) => e.block(me, &other),
            PeopleStore::Redis(r) => r.block(me, &other).await?,
        }
        Ok(())
    }

    /// How many people liked `me` and wait for an answer: free for everyone.
    pub async fn likes_count(&self, me: &EntryId) -> Result<LikesCount, PeopleError> {
        let count = match &self.store {
            PeopleStore::Embedded(e) => e.likes_count(me),
            PeopleStore::Redis(r) => r.likes_count(me).await?,
        };
        Ok(LikesCount { count })
    }

    /// Who they are: premium only.
    pub async fn likes(&self, me: &EntryId, now_ms: i64) -> Result<LikesAnswer, PeopleError> {
        let profile = self
            .profile(me)
            .await?
            .ok_or_else(|| PeopleError::ProfileRequired(me.to_string()))?;
        if !profile.premium {
            return Err(PeopleError::PremiumRequired);
        }
        let today = ymd_of(now_ms);
        let max = self.settings.max_list;
        let rows = match &self.store {
            PeopleStore::Embedded(e) => e
                .likes(me, max)
                .into_iter()
                .map(|(p, at, s)| ((*p).clone(), at, s))
                .collect(),
            PeopleStore::Redis(r) => r.likes(me, max).await?,
        };
        Ok(LikesAnswer {
            likes: rows
                .into_iter()
                .map(|(p, at, superlike)| LikeView {
                    card: p.card(today),
                    liked_at_ms: at,
                    superlike,
                })
                .collect(),
        })
    }

    /// Takes profiles not seen for `people.not_seen_for_s` out of this process's index
    /// (they are not recommended anyway). Run periodically.
    pub fn evict_stale(&self, now_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(self.settings.not_seen_for_s as i64 * 1000);
        self.index
            .evict_older_than_where(cutoff, &Filter::any().kind(Kind::Profile))
            .len()
    }
}

/// What one recommendations request holds fixed.
struct Ctx {
    today: u32,
    fresh_since_ms: i64,
    filter: Filter,
    limit: usize,
}

/// Registers the people-nearby routes with `people` as their state.
pub fn configure(cfg: &mut web::ServiceConfig, people: web::Data<People>) {
    cfg.app_data(people)
        .service(
            web::resource("/v1/profiles/{profile_id}")
                .route(web::put().to(routes::put_profile))
                .route(web::get().to(routes::get_profile)),
        )
        .service(
            web::resource("/v1/profiles/{profile_id}/premium")
                .route(web::put().to(routes::put_premium)),
        )
        .service(
            web::resource("/v1/profiles/{profile_id}/recommendations")
                .route(web::get().to(routes::recommendations)),
        )
        .service(
            web::resource("/v1/profiles/{profile_id}/swipes").route(web::post().to(routes::swipe)),
        )
        .service(
            web::resource("/v1/profiles/{profile_id}/matches")
                .route(web::get().to(routes::matches)),
        )
        .service(
            web::resource("/v1/profiles/{profile_id}/matches/{other_id}")
                .route(web::delete().to(routes::unmatch)),
        )
        .service(
            web::resource("/v1/profiles/{profile_id}/blocks").route(web::post().to(routes::block)),
        )
        .service(
            web::resource("/v1/profiles/{profile_id}/likes").route(web::get().to(routes::likes)),
        )
        .service(
            web::resource("/v1/profiles/{profile_id}/likes/count")
                .route(web::get().to(routes::likes_count)),
        );
}
