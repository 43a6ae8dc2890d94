//! `ws`: many drivers, each on its own WebSocket, each sending a location frame every
//! `interval` seconds, measuring frame → ack. The server acks after the report is in the
//! index, so this is frame-to-index latency (plus one loopback hop back).
//!
//! All connections are opened first (not measured, but reported). Then the pacer releases
//! `drivers / interval` frames a second, driver `k × stride mod n` for the k-th frame, so
//! each driver sends exactly every `interval` seconds with its own phase (a jittered
//! start). A driver's task sends each frame when the pacer releases it, without waiting
//! for the previous ack, and measures from the release time.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use geomatch_common::auth::{Authenticator, Role};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::fleet::{seq_of, write_coord, Fleet};
use crate::pacer::{micros, Schedule, WallClock};
use crate::record::{histogram, report, Figures, Recorder};
use crate::target::HttpTarget;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One WebSocket run.
#[derive(Debug, Clone)]
pub struct WsRun {
    pub name: String,
    pub target: HttpTarget,
    pub fleet: Arc<Fleet>,
    pub interval_s: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub drain_s: f64,
    /// WebSocket handshakes in flight at once while connecting.
    pub connect_concurrency: usize,
}

#[derive(Debug, Clone, Copy)]
struct Tick {
    k: u64,
    due: Instant,
}

/// What every driver task shares.
struct Ctx {
    fleet: Arc<Fleet>,
    schedule: Schedule,
    clock: WallClock,
    deadline: Instant,
    /// One recorder for all drivers: a few thousand records a second, and 10k private
    /// recorders would mean gigabytes of histogram counters to zero at start-up.
    rec: Mutex<Recorder>,
}

impl Ctx {
    fn rec(&self) -> MutexGuard<'_, Recorder> {
        self.rec
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

type Sink = SplitSink<Ws, Message>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN_TTL: Duration = Duration::from_secs(4 * 3600);

/// `{"type":"ack","seq":…,"result":…}` or `{"type":"error","seq":…,"code":…}`.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    result: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

/// A frame sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u64,
    due: Instant,
    sent: Instant,
    measured: bool,
}

async fn open(url: String) -> Result<Ws, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(response))) => {
            Err(format!("HTTP {}", response.status().as_u16()))
        }
        Ok(Err(tungstenite::Error::Io(e))) => Err(format!("{:?}", e.kind())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".to_owned()),
    }
}

