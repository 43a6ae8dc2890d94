//! The one configuration model of every geomatch process.
//!
//! Values come from, in increasing precedence:
//! 1. the built-in defaults (the `Default` impl of each section),
//! 2. an optional TOML file (`--config FILE` or `GEOMATCH_CONFIG`),
//! 3. environment variables `GEOMATCH__SECTION__KEY`, e.g. `GEOMATCH__SERVER__PORT=9000`.
//!
//! Unknown keys are refused, so a misspelt variable fails at start-up instead of being
//! silently ignored, and every error names the key and where its value came from.
//!
//! # Layout
//! - `mod.rs` (here): [`Settings`], loading ([`Settings::load`]) and validation
//!   ([`Settings::validate`]), and how a load error names its key and source.
//! - `error.rs`: [`ConfigError`] and the range checks the sections share.
//! - `process.rs`: `server`, `mode`, `redis`, `log`, `auth`.
//! - `ingest.rs`: `ingest`, `index`.
//! - `matching.rs`: `matching`, `people`.
//! - `pricing.rs`: `eta`, `pricing` (products, surge).
//!
//! Each section's `validate` lives with its section; the section files use `error.rs` and
//! nothing else of this module.

mod error;
mod ingest;
mod matching;
mod pricing;
mod process;

use std::path::Path;

use figment::{
    providers::{Env, Format, Toml},
    Figment, Source,
};
use geomatch_index::IndexConfig;
use serde::Deserialize;

pub use error::ConfigError;
pub use ingest::IngestSettings;
pub use matching::{MatchingSettings, PeopleSettings, MAX_PEOPLE_NOT_SEEN_FOR_S};
pub use pricing::{EtaSettings, PricingSettings, ProductSettings, SurgeSettings};
pub use process::{
    AuthSettings, LogFormat, LogSettings, Mode, RedisSettings, Secret, ServerSettings,
    DEV_JWT_SECRET, MAX_BODY_BYTES_LIMIT,
};

use ingest::validate_index;

/// Prefix of the environment variables read; `__` also separates section from key.
pub const ENV_PREFIX: &str = "GEOMATCH__";

/// Everything a geomatch process can be configured with.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    /// Where shared state lives: in this process, or in Redis so replicas share it.
    pub mode: Mode,
    /// Used in [`Mode::Redis`] only.
    pub redis: RedisSettings,
    /// The in-memory index of drivers and profiles.
    pub index: IndexConfig,
    pub log: LogSettings,
    pub auth: AuthSettings,
    /// Location ingest rules.
    pub ingest: IngestSettings,
    /// Ride dispatch rules.
    pub matching: MatchingSettings,
    /// The ETA model and its online speed learner.
    pub eta: EtaSettings,
    /// Products, fares, quotes and surge.
    pub pricing: PricingSettings,
    /// People nearby: recommendations, swipes, matches and their limits.
    pub people: PeopleSettings,
}

impl Settings {
    /// Loads the settings: defaults, then `file` if given, then `GEOMATCH__…` environment
    /// variables; then checks every range. Call once at start-up.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        if let Some(path) = file {
            // Checked here so a wrong path gets its own message rather than a parse error.
            std::fs::metadata(path).map_err(|source| ConfigError::File {
                path: path.to_owned(),
                source,
            })?;
        }
        Self::from_figment(&Self::figment(file))
    }

    /// The layered sources, without extracting them; [`Settings::load`] is the usual entry.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::new();
        if let Some(path) = file {
            // `file_exact`: `Toml::file` would also search parent directories.
            figment = figment.merge(Toml::file_exact(path));
        }
        figment.merge(Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Extracts and validates settings from any figment (tests build their own).
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(ConfigError::from_figment)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot: ranges, URL schemes, filter syntax.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.redis.validate()?;
        validate_index(&self.index)?;
        self.log.validate()?;
        self.ingest.validate()?;
        self.matching.validate()?;
        self.eta.validate()?;
        self.people.validate()?;
        self.pricing
            .validate(&self.ingest.vehicle_classes, self.index.cell_resolution)?;
        self.auth.validate(self.mode)
    }
}

impl ConfigError {
    fn from_figment(error: figment::Error) -> Self {
        let problems = error.into_iter().map(|e| describe(&e)).collect();
        ConfigError::Load { problems }
    }
}

/// One figment error as "invalid configuration value for `server.port` (environment
/// variable GEOMATCH__SERVER__PORT): invalid type: …".
fn describe(error: &figment::Error) -> String {
    let origin = error.metadata.as_ref().map(|md| match &md.source {
        Some(Source::File(path)) => format!("TOML file {}", path.display()),
        _ if md.name.contains("environment") && !error.path.is_empty() => format!(
            "environment variable {ENV_PREFIX}{}",
            error.path.join("__").to_uppercase()
        ),
        _ => md.name.to_string(),
    });
    let mut out = if error.path.is_empty() {
        "invalid configuration".to_owned()
    } else {
        format!("invalid configuration value for `{}`", error.path.join("."))
    };
    if let Some(origin) = origin {
        out.push_str(&format!(" ({origin})"));
    }
    out.push_str(&format!(": {}", error.kind));
    out
}

