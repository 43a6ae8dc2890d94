//! Memory store (embedded mode): every profile, swipe, match, block and counter in this
//! process, behind one lock. Each operation is one critical section, so a mutual like
//! creates exactly one match. The "already swiped" test is a hash-set lookup per
//! candidate, whatever the number of swipes.

use std::sync::Arc;

use geomatch_index::{EntryId, Filter, Index, Kind, Neighbor, PageKey};
use parking_lot::RwLock;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::people::cursor;
use crate::people::date::ymd_of;
use crate::people::error::PeopleError;
use crate::people::model::{
    distance_km, position_of, Action, Ctx, Liked, Limits, Matched, Recommendation,
    RecommendationsPage, SwipeVerdict,
};
use crate::people::profile::{Prefs, Profile};

/// A stored profile and its preferences, computed once per write.
struct Stored {
    profile: Arc<Profile>,
    prefs: Prefs,
}

impl Stored {
    fn new(profile: Profile) -> Self {
        Stored {
            prefs: profile.prefs(),
            profile: Arc::new(profile),
        }
    }
}

/// One person's side of people nearby.
#[derive(Default)]
struct Person {
    /// Everyone this person swiped, with the action: the exclusion set and the reciprocal
    /// check for the other side's like.
    swiped: FxHashMap<EntryId, Action>,
    /// Blocked by this person, or this person blocked by them.
    hidden: FxHashSet<EntryId>,
    matches: FxHashMap<EntryId, i64>,
    /// Liked (or superliked) this person, not swiped back yet: liker → (time, superlike).
    likers: FxHashMap<EntryId, (i64, bool)>,
    /// The UTC day (`yyyymmdd`) the counters below count.
    day: u32,
    likes: u32,
    superlikes: u32,
}

impl Person {
    /// Whether `other` must not be recommended to this person: already swiped or blocked
    /// either way.
    fn excludes(&self, other: &EntryId) -> bool {
        self.swiped.contains_key(other) || self.hidden.contains(other)
    }
}

#[derive(Default)]
struct State {
    profiles: FxHashMap<EntryId, Stored>,
    people: FxHashMap<EntryId, Person>,
}

/// People nearby in this process's memory. See [`super::PeopleStore`] for the contract.
#[derive(Default)]
pub struct MemoryStore {
    state: RwLock<State>,
}

impl MemoryStore {
    /// Writes a profile, keeping its premium flag.
    pub(super) fn put_profile(&self, id: &EntryId, mut profile: Profile) -> Profile {
        let mut st = self.state.write();
        if let Some(old) = st.profiles.get(id) {
            profile.premium = old.profile.premium;
        }
        st.profiles.insert(id.clone(), Stored::new(profile.clone()));
        profile
    }

    pub(super) fn profile(&self, id: &EntryId) -> Option<Arc<Profile>> {
        self.state
            .read()
            .profiles
            .get(id)
            .map(|s| s.profile.clone())
    }

    pub(super) fn set_premium(&self, id: &EntryId, premium: bool) -> Option<Profile> {
        let mut st = self.state.write();
        let stored = st.profiles.get_mut(id)?;
        let mut p = (*stored.profile).clone();
        p.premium = premium;
        *stored = Stored::new(p.clone());
        Some(p)
    }

