//! The store contract of [`PeopleStore`], as tests: every case runs against the memory
//! store and against the Redis store on a private redis-server. Time is passed in
//! (`NOW` and offsets from it): nothing sleeps.

use geomatch_common::testing::RedisServer;
use geomatch_index::{EntryId, Index, IndexConfig, Kind, Position, Update};

use super::{MemoryStore, PeopleStore, RedisStore};
use crate::people::date::{next_midnight_ms, ymd_of};
use crate::people::error::PeopleError;
use crate::people::model::{Action, Ctx, Limits, SwipeVerdict};
use crate::people::profile::{Gender, Profile, ProfileBody};

/// 2026-11-21T10:00:00Z.
const NOW: i64 = 1_795_255_200_000;
const HOUR: i64 = 3_600_000;
const LIMITS: Limits = Limits {
    likes: 100,
    superlikes: 5,
};

/// A store under test, with an index for recommendations. Fields drop in order: the
/// store's Redis handle before its server.
struct World {
    store: PeopleStore,
    index: Index,
    _server: Option<RedisServer>,
}

impl World {
    fn memory() -> World {
        World {
            store: PeopleStore::Memory(MemoryStore::default()),
            index: Index::new(IndexConfig::default()).expect("an index"),
            _server: None,
        }
    }

    fn redis() -> World {
        let server = RedisServer::start();
        World {
            store: PeopleStore::Redis(RedisStore::new(server.handle())),
            index: Index::new(IndexConfig::default()).expect("an index"),
            _server: Some(server),
        }
    }

    /// Stores `body` as `name`'s profile (validated at `NOW`).
    async fn person(&self, name: &str, body: ProfileBody) -> Profile {
        let profile = body
            .validate(name, ymd_of(NOW), NOW)
            .expect("a valid profile");
        self.store
            .put_profile(&id(name), profile)
            .await
            .expect("stored")
    }

    /// Puts `name` in the index `km` east of `HOME`, last seen at `seen_ms`.
    fn at(&self, name: &str, km: f64, seen_ms: i64) {
        let p = home().destination(90.0, km * 1000.0);
        self.index
            .upsert(&Update::moved(id(name), Kind::Profile, p, seen_ms))
            .expect("upserted");
    }

    async fn swipe_at(&self, me: &str, target: &str, action: Action, now: i64) -> SwipeVerdict {
        self.store
            .swipe(&id(me), &id(target), action, now, LIMITS)
            .await
            .expect("a verdict")
    }

    async fn swipe(&self, me: &str, target: &str, action: Action) -> SwipeVerdict {
        self.swipe_at(me, target, action, NOW).await
    }

    async fn matches(&self, me: &str) -> Vec<(String, i64)> {
        let rows = self.store.matches(&id(me), 100).await.expect("matches");
        rows.into_iter()
            .map(|(p, at)| (p.profile_id.clone(), at))
            .collect()
    }

    async fn likes(&self, me: &str, max: usize) -> Vec<(String, i64, bool)> {
        let rows = self.store.likes(&id(me), max).await.expect("likes");
        rows.into_iter()
            .map(|(p, at, s)| (p.profile_id.clone(), at, s))
            .collect()
    }

    async fn likes_count(&self, me: &str) -> usize {
        self.store.likes_count(&id(me)).await.expect("a count")
    }

    /// Every recommendation for `me` at `NOW`, page by page (`limit` each), with the
    /// distances in km.
    async fn recommendations(
        &self,
        me: &str,
        limit: usize,
    ) -> Result<Vec<(String, u32)>, PeopleError> {
        let ctx = Ctx {
            today: ymd_of(NOW),
            fresh_since_ms: NOW - HOUR,
            limit,
            max_examined: 5_000,
        };
        let mut all = Vec::new();
        let mut after = None;
        for _ in 0..100 {
            let page = self
                .store
                .recommend(&self.index, &id(me), after, &ctx)
                .await?;
            assert!(page.profiles.len() <= limit);
            all.extend(
                page.profiles
                    .into_iter()
                    .map(|r| (r.card.profile_id, r.distance_km)),
            );
            match page.next_cursor {
                Some(c) => after = Some(crate::people::cursor::decode(&c).expect("our cursor")),
                None => return Ok(all),
            }
        }
        panic!("pages never ended");
    }
}