/// Connects every driver, runs the schedule and prints its figures.
pub async fn run(run: WsRun, auth: Arc<Authenticator>) -> anyhow::Result<Figures> {
    let fleet = run.fleet.clone();
    let n = fleet.len();
    println!(
        "-- {}: connecting {n} drivers ({} handshakes at a time)",
        run.name, run.connect_concurrency
    );
    let started = Instant::now();
    let base = run.target.ws_base();
    let attempts = futures_util::stream::iter(0..n)
        .map(|i| {
            let id = fleet.id(i);
            let token = auth.mint(&id, Role::Driver, TOKEN_TTL);
            let url = format!("{base}/v1/drivers/{id}/stream?access_token={token}");
            async move {
                let t = Instant::now();
                (i, open(url).await, t.elapsed())
            }
        })
        .buffer_unordered(run.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut handshake = histogram();
    let mut refused = std::collections::BTreeMap::<String, u64>::new();
    let mut sockets: Vec<Option<Ws>> = (0..n).map(|_| None).collect();
    for (i, result, took) in attempts {
        match result {
            Ok(ws) => {
                handshake.saturating_record(micros(took));
                sockets[i as usize] = Some(ws);
            }
            Err(cause) => *refused.entry(cause).or_default() += 1,
        }
    }
    let connected = sockets.iter().filter(|s| s.is_some()).count();
    println!(
        "   connected {connected} / {n} in {:.1} s; handshake p50 {:.1} ms, p99 {:.1} ms{}",
        started.elapsed().as_secs_f64(),
        handshake.value_at_quantile(0.5) as f64 / 1000.0,
        handshake.value_at_quantile(0.99) as f64 / 1000.0,
        if refused.is_empty() {
            String::new()
        } else {
            format!("; failed: {refused:?} (too many open files? raise `ulimit -n`)")
        }
    );
    if connected == 0 {
        bail!("no WebSocket connection could be opened to {}", base);
    }

    let rate = f64::from(n) / run.interval_s;
    let clock = WallClock::now();
    let schedule = Schedule::new(
        Instant::now() + Duration::from_millis(20),
        rate,
        run.warmup_s,
        run.duration_s,
    );
    let ctx = Arc::new(Ctx {
        fleet: fleet.clone(),
        schedule,
        clock,
        deadline: schedule.end() + Duration::from_secs_f64(run.drain_s),
        rec: Mutex::new(Recorder::new(schedule.window_start())),
    });
    let mut senders = Vec::with_capacity(n as usize);
    let mut tasks = Vec::with_capacity(connected);
    for socket in sockets {
        match socket {
            Some(ws) => {
                let (tx, rx) = mpsc::unbounded_channel();
                senders.push(Some(tx));
                tasks.push(tokio::spawn(driver(ws, rx, ctx.clone())));
            }
            None => senders.push(None),
        }
    }
    let pacer_fleet = fleet.clone();
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let mut unconnected = 0u64;
            let lateness = schedule.run(|k, due| {
                match &senders[pacer_fleet.driver_of(k) as usize] {
                    Some(tx) => {
                        let _ = tx.send(Tick { k, due });
                    }
                    None if schedule.is_measured(k) => unconnected += 1,
                    None => {}
                }
                true
            });
            (lateness, unconnected)
        })?;

    let mut open_sinks = Vec::with_capacity(tasks.len());
    for t in tasks {
        open_sinks.extend(t.await?);
    }
    // Close politely once every driver is done, so no close handshake competes with
    // frames still being measured.
    futures_util::future::join_all(open_sinks.into_iter().map(|mut sink| async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(None))).await;
    }))
    .await;
    let mut rec = std::mem::replace(&mut *ctx.rec(), Recorder::new(schedule.window_start()));
    let (lateness, unconnected): (Histogram<u64>, u64) =
        tokio::task::spawn_blocking(move || pacer.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    for _ in 0..unconnected {
        rec.failure("driver not connected");
    }
    let setup = format!(
        "{connected} WebSocket drivers, one frame each every {} s",
        run.interval_s
    );
    Ok(report(
        &run.name, "frames", &setup, &schedule, &rec, &lateness,
    ))
}

/// One driver: sends the frames the pacer releases for it, matches acks by `seq`.
/// Returns its sink, still open, unless the connection broke.
async fn driver(ws: Ws, mut ticks: mpsc::UnboundedReceiver<Tick>, ctx: Arc<Ctx>) -> Option<Sink> {
    let (mut sink, mut stream) = ws.split();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    let broken: Option<String> = loop {
        if !open && pending.is_empty() {
            break None;
        }
        tokio::select! {
            tick = ticks.recv(), if open => match tick {
                Some(tick) => {
                    let unix_s = ctx.clock.unix_of(tick.due);
                    let i = ctx.fleet.driver_of(tick.k);
                    let (lat, lng) = ctx.fleet.position(i, unix_s);
                    let seq = seq_of(unix_s);
                    let frame = location_frame(lat, lng, seq);
                    let sent = Instant::now();
                    let measured = ctx.schedule.is_measured(tick.k);
                    if let Err(e) = sink.send(Message::text(frame)).await {
                        if measured {
                            ctx.rec().failure(&format!("send: {e}"));
                        }
                        break Some(format!("send: {e}"));
                    }
                    pending.push_back(Pending { seq, due: tick.due, sent, measured });
                }
                None => open = false,
            },
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => answer(&mut ctx.rec(), &mut pending, text.as_str()),
                Some(Ok(Message::Close(frame))) => {
                    break Some(format!("closed by server: {}", frame.map(|f| f.reason.to_string()).unwrap_or_default()));
                }
                // Pings are answered by tungstenite; nothing else is expected.
                Some(Ok(_)) => {}
                Some(Err(e)) => break Some(format!("receive: {e}")),
                None => break Some("connection closed".to_owned()),
            },
            () = tokio::time::sleep_until(ctx.deadline.into()), if !open => {
                let mut rec = ctx.rec();
                for p in pending.drain(..).filter(|p| p.measured) {
                    rec.unanswered(p.due, ctx.deadline);
                }
                break None;
            }
        }
    };
    let Some(cause) = broken else {
        return Some(sink);
    };
    // Whatever was in flight, and every later frame, fails with the cause.
    for _ in pending.drain(..).filter(|p| p.measured) {
        ctx.rec().failure(&cause);
    }
    while let Some(tick) = ticks.recv().await {
        if ctx.schedule.is_measured(tick.k) {
            ctx.rec().failure(&cause);
        }
    }
    None
}

