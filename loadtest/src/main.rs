//! `geomatch-loadtest <put|batch|ws|geoadd|quote|eta-batch|live|city> [OPTIONS]`; see
//! the library for the method.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use geomatch_common::auth::{Authenticator, Role};
use geomatch_common::config::{AuthSettings, Secret, DEV_JWT_SECRET};
use geomatch_loadtest::fleet::Fleet;
use geomatch_loadtest::http::{self, HttpRun, Workload};
use geomatch_loadtest::record::{thousands, Figures};
use geomatch_loadtest::target::{HttpTarget, RedisTarget};
use geomatch_loadtest::{city, geoadd, ws};

/// The generator shares the machine with the server: the cheaper its allocations, the
/// less it takes from what it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Open-loop load generator for geomatch: location ingest, quotes and ETAs (loopback
/// targets only).
#[derive(Debug, Parser)]
#[command(name = "geomatch-loadtest", version)]
struct Cli {
    /// The geomatch server: http://HOST:PORT, loopback only.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Tokio worker threads of the generator (the pacer has a thread of its own).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Single updates: PUT /v1/drivers/{id}/location.
    Put(PutArgs),
    /// Batches: POST /v1/locations/batch.
    Batch(BatchArgs),
    /// One WebSocket per driver, a location frame every --interval-s; frame → ack latency.
    Ws(WsArgs),
    /// The Redis GEO peer: pipelined GEOADD of the same moving drivers.
    Geoadd(GeoaddArgs),
    /// The matching benchmark: a moving fleet and riders at a constant rate, with agents
    /// answering offers (accept after a delay, decline sometimes) and finishing trips.
    City(CityArgs),
    /// Fare quotes: POST /v1/quotes (a service token naming the rider).
    Quote(QuoteArgs),
    /// ETA batches: POST /v1/eta/batch, one origin and --destinations destinations.
    EtaBatch(EtaBatchArgs),
    /// The HTTP floor: GET /health/live, the peer of quote and eta-batch.
    Live(ReadArgs),
}

/// What every read scenario (quote, eta-batch, live) takes.
#[derive(Debug, Args)]
struct ReadArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// Requests per second offered.
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,
    /// Drivers whose positions trips start and end at.
    #[arg(long, default_value_t = 100_000)]
    drivers: u32,
    #[arg(long, default_value_t = 64)]
    connections: usize,
}

#[derive(Debug, Args)]
struct QuoteArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Drivers put online (class standard) before the run, so quotes have pickup ETAs.
    #[arg(long, default_value_t = 20_000)]
    online: u32,
    /// Distinct riders quoting (a rider's repeated quotes in a cell count once as demand).
    #[arg(long, default_value_t = 50_000)]
    riders: u32,
}

#[derive(Debug, Args)]
struct EtaBatchArgs {
    #[command(flatten)]
    read: ReadArgs,
    #[arg(long, default_value_t = 50)]
    destinations: u32,
}

#[derive(Debug, Args)]
struct CityArgs {
    #[command(flatten)]
    auth: AuthArgs,
    /// Replicas to spread ride traffic over (comma-separated http://HOST:PORT); default
    /// the global --target.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    #[arg(long, default_value_t = 100_000)]
    drivers: u32,
    /// Location updates per second of the moving fleet (batches of 200).
    #[arg(long, default_value_t = 25_000.0)]
    updates_per_s: f64,
    #[arg(long, default_value_t = 1_000.0)]
    rides_per_s: f64,
    /// Seconds of ride requests.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds agents may keep going after the last request.
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// An offer is answered after a delay uniform in [min, max] ms.
    #[arg(long, default_value_t = 300)]
    answer_ms_min: u64,
    #[arg(long, default_value_t = 2_000)]
    answer_ms_max: u64,
    /// Offers declined, per mille.
    #[arg(long, default_value_t = 100)]
    decline_per_mille: u64,
    /// Trip (arrived → complete) length, uniform in [min, max] ms.
    #[arg(long, default_value_t = 2_000)]
    trip_ms_min: u64,
    #[arg(long, default_value_t = 6_000)]
    trip_ms_max: u64,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    #[arg(long, default_value = "drv-")]
    id_prefix: String,
    /// Label of the printed figures.
    #[arg(long, default_value = "city")]
    name: String,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds sent at the same rate before measuring (connections warm, drivers known).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait for replies after the last request is due; what is still
    /// unanswered then is reported as such.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Seed of the drivers' tracks.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Driver ids are <prefix><n>.
    #[arg(long, default_value = "drv-")]
    id_prefix: String,
}

