//! Everything people nearby can refuse, with its status and stable code.

use actix_web::http::StatusCode;
use geomatch_common::error::ErrorCode;

use super::date::{next_midnight_ms, rfc3339};

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
        /// The next UTC midnight (sent as `X-RateLimit-Reset`, in epoch seconds).
        reset_at_ms: i64,
        /// Whole seconds from the refusal to the reset, at least 1 (`Retry-After`).
        retry_after_s: u64,
    },
    #[error("listing who liked you needs premium; the count is free")]
    PremiumRequired,
    #[error("no match with {0}")]
    NoMatch(String),
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
}

impl PeopleError {
    /// The daily budget of `what` (`likes` or `superlikes`), `limit` a day, is used up at
    /// `now_ms`: it resets at the next UTC midnight.
    pub fn daily_limit(what: &'static str, limit: u32, now_ms: i64) -> Self {
        let reset_at_ms = next_midnight_ms(now_ms);
        PeopleError::DailyLimit {
            what,
            limit,
            reset_at_ms,
            retry_after_s: ((reset_at_ms - now_ms).max(1000) as u64).div_ceil(1000),
        }
    }
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
    /// The daily limits: until the next UTC midnight; a store out of reach: one second.
    fn retry_after_s(&self) -> Option<u64> {
        match self {
            PeopleError::DailyLimit { retry_after_s, .. } => Some(*retry_after_s),
            PeopleError::Unavailable(_) => Some(1),
            _ => None,
        }
    }
}

/// Parses a path or body profile id.
pub fn profile_id(raw: &str) -> Result<geomatch_index::EntryId, PeopleError> {
    geomatch_index::EntryId::parse(raw).map_err(|e| PeopleError::Id(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_limit_is_retried_after_the_next_utc_midnight() {
        // 2026-11-21T23:59:58.500Z
        let now = 1_795_305_598_500;
        let e = PeopleError::daily_limit("likes", 2, now);
        assert_eq!(e.retry_after_s(), Some(2));
        assert!(
            matches!(e, PeopleError::DailyLimit { reset_at_ms, .. } if reset_at_ms == 1_795_305_600_000)
        );
        assert_eq!(
            PeopleError::Unavailable("x".into()).retry_after_s(),
            Some(1)
        );
        assert_eq!(PeopleError::Cursor.retry_after_s(), None);
    }
}
