//! `geomatch serve [--config FILE] [--service NAME]`; see the library for the parts.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use geomatch::{
    cli::{Cli, Command},
    Application,
};
use geomatch_common::{auth::Authenticator, telemetry, Settings};

// The main runtime only drives the server's control loop and signal handling; actix runs
// the HTTP workers on threads of their own.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geomatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command() {
        Command::Serve(args) => {
            let settings = Settings::load(args.config.as_deref()).context("configuration")?;
            telemetry::init(&settings.log).context("logging")?;
            let app = Application::build_with(settings, args.service).await?;
            app.run_until_stopped().await.context("server")
        }
        Command::Token(args) => {
            let settings = Settings::load(args.config.as_deref()).context("configuration")?;
            let auth = Authenticator::new(&settings.auth);
            println!(
                "{}",
                auth.mint(&args.sub, args.role.into(), Duration::from_secs(args.ttl_s))
            );
            Ok(())
        }
    }
}
