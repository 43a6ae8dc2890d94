//! `put`, `batch`, `quote`, `eta-batch` and `live`: HTTP/1.1 over keep-alive connections,
//! hyper's low-level client.
//!
//! The pacer thread pushes `(k, scheduled)` jobs into one queue; every connection takes
//! the next job as soon as it is free (one request in flight per connection, no
//! pipelining), builds the body from the fleet's tracks at the scheduled time and sends
//! it. When all connections are busy, jobs wait in the queue, and that wait counts.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::fleet::{seq_of, write_coord, Fleet};
use crate::pacer::{Schedule, WallClock};
use crate::record::{report, Figures, Recorder};
use crate::target::HttpTarget;

/// What each request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `PUT /v1/drivers/{id}/location`, one update.
    Put,
    /// `POST /v1/locations/batch` with `size` updates of distinct drivers.
    Batch { size: u32 },
    /// `POST /v1/quotes`: a trip between two drivers' current positions (the metro's
    /// demand follows its drivers), product `standard`, for one of `riders` riders.
    Quote { riders: u32 },
    /// `POST /v1/eta/batch`: one driver's position to `destinations` others'.
    EtaBatch { destinations: u32 },
    /// `GET /health/live`: the server's HTTP floor (routing, middleware, a small JSON), the
    /// peer of the read scenarios.
    Live,
}

impl Workload {
    pub fn updates_per_request(self) -> u32 {
        match self {
            Workload::Put | Workload::Quote { .. } | Workload::Live => 1,
            Workload::Batch { size } => size,
            Workload::EtaBatch { destinations } => destinations,
        }
    }

    /// Whether requests move drivers (the track-speed note applies).
    fn moves_drivers(self) -> bool {
        matches!(self, Workload::Put | Workload::Batch { .. })
    }
}

/// One open-loop HTTP run.
#[derive(Debug, Clone)]
pub struct HttpRun {
    pub name: String,
    pub target: HttpTarget,
    pub fleet: Arc<Fleet>,
    /// A service-role bearer token: one token for every driver id.
    pub token: String,
    pub workload: Workload,
    /// Requests per second.
    pub rate: f64,
    pub connections: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// How long to wait for backlog after the last job is due.
    pub drain_s: f64,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    k: u64,
    due: Instant,
}

/// What every connection shares.
struct Ctx {
    run: HttpRun,
    schedule: Schedule,
    clock: WallClock,
    deadline: Instant,
    host: HeaderValue,
    auth: HeaderValue,
    json: HeaderValue,
}

type Conn = SendRequest<Full<Bytes>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

async fn connect(target: &HttpTarget) -> anyhow::Result<Conn> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target.addr))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; errors surface on the
        // sender's next request.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Runs the schedule and prints its figures.
pub async fn run(run: HttpRun) -> anyhow::Result<Figures> {
    if let Workload::Batch { size } = run.workload {
        if size == 0 || size > run.fleet.len() {
            bail!(
                "batch size {size} must be between 1 and the number of drivers ({})",
                run.fleet.len()
            );
        }
    }
    let interval =
        f64::from(run.fleet.len()) / (run.rate * f64::from(run.workload.updates_per_request()));
    let max_move = Fleet::max_move_m(interval);
    if run.workload.moves_drivers() {
        println!(
            "-- {}: each driver reports every {interval:.2} s, moving ≤ {max_move:.0} m per report{}",
            run.name,
            if max_move > 100.0 {
                " (more than 100 m: raise the rate or lower --drivers)"
            } else {
                ""
            }
        );
    }

    // Open every connection before the clock starts.
    let mut conns = Vec::with_capacity(run.connections);
    for c in
        futures_util::future::join_all((0..run.connections).map(|_| connect(&run.target))).await
    {
        conns.push(c.with_context(|| format!("connecting to {}", run.target.addr))?);
    }

    let clock = WallClock::now();
    let schedule = Schedule::new(
        Instant::now() + Duration::from_millis(20),
        run.rate,
        run.warmup_s,
        run.duration_s,
    );
    let deadline = schedule.end() + Duration::from_secs_f64(run.drain_s);
    let ctx = Arc::new(Ctx {
        host: HeaderValue::from_str(&run.target.authority)?,
        auth: HeaderValue::from_str(&format!("Bearer {}", run.token))?,
        json: HeaderValue::from_static("application/json"),
        run,
        schedule,
        clock,
        deadline,
    });

    let (tx, rx) = async_channel::unbounded::<Job>();
    let workers: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(worker(c, ctx.clone(), rx.clone())))
        .collect();
    drop(rx);
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || schedule.run(|k, due| tx.try_send(Job { k, due }).is_ok()))?;

    let mut rec = Recorder::new(ctx.schedule.window_start());
    for w in workers {
        rec.merge(w.await?);
    }
    let lateness = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    let setup = format!(
        "{} keep-alive connections, {} drivers, {} update(s) per request",
        ctx.run.connections,
        ctx.run.fleet.len(),
        ctx.run.workload.updates_per_request()
    );
    Ok(report(
        &ctx.run.name,
        "req",
        &setup,
        &ctx.schedule,
        &rec,
        &lateness,
    ))
}

