//! Command line: `geomatch [serve] [--config FILE] [--service NAME]`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::startup::Services;

#[derive(Debug, Parser)]
#[command(
    name = "geomatch",
    version,
    about = "Geospatial matching: ride hailing and people nearby"
)]
// `geomatch --config x.toml` is read as `geomatch serve --config x.toml`.
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (also what runs when no command is given).
    Serve(ServeArgs),
    /// Print a signed bearer token (for development and tests), using the configured
    /// auth.jwt_secret, issuer and audience.
    Token(TokenArgs),
}

/// Options of `geomatch token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// TOML configuration file (for the auth section).
    #[arg(long, env = "GEOMATCH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The `sub` claim: a driver or rider id, or a service name.
    #[arg(long)]
    pub sub: String,
    /// The `role` claim.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    Driver,
    Rider,
    Service,
    Admin,
}

impl From<RoleArg> for geomatch_common::auth::Role {
    fn from(r: RoleArg) -> Self {
        use geomatch_common::auth::Role;
        match r {
            RoleArg::Driver => Role::Driver,
            RoleArg::Rider => Role::Rider,
            RoleArg::Service => Role::Service,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// Options of `geomatch serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML configuration file; GEOMATCH__SECTION__KEY environment variables override it.
    #[arg(long, env = "GEOMATCH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Mount only this service's routes (Redis mode runs one service per process).
    #[arg(long, value_enum, default_value_t = Services::All)]
    pub service: Services,
}

impl Cli {
    /// The command to run; no command means `serve`.
    pub fn command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }

    /// The serve options, whether or not `serve` was spelled out (`None` for other commands).
    pub fn serve_args(self) -> Option<ServeArgs> {
        match self.command() {
            Command::Serve(args) => Some(args),
            Command::Token(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        Cli::try_parse_from(args).unwrap().serve_args().unwrap()
    }

    #[test]
    fn token_takes_subject_role_and_lifetime() {
        let cli = Cli::try_parse_from([
            "geomatch", "token", "--sub", "d1", "--role", "driver", "--ttl-s", "60",
        ])
        .unwrap();
        let Command::Token(t) = cli.command() else {
            panic!("not token")
        };
        assert_eq!(
            (t.sub.as_str(), t.role, t.ttl_s),
            ("d1", RoleArg::Driver, 60)
        );
    }

    #[test]
    fn no_command_means_serve_everything() {
        let args = parse(&["geomatch"]);

        assert_eq!(args.service, Services::All);
    }

    #[test]
    fn serve_takes_a_config_file_and_one_service() {
        let args = parse(&[
            "geomatch",
            "serve",
            "--config",
            "g.toml",
            "--service",
            "location-ingest",
        ]);

        assert_eq!(args.config, Some(PathBuf::from("g.toml")));
        assert_eq!(args.service, Services::LocationIngest);
    }

    #[test]
    fn options_work_without_the_serve_word() {
        let args = parse(&["geomatch", "--service", "eta-pricing"]);

        assert_eq!(args.service, Services::EtaPricing);
    }

    #[test]
    fn an_unknown_service_is_refused() {
        assert!(Cli::try_parse_from(["geomatch", "serve", "--service", "billing"]).is_err());
    }
}
