//! `city`: a simulated city for the matching benchmark (issue #4).
//!
//! Drivers of the [`Fleet`] go online, then keep moving (batched location pushes at a
//! constant rate, the `batch` workload of [`http`](crate::http)) while riders request
//! rides at a constant rate (open loop: one request every `1/rate` s whatever the server
//! does). Each request gets an agent playing its drivers: it watches the ride (as an
//! operator would, with a service token), and when an offer is out it answers after a
//! random delay — a decline sometimes, else an accept — then drives the accepted ride
//! through arrived, start and complete after a short random trip, which frees the driver.
//!
//! Measured:
//! - request → first offer: greedy dispatch makes the first offer inside `POST /v1/rides`,
//!   so for rides answered with an offer made (attempts ≥ 1) it is the request's latency
//!   from its scheduled time (an upper bound). The server's own histogram
//!   (`dispatch_request_to_first_offer_seconds`) is scraped too: with batched matching the
//!   first offer comes at the next batch, and only the server sees when.
//! - match rate (accepted / created), mean pickup ETA of accepted rides, terminal states.
//! - invariants on the recorded history: no ride accepted twice (two 200 answers), no
//!   driver accepting a ride while another of its rides was open (the rides' server-side
//!   transition times, read back at the end), every created ride readable at the end in
//!   a state that is terminal or visibly active.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use geomatch_common::auth::{Authenticator, Role};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::fleet::Fleet;
use crate::http::{self, HttpRun, Workload};
use crate::record::{histogram, thousands};
use crate::target::HttpTarget;

/// One simulated-city run.
#[derive(Debug, Clone)]
pub struct CityRun {
    pub name: String,
    /// Servers (replicas); rides go round-robin, locations and status to the first.
    pub targets: Vec<HttpTarget>,
    pub fleet: Arc<Fleet>,
    /// Location updates per second of the moving fleet.
    pub updates_per_s: f64,
    pub rides_per_s: f64,
    pub duration_s: f64,
    /// How long agents may keep going after the last request.
    pub drain_s: f64,
    /// A driver answers an offer after a delay uniform in this range, ms.
    pub answer_ms: (u64, u64),
    /// Share of offers declined, per mille.
    pub decline_per_mille: u64,
    /// Trip (arrived → complete) duration range, ms.
    pub trip_ms: (u64, u64),
    pub seed: u64,
}

/// What the run measured.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CityFigures {
    pub requested: u64,
    pub created: u64,
    pub refused: BTreeMap<String, u64>,
    /// Rides answered with their first offer already made.
    pub offered_in_request: u64,
    pub first_offer_p50_ms: f64,
    pub first_offer_p99_ms: f64,
    /// From the server's histogram: the bucket bound under which 99 % fall.
    pub server_first_offer_p99_ms_at_most: f64,
    /// Redis mode, from the server's histograms: p99 bounds of the two Redis calls of a
    /// request (store the ride, claim the first offer), as for the line above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_redis_create_p99_ms_at_most: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_redis_claim_p99_ms_at_most: Option<f64>,
    pub accepted: u64,
    pub declined: u64,
    pub completed: u64,
    pub final_states: BTreeMap<String, u64>,
    pub match_rate: f64,
    pub mean_pickup_eta_s: f64,
    pub violations: Vec<String>,
    pub errors: BTreeMap<String, u64>,
}

/// Answers seen by the agents.
#[derive(Default)]
struct Shared {
    f: CityFigures,
    first_offer: Option<Histogram<u64>>,
    pickup_eta_sum: f64,
    created: Vec<(String, usize)>,
    accepted_rides: HashSet<String>,
}

impl Shared {
    fn error(&mut self, what: String) {
        *self.f.errors.entry(what).or_default() += 1;
    }
}

/// A small deterministic generator (xorshift64*), one per agent.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn range(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.next() % (hi.saturating_sub(lo) + 1)
    }
}

/// Requests in flight at once, over every replica.
const IN_FLIGHT: usize = 256;

struct Ctx {
    run: CityRun,
    client: reqwest::Client,
    /// Requests in flight at once (queueing for a permit counts in the latency).
    in_flight: tokio::sync::Semaphore,
    service: String,
    auth: Arc<Authenticator>,
    shared: Mutex<Shared>,
    deadline: Instant,
}

