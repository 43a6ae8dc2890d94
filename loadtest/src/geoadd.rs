//! `geoadd`: the Redis GEO peer on the same workload. Each connection writes pipelines of
//! `GEOADD key lng lat member` for the same moving drivers (positions at the current
//! time), waits for every reply, and starts the next one: a closed loop measuring how many
//! updates a second Redis absorbs, like `redis-benchmark -P <depth>`.
//!
//! The client speaks RESP directly: it encodes the commands into one buffer and counts
//! reply lines (GEOADD answers an integer, `:n`, or an error, `-ERR …`, both one line), so
//! the client costs little next to Redis itself.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::fleet::{write_coord, Fleet};
use crate::pacer::{micros, WallClock};
use crate::record::{histogram, thousands};
use crate::target::RedisTarget;

#[derive(Debug, Clone)]
pub struct GeoaddRun {
    pub target: RedisTarget,
    pub fleet: Arc<Fleet>,
    pub key: String,
    pub pipeline: usize,
    pub connections: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GeoaddFigures {
    pub run: String,
    pub updates_per_s: f64,
    pub errors: u64,
    pub window_s: f64,
    pub pipeline_p50_ms: f64,
    pub pipeline_p99_ms: f64,
    pub pipeline_max_ms: f64,
}

/// Counts RESP replies that are one line each (integers, simple strings, errors).
#[derive(Debug, Default)]
pub struct ReplyCounter {
    at_line_start: bool,
    started: bool,
    pub replies: usize,
    pub errors: usize,
}

/// A reply that is not a one-line RESP reply (a bulk string or an array).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("unexpected RESP reply type {0:?}")]
pub struct UnexpectedReply(pub char);

impl ReplyCounter {
    pub fn new() -> Self {
        ReplyCounter {
            at_line_start: true,
            started: false,
            replies: 0,
            errors: 0,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), UnexpectedReply> {
        for &b in bytes {
            if self.at_line_start {
                match b {
                    b':' | b'+' => {}
                    b'-' => self.errors += 1,
                    other => return Err(UnexpectedReply(other as char)),
                }
                self.at_line_start = false;
                self.started = true;
            }
            if b == b'\n' {
                self.replies += 1;
                self.at_line_start = true;
            }
        }
        Ok(())
    }
}

/// Appends `GEOADD key lng lat member` in RESP; `scratch` is a reusable buffer.
pub fn encode_geoadd(
    out: &mut Vec<u8>,
    scratch: &mut String,
    key: &str,
    lng: f64,
    lat: f64,
    member: &str,
) {
    out.extend_from_slice(b"*5\r\n$6\r\nGEOADD\r\n");
    let arg = |out: &mut Vec<u8>, a: &[u8]| {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    };
    arg(out, key.as_bytes());
    for v in [lng, lat] {
        scratch.clear();
        write_coord(scratch, v);
        arg(out, scratch.as_bytes());
    }
    arg(out, member.as_bytes());
}

struct Shared {
    run: GeoaddRun,
    clock: WallClock,
    next: AtomicU64,
    window_start: Instant,
    end: Instant,
}

struct ConnResult {
    updates: u64,
    errors: u64,
    pipelines: hdrhistogram::Histogram<u64>,
    last: Option<Instant>,
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    shared: Arc<Shared>,
) -> anyhow::Result<ConnResult> {
    let run = &shared.run;
    let mut out = Vec::with_capacity(run.pipeline * 96);
    let mut input = vec![0u8; 64 * 1024];
    let mut member = String::with_capacity(24);
    let mut scratch = String::with_capacity(24);
    let mut result = ConnResult {
        updates: 0,
        errors: 0,
        pipelines: histogram(),
        last: None,
    };
    while Instant::now() < shared.end {
        let base = shared
            .next
            .fetch_add(run.pipeline as u64, Ordering::Relaxed);
        let unix_s = shared.clock.unix_of(Instant::now());
        out.clear();
        for j in 0..run.pipeline as u64 {
            let i = run.fleet.driver_of(base + j);
            let (lat, lng) = run.fleet.position(i, unix_s);
            member.clear();
            run.fleet.write_id(&mut member, i);
            encode_geoadd(&mut out, &mut scratch, &run.key, lng, lat, &member);
        }
        let sent = Instant::now();
        stream.write_all(&out).await?;
        let mut counter = ReplyCounter::new();
        while counter.replies < run.pipeline {
            let n = stream.read(&mut input).await?;
            if n == 0 {
                bail!("redis closed the connection");
            }
            counter.feed(&input[..n])?;
        }
        let done = Instant::now();
        if sent >= shared.window_start {
            result.updates += counter.replies as u64;
            result.errors += counter.errors as u64;
            result
                .pipelines
                .saturating_record(micros(done.saturating_duration_since(sent)));
            result.last = Some(done);
        }
    }
    Ok(result)
}

/// Runs the peer and prints its figures.
pub async fn run(run: GeoaddRun) -> anyhow::Result<GeoaddFigures> {
    if run.pipeline == 0 || run.connections == 0 {
        bail!("--pipeline and --connections must be at least 1");
    }
    let start = Instant::now();
    let window_start = start + Duration::from_secs_f64(run.warmup_s);
    let shared = Arc::new(Shared {
        clock: WallClock::now(),
        next: AtomicU64::new(0),
        window_start,
        end: window_start + Duration::from_secs_f64(run.duration_s),
        run,
    });
    let mut tasks = Vec::with_capacity(shared.run.connections);
    for _ in 0..shared.run.connections {
        let shared = shared.clone();
        let task = match &shared.run.target {
            RedisTarget::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connecting to redis at {addr}"))?;
                s.set_nodelay(true)?;
                tokio::spawn(connection(s, shared))
            }
            RedisTarget::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .with_context(|| format!("connecting to redis at {}", path.display()))?;
                tokio::spawn(connection(s, shared))
            }
        };
        tasks.push(task);
    }
    let (mut updates, mut errors, mut pipelines, mut last) = (0, 0, histogram(), None);
    for t in tasks {
        let r = t.await??;
        updates += r.updates;
        errors += r.errors;
        pipelines.add(&r.pipelines).expect("same bounds");
        last = last.max(r.last);
    }
    let window_s = last
        .map_or(0.0, |t: Instant| (t - window_start).as_secs_f64())
        .max(1e-9);
    let q = |p: f64| pipelines.value_at_quantile(p) as f64 / 1000.0;
    let f = GeoaddFigures {
        run: "geoadd".to_owned(),
        updates_per_s: updates as f64 / window_s,
        errors,
        window_s,
        pipeline_p50_ms: q(0.5),
        pipeline_p99_ms: q(0.99),
        pipeline_max_ms: pipelines.max() as f64 / 1000.0,
    };
    println!(
        "== geoadd: {} connections × pipelines of {} GEOADD, {} drivers, closed loop for {:.1} s (after {:.1} s of warm-up)",
        shared.run.connections,
        shared.run.pipeline,
        shared.run.fleet.len(),
        shared.run.duration_s,
        shared.run.warmup_s,
    );
    println!(
        "   {} updates/s over {:.2} s ({updates} updates, {errors} errors); pipeline round trip p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        thousands(f.updates_per_s),
        f.window_s,
        f.pipeline_p50_ms,
        f.pipeline_p99_ms,
        f.pipeline_max_ms,
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
    fn geoadd_is_encoded_as_a_resp_array() {
        let mut out = Vec::new();
        encode_geoadd(&mut out, &mut String::new(), "k", 127.0, 37.5, "drv-1");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "*5\r\n$6\r\nGEOADD\r\n$1\r\nk\r\n$11\r\n127.0000000\r\n$10\r\n37.5000000\r\n$5\r\ndrv-1\r\n"
        );
    }

    #[test]
    fn replies_split_across_reads_are_counted_once() {
        let mut c = ReplyCounter::new();
        c.feed(b":1\r\n:0").unwrap();
        assert_eq!(c.replies, 1);
        c.feed(b"\r").unwrap();
        c.feed(b"\n-ERR wrong type\r\n:1\r\n").unwrap();
        assert_eq!((c.replies, c.errors), (4, 1));
    }

    #[test]
    fn multi_line_replies_are_refused() {
        assert_eq!(
            ReplyCounter::new().feed(b"$3\r\nabc\r\n"),
            Err(UnexpectedReply('$'))
        );
    }
}
