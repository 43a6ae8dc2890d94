//! Everything people nearby can refuse, with its status and stable code.

use actix_web::http::StatusCode;
use geomatch_common::error::ErrorCode;

use super::date::rfc3339;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeopleError {
    #[error("invalid profile id: {0}")]
    Id(String),
    /// A profile field out of its rules: the code names the field.
    #[error("{detail}")]
    Invalid { code: &'static str, detail: String },
    #[error("no profile {0}")]
    NotFound(String),
    #[error("profile {0} has no profile yet: PUT /v1/profiles/{0} first")]
    ProfileRequired(String),
    #[error("profile {0} has no location yet: PUT /v1/profiles/{0}/location first")]
    LocationRequired(String),
    #[error("the cursor is not one this service issued")]
    Cursor,
    #[error("limit must be in 1..={max}, got {got}")]
    Limit { got: usize, max: usize },
    #[error("a profile cannot swipe, block or unmatch itself")]
    SelfTarget,
    #[error("profile {0} was already swiped")]
    AlreadySwiped(String),
    #[error("the daily limit of {limit} {what} is used up; it resets at {}", rfc3339(*.reset_at_ms))]
    DailyLimit {
        what: &'static str,
        limit: u32,
        reset_at_ms: i64,
    },
    #[error("listing who liked you needs premium; the count is free")]
    PremiumRequired,
    #[error("no match with {0}")]
    NoMatch(String),
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
}

impl ErrorCode for PeopleError {
    fn status(&self) -> StatusCode {
        match self {
            PeopleError::Id(_) | PeopleError::Cursor | PeopleError::Limit { .. } => {
                StatusCode::BAD_REQUEST
            }
            PeopleError::Invalid { .. } | PeopleError::SelfTarget => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PeopleError::NotFound(_) | PeopleError::NoMatch(_) => StatusCode::NOT_FOUND,
            PeopleError::ProfileRequired(_)
            | PeopleError::LocationRequired(_)
            | PeopleError::AlreadySwiped(_) => StatusCode::CONFLICT,
            PeopleError::DailyLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            PeopleError::PremiumRequired => StatusCode::FORBIDDEN,
            PeopleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            PeopleError::Id(_) => "invalid_profile_id",
            PeopleError::Invalid { code, .. } => code,
            PeopleError::NotFound(_) => "profile_not_found",
            PeopleError::ProfileRequired(_) => "profile_required",
            PeopleError::LocationRequired(_) => "location_required",
            PeopleError::Cursor => "invalid_cursor",
            PeopleError::Limit { .. } => "invalid_limit",
            PeopleError::SelfTarget => "invalid_target",
            PeopleError::AlreadySwiped(_) => "already_swiped",
            PeopleError::DailyLimit { what, .. } => {
                if *what == "superlikes" {
                    "daily_superlike_limit"
                } else {
                    "daily_like_limit"
                }
            }
            PeopleError::PremiumRequired => "premium_required",
            PeopleError::NoMatch(_) => "match_not_found",
            PeopleError::Unavailable(_) => "store_unavailable",
        }
    }
}

/// Parses a path or body profile id.
pub fn profile_id(raw: &str) -> Result<geomatch_index::EntryId, PeopleError> {
    geomatch_index::EntryId::parse(raw).map_err(|e| PeopleError::Id(e.to_string()))
}
