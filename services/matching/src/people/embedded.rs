//! Embedded mode: every profile, swipe, match, block and counter in this process, behind
//! one lock. Each operation is one critical section, so a mutual like creates exactly one
//! match. The "already swiped" test is a hash-set lookup per candidate, whatever the
//! number of swipes.

use std::sync::Arc;

use geomatch_index::EntryId;
use parking_lot::{RwLock, RwLockReadGuard};
use rustc_hash::{FxHashMap, FxHashSet};

use super::date::ymd_of;
use super::profile::{Prefs, Profile};
use super::{Action, Limits, SwipeVerdict};

/// A stored profile and its preferences, computed once per write.
pub struct Stored {
    pub profile: Arc<Profile>,
    pub prefs: Prefs,
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
pub struct Person {
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
    pub fn excludes(&self, other: &EntryId) -> bool {
        self.swiped.contains_key(other) || self.hidden.contains(other)
    }
}

#[derive(Default)]
pub struct State {
    pub profiles: FxHashMap<EntryId, Stored>,
    pub people: FxHashMap<EntryId, Person>,
}

#[derive(Default)]
pub struct Embedded {
    state: RwLock<State>,
}

impl Embedded {
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read()
    }

    /// Writes a profile, keeping its premium flag.
    pub fn put_profile(&self, id: &EntryId, mut profile: Profile) -> Profile {
        let mut st = self.state.write();
        if let Some(old) = st.profiles.get(id) {
            profile.premium = old.profile.premium;
        }
        st.profiles.insert(id.clone(), Stored::new(profile.clone()));
        profile
    }

    pub fn profile(&self, id: &EntryId) -> Option<Arc<Profile>> {
        self.state
            .read()
            .profiles
            .get(id)
            .map(|s| s.profile.clone())
    }

    pub fn set_premium(&self, id: &EntryId, premium: bool) -> Option<Profile> {
        let mut st = self.state.write();
        let stored = st.profiles.get_mut(id)?;
        let mut p = (*stored.profile).clone();
        p.premium = premium;
        *stored = Stored::new(p.clone());
        Some(p)
    }

    /// Records a swipe and, for a like answering a like, the match: one critical section.
    pub fn swipe(
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
                st.people
                    .get_mut(me)
                    .expect("inserted above")
                    .matches
                    .insert(target.clone(), now_ms);
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
    pub fn matches(&self, me: &EntryId, max: usize) -> Vec<(Arc<Profile>, i64)> {
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
    pub fn unmatch(&self, me: &EntryId, other: &EntryId) -> bool {
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
    pub fn block(&self, me: &EntryId, other: &EntryId) {
        let mut st = self.state.write();
        for (a, b) in [(me, other), (other, me)] {
            let p = st.people.entry(a.clone()).or_default();
            p.hidden.insert(b.clone());
            p.matches.remove(b);
            p.likers.remove(b);
        }
    }

    pub fn likes_count(&self, me: &EntryId) -> usize {
        self.state
            .read()
            .people
            .get(me)
            .map_or(0, |p| p.likers.len())
    }

    /// Who liked this person (not swiped back yet), newest first, at most `max`.
    pub fn likes(&self, me: &EntryId, max: usize) -> Vec<(Arc<Profile>, i64, bool)> {
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

    /// Bulk registration for benchmarks: profiles and swipes, no limits.
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