fn id(s: &str) -> EntryId {
    EntryId::parse(s).expect("a valid id")
}

/// Seoul city hall.
fn home() -> Position {
    Position::new(37.5665, 126.9780).expect("a position")
}

fn body(gender: Gender, birth: &str, wants: &[Gender], ages: (u32, u32), km: u32) -> ProfileBody {
    ProfileBody {
        display_name: "P".into(),
        birth_date: birth.into(),
        gender,
        interested_in: wants.to_vec(),
        age_min: ages.0,
        age_max: ages.1,
        max_distance_km: km,
        bio: String::new(),
        photos: Vec::new(),
    }
}

/// A 28-year-old woman who wants men of 25–35 within 10 km.
fn ana() -> ProfileBody {
    body(Gender::Woman, "1998-05-17", &[Gender::Man], (25, 35), 10)
}

/// A 30-year-old man who wants women of 18–40 within `km`.
fn man(km: u32) -> ProfileBody {
    body(Gender::Man, "1996-01-01", &[Gender::Woman], (18, 40), km)
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::World::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::World::redis()).await;
                }
            )*
        }
    };
}

contract!(
    profiles_are_stored_and_keep_their_premium_flag,
    a_swipe_is_recorded_once_and_a_one_sided_like_matches_nobody,
    a_mutual_like_makes_exactly_one_match,
    liking_each_other_at_once_makes_exactly_one_match,
    unmatch_ends_a_match_for_both,
    a_block_hides_both_ways_and_ends_matches_and_likes,
    likes_are_counted_and_listed_newest_first_until_answered,
    daily_limits_reset_at_utc_midnight,
    recommendations_exclude_self_swiped_blocked_and_unseen,
    recommendations_honour_both_sides_preferences,
    recommendations_need_a_profile_then_a_location,
);

async fn profiles_are_stored_and_keep_their_premium_flag(w: World) {
    assert_eq!(w.store.profile(&id("ana")).await.unwrap(), None);
    let stored = w.person("ana", ana()).await;
    assert!(!stored.premium);
    assert_eq!(
        w.store.profile(&id("ana")).await.unwrap().as_deref(),
        Some(&stored)
    );
    assert_eq!(
        w.store.set_premium(&id("bo"), true).await.unwrap(),
        None,
        "no profile, no premium"
    );
    assert_eq!(w.store.profile(&id("bo")).await.unwrap(), None);
    let premium = w
        .store
        .set_premium(&id("ana"), true)
        .await
        .unwrap()
        .unwrap();
    assert!(premium.premium);
    assert!(w.store.profile(&id("ana")).await.unwrap().unwrap().premium);
    // Rewriting the profile keeps the flag.
    let rewritten = w
        .person(
            "ana",
            ProfileBody {
                bio: "new".into(),
                ..ana()
            },
        )
        .await;
    assert!(rewritten.premium);
    let read = w.store.profile(&id("ana")).await.unwrap().unwrap();
    assert_eq!((read.bio.as_str(), read.premium), ("new", true));
    let plain = w
        .store
        .set_premium(&id("ana"), false)
        .await
        .unwrap()
        .unwrap();
    assert!(!plain.premium);
}

async fn a_swipe_is_recorded_once_and_a_one_sided_like_matches_nobody(w: World) {
    for p in ["ana", "cy"] {
        w.person(p, ana()).await;
    }
    for p in ["bo", "dan"] {
        w.person(p, man(10)).await;
    }
    assert_eq!(
        w.swipe("ana", "bo", Action::Like).await,
        SwipeVerdict::Recorded
    );
    assert_eq!(
        w.swipe("ana", "bo", Action::Like).await,
        SwipeVerdict::Already
    );
    assert_eq!(
        w.swipe("ana", "bo", Action::Pass).await,
        SwipeVerdict::Already
    );
    assert_eq!(
        w.swipe("ana", "dan", Action::Pass).await,
        SwipeVerdict::Recorded
    );
    assert_eq!(
        w.swipe("cy", "dan", Action::Superlike).await,
        SwipeVerdict::Recorded
    );
    // A like answering a pass is recorded, matches nobody and waits for no answer.
    assert_eq!(
        w.swipe("dan", "ana", Action::Like).await,
        SwipeVerdict::Recorded
    );
    assert_eq!(w.likes_count("ana").await, 0);
    // A pass is no like.
    assert_eq!(w.likes("bo", 10).await, vec![("ana".into(), NOW, false)]);
    assert_eq!(w.likes("dan", 10).await, vec![("cy".into(), NOW, true)]);
    for p in ["ana", "bo", "cy", "dan"] {
        assert!(w.matches(p).await.is_empty(), "{p}");
    }
}