#[derive(Debug, Args)]
struct AuthArgs {
    /// The server's HS256 secret (GEOMATCH__AUTH__JWT_SECRET); tokens are minted locally.
    #[arg(long, default_value = DEV_JWT_SECRET, hide_default_value = true)]
    jwt_secret: String,
    #[arg(long, default_value = "geomatch")]
    issuer: String,
    #[arg(long, default_value = "geomatch")]
    audience: String,
}

impl AuthArgs {
    fn authenticator(&self) -> Authenticator {
        Authenticator::new(&AuthSettings {
            jwt_secret: Secret::new(self.jwt_secret.clone()),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
        })
    }
}

#[derive(Debug, Args)]
struct PutArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// Requests per second offered.
    #[arg(long, default_value_t = 50_000.0)]
    rate: f64,
    #[arg(long, default_value_t = 100_000)]
    drivers: u32,
    /// Keep-alive HTTP/1.1 connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// If the first run's p99 is above this (or it did not keep up), step the rate down
    /// until a run meets it, then try once between the last miss and the first hit.
    #[arg(long)]
    slo_p99_ms: Option<f64>,
    /// Each step multiplies the rate by this.
    #[arg(long, default_value_t = 0.8)]
    step_factor: f64,
    /// Measured seconds of each step.
    #[arg(long, default_value_t = 5.0)]
    step_duration: f64,
    /// Lowest rate tried when stepping down.
    #[arg(long, default_value_t = 1_000.0)]
    min_rate: f64,
}

#[derive(Debug, Args)]
struct BatchArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// Updates per second offered (requests per second = rate / batch size).
    #[arg(long, default_value_t = 500_000.0)]
    rate: f64,
    #[arg(long, default_value_t = 200)]
    batch_size: u32,
    #[arg(long, default_value_t = 100_000)]
    drivers: u32,
    #[arg(long, default_value_t = 32)]
    connections: usize,
}

#[derive(Debug, Args)]
struct WsArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// Concurrent WebSocket drivers (one connection each).
    #[arg(long, default_value_t = 10_000)]
    drivers: u32,
    /// Seconds between two frames of one driver.
    #[arg(long, default_value_t = 4.0)]
    interval_s: f64,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
}