impl Ctx {
    fn url(&self, replica: usize, path: &str) -> String {
        let t = &self.run.targets[replica % self.run.targets.len()];
        format!("http://{}{path}", t.authority)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Option<(u16, Value)> {
        let _permit = self.in_flight.acquire().await.ok()?;
        match req.timeout(Duration::from_secs(10)).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                Some((status, r.json().await.unwrap_or(Value::Null)))
            }
            Err(e) => {
                let cause = if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                };
                self.shared.lock().error(cause.to_owned());
                None
            }
        }
    }

    async fn post(&self, replica: usize, path: &str, token: &str) -> Option<(u16, Value)> {
        self.send(self.client.post(self.url(replica, path)).bearer_auth(token))
            .await
    }
}

/// Puts every driver of the fleet somewhere and online (standard class).
async fn online(ctx: &Ctx) -> anyhow::Result<()> {
    let fleet = &ctx.run.fleet;
    let now = crate::pacer::WallClock::now().unix_of(Instant::now());
    let ids: Vec<u32> = (0..fleet.len()).collect();
    for chunk in ids.chunks(500) {
        let updates: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                let (lat, lng) = fleet.position(i, now);
                json!({"driver_id": fleet.id(i), "lat": lat, "lng": lng, "seq": crate::fleet::seq_of(now)})
            })
            .collect();
        let (status, _) = ctx
            .send(
                ctx.client
                    .post(ctx.url(0, "/v1/locations/batch"))
                    .bearer_auth(&ctx.service)
                    .json(&json!({ "updates": updates })),
            )
            .await
            .context("placing drivers")?;
        anyhow::ensure!(status == 200, "placing drivers answered {status}");
    }
    let body = json!({"status": "available", "vehicle_class": "standard", "seats": 4});
    let next = std::sync::atomic::AtomicU32::new(0);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= fleet.len() {
                return Ok::<(), anyhow::Error>(());
            }
            let path = format!("/v1/drivers/{}/status", fleet.id(i));
            let (status, b) = ctx
                .send(
                    ctx.client
                        .put(ctx.url(0, &path))
                        .bearer_auth(&ctx.service)
                        .json(&body),
                )
                .await
                .context("going online")?;
            anyhow::ensure!(status == 200, "going online answered {status}: {b}");
        }
    };
    let workers: Vec<_> = (0..64).map(|_| worker()).collect();
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    Ok(())
}