async fn a_mutual_like_makes_exactly_one_match(w: World) {
    w.person("ana", ana()).await;
    w.person("bo", man(10)).await;
    assert_eq!(
        w.swipe_at("ana", "bo", Action::Like, NOW).await,
        SwipeVerdict::Recorded
    );
    assert_eq!(w.likes_count("bo").await, 1);
    // A superlike answers a like as well as a like does.
    assert_eq!(
        w.swipe_at("bo", "ana", Action::Superlike, NOW + 5_000)
            .await,
        SwipeVerdict::Matched
    );
    assert_eq!(w.matches("ana").await, vec![("bo".into(), NOW + 5_000)]);
    assert_eq!(w.matches("bo").await, vec![("ana".into(), NOW + 5_000)]);
    // The answered like waits no more, on either side.
    assert_eq!(w.likes_count("bo").await, 0);
    assert_eq!(w.likes_count("ana").await, 0);
    assert_eq!(
        w.swipe("bo", "ana", Action::Like).await,
        SwipeVerdict::Already
    );
    assert_eq!(w.matches("ana").await.len(), 1);
}

async fn liking_each_other_at_once_makes_exactly_one_match(w: World) {
    for i in 0..20 {
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        w.person(&a, ana()).await;
        w.person(&b, man(10)).await;
        let (x, y) = tokio::join!(w.swipe(&a, &b, Action::Like), w.swipe(&b, &a, Action::Like));
        let matched = [x, y]
            .iter()
            .filter(|v| **v == SwipeVerdict::Matched)
            .count();
        assert_eq!(matched, 1, "{x:?} {y:?}");
        assert_eq!(w.matches(&a).await, vec![(b.clone(), NOW)]);
        assert_eq!(w.matches(&b).await, vec![(a.clone(), NOW)]);
    }
}

async fn unmatch_ends_a_match_for_both(w: World) {
    w.person("ana", ana()).await;
    w.person("bo", man(10)).await;
    w.person("cy", man(10)).await;
    w.swipe("ana", "bo", Action::Like).await;
    assert_eq!(
        w.swipe("bo", "ana", Action::Like).await,
        SwipeVerdict::Matched
    );
    assert!(w.store.unmatch(&id("bo"), &id("ana")).await.unwrap());
    assert!(w.matches("ana").await.is_empty());
    assert!(w.matches("bo").await.is_empty());
    assert!(
        !w.store.unmatch(&id("ana"), &id("bo")).await.unwrap(),
        "once"
    );
    assert!(
        !w.store.unmatch(&id("ana"), &id("cy")).await.unwrap(),
        "never matched"
    );
    // The swipes stay: no second match.
    assert_eq!(
        w.swipe("ana", "bo", Action::Like).await,
        SwipeVerdict::Already
    );
}

async fn a_block_hides_both_ways_and_ends_matches_and_likes(w: World) {
    w.person("ana", ana()).await;
    for p in ["bo", "cy", "dan"] {
        w.person(p, man(10)).await;
    }
    // Ana and Bo matched; Cy's like waits for Ana's answer.
    w.swipe("ana", "bo", Action::Like).await;
    assert_eq!(
        w.swipe("bo", "ana", Action::Like).await,
        SwipeVerdict::Matched
    );
    w.swipe("cy", "ana", Action::Like).await;
    assert_eq!(w.likes_count("ana").await, 1);

    w.store.block(&id("ana"), &id("bo")).await.unwrap();
    assert!(w.matches("ana").await.is_empty());
    assert!(w.matches("bo").await.is_empty());
    w.store.block(&id("ana"), &id("cy")).await.unwrap();
    assert_eq!(w.likes_count("ana").await, 0);
    assert!(w.likes("cy", 10).await.is_empty());
    // Dan blocks Ana before either swiped: neither can swipe the other.
    w.store.block(&id("dan"), &id("ana")).await.unwrap();
    assert_eq!(
        w.swipe("ana", "dan", Action::Like).await,
        SwipeVerdict::Hidden
    );
    assert_eq!(
        w.swipe("dan", "ana", Action::Like).await,
        SwipeVerdict::Hidden
    );
    assert_eq!(
        w.likes_count("dan").await,
        0,
        "a hidden swipe records nothing"
    );
    assert_eq!(w.likes_count("ana").await, 0);
}

