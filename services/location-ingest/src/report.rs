//! A location report as a phone sends it, and its validation.

use actix_web::http::StatusCode;
use geomatch_common::error::ErrorCode;
use geomatch_index::{CoordError, EntryId, Kind, Position, Previous, Update, MAX_SEQ};
use serde::{Deserialize, Serialize};

/// The body of `PUT /v1/drivers/{id}/location` (and of a batch item, without the id, and
/// of a WebSocket location frame).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocationBody {
    pub lat: f64,
    pub lng: f64,
    /// The device's sequence number for this report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Device time, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f64>,
}

/// A validated report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub position: Position,
    pub seq: Option<u64>,
    pub device_ts_ms: Option<i64>,
    pub heading_deg: Option<f64>,
    pub speed_mps: Option<f64>,
    pub accuracy_m: Option<f64>,
}

impl Report {
    /// The index update this report makes for `id` of `kind`, received at `now`.
    pub(crate) fn update(&self, id: &EntryId, kind: Kind, now: i64) -> Update {
        Update {
            seq: self.seq,
            device_ts_ms: self.device_ts_ms,
            ..Update::moved(id.clone(), kind, self.position, now)
        }
    }

    /// Milliseconds from the stored state to this report: by device clocks when both have
    /// one, else by server receive times.
    pub(crate) fn elapsed_ms(&self, prev: &Previous, now: i64) -> i64 {
        match (prev.device_ts_ms, self.device_ts_ms) {
            (Some(a), Some(b)) => b - a,
            _ => now - prev.updated_at_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Coordinates(#[from] CoordError),
    #[error("heading_deg {0} is not a finite number in [0, 360)")]
    Heading(f64),
    #[error("speed_mps {0} is not a finite number ≥ 0")]
    Speed(f64),
    #[error("accuracy_m {0} is not a finite number ≥ 0")]
    Accuracy(f64),
    #[error("ts_ms {ts_ms} is {ahead_ms} ms ahead of the server clock (at most {max_ms} allowed)")]
    Future {
        ts_ms: i64,
        ahead_ms: i64,
        max_ms: i64,
    },
    #[error("ts_ms {0} is before 2000-01-01")]
    Ancient(i64),
    #[error("seq {0} is above {MAX_SEQ}")]
    Seq(u64),
}

impl ErrorCode for ReportError {
    fn status(&self) -> StatusCode {
        StatusCode::UNPROCESSABLE_ENTITY
    }
    fn code(&self) -> &'static str {
        match self {
            ReportError::Coordinates(CoordError::Latitude(_)) => "invalid_latitude",
            ReportError::Coordinates(CoordError::Longitude(_)) => "invalid_longitude",
            ReportError::Heading(_) => "invalid_heading",
            ReportError::Speed(_) => "invalid_speed",
            ReportError::Accuracy(_) => "invalid_accuracy",
            ReportError::Future { .. } => "timestamp_in_future",
            ReportError::Ancient(_) => "invalid_timestamp",
            ReportError::Seq(_) => "invalid_seq",
        }
    }
}

/// 2000-01-01T00:00:00Z in ms: anything older is a broken device clock, not a position.
const EPOCH_2000_MS: i64 = 946_684_800_000;

impl LocationBody {
    /// Validates against the server clock `now_ms`; device time may be at most
    /// `max_future_ms` ahead of it.
    pub fn validate(&self, now_ms: i64, max_future_ms: i64) -> Result<Report, ReportError> {
        let position = Position::new(self.lat, self.lng)?;
        if let Some(h) = self.heading_deg {
            if !h.is_finite() || !(0.0..360.0).contains(&h) {
                return Err(ReportError::Heading(h));
            }
        }
        if let Some(s) = self.speed_mps {
            if !s.is_finite() || s < 0.0 {
                return Err(ReportError::Speed(s));
            }
        }
        if let Some(a) = self.accuracy_m {
            if !a.is_finite() || a < 0.0 {
                return Err(ReportError::Accuracy(a));
            }
        }
        if let Some(ts) = self.ts_ms {
            if ts < EPOCH_2000_MS {
                return Err(ReportError::Ancient(ts));
            }
            let ahead = ts.saturating_sub(now_ms);
            if ahead > max_future_ms {
                return Err(ReportError::Future {
                    ts_ms: ts,
                    ahead_ms: ahead,
                    max_ms: max_future_ms,
                });
            }
        }
        if let Some(seq) = self.seq {
            if seq > MAX_SEQ {
                return Err(ReportError::Seq(seq));
            }
        }
        Ok(Report {
            position,
            seq: self.seq,
            device_ts_ms: self.ts_ms,
            heading_deg: self.heading_deg,
            speed_mps: self.speed_mps,
            accuracy_m: self.accuracy_m,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn body(lat: f64, lng: f64) -> LocationBody {
        LocationBody {
            lat,
            lng,
            seq: None,
            ts_ms: None,
            heading_deg: None,
            speed_mps: None,
            accuracy_m: None,
        }
    }

    #[test]
    fn each_bad_field_has_its_own_code() {
        let code = |b: LocationBody| b.validate(NOW, 30_000).unwrap_err().code();
        assert_eq!(code(body(91.0, 0.0)), "invalid_latitude");
        assert_eq!(code(body(0.0, -180.01)), "invalid_longitude");
        assert_eq!(
            code(LocationBody {
                heading_deg: Some(360.0),
                ..body(0.0, 0.0)
            }),
            "invalid_heading"
        );
        assert_eq!(
            code(LocationBody {
                heading_deg: Some(-0.5),
                ..body(0.0, 0.0)
            }),
            "invalid_heading"
        );
        assert_eq!(
            code(LocationBody {
                speed_mps: Some(-1.0),
                ..body(0.0, 0.0)
            }),
            "invalid_speed"
        );
        assert_eq!(
            code(LocationBody {
                accuracy_m: Some(-3.0),
                ..body(0.0, 0.0)
            }),
            "invalid_accuracy"
        );
        assert_eq!(
            code(LocationBody {
                ts_ms: Some(NOW + 30_001),
                ..body(0.0, 0.0)
            }),
            "timestamp_in_future"
        );
        assert_eq!(
            code(LocationBody {
                ts_ms: Some(5),
                ..body(0.0, 0.0)
            }),
            "invalid_timestamp"
        );
        assert_eq!(
            code(LocationBody {
                seq: Some(u64::MAX),
                ..body(0.0, 0.0)
            }),
            "invalid_seq"
        );
    }

    #[test]
    fn boundaries_are_accepted() {
        let ok = LocationBody {
            heading_deg: Some(0.0),
            speed_mps: Some(0.0),
            accuracy_m: Some(0.0),
            ts_ms: Some(NOW + 30_000),
            seq: Some(MAX_SEQ),
            ..body(-90.0, 180.0)
        };
        let r = ok.validate(NOW, 30_000).unwrap();
        assert_eq!(
            (r.position.lat(), r.position.lng(), r.seq),
            (-90.0, 180.0, Some(MAX_SEQ))
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<LocationBody>(r#"{"lat":1,"lng":2,"altitude":3}"#).is_err());
    }
}