async fn worker(conn: Conn, ctx: Arc<Ctx>, jobs: async_channel::Receiver<Job>) -> Recorder {
    let mut rec = Recorder::new(ctx.schedule.window_start());
    let mut conn = Some(conn);
    while let Ok(job) = jobs.recv().await {
        let measured = ctx.schedule.is_measured(job.k);
        if Instant::now() >= ctx.deadline {
            if measured {
                rec.unanswered(job.due, ctx.deadline);
            }
            continue;
        }
        let sender = match conn.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => match connect(&ctx.run.target).await {
                Ok(s) => conn.insert(s),
                Err(e) => {
                    conn = None;
                    if measured {
                        rec.failure(&format!("connect: {}", root_cause(&e)));
                    }
                    continue;
                }
            },
        };
        let request = ctx.request(job);
        let sent = Instant::now();
        match tokio::time::timeout_at(ctx.deadline.into(), exchange(sender, request)).await {
            Ok(Ok((status, body))) => ctx.record(&mut rec, job, sent, status, &body),
            Ok(Err(e)) => {
                conn = None;
                if measured {
                    rec.failure(&hyper_cause(&e));
                }
            }
            Err(_) => {
                conn = None;
                if measured {
                    rec.unanswered(job.due, ctx.deadline);
                }
            }
        }
    }
    rec
}

async fn exchange(
    sender: &mut Conn,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// `{"result": "accepted"}` (PUT) or `{"code": "…"}` (any problem+json).
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    result: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

/// The counts of a batch answer; `results` is skipped unless something was rejected.
#[derive(Deserialize)]
struct BatchCounts {
    accepted: u64,
    stale: u64,
    rejected: u64,
}

#[derive(Deserialize)]
struct BatchResults<'a> {
    #[serde(borrow)]
    results: Vec<ItemResult<'a>>,
}

#[derive(Deserialize)]
struct ItemResult<'a> {
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