async fn likes_are_counted_and_listed_newest_first_until_answered(w: World) {
    w.person("ana", ana()).await;
    for p in ["bo", "cy", "dan"] {
        w.person(p, man(10)).await;
    }
    w.swipe_at("bo", "ana", Action::Like, NOW).await;
    w.swipe_at("cy", "ana", Action::Superlike, NOW + 1_000)
        .await;
    w.swipe_at("dan", "ana", Action::Like, NOW + 2_000).await;
    assert_eq!(w.likes_count("ana").await, 3);
    assert_eq!(
        w.likes("ana", 10).await,
        vec![
            ("dan".into(), NOW + 2_000, false),
            ("cy".into(), NOW + 1_000, true),
            ("bo".into(), NOW, false),
        ]
    );
    assert_eq!(w.likes("ana", 2).await.len(), 2, "at most max");
    // Any answer takes a like off the list; a like back also matches.
    assert_eq!(
        w.swipe("ana", "cy", Action::Pass).await,
        SwipeVerdict::Recorded
    );
    assert_eq!(w.likes_count("ana").await, 2);
    assert_eq!(
        w.swipe("ana", "bo", Action::Like).await,
        SwipeVerdict::Matched
    );
    assert_eq!(
        w.likes("ana", 10).await,
        vec![("dan".into(), NOW + 2_000, false)]
    );
}

async fn daily_limits_reset_at_utc_midnight(w: World) {
    w.person("ana", ana()).await;
    for i in 0..8 {
        w.person(&format!("m{i}"), man(10)).await;
    }
    let limits = Limits {
        likes: 2,
        superlikes: 1,
    };
    let swipe = |target: &'static str, action, now| {
        let w = &w;
        async move {
            w.store
                .swipe(&id("ana"), &id(target), action, now, limits)
                .await
                .unwrap()
        }
    };
    let midnight = next_midnight_ms(NOW);
    assert_eq!(swipe("m0", Action::Like, NOW).await, SwipeVerdict::Recorded);
    assert_eq!(swipe("m1", Action::Like, NOW).await, SwipeVerdict::Recorded);
    assert_eq!(
        swipe("m2", Action::Like, NOW).await,
        SwipeVerdict::Limited(Action::Like)
    );
    // Superlikes have their own budget, passes none.
    assert_eq!(
        swipe("m2", Action::Superlike, NOW).await,
        SwipeVerdict::Recorded
    );
    assert_eq!(
        swipe("m3", Action::Superlike, NOW).await,
        SwipeVerdict::Limited(Action::Superlike)
    );
    assert_eq!(swipe("m3", Action::Pass, NOW).await, SwipeVerdict::Recorded);
    assert_eq!(
        swipe("m4", Action::Like, midnight - 1).await,
        SwipeVerdict::Limited(Action::Like),
        "still the same UTC day"
    );
    // A new UTC day: fresh budgets; the refused like was not recorded.
    assert_eq!(
        swipe("m4", Action::Like, midnight).await,
        SwipeVerdict::Recorded
    );
    assert_eq!(
        swipe("m5", Action::Superlike, midnight).await,
        SwipeVerdict::Recorded
    );
    assert_eq!(
        swipe("m6", Action::Like, midnight).await,
        SwipeVerdict::Recorded
    );
    assert_eq!(
        swipe("m7", Action::Like, midnight + 23 * HOUR).await,
        SwipeVerdict::Limited(Action::Like)
    );
}