#[derive(Debug, Args)]
struct GeoaddArgs {
    /// redis://127.0.0.1:PORT or redis+unix:///path/to/redis.sock (loopback only).
    #[arg(long)]
    redis_url: String,
    /// GEOADD commands per pipeline.
    #[arg(long, default_value_t = 32)]
    pipeline: usize,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 100_000)]
    drivers: u32,
    /// The sorted set written.
    #[arg(long, default_value = "loadtest:geo")]
    key: String,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    #[arg(long, default_value = "drv-")]
    id_prefix: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geomatch-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geomatch-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_run(r: &RunArgs, drivers: u32) -> anyhow::Result<()> {
    if !(r.duration > 0.0 && r.warmup >= 0.0 && r.drain >= 0.0) {
        bail!("--duration must be positive, --warmup and --drain not negative");
    }
    if drivers == 0 {
        bail!("--drivers must be at least 1");
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Put(a) => {
            check_run(&a.run, a.drivers)?;
            let target = HttpTarget::parse(&cli.target)?;
            if !(a.rate > 0.0 && a.connections > 0) {
                bail!("--rate and --connections must be positive");
            }
            let base = HttpRun {
                name: "put".into(),
                target,
                fleet: Arc::new(Fleet::new(a.drivers, a.run.seed, &a.run.id_prefix)),
                token: service_token(&a.auth),
                workload: Workload::Put,
                rate: a.rate,
                connections: a.connections,
                warmup_s: a.run.warmup,
                duration_s: a.run.duration,
                drain_s: a.run.drain,
            };
            let first = http::run(base.clone()).await?;
            if let Some(slo) = a.slo_p99_ms {
                step_down(&base, &first, slo, &a).await?;
            }
            Ok(())
        }
        Command::Batch(a) => {
            check_run(&a.run, a.drivers)?;
            let target = HttpTarget::parse(&cli.target)?;
            if !(a.rate > 0.0 && a.connections > 0 && a.batch_size > 0) {
                bail!("--rate, --connections and --batch-size must be positive");
            }
            http::run(HttpRun {
                name: "batch".into(),
                target,
                fleet: Arc::new(Fleet::new(a.drivers, a.run.seed, &a.run.id_prefix)),
                token: service_token(&a.auth),
                workload: Workload::Batch { size: a.batch_size },
                rate: a.rate / f64::from(a.batch_size),
                connections: a.connections,
                warmup_s: a.run.warmup,
                duration_s: a.run.duration,
                drain_s: a.run.drain,
            })
            .await?;
            Ok(())
        }
        Command::Ws(a) => {
            check_run(&a.run, a.drivers)?;
            let target = HttpTarget::parse(&cli.target)?;
            if a.interval_s <= 0.0 {
                bail!("--interval-s must be positive");
            }
            ws::run(
                ws::WsRun {
                    name: "ws".into(),
                    target,
                    fleet: Arc::new(Fleet::new(a.drivers, a.run.seed, &a.run.id_prefix)),
                    interval_s: a.interval_s,
                    warmup_s: a.run.warmup,
                    duration_s: a.run.duration,
                    drain_s: a.run.drain,
                    connect_concurrency: a.connect_concurrency,
                },
                Arc::new(a.auth.authenticator()),
            )
            .await?;
            Ok(())
        }
        Command::City(a) => {
            if a.drivers == 0 || a.rides_per_s <= 0.0 || a.duration <= 0.0 || a.updates_per_s <= 0.0
            {
                bail!("--drivers, --rides-per-s, --updates-per-s and --duration must be positive");
            }
            if a.answer_ms_min > a.answer_ms_max
                || a.trip_ms_min > a.trip_ms_max
                || a.decline_per_mille > 1000
            {
                bail!("ranges must be min ≤ max and --decline-per-mille at most 1000");
            }
            let urls = if a.targets.is_empty() {
                vec![cli.target.clone()]
            } else {
                a.targets.clone()
            };
            let targets = urls
                .iter()
                .map(|u| HttpTarget::parse(u))
                .collect::<Result<Vec<_>, _>>()?;
            city::run(
                city::CityRun {
                    name: a.name,
                    targets,
                    fleet: Arc::new(Fleet::new(a.drivers, a.seed, &a.id_prefix)),
                    updates_per_s: a.updates_per_s,
                    rides_per_s: a.rides_per_s,
                    duration_s: a.duration,
                    drain_s: a.drain,
                    answer_ms: (a.answer_ms_min, a.answer_ms_max),
                    decline_per_mille: a.decline_per_mille,
                    trip_ms: (a.trip_ms_min, a.trip_ms_max),
                    seed: a.seed,
                },
                Arc::new(a.auth.authenticator()),
                service_token(&a.auth),
            )
            .await?;
            Ok(())
        }
        Command::Quote(a) => {
            let base = read_run(
                &cli.target,
                "quote",
                &a.read,
                Workload::Quote { riders: a.riders },
            )?;
            if a.online > a.read.drivers {
                bail!("--online must be at most --drivers");
            }
            if a.online > 0 {
                println!(
                    "-- quote: putting {} drivers online",
                    thousands(f64::from(a.online))
                );
                http::put_online(&base.target, &base.token, &base.fleet, a.online, 16).await?;
            }
            http::run(base).await?;
            Ok(())
        }
        Command::EtaBatch(a) => {
            if a.destinations == 0 {
                bail!("--destinations must be positive");
            }
            let workload = Workload::EtaBatch {
                destinations: a.destinations,
            };
            http::run(read_run(&cli.target, "eta-batch", &a.read, workload)?).await?;
            Ok(())
        }
        Command::Live(a) => {
            http::run(read_run(&cli.target, "live", &a, Workload::Live)?).await?;
            Ok(())
        }
        Command::Geoadd(a) => {
            if a.drivers == 0 || a.duration <= 0.0 || a.warmup < 0.0 {
                bail!("--drivers and --duration must be positive, --warmup not negative");
            }
            let target = RedisTarget::parse(&a.redis_url).context("--redis-url")?;
            geoadd::run(geoadd::GeoaddRun {
                target,
                fleet: Arc::new(Fleet::new(a.drivers, a.seed, &a.id_prefix)),
                key: a.key,
                pipeline: a.pipeline,
                connections: a.connections,
                warmup_s: a.warmup,
                duration_s: a.duration,
            })
            .await?;
            Ok(())
        }
    }
}