fn location_frame(lat: f64, lng: f64, seq: u64) -> String {
    let mut frame = String::with_capacity(80);
    frame.push_str(r#"{"type":"location","lat":"#);
    write_coord(&mut frame, lat);
    frame.push_str(r#","lng":"#);
    write_coord(&mut frame, lng);
    let _ = write!(frame, r#","seq":{seq}}}"#);
    frame
}

fn answer(rec: &mut Recorder, pending: &mut VecDeque<Pending>, text: &str) {
    let now = Instant::now();
    let Ok(reply) = serde_json::from_str::<Reply>(text) else {
        rec.item(now, true, "unreadable server frame", 1);
        return;
    };
    if reply.kind != "ack" && reply.kind != "error" {
        // A server event (an offer, …): not an answer to a frame.
        return;
    }
    // The server answers a connection's frames in order: the answer is for the oldest
    // pending frame with its seq (or the oldest one, for an unparseable frame).
    let position = match reply.seq {
        Some(seq) => pending.iter().position(|p| p.seq == seq),
        None => (!pending.is_empty()).then_some(0),
    };
    let Some(position) = position else {
        rec.item(now, true, "answer to no pending frame", 1);
        return;
    };
    for _ in pending.drain(..position).filter(|p| p.measured) {
        rec.failure("frame never answered");
    }
    let Some(p) = pending.pop_front() else { return };
    if reply.kind == "ack" {
        rec.reply(p.due, p.sent, now, p.measured, "ack", true);
        let result = reply.result.as_deref().unwrap_or("ack without result");
        rec.item(now, p.measured, result, 1);
    } else {
        let code = reply.code.as_deref().unwrap_or("?");
        rec.reply(
            p.due,
            p.sent,
            now,
            p.measured,
            &format!("error {code}"),
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(seq: u64, t: Instant) -> Pending {
        Pending {
            seq,
            due: t,
            sent: t,
            measured: true,
        }
    }

    #[test]
    fn acks_are_matched_by_seq_and_errors_are_counted_by_code() {
        let t = Instant::now();
        let mut rec = Recorder::new(t);
        let mut q: VecDeque<Pending> = [pending(1, t), pending(2, t), pending(3, t)].into();
        answer(
            &mut rec,
            &mut q,
            r#"{"type":"ack","seq":1,"result":"accepted"}"#,
        );
        answer(
            &mut rec,
            &mut q,
            r#"{"type":"error","seq":2,"code":"rate_limited","detail":"x"}"#,
        );
        assert_eq!((rec.replies, rec.ok), (2, 1));
        assert_eq!(rec.items["accepted"], 1);
        assert_eq!(rec.outcomes["error rate_limited"], 1);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn an_ack_for_a_later_frame_fails_the_skipped_ones() {
        let t = Instant::now();
        let mut rec = Recorder::new(t);
        let mut q: VecDeque<Pending> = [pending(1, t), pending(2, t)].into();
        answer(
            &mut rec,
            &mut q,
            r#"{"type":"ack","seq":2,"result":"stale"}"#,
        );
        assert_eq!((rec.replies, rec.failed), (1, 1));
        assert!(q.is_empty());
        answer(
            &mut rec,
            &mut q,
            r#"{"type":"ack","seq":9,"result":"accepted"}"#,
        );
        assert_eq!(rec.items["answer to no pending frame"], 1);
    }

    #[test]
    fn location_frames_are_the_json_the_server_expects() {
        let f: serde_json::Value =
            serde_json::from_str(&location_frame(37.5, 127.25, 1_800_000_000_000_000)).unwrap();
        assert_eq!(
            f,
            serde_json::json!({"type": "location", "lat": 37.5, "lng": 127.25, "seq": 1_800_000_000_000_000u64})
        );
    }

    #[test]
    fn server_events_are_not_answers() {
        let t = Instant::now();
        let mut rec = Recorder::new(t);
        let mut q: VecDeque<Pending> = [pending(1, t)].into();
        answer(&mut rec, &mut q, r#"{"type":"offer","ride_id":"r1"}"#);
        assert_eq!(q.len(), 1);
        assert_eq!(rec.replies, 0);
    }
}