async fn recommendations_exclude_self_swiped_blocked_and_unseen(w: World) {
    w.person("ana", ana()).await;
    w.at("ana", 0.0, NOW);
    let near = ["m1", "m2", "m3", "m4", "m5", "m6", "m7"];
    for (i, p) in near.iter().enumerate() {
        w.person(p, man(20)).await;
        w.at(p, 1.0 + i as f64, NOW - 1_000);
    }
    // Seen too long ago: not recommended.
    w.person("old", man(20)).await;
    w.at("old", 0.5, NOW - 2 * HOUR);
    // In the index without a profile: not recommended.
    w.at("ghost", 0.7, NOW);
    let all: Vec<(String, u32)> = near
        .iter()
        .enumerate()
        .map(|(i, p)| (p.to_string(), i as u32 + 1))
        .collect();
    assert_eq!(w.recommendations("ana", 20).await.unwrap(), all);
    assert_eq!(w.recommendations("ana", 2).await.unwrap(), all, "pages");

    w.swipe("ana", "m1", Action::Pass).await;
    w.swipe("ana", "m2", Action::Like).await;
    w.store.block(&id("ana"), &id("m3")).await.unwrap();
    w.store.block(&id("m4"), &id("ana")).await.unwrap();
    let left: Vec<String> = w
        .recommendations("ana", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(left, ["m5", "m6", "m7"]);
    // Blocks hide both ways; a like received does not hide the liker.
    for (p, sees_ana) in [("m2", true), ("m3", false), ("m4", false), ("m5", true)] {
        let seen = w.recommendations(p, 20).await.unwrap();
        assert_eq!(seen.iter().any(|(q, _)| q == "ana"), sees_ana, "{p}");
    }
}

async fn recommendations_honour_both_sides_preferences(w: World) {
    w.person("ana", ana()).await;
    w.at("ana", 0.0, NOW);
    let candidates = [
        // (name, profile, km east, recommended to Ana)
        ("fits", man(20), 1.0, true),
        (
            "woman",
            body(Gender::Woman, "1996-01-01", &[Gender::Woman], (18, 40), 20),
            1.5,
            false,
        ),
        (
            "wants_men",
            body(Gender::Man, "1996-01-01", &[Gender::Man], (18, 40), 20),
            2.0,
            false,
        ),
        (
            "too_young",
            body(Gender::Man, "2004-01-01", &[Gender::Woman], (18, 40), 20),
            2.5,
            false,
        ),
        (
            "wants_older",
            body(Gender::Man, "1996-01-01", &[Gender::Woman], (30, 40), 20),
            3.0,
            false,
        ),
        ("stays_close", man(2), 3.5, false),
        (
            "likes_all",
            body(
                Gender::Man,
                "1993-06-01",
                &[Gender::Woman, Gender::Man, Gender::Nonbinary],
                (18, 120),
                160,
            ),
            4.0,
            true,
        ),
        ("too_far", man(160), 12.0, false),
    ];
    for (p, b, km, _) in &candidates {
        w.person(p, b.clone()).await;
        w.at(p, *km, NOW);
    }
    let expected: Vec<&str> = candidates.iter().filter(|c| c.3).map(|c| c.0).collect();
    for limit in [1, 20] {
        let got: Vec<String> = w
            .recommendations("ana", limit)
            .await
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(got, expected, "limit {limit}");
    }
    // And the other way: "fits" sees her, "wants_men" does not.
    let seen = |p: &'static str| {
        let w = &w;
        async move {
            w.recommendations(p, 20)
                .await
                .unwrap()
                .iter()
                .any(|(q, _)| q == "ana")
        }
    };
    assert!(seen("fits").await);
    assert!(!seen("wants_men").await);
    assert!(!seen("too_far").await, "beyond her 10 km");
}

async fn recommendations_need_a_profile_then_a_location(w: World) {
    assert_eq!(
        w.recommendations("ana", 20).await,
        Err(PeopleError::ProfileRequired("ana".into()))
    );
    w.at("ana", 0.0, NOW);
    assert_eq!(
        w.recommendations("ana", 20).await,
        Err(PeopleError::ProfileRequired("ana".into()))
    );
    w.person("bo", man(10)).await;
    assert_eq!(
        w.recommendations("bo", 20).await,
        Err(PeopleError::LocationRequired("bo".into()))
    );
    w.at("bo", 1.0, NOW);
    assert_eq!(w.recommendations("bo", 20).await, Ok(Vec::new()));
}