impl Ctx {
    fn request(&self, job: Job) -> Request<Full<Bytes>> {
        let fleet = &self.run.fleet;
        let unix_s = self.clock.unix_of(job.due);
        let seq = seq_of(unix_s);
        let (method, path, body) = match self.run.workload {
            Workload::Put => {
                let i = fleet.driver_of(job.k);
                let (lat, lng) = fleet.position(i, unix_s);
                let mut path = String::with_capacity(40);
                path.push_str("/v1/drivers/");
                fleet.write_id(&mut path, i);
                path.push_str("/location");
                let mut body = String::with_capacity(64);
                body.push_str(r#"{"lat":"#);
                write_coord(&mut body, lat);
                body.push_str(r#","lng":"#);
                write_coord(&mut body, lng);
                let _ = write!(body, r#","seq":{seq}}}"#);
                (Method::PUT, path, body)
            }
            Workload::Batch { size } => {
                let mut body = String::with_capacity(16 + 80 * size as usize);
                body.push_str(r#"{"updates":["#);
                for j in 0..u64::from(size) {
                    let i = fleet.driver_of(job.k * u64::from(size) + j);
                    let (lat, lng) = fleet.position(i, unix_s);
                    if j > 0 {
                        body.push(',');
                    }
                    body.push_str(r#"{"driver_id":""#);
                    fleet.write_id(&mut body, i);
                    body.push_str(r#"","lat":"#);
                    write_coord(&mut body, lat);
                    body.push_str(r#","lng":"#);
                    write_coord(&mut body, lng);
                    let _ = write!(body, r#","seq":{seq}}}"#);
                }
                body.push_str("]}");
                (Method::POST, "/v1/locations/batch".to_owned(), body)
            }
            Workload::Quote { riders } => {
                let pickup = fleet.position(fleet.driver_of(job.k), unix_s);
                let dropoff =
                    fleet.position(fleet.driver_of(job.k.wrapping_mul(7_919) + 13), unix_s);
                let mut body = String::with_capacity(160);
                write_point(&mut body, r#"{"pickup":"#, pickup);
                write_point(&mut body, r#","dropoff":"#, dropoff);
                let _ = write!(
                    body,
                    r#","product":"standard","rider_id":"rider-{}"}}"#,
                    job.k % u64::from(riders.max(1))
                );
                (Method::POST, "/v1/quotes".to_owned(), body)
            }
            Workload::EtaBatch { destinations } => {
                let n = u64::from(destinations);
                let from = fleet.position(fleet.driver_of(job.k), unix_s);
                let mut body = String::with_capacity(48 + 40 * destinations as usize);
                write_point(&mut body, r#"{"from":"#, from);
                body.push_str(r#","to":["#);
                for j in 0..n {
                    let to = fleet.position(fleet.driver_of(job.k * n + j + 1), unix_s);
                    write_point(&mut body, if j > 0 { "," } else { "" }, to);
                }
                body.push_str("]}");
                (Method::POST, "/v1/eta/batch".to_owned(), body)
            }
            Workload::Live => (Method::GET, "/health/live".to_owned(), String::new()),
        };
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().expect("driver ids are URL-safe");
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(AUTHORIZATION, self.auth.clone());
        headers.insert(CONTENT_TYPE, self.json.clone());
        request
    }

    fn record(&self, rec: &mut Recorder, job: Job, sent: Instant, status: StatusCode, body: &[u8]) {
        let now = Instant::now();
        let measured = self.schedule.is_measured(job.k);
        if !status.is_success() {
            let code = serde_json::from_slice::<Answer>(body)
                .ok()
                .and_then(|a| a.code)
                .unwrap_or(Cow::Borrowed("?"));
            let outcome = format!("{} {code}", status.as_u16());
            rec.reply(job.due, sent, now, measured, &outcome, false);
            return;
        }
        rec.reply(job.due, sent, now, measured, status.as_str(), true);
        match self.run.workload {
            Workload::Put => match serde_json::from_slice::<Answer>(body) {
                Ok(Answer {
                    result: Some(r), ..
                }) => rec.item(now, measured, &r, 1),
                _ => rec.item(now, measured, "unreadable answer", 1),
            },
            Workload::Quote { .. } => rec.item(now, measured, "quoted", 1),
            Workload::EtaBatch { destinations } => {
                rec.item(now, measured, "etas", u64::from(destinations))
            }
            Workload::Live => rec.item(now, measured, "live", 1),
            Workload::Batch { size } => match serde_json::from_slice::<BatchCounts>(body) {
                Ok(c) => {
                    rec.item(now, measured, "accepted", c.accepted);
                    rec.item(now, measured, "stale", c.stale);
                    if c.rejected > 0 && measured {
                        match serde_json::from_slice::<BatchResults>(body) {
                            Ok(r) => {
                                for code in r.results.iter().filter_map(|i| i.code.as_deref()) {
                                    rec.item(now, measured, &format!("rejected: {code}"), 1);
                                }
                            }
                            Err(_) => rec.item(now, measured, "rejected", c.rejected),
                        }
                    }
                }
                Err(_) => rec.item(now, measured, "unreadable answer", u64::from(size)),
            },
        }
    }
}

/// `{prefix}{"lat":…,"lng":…}`
fn write_point(out: &mut String, prefix: &str, (lat, lng): (f64, f64)) {
    out.push_str(prefix);
    out.push_str(r#"{"lat":"#);
    write_coord(out, lat);
    out.push_str(r#","lng":"#);
    write_coord(out, lng);
    out.push('}');
}

/// Before a quote run: puts `n` drivers of the fleet on the map and online (vehicle class
/// `standard`), so that quotes find pickup candidates. Two requests per driver, over
/// `connections` connections, not measured.
pub async fn put_online(
    target: &HttpTarget,
    token: &str,
    fleet: &Fleet,
    n: u32,
    connections: usize,
) -> anyhow::Result<()> {
    let clock = WallClock::now();
    let unix_s = clock.unix_of(Instant::now());
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))?;
    let host = HeaderValue::from_str(&target.authority)?;
    let next = std::sync::atomic::AtomicU32::new(0);
    let work = (0..connections.max(1)).map(|_| async {
        let mut conn = connect(target).await?;
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= n {
                return anyhow::Ok(());
            }
            let mut id = String::new();
            fleet.write_id(&mut id, i);
            let mut location = String::new();
            write_point(&mut location, "", fleet.position(i, unix_s));
            let steps = [
                (format!("/v1/drivers/{id}/location"), location),
                (
                    format!("/v1/drivers/{id}/status"),
                    r#"{"status":"available","vehicle_class":"standard"}"#.to_owned(),
                ),
            ];
            for (path, body) in steps {
                let mut request = Request::new(Full::new(Bytes::from(body)));
                *request.method_mut() = Method::PUT;
                *request.uri_mut() = path.parse()?;
                let h = request.headers_mut();
                h.insert(HOST, host.clone());
                h.insert(AUTHORIZATION, auth.clone());
                h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                let (status, answer) = exchange(&mut conn, request).await?;
                if !status.is_success() {
                    bail!("{path}: {status} {}", String::from_utf8_lossy(&answer));
                }
            }
        }
    });
    for r in futures_util::future::join_all(work).await {
        r?;
    }
    Ok(())
}

fn root_cause(e: &anyhow::Error) -> String {
    match e.root_cause().downcast_ref::<std::io::Error>() {
        Some(io) => format!("{:?}", io.kind()),
        None => e.root_cause().to_string(),
    }
}

fn hyper_cause(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        "connection closed mid-message".to_owned()
    } else if e.is_closed() || e.is_canceled() {
        "connection closed".to_owned()
    } else if e.is_parse() {
        "malformed response".to_owned()
    } else {
        e.to_string()
    }
}