    /// One index query whose `keep` runs every rule under the store's read lock, so only
    /// eligible profiles enter the page. After `ctx.max_examined` candidates `keep` admits
    /// anything, which fills the page and ends the scan; those are checked again below and
    /// the answer may be short, with a cursor to go on from.
    pub(super) fn recommend(
        &self,
        index: &Index,
        me: &EntryId,
        after: Option<PageKey>,
        ctx: &Ctx,
    ) -> Result<RecommendationsPage, PeopleError> {
        let st = self.state.read();
        let mine = st
            .profiles
            .get(me)
            .ok_or_else(|| PeopleError::ProfileRequired(me.to_string()))?;
        let at = position_of(index, me)?;
        let person = st.people.get(me);
        // Exclusions first: a hash-set lookup each, however many were swiped.
        let excluded = |n: &Neighbor| {
            let id = &n.entry.id;
            n.entry.updated_at_ms < ctx.fresh_since_ms
                || id == me
                || person.is_some_and(|p| p.excludes(id))
        };
        let fits = |n: &Neighbor| -> Option<&Stored> {
            let them = st.profiles.get(&n.entry.id)?;
            mine.prefs
                .mutual(&them.prefs, n.distance_m, ctx.today)
                .then_some(them)
        };
        let eligible = |n: &Neighbor| if excluded(n) { None } else { fits(n) };
        // Only candidates whose preferences had to be tested count towards the cap, so a
        // viewer who swiped everyone nearby still gets a full page, just later.
        let mut examined = 0usize;
        let page = index.nearest_page(
            &at,
            ctx.limit,
            &Filter::any().kind(Kind::Profile),
            Some(mine.prefs.max_m()),
            after.as_ref(),
            |n| {
                if excluded(n) {
                    return false;
                }
                examined += 1;
                fits(n).is_some() || examined > ctx.max_examined
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

    /// Records a swipe and, for a like answering a like, the match: one critical section.
    pub(super) fn swipe(
        &self,
        me: &EntryId,
        target: &EntryId,
        action: Action,
        now_ms: i64,
        limits: Limits,
    ) -> SwipeVerdict {
        let mut st = self.state.write();
        let person = st.people.entry(me.clone()).or_default();
        if person.hidden.contains(target) {
            return SwipeVerdict::Hidden;
        }
        if person.swiped.contains_key(target) {
            return SwipeVerdict::Already;
        }
        let today = ymd_of(now_ms);
        if person.day != today {
            (person.day, person.likes, person.superlikes) = (today, 0, 0);
        }
        match action {
            Action::Like if person.likes >= limits.likes => {
                return SwipeVerdict::Limited(Action::Like)
            }
            Action::Superlike if person.superlikes >= limits.superlikes => {
                return SwipeVerdict::Limited(Action::Superlike)
            }
            Action::Like => person.likes += 1,
            Action::Superlike => person.superlikes += 1,
            Action::Pass => {}
        }
        person.swiped.insert(target.clone(), action);
        // Answering someone's like takes it off the likes-received list.
        person.likers.remove(target);
        if !action.is_like() {
            return SwipeVerdict::Recorded;
        }
        let other = st.people.entry(target.clone()).or_default();
        match other.swiped.get(me) {
            Some(a) if a.is_like() => {
                other.matches.insert(me.clone(), now_ms);
                other.likers.remove(me);
                if let Some(mine) = st.people.get_mut(me) {
                    mine.matches.insert(target.clone(), now_ms);
                }
                SwipeVerdict::Matched
            }
            Some(_) => SwipeVerdict::Recorded,
            None => {
                other
                    .likers
                    .insert(me.clone(), (now_ms, action == Action::Superlike));
                SwipeVerdict::Recorded
            }
        }
    }

    /// This person's matches, newest first, at most `max`.
    pub(super) fn matches(&self, me: &EntryId, max: usize) -> Vec<Matched> {
        let st = self.state.read();
        let Some(person) = st.people.get(me) else {
            return Vec::new();
        };
        let mut out: Vec<_> = person
            .matches
            .iter()
            .filter_map(|(id, at)| Some((st.profiles.get(id)?.profile.clone(), *at)))
            .collect();
        out.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| a.0.profile_id.cmp(&b.0.profile_id))
        });
        out.truncate(max);
        out
    }

    /// Ends a match on both sides; false when there was none.
    pub(super) fn unmatch(&self, me: &EntryId, other: &EntryId) -> bool {
        let mut st = self.state.write();
        let removed = st
            .people
            .get_mut(me)
            .is_some_and(|p| p.matches.remove(other).is_some());
        if let Some(p) = st.people.get_mut(other) {
            p.matches.remove(me);
        }
        removed
    }

    /// Hides the two from each other for good: no recommendation either way, no match, no
    /// pending like.
    pub(super) fn block(&self, me: &EntryId, other: &EntryId) {
        let mut st = self.state.write();
        for (a, b) in [(me, other), (other, me)] {
            let p = st.people.entry(a.clone()).or_default();
            p.hidden.insert(b.clone());
            p.matches.remove(b);
            p.likers.remove(b);
        }
    }

    pub(super) fn likes_count(&self, me: &EntryId) -> usize {
        self.state
            .read()
            .people
            .get(me)
            .map_or(0, |p| p.likers.len())
    }

    /// Who liked this person (not swiped back yet), newest first, at most `max`.
    pub(super) fn likes(&self, me: &EntryId, max: usize) -> Vec<Liked> {
        let st = self.state.read();
        let Some(person) = st.people.get(me) else {
            return Vec::new();
        };
        let mut out: Vec<_> = person
            .likers
            .iter()
            .filter_map(|(id, (at, sup))| Some((st.profiles.get(id)?.profile.clone(), *at, *sup)))
            .collect();
        out.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| a.0.profile_id.cmp(&b.0.profile_id))
        });
        out.truncate(max);
        out
    }

    /// Bulk registration for benchmarks: profiles and swipes, no limits, no matches.
    pub fn load(&self, profiles: Vec<(EntryId, Profile)>, swipes: Vec<(EntryId, EntryId, Action)>) {
        let mut st = self.state.write();
        for (id, p) in profiles {
            st.profiles.insert(id, Stored::new(p));
        }
        for (me, target, action) in swipes {
            st.people
                .entry(me)
                .or_default()
                .swiped
                .insert(target, action);
        }
    }
}
