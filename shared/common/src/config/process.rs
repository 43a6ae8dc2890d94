//! How the process runs: the HTTP listener, the mode, the Redis pool, logging and the
//! tokens clients present (sections `server`, `mode`, `redis`, `log`, `auth`).

use std::{fmt, time::Duration};

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use super::error::{check_range, invalid, ConfigError};

/// JWT signing secret used when none is configured. Refused in Redis mode, which is how
/// geomatch is deployed; fine for a laptop.
pub const DEV_JWT_SECRET: &str = "INSECURE-DEV-ONLY-geomatch-jwt-secret-do-not-deploy";

/// Largest accepted `server.max_body_bytes` (64 MiB): larger bodies belong in a bulk
/// import job, not in a request.
pub const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
const MAX_WORKERS: usize = 1024;
const MAX_SHUTDOWN_TIMEOUT_S: u64 = 3600;
const MAX_POOL_SIZE: usize = 1024;
const MAX_TIMEOUT_MS: u64 = 60_000;
/// HS256 wants a key at least as long as its 256-bit output.
const MIN_JWT_SECRET_BYTES: usize = 32;

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind; `0.0.0.0` so the port is reachable inside a container.
    pub host: String,
    /// Port to bind; 0 asks the OS for a free one (tests use it).
    pub port: u16,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// HTTP worker threads; 0 means one per available core.
    pub workers: usize,
    /// How long in-flight requests may run after a stop signal before they are dropped.
    /// Keep it below the orchestrator's grace period (Kubernetes: 30 s).
    pub shutdown_timeout_s: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".to_owned(),
            port: 8080,
            max_body_bytes: 64 * 1024,
            workers: 0,
            shutdown_timeout_s: 25,
        }
    }
}

impl ServerSettings {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_s)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty"));
        }
        check_range(
            "server.max_body_bytes",
            self.max_body_bytes,
            1,
            MAX_BODY_BYTES_LIMIT,
        )?;
        check_range("server.workers", self.workers, 0, MAX_WORKERS)?;
        check_range(
            "server.shutdown_timeout_s",
            self.shutdown_timeout_s,
            0,
            MAX_SHUTDOWN_TIMEOUT_S,
        )
    }
}

/// Where shared state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One process holds everything in memory: the simplest deployment and the fastest.
    #[default]
    Embedded,
    /// Services run as separate processes and share state through Redis.
    Redis,
}

/// The Redis connection pool (Redis mode).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://` URL; may carry a password, so
    /// `Debug` redacts it.
    pub url: String,
    /// Connections kept per process.
    pub pool_size: usize,
    /// Time allowed to open a new connection.
    pub connect_timeout_ms: u64,
    /// Time a request may wait for a free pooled connection before failing fast.
    pub wait_timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            pool_size: 64,
            connect_timeout_ms: 500,
            wait_timeout_ms: 500,
        }
    }
}

impl RedisSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        const SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if !SCHEMES.iter().any(|scheme| self.url.starts_with(scheme)) {
            return Err(invalid(
                "redis.url",
                format!(
                    "must start with one of {}, got {:?}",
                    SCHEMES.join(", "),
                    redact_url(&self.url)
                ),
            ));
        }
        check_range("redis.pool_size", self.pool_size, 1, MAX_POOL_SIZE)?;
        check_range(
            "redis.connect_timeout_ms",
            self.connect_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        )?;
        check_range(
            "redis.wait_timeout_ms",
            self.wait_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        )
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
            .finish()
    }
}

/// Replaces the user-info part of a URL (`user:password@`) so it can be logged.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!(
            "{}[redacted]{}",
            &url[..scheme_end],
            &url[scheme_end + at..]
        ),
        None => url.to_owned(),
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or directives (`info,geomatch=debug`).
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Plain,
            level: "info".to_owned(),
        }
    }
}

impl LogSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        EnvFilter::try_new(&self.level).map(drop).map_err(|e| {
            invalid(
                "log.level",
                format!("{:?} is not a filter: {e}", self.level),
            )
        })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Plain,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Tokens clients present (riders, drivers, profiles).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 signing secret, at least 32 bytes.
    pub jwt_secret: Secret,
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: Secret::new(DEV_JWT_SECRET),
            issuer: "geomatch".to_owned(),
            audience: "geomatch".to_owned(),
        }
    }
}

impl AuthSettings {
    /// Whether the built-in development secret is in use (worth a warning at start-up).
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_secret.expose() == DEV_JWT_SECRET
    }

    pub(super) fn validate(&self, mode: Mode) -> Result<(), ConfigError> {
        let secret_len = self.jwt_secret.expose().len();
        if secret_len < MIN_JWT_SECRET_BYTES {
            return Err(invalid(
                "auth.jwt_secret",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes, got {secret_len}"),
            ));
        }
        if mode == Mode::Redis && self.uses_dev_secret() {
            return Err(invalid(
                "auth.jwt_secret",
                "the built-in development secret is refused in redis mode; \
                 set GEOMATCH__AUTH__JWT_SECRET",
            ));
        }
        if self.issuer.is_empty() {
            return Err(invalid("auth.issuer", "must not be empty"));
        }
        if self.audience.is_empty() {
            return Err(invalid("auth.audience", "must not be empty"));
        }
        Ok(())
    }
}

/// A string that must not end up in logs: `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call it only where the value is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[cfg(test)]
// `figment::Jail` closures return `figment::Error`, a large type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::config::tests::load_in;
    use crate::config::Settings;
    use figment::Jail;

    #[test]
    fn redis_mode_refuses_the_development_secret() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__MODE", "redis");
            let message = load_in(jail, None).unwrap_err().to_string();

            assert!(message.contains("`auth.jwt_secret`"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut settings = Settings::default();
        settings.redis.url = "redis://user:hunter2@cache:6379/0".to_owned();
        let printed = format!("{settings:?}");

        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("redis://[redacted]@cache:6379/0"),
            "{printed}"
        );
        assert!(!printed.contains(DEV_JWT_SECRET), "{printed}");
    }

    #[test]
    fn urls_without_credentials_are_logged_unchanged() {
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact_url("rediss://:pw@h/1"), "rediss://[redacted]@h/1");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
