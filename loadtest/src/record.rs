//! What a run measured, and how it is printed.
//!
//! Each connection (or WebSocket driver) owns a [`Recorder`]; they are merged when the run
//! ends, so recording never takes a lock. Latencies are in microseconds.

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

pub use crate::pacer::histogram;
use crate::pacer::{micros, Schedule};

/// Latencies and counts of the measured (post-warm-up) jobs of one run, and the
/// throughput over the measured window.
///
/// Throughput counts every reply *received* inside the window, whatever its schedule:
/// when the server is saturated, it is still working off warm-up requests after the
/// window opens, and that work is its throughput too. Latencies and counts by outcome
/// only cover jobs *scheduled* inside the window.
#[derive(Debug)]
pub struct Recorder {
    window_start: Instant,
    /// Scheduled send time → reply: the figure that counts.
    pub latency: Histogram<u64>,
    /// Actual send → reply: the server's share, without queueing in the generator.
    pub service: Histogram<u64>,
    /// Replies by HTTP status (or reply kind), and failures by cause.
    pub outcomes: BTreeMap<String, u64>,
    /// Per-update results inside replies (batch items, WebSocket acks).
    pub items: BTreeMap<String, u64>,
    /// Replies received (any status).
    pub replies: u64,
    /// Replies that were a success (2xx, or an ack).
    pub ok: u64,
    /// Jobs still unanswered when the drain time ran out.
    pub incomplete: u64,
    /// Transport failures (connect, reset, …).
    pub failed: u64,
    /// Replies received in the window (any job), successful ones, accepted updates.
    pub window_replies: u64,
    pub window_ok: u64,
    pub window_accepted: u64,
    /// The last reply of any job.
    pub last_reply: Option<Instant>,
    /// Per second of scheduled time since the window opened: jobs, worst latency (µs).
    pub per_second: Vec<(u64, u64)>,
}

impl Recorder {
    pub fn new(window_start: Instant) -> Self {
        Recorder {
            window_start,
            latency: histogram(),
            service: histogram(),
            outcomes: BTreeMap::new(),
            items: BTreeMap::new(),
            replies: 0,
            ok: 0,
            incomplete: 0,
            failed: 0,
            window_replies: 0,
            window_ok: 0,
            window_accepted: 0,
            last_reply: None,
            per_second: Vec::new(),
        }
    }

    /// A reply to a job scheduled at `scheduled` and written at `sent`, received `now`;
    /// `measured` when the job was scheduled inside the window.
    pub fn reply(
        &mut self,
        scheduled: Instant,
        sent: Instant,
        now: Instant,
        measured: bool,
        outcome: &str,
        ok: bool,
    ) {
        self.last_reply = Some(self.last_reply.map_or(now, |t| t.max(now)));
        if now >= self.window_start {
            self.window_replies += 1;
            self.window_ok += u64::from(ok);
        }
        if !measured {
            return;
        }
        let latency = micros(now.saturating_duration_since(scheduled));
        self.latency.saturating_record(latency);
        self.service
            .saturating_record(micros(now.saturating_duration_since(sent)));
        self.second(scheduled, latency);
        self.count(outcome);
        self.replies += 1;
        if ok {
            self.ok += 1;
        }
    }

    /// Updates in a reply received `now`, by result (`accepted`, `stale`, …).
    pub fn item(&mut self, now: Instant, measured: bool, result: &str, n: u64) {
        if n == 0 {
            return;
        }
        if result == "accepted" && now >= self.window_start {
            self.window_accepted += n;
        }
        if measured {
            *self.items.entry(result.to_owned()).or_default() += n;
        }
    }

    /// A measured job that failed without a reply (connection refused, reset, …).
    pub fn failure(&mut self, cause: &str) {
        self.count(&format!("error: {cause}"));
        self.failed += 1;
    }

    /// A measured job still unanswered at the drain deadline `now`. Its age then is
    /// recorded as its latency: a lower bound.
    pub fn unanswered(&mut self, scheduled: Instant, now: Instant) {
        let latency = micros(now.saturating_duration_since(scheduled));
        self.latency.saturating_record(latency);
        self.second(scheduled, latency);
        self.incomplete += 1;
        self.count("unanswered at drain deadline");
    }

