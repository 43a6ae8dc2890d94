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
enum Command {
    /// Run the HTTP server (also what runs when no command is given).
    Serve(ServeArgs),
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
    /// The serve options, whether or not `serve` was spelled out.
    pub fn serve_args(self) -> ServeArgs {
        match self.command {
            Some(Command::Serve(args)) => args,
            None => self.serve,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        Cli::try_parse_from(args).unwrap().serve_args()
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
