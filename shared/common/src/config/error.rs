//! Why settings are refused, and the range checks every section's `validate` uses.

use std::{fmt, path::PathBuf};

/// Why settings could not be loaded. The message always names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A value that does not parse, has the wrong type, or a key that does not exist.
    #[error("{}", problems.join("; "))]
    Load { problems: Vec<String> },
    /// A value that parses but is out of range.
    #[error("invalid configuration value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// `value` must be in `min..=max`.
pub(super) fn check_range<T>(key: &'static str, value: T, min: T, max: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display,
{
    if value < min || value > max {
        return Err(invalid(
            key,
            format!("must be in {min}..={max}, got {value}"),
        ));
    }
    Ok(())
}

/// `value` must be finite and in `(min, max]`.
pub(super) fn check_open_closed(
    key: &'static str,
    value: f64,
    min: f64,
    max: f64,
) -> Result<(), ConfigError> {
    if !(value.is_finite() && value > min && value <= max) {
        return Err(invalid(
            key,
            format!("must be in ({min}, {max}], got {value}"),
        ));
    }
    Ok(())
}

/// The error for `key`, with the reason its value is refused.
pub(super) fn invalid(key: &'static str, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_string(),
    }
}