#[cfg(test)]
// `figment::Jail` closures return `figment::Error`, a large type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    /// Loads settings inside `jail`, from `file` in its directory when given.
    pub(super) fn load_in(jail: &Jail, file: Option<&str>) -> Result<Settings, ConfigError> {
        let path = file.map(|f| jail.directory().join(f));
        Settings::load(path.as_deref())
    }

    #[test]
    fn defaults_apply_when_nothing_is_configured() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let settings = load_in(jail, None).expect("defaults are valid");

            assert_eq!(settings, Settings::default());
            assert_eq!(settings.server.host, "0.0.0.0");
            assert_eq!(settings.server.port, 8080);
            assert_eq!(settings.server.max_body_bytes, 64 * 1024);
            assert_eq!(settings.server.workers, 0);
            assert_eq!(settings.mode, Mode::Embedded);
            assert_eq!(settings.redis.url, "redis://127.0.0.1:6379");
            assert_eq!(settings.redis.connect_timeout_ms, 500);
            assert_eq!(settings.redis.wait_timeout_ms, 500);
            assert_eq!(settings.index, IndexConfig::default());
            assert_eq!(settings.log.format, LogFormat::Plain);
            assert_eq!(settings.log.level, "info");
            assert!(settings.auth.uses_dev_secret());
            assert_eq!(settings.auth.issuer, "geomatch");
            assert_eq!(settings.auth.audience, "geomatch");
            Ok(())
        });
    }

    #[test]
    fn a_file_overrides_defaults_and_leaves_the_rest() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "geomatch.toml",
                r#"
                mode = "redis"
                [server]
                port = 9001
                [redis]
                url = "redis://cache:6380"
                pool_size = 4
                [index]
                cell_resolution = 8
                [log]
                format = "json"
                [auth]
                jwt_secret = "a-production-secret-of-at-least-32-bytes"
                "#,
            )?;
            let settings = load_in(jail, Some("geomatch.toml")).expect("file is valid");

            assert_eq!(settings.mode, Mode::Redis);
            assert_eq!(settings.server.port, 9001);
            assert_eq!(settings.server.host, "0.0.0.0", "unset keys keep defaults");
            assert_eq!(settings.redis.url, "redis://cache:6380");
            assert_eq!(settings.redis.pool_size, 4);
            assert_eq!(settings.redis.wait_timeout_ms, 500);
            assert_eq!(settings.index.cell_resolution, 8);
            assert_eq!(settings.index.bucket_level, 16);
            assert_eq!(settings.log.format, LogFormat::Json);
            assert!(!settings.auth.uses_dev_secret());
            Ok(())
        });
    }

    #[test]
    fn environment_variables_override_the_file() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("geomatch.toml", "[server]\nport = 9001\nworkers = 2\n")?;
            jail.set_env("GEOMATCH__SERVER__PORT", "9000");
            jail.set_env("GEOMATCH__LOG__LEVEL", "debug,h3o=warn");
            jail.set_env("GEOMATCH__INDEX__BUCKET_LEVEL", "18");
            let settings = load_in(jail, Some("geomatch.toml")).expect("valid");

            assert_eq!(settings.server.port, 9000);
            assert_eq!(
                settings.server.workers, 2,
                "file value kept when env is silent"
            );
            assert_eq!(settings.log.level, "debug,h3o=warn");
            assert_eq!(settings.index.bucket_level, 18);
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_is_reported_with_its_key_and_source() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__SERVER__PORT", "eighty");
            let message = load_in(jail, None).unwrap_err().to_string();

            assert!(message.contains("`server.port`"), "{message}");
            assert!(message.contains("GEOMATCH__SERVER__PORT"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_port_above_65535_is_refused() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__SERVER__PORT", "70000");
            let message = load_in(jail, None).unwrap_err().to_string();

            assert!(message.contains("`server.port`"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_refused_rather_than_ignored() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GEOMATCH__SERVER__PROT", "9000");
            let message = load_in(jail, None).unwrap_err().to_string();

            assert!(message.contains("prot"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_in_the_file_names_the_file() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("geomatch.toml", "mode = \"cluster\"\n")?;
            let message = load_in(jail, Some("geomatch.toml"))
                .unwrap_err()
                .to_string();

            assert!(message.contains("`mode`"), "{message}");
            assert!(message.contains("geomatch.toml"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let message = load_in(jail, Some("absent.toml")).unwrap_err().to_string();

            assert!(message.contains("absent.toml"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn out_of_range_values_are_refused_with_their_key() {
        let cases = [
            ("GEOMATCH__REDIS__POOL_SIZE", "0", "redis.pool_size"),
            (
                "GEOMATCH__SERVER__MAX_BODY_BYTES",
                "0",
                "server.max_body_bytes",
            ),
            (
                "GEOMATCH__REDIS__CONNECT_TIMEOUT_MS",
                "0",
                "redis.connect_timeout_ms",
            ),
            ("GEOMATCH__REDIS__URL", "http://cache", "redis.url"),
            (
                "GEOMATCH__INDEX__CELL_RESOLUTION",
                "16",
                "index.cell_resolution",
            ),
            ("GEOMATCH__INDEX__BUCKET_LEVEL", "30", "index.bucket_level"),
            ("GEOMATCH__LOG__LEVEL", "info,=nonsense[", "log.level"),
            ("GEOMATCH__AUTH__JWT_SECRET", "short", "auth.jwt_secret"),
        ];
        for (var, value, key) in cases {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env(var, value);
                let message = load_in(jail, None).unwrap_err().to_string();

                assert!(message.contains(&format!("`{key}`")), "{var}: {message}");
                Ok(())
            });
        }
    }
}