    fn second(&mut self, scheduled: Instant, latency_us: u64) {
        let s = scheduled
            .saturating_duration_since(self.window_start)
            .as_secs() as usize;
        if self.per_second.len() <= s {
            self.per_second.resize(s + 1, (0, 0));
        }
        let slot = &mut self.per_second[s];
        slot.0 += 1;
        slot.1 = slot.1.max(latency_us);
    }

    fn count(&mut self, outcome: &str) {
        match self.outcomes.get_mut(outcome) {
            Some(n) => *n += 1,
            None => {
                self.outcomes.insert(outcome.to_owned(), 1);
            }
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.service
            .add(&other.service)
            .expect("histograms share bounds");
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in other.items {
            *self.items.entry(k).or_default() += v;
        }
        self.replies += other.replies;
        self.ok += other.ok;
        self.incomplete += other.incomplete;
        self.failed += other.failed;
        self.window_replies += other.window_replies;
        self.window_ok += other.window_ok;
        self.window_accepted += other.window_accepted;
        self.last_reply = match (self.last_reply, other.last_reply) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), (0, 0));
        }
        for (mine, theirs) in self.per_second.iter_mut().zip(other.per_second) {
            mine.0 += theirs.0;
            mine.1 = mine.1.max(theirs.1);
        }
    }
}

/// The headline figures of one run (also printed as one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub run: String,
    /// Offered load, in `unit`s per second.
    pub offered_per_s: f64,
    pub unit: String,
    /// Replies of any kind per second over the measured window.
    pub achieved_per_s: f64,
    /// Successful replies per second.
    pub ok_per_s: f64,
    /// Accepted updates per second (batch items, acks), when replies carry them.
    pub accepted_updates_per_s: Option<f64>,
    pub window_s: f64,
    pub replies: u64,
    pub not_ok: u64,
    pub failed: u64,
    pub incomplete: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub service_p50_ms: f64,
    pub service_p99_ms: f64,
    pub pacer_late_p99_ms: f64,
}