/// The run of a read scenario.
fn read_run(target: &str, name: &str, a: &ReadArgs, workload: Workload) -> anyhow::Result<HttpRun> {
    check_run(&a.run, a.drivers)?;
    if !(a.rate > 0.0 && a.connections > 0) {
        bail!("--rate and --connections must be positive");
    }
    Ok(HttpRun {
        name: name.into(),
        target: HttpTarget::parse(target)?,
        fleet: Arc::new(Fleet::new(a.drivers, a.run.seed, &a.run.id_prefix)),
        token: service_token(&a.auth),
        workload,
        rate: a.rate,
        connections: a.connections,
        warmup_s: a.run.warmup,
        duration_s: a.run.duration,
        drain_s: a.run.drain,
    })
}

/// One `role: service` token: it may push for every driver id.
fn service_token(auth: &AuthArgs) -> String {
    auth.authenticator().mint(
        "geomatch-loadtest",
        Role::Service,
        Duration::from_secs(4 * 3600),
    )
}

/// Whether a run meets the latency objective and kept up with its offered load.
fn meets(f: &Figures, slo_p99_ms: f64) -> bool {
    f.p99_ms <= slo_p99_ms && f.kept_up()
}

/// Steps the rate down from a run that missed `slo` until one meets it, then tries once
/// halfway between that rate and the last miss. Prints the highest rate that met it.
async fn step_down(base: &HttpRun, first: &Figures, slo: f64, a: &PutArgs) -> anyhow::Result<()> {
    if meets(first, slo) {
        println!(
            "== put: {} req/s meets p99 ≤ {slo} ms (p99 {:.3} ms); no step-down needed",
            thousands(first.offered_per_s),
            first.p99_ms
        );
        return Ok(());
    }
    if !(a.step_factor > 0.0 && a.step_factor < 1.0) {
        bail!("--step-factor must be in (0, 1)");
    }
    let at = |rate: f64| HttpRun {
        name: format!("put @ {}", thousands(rate)),
        rate,
        duration_s: a.step_duration,
        warmup_s: a.run.warmup.min(1.0),
        ..base.clone()
    };
    let mut miss = first.offered_per_s;
    let mut rate = miss * a.step_factor;
    let mut hit: Option<Figures> = None;
    while rate >= a.min_rate {
        let f = http::run(at(rate)).await?;
        if meets(&f, slo) {
            hit = Some(f);
            break;
        }
        miss = rate;
        rate *= a.step_factor;
    }
    let Some(mut best) = hit else {
        println!(
            "== put: no rate down to {} req/s met p99 ≤ {slo} ms",
            thousands(a.min_rate)
        );
        return Ok(());
    };
    let mid = (best.offered_per_s + miss) / 2.0;
    let f = http::run(at(mid)).await?;
    if meets(&f, slo) {
        best = f;
    }
    println!(
        "== put: highest rate meeting p99 ≤ {slo} ms: {} req/s offered, {} req/s achieved, p99 {:.3} ms (next step up, {} req/s, missed)",
        thousands(best.offered_per_s),
        thousands(best.achieved_per_s),
        best.p99_ms,
        thousands(if best.offered_per_s < mid { mid } else { miss }),
    );
    println!(
        "   result {}",
        serde_json::json!({"run": "put slo", "slo_p99_ms": slo, "rate": best.offered_per_s,
                           "achieved_per_s": best.achieved_per_s, "p99_ms": best.p99_ms})
    );
    Ok(())
}