/// One ride: request it, play its drivers, drive it to completion.
async fn ride(ctx: Arc<Ctx>, k: u64, due: Instant) {
    // Spawned at the start of its 10 ms tick: sent at its own time, so latency counts
    // from when the request was due, never before.
    tokio::time::sleep_until(due.into()).await;
    let replica = k as usize;
    let mut rng = Rng::new(ctx.run.seed ^ k.wrapping_mul(7919));
    let fleet = &ctx.run.fleet;
    let now = crate::pacer::WallClock::now().unix_of(Instant::now());
    // Riders are where drivers are: near a random driver, trips of a few km.
    let (lat, lng) = fleet.position((rng.next() % u64::from(fleet.len())) as u32, now);
    let jitter = |r: &mut Rng| (r.next() % 1000) as f64 / 1000.0 * 0.004 - 0.002;
    let pickup = json!({"lat": lat + jitter(&mut rng), "lng": lng + jitter(&mut rng)});
    let dropoff = json!({"lat": (lat + 0.02).min(37.84), "lng": lng});
    let rider = ctx.auth.mint(
        &format!("rider-{k}"),
        Role::Rider,
        Duration::from_secs(3600),
    );
    let req = ctx
        .client
        .post(ctx.url(replica, "/v1/rides"))
        .bearer_auth(&rider)
        .header("Idempotency-Key", format!("city-{k}"))
        .json(&json!({"pickup": pickup, "dropoff": dropoff, "product": "standard"}));
    let answered = ctx.send(req).await;
    let latency = due.elapsed();
    let Some((status, created)) = answered else {
        return;
    };
    let Some(id) = created["ride_id"]
        .as_str()
        .map(str::to_owned)
        .filter(|_| status == 201)
    else {
        let code = created["code"].as_str().unwrap_or("?").to_owned();
        *ctx.shared
            .lock()
            .f
            .refused
            .entry(format!("{status} {code}"))
            .or_default() += 1;
        return;
    };
    {
        let mut s = ctx.shared.lock();
        s.f.created += 1;
        s.created.push((id.clone(), replica));
        if created["attempts"].as_u64().unwrap_or(0) >= 1 {
            s.f.offered_in_request += 1;
            let h = s.first_offer.get_or_insert_with(histogram);
            let _ = h.record(latency.as_micros().max(1) as u64);
        }
    }
    let mut answered_offers = HashSet::new();
    let mut turn = replica;
    while Instant::now() < ctx.deadline {
        turn += 1;
        let Some((_, v)) = ctx
            .send(
                ctx.client
                    .get(ctx.url(turn, &format!("/v1/rides/{id}")))
                    .bearer_auth(&ctx.service),
            )
            .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let state = v["state"].as_str().unwrap_or("").to_owned();
        let offer = v["offer_id"].as_str().map(str::to_owned);
        match (state.as_str(), offer) {
            ("dispatching", Some(offer)) if answered_offers.insert(offer.clone()) => {
                tokio::time::sleep(Duration::from_millis(rng.range(ctx.run.answer_ms))).await;
                if rng.next() % 1000 < ctx.run.decline_per_mille {
                    ctx.post(turn, &format!("/v1/offers/{offer}/decline"), &ctx.service)
                        .await;
                    ctx.shared.lock().f.declined += 1;
                    continue;
                }
                let Some((200, accepted)) = ctx
                    .post(
                        turn + 1,
                        &format!("/v1/offers/{offer}/accept"),
                        &ctx.service,
                    )
                    .await
                else {
                    continue; // timed out or withdrawn meanwhile
                };
                {
                    let mut s = ctx.shared.lock();
                    s.f.accepted += 1;
                    s.pickup_eta_sum += accepted["pickup_eta_s"].as_f64().unwrap_or(0.0);
                    if !s.accepted_rides.insert(id.clone()) {
                        s.f.violations.push(format!("ride {id} accepted twice"));
                    }
                }
                let trip = rng.range(ctx.run.trip_ms) / 3;
                for (n, step) in ["arrived", "start", "complete"].into_iter().enumerate() {
                    tokio::time::sleep(Duration::from_millis(trip)).await;
                    let path = format!("/v1/rides/{id}/{step}");
                    match ctx.post(turn + n, &path, &ctx.service).await {
                        Some((200, _)) => {}
                        Some((s, b)) => {
                            let code = b["code"].as_str().unwrap_or("?").to_owned();
                            ctx.shared.lock().error(format!("{step}: {s} {code}"));
                        }
                        None => {}
                    }
                }
                ctx.shared.lock().f.completed += 1;
                return;
            }
            ("requested" | "dispatching", _) => {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            _ => return,
        }
    }
}

/// Upper bound of the p-quantile of a Prometheus histogram's cumulative buckets.
/// `labels`: the series' other labels as exposed before `le`, e.g. `step="claim",`.
fn bucket_quantile(text: &str, metric: &str, labels: &str, q: f64) -> Option<f64> {
    let prefix = format!("{metric}_bucket{{{labels}le=\"");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le * 1000.0)
}