impl Figures {
    /// Whether the run kept up with its offered load: at least 97 % of it answered,
    /// fewer than 0.1 % failures of any kind.
    pub fn kept_up(&self) -> bool {
        let bad = (self.not_ok + self.failed + self.incomplete) as f64;
        self.achieved_per_s >= 0.97 * self.offered_per_s
            && bad <= 0.001 * (self.replies + self.failed + self.incomplete).max(1) as f64
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Computes the figures of a run and prints them.
pub fn report(
    run: &str,
    unit: &str,
    setup: &str,
    schedule: &Schedule,
    rec: &Recorder,
    pacer_lateness: &Histogram<u64>,
) -> Figures {
    let window_start = schedule.window_start();
    let window_end = rec
        .last_reply
        .map_or(schedule.end(), |t| t.max(schedule.end()));
    let window_s = (window_end - window_start).as_secs_f64().max(1e-9);
    let accepted = (!rec.items.is_empty()).then_some(rec.window_accepted);
    let q = |h: &Histogram<u64>, p: f64| ms(h.value_at_quantile(p));
    let f = Figures {
        run: run.to_owned(),
        offered_per_s: schedule.rate,
        unit: unit.to_owned(),
        achieved_per_s: rec.window_replies as f64 / window_s,
        ok_per_s: rec.window_ok as f64 / window_s,
        accepted_updates_per_s: accepted.map(|n| n as f64 / window_s),
        window_s,
        replies: rec.replies,
        not_ok: rec.replies - rec.ok,
        failed: rec.failed,
        incomplete: rec.incomplete,
        p50_ms: q(&rec.latency, 0.5),
        p90_ms: q(&rec.latency, 0.9),
        p99_ms: q(&rec.latency, 0.99),
        p999_ms: q(&rec.latency, 0.999),
        max_ms: ms(rec.latency.max()),
        service_p50_ms: q(&rec.service, 0.5),
        service_p99_ms: q(&rec.service, 0.99),
        pacer_late_p99_ms: q(pacer_lateness, 0.99),
    };
    let warmup_s = (window_start - schedule.start).as_secs_f64();
    println!(
        "== {run}: offered {} {unit}/s for {:.1} s (after {warmup_s:.1} s of warm-up, not counted); {setup}",
        thousands(f.offered_per_s),
        (schedule.end() - window_start).as_secs_f64(),
    );
    println!(
        "   achieved {} {unit}/s ({} ok/s) over {:.2} s; of the jobs scheduled in the window: {} replies, {} not ok, {} failed, {} unanswered",
        thousands(f.achieved_per_s),
        thousands(f.ok_per_s),
        f.window_s,
        f.replies,
        f.not_ok,
        f.failed,
        f.incomplete,
    );
    if let Some(a) = f.accepted_updates_per_s {
        println!("   accepted updates: {} /s", thousands(a));
    }
    println!(
        "   latency from scheduled send: p50 {:.3} ms  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3} ms",
        f.p50_ms, f.p90_ms, f.p99_ms, f.p999_ms, f.max_ms
    );
    println!(
        "   service time (actual send → reply): p50 {:.3} ms  p99 {:.3} ms; pacer lateness p99 {:.3} ms, max {:.3} ms",
        f.service_p50_ms,
        f.service_p99_ms,
        f.pacer_late_p99_ms,
        ms(pacer_lateness.max()),
    );
    let list = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} × {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("   replies: {}", list(&rec.outcomes));
    let worst: Vec<String> = {
        let mut seconds: Vec<(usize, (u64, u64))> =
            rec.per_second.iter().copied().enumerate().collect();
        seconds.sort_by_key(|(_, (_, max))| std::cmp::Reverse(*max));
        seconds
            .iter()
            .take(3)
            .map(|(s, (n, max))| format!("{s}–{} s: max {:.3} ms ({n} jobs)", s + 1, ms(*max)))
            .collect()
    };
    println!(
        "   worst seconds of the window (by schedule): {}",
        worst.join("; ")
    );
    if !rec.items.is_empty() {
        println!("   updates: {}", list(&rec.items));
    }
    println!(
        "   result {}",
        serde_json::to_string(&f).unwrap_or_default()
    );
    f
}

/// `1234567.8` → `"1,234,568"`.
pub fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_counts_from_the_scheduled_time_not_the_send_time() {
        let scheduled = Instant::now();
        let mut r = Recorder::new(scheduled);
        let sent = scheduled + Duration::from_millis(30);
        r.reply(
            scheduled,
            sent,
            sent + Duration::from_millis(1),
            true,
            "200",
            true,
        );
        assert!(r.latency.max() >= 30_900);
        assert!(r.service.max() <= 1_001);
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_last_reply() {
        let t = Instant::now();
        let mut a = Recorder::new(t);
        a.reply(t, t, t + Duration::from_millis(1), true, "200", true);
        let mut b = Recorder::new(t);
        b.reply(t, t, t + Duration::from_millis(5), true, "429", false);
        b.failure("connect");
        b.item(t, true, "accepted", 3);
        a.merge(b);
        assert_eq!((a.replies, a.ok, a.failed), (2, 1, 1));
        assert_eq!(a.outcomes["429"], 1);
        assert_eq!((a.items["accepted"], a.window_accepted), (3, 3));
        assert_eq!(a.last_reply, Some(t + Duration::from_millis(5)));
        assert_eq!(a.per_second, vec![(2, 5000)]);
    }

    #[test]
    fn warm_up_replies_count_for_throughput_in_the_window_but_not_for_latency() {
        let t = Instant::now();
        let window = t + Duration::from_secs(2);
        let mut r = Recorder::new(window);
        // Scheduled in the warm-up, answered inside the window (a saturated server).
        r.reply(t, t, window + Duration::from_millis(3), false, "200", true);
        r.item(window + Duration::from_millis(3), false, "accepted", 200);
        // Scheduled and answered in the warm-up.
        r.reply(t, t, t + Duration::from_millis(1), false, "200", true);
        assert_eq!(
            (r.window_replies, r.window_ok, r.window_accepted),
            (1, 1, 200)
        );
        assert_eq!((r.replies, r.latency.len()), (0, 0));
        assert!(r.items.is_empty());
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }
}
