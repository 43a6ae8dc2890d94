//! The small types of people nearby that the core ([`super::People`]), the stores and the
//! routes all speak: swipe actions and verdicts, the daily limits, what one
//! recommendations request holds fixed, and the request and answer bodies.

use std::sync::Arc;

use geomatch_index::{EntryId, Index, Kind, Position};
use serde::{Deserialize, Serialize};

use super::error::PeopleError;
use super::profile::{Card, Profile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Like,
    Pass,
    Superlike,
}

impl Action {
    /// Like and superlike both count as liking for a match.
    pub(super) fn is_like(self) -> bool {
        !matches!(self, Action::Pass)
    }
    pub(super) fn as_str(self) -> &'static str {
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

/// One of a person's matches, as a store lists it: the other profile, and when.
pub type Matched = (Arc<Profile>, i64);

/// One like received and not answered yet: the liker's profile, when, and whether it was
/// a superlike.
pub type Liked = (Arc<Profile>, i64, bool);

/// What one recommendations request holds fixed; the store screens candidates by it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ctx {
    /// Today's UTC date (`yyyymmdd`): ages are computed on it.
    pub today: u32,
    /// Candidates whose location was last reported before this are not recommended.
    pub fresh_since_ms: i64,
    /// Recommendations wanted (the page size).
    pub limit: usize,
    /// Candidates whose preferences were tested, at most, before the store answers with
    /// what it has and a cursor (`people.max_examined`).
    pub max_examined: usize,
}

/// The viewer's position: its entry of kind profile in the index.
pub fn position_of(index: &Index, me: &EntryId) -> Result<Position, PeopleError> {
    index
        .get(me)
        .filter(|e| e.kind == Kind::Profile)
        .map(|e| e.position)
        .ok_or_else(|| PeopleError::LocationRequired(me.to_string()))
}

/// Rounds a distance to whole kilometres, at least 1 (so "0 km" never gives away that
/// someone is within 500 m).
pub fn distance_km(m: f64) -> u32 {
    ((m / 1000.0).round() as u32).max(1)
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