/// Runs the city and prints its figures.
pub async fn run(
    run: CityRun,
    auth: Arc<Authenticator>,
    service: String,
) -> anyhow::Result<CityFigures> {
    anyhow::ensure!(!run.targets.is_empty(), "at least one target");
    let started = Instant::now();
    let mut ctx = Ctx {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .context("HTTP client")?,
        // Set once the drivers are online (below).
        deadline: Instant::now(),
        run,
        service,
        auth,
        in_flight: tokio::sync::Semaphore::new(IN_FLIGHT),
        shared: Mutex::new(Shared::default()),
    };
    online(&ctx).await?;
    // Agents stop answering offers when the drain ends.
    ctx.deadline = Instant::now() + Duration::from_secs_f64(ctx.run.duration_s + ctx.run.drain_s);
    let ctx = Arc::new(ctx);
    println!(
        "== {}: {} drivers online in {:.1} s",
        ctx.run.name,
        thousands(f64::from(ctx.run.fleet.len())),
        started.elapsed().as_secs_f64()
    );
    // The fleet keeps moving for the whole run.
    let moving = tokio::spawn(http::run(HttpRun {
        name: format!("{} moves", ctx.run.name),
        target: ctx.run.targets[0].clone(),
        fleet: ctx.run.fleet.clone(),
        token: ctx.service.clone(),
        workload: Workload::Batch { size: 200 },
        rate: ctx.run.updates_per_s / 200.0,
        connections: 8,
        warmup_s: 0.0,
        duration_s: ctx.run.duration_s + ctx.run.drain_s,
        drain_s: 2.0,
    }));
    // Rides at a constant rate, in ticks of 10 ms.
    let per_tick = ctx.run.rides_per_s / 100.0;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(ctx.run.duration_s);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut k, mut owed) = (0u64, 0.0f64);
    let mut agents = Vec::new();
    loop {
        let at = tick.tick().await.into_std();
        if at >= end {
            break;
        }
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let due = start + Duration::from_secs_f64(k as f64 / ctx.run.rides_per_s);
            agents.push(tokio::spawn(ride(ctx.clone(), k, due)));
            k += 1;
        }
    }
    ctx.shared.lock().f.requested = k;
    let drain_until = Instant::now() + Duration::from_secs_f64(ctx.run.drain_s);
    for a in agents {
        let left = drain_until.saturating_duration_since(Instant::now());
        let abort = a.abort_handle();
        if tokio::time::timeout(left, a).await.is_err() {
            abort.abort();
            ctx.shared
                .lock()
                .error("agent still running at the end of the drain".into());
        }
    }
    let _ = moving.await;
    // No ride is lost: every created ride is readable, terminal or visibly active.
    let created = ctx.shared.lock().created.clone();
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    // Per driver, the server's [accepted, ended) times of its rides: never overlapping.
    let mut engaged: HashMap<String, Vec<(i64, i64, String)>> = HashMap::new();
    for (id, replica) in &created {
        let path = format!("/v1/rides/{id}");
        let req = ctx
            .client
            .get(ctx.url(*replica, &path))
            .bearer_auth(&ctx.service);
        let state = match ctx.send(req).await {
            Some((200, v)) => {
                if let Some(d) = v["driver_id"].as_str() {
                    let at = |state: &str| {
                        v["transitions"].as_array().and_then(|ts| {
                            ts.iter()
                                .find(|t| t["state"] == state)
                                .and_then(|t| t["at_ms"].as_i64())
                        })
                    };
                    let from = at("accepted").unwrap_or(i64::MAX);
                    let to = at("completed")
                        .or_else(|| at("cancelled"))
                        .unwrap_or(i64::MAX);
                    engaged
                        .entry(d.to_owned())
                        .or_default()
                        .push((from, to, id.clone()));
                }
                v["state"].as_str().unwrap_or("?").to_owned()
            }
            Some((s, _)) => format!("http {s}"),
            None => "unreadable".into(),
        };
        *states.entry(state).or_default() += 1;
    }
    let mut overlaps = Vec::new();
    for (d, mut rides) in engaged {
        rides.sort();
        for w in rides.windows(2) {
            // A ride may be accepted in the same millisecond the driver's last one ended.
            if w[1].0 < w[0].1 {
                overlaps.push(format!(
                    "driver {d} accepted {} while on {}",
                    w[1].2, w[0].2
                ));
            }
        }
    }
    let metrics = ctx
        .client
        .get(ctx.url(0, "/metrics"))
        .send()
        .await
        .context("scraping /metrics")?
        .text()
        .await
        .unwrap_or_default();
    let mut guard = ctx.shared.lock();
    let s = &mut *guard;
    let known = [
        "requested",
        "dispatching",
        "accepted",
        "driver_arrived",
        "in_progress",
        "completed",
        "cancelled",
        "no_driver_found",
    ];
    for (state, n) in &states {
        if !known.contains(&state.as_str()) {
            s.f.violations.push(format!("{n} rides {state} at the end"));
        }
    }
    s.f.final_states = states;
    s.f.violations.extend(overlaps);
    if let Some(h) = &s.first_offer {
        s.f.first_offer_p50_ms = h.value_at_quantile(0.5) as f64 / 1000.0;
        s.f.first_offer_p99_ms = h.value_at_quantile(0.99) as f64 / 1000.0;
    }
    s.f.server_first_offer_p99_ms_at_most = bucket_quantile(
        &metrics,
        "dispatch_request_to_first_offer_seconds",
        "",
        0.99,
    )
    .unwrap_or(f64::NAN);
    let redis_step = |step: &str| {
        bucket_quantile(
            &metrics,
            "dispatch_redis_seconds",
            &format!("step=\"{step}\","),
            0.99,
        )
    };
    s.f.server_redis_create_p99_ms_at_most = redis_step("create");
    s.f.server_redis_claim_p99_ms_at_most = redis_step("claim");
    s.f.match_rate = s.f.accepted as f64 / s.f.created.max(1) as f64;
    s.f.mean_pickup_eta_s = s.pickup_eta_sum / s.f.accepted.max(1) as f64;
    let f = s.f.clone();
    println!(
        "== {}: {} rides requested at {}/s, {} created; {} offered within the request: request → first offer p50 {:.3} ms, p99 {:.3} ms (server histogram p99 ≤ {:.1} ms)",
        ctx.run.name,
        f.requested,
        thousands(ctx.run.rides_per_s),
        f.created,
        f.offered_in_request,
        f.first_offer_p50_ms,
        f.first_offer_p99_ms,
        f.server_first_offer_p99_ms_at_most,
    );
    if let (Some(create), Some(claim)) = (
        f.server_redis_create_p99_ms_at_most,
        f.server_redis_claim_p99_ms_at_most,
    ) {
        println!(
            "   Redis calls of a request on the first replica: store the ride p99 ≤ {create:.1} ms, claim the offer p99 ≤ {claim:.1} ms"
        );
    }
    println!(
        "   accepted {} (match rate {:.1} %), mean pickup ETA {:.0} s, declined {}, completed {}; final states {:?}; refused {:?}; errors {:?}; invariant violations: {}",
        f.accepted,
        f.match_rate * 100.0,
        f.mean_pickup_eta_s,
        f.declined,
        f.completed,
        f.final_states,
        f.refused,
        f.errors,
        if f.violations.is_empty() { "none".to_owned() } else { format!("{:?}", f.violations) },
    );
    println!(
        "   result {}",
        serde_json::to_string(&f).unwrap_or_default()
    );
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quantile_of_a_prometheus_histogram_is_the_first_bucket_reaching_it() {
        let text = "m_bucket{le=\"0.001\"} 50\nm_bucket{le=\"0.002\"} 98\nm_bucket{le=\"0.004\"} 100\nm_bucket{le=\"+Inf\"} 100\n";
        assert_eq!(bucket_quantile(text, "m", "", 0.5), Some(1.0));
        assert_eq!(bucket_quantile(text, "m", "", 0.99), Some(4.0));
        assert_eq!(bucket_quantile("", "m", "", 0.99), None);
        let labelled = "m_bucket{step=\"a\",le=\"0.001\"} 1\nm_bucket{step=\"a\",le=\"+Inf\"} 1\nm_bucket{step=\"b\",le=\"0.001\"} 0\nm_bucket{step=\"b\",le=\"0.008\"} 2\nm_bucket{step=\"b\",le=\"+Inf\"} 2\n";
        assert_eq!(
            bucket_quantile(labelled, "m", "step=\"a\",", 0.99),
            Some(1.0)
        );
        assert_eq!(
            bucket_quantile(labelled, "m", "step=\"b\",", 0.99),
            Some(8.0)
        );
    }

    #[test]
    fn the_agents_generator_stays_in_its_range() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let v = r.range((300, 2000));
            assert!((300..=2000).contains(&v));
        }
    }
}
