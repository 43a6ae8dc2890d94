//! The open-loop clock: job `k` is due at `start + k / rate`, whatever happened to the
//! jobs before it.
//!
//! The pacer runs on its own OS thread and sleeps with `nanosleep` (at least
//! [`MIN_SLEEP`], releasing every job due by then on waking) rather than on the tokio
//! timer, whose 1 ms ticks would add up to a millisecond of generator-made latency to
//! every request. How late it released each job is measured and reported. Each job carries its *scheduled* time, and
//! latency is measured from it: a job that waits in the queue because every connection
//! is busy, or because the server is slow, is charged that wait (no coordinated omission).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The shortest sleep of the pacer between releases.
pub const MIN_SLEEP: Duration = Duration::from_micros(100);

/// A constant-rate schedule of `total` jobs.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    /// Jobs per second.
    pub rate: f64,
    pub total: u64,
    /// Jobs before this index are warm-up: sent, but not counted.
    pub first_measured: u64,
}

impl Schedule {
    /// `warmup_s` then `duration_s` at `rate`, starting at `start`.
    pub fn new(start: Instant, rate: f64, warmup_s: f64, duration_s: f64) -> Self {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        let first_measured = (warmup_s * rate).ceil() as u64;
        Schedule {
            start,
            rate,
            total: first_measured + (duration_s * rate).round() as u64,
            first_measured,
        }
    }

    pub fn at(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    pub fn is_measured(&self, k: u64) -> bool {
        k >= self.first_measured
    }

    /// When the measured window opens.
    pub fn window_start(&self) -> Instant {
        self.at(self.first_measured)
    }

    /// When the last job is due.
    pub fn end(&self) -> Instant {
        self.at(self.total)
    }

    /// Releases every job at its time by calling `emit(k, scheduled)` on the calling
    /// thread; stops early when `emit` returns false. Returns how late the releases were,
    /// in µs.
    pub fn run(&self, mut emit: impl FnMut(u64, Instant) -> bool) -> Histogram<u64> {
        let mut lateness = histogram();
        let mut k = 0;
        while k < self.total {
            let due = self.at(k);
            let now = Instant::now();
            if due > now {
                // Sleeping at least MIN_SLEEP bounds the pacer's wake-ups (each one is a
                // context switch, dear on a shared 2-core VM) at the cost of releasing
                // jobs up to MIN_SLEEP late; the lateness is measured and reported.
                std::thread::sleep((due - now).max(MIN_SLEEP));
                continue;
            }
            while k < self.total {
                let due = self.at(k);
                if due > now {
                    break;
                }
                lateness.saturating_record(micros(now - due));
                if !emit(k, due) {
                    return lateness;
                }
                k += 1;
            }
        }
        lateness
    }
}

/// Maps the monotonic clock to Unix time, fixed once per run so that scheduled instants
/// convert to the wall-clock times the reports carry.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    at: Instant,
    unix_s: f64,
}

impl WallClock {
    pub fn now() -> Self {
        let unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        WallClock {
            at: Instant::now(),
            unix_s,
        }
    }

    /// Unix time (seconds) of `t`.
    pub fn unix_of(&self, t: Instant) -> f64 {
        if t >= self.at {
            self.unix_s + (t - self.at).as_secs_f64()
        } else {
            self.unix_s - (self.at - t).as_secs_f64()
        }
    }
}

/// A latency histogram: 1 µs to 1 h at 3 significant digits.
pub fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .expect("static histogram bounds are valid")
}

pub fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_jobs_are_not_measured() {
        let s = Schedule::new(Instant::now(), 1000.0, 2.0, 10.0);
        assert_eq!((s.first_measured, s.total), (2000, 12_000));
        assert!(!s.is_measured(1999));
        assert!(s.is_measured(2000));
        assert_eq!(s.window_start() - s.start, Duration::from_secs(2));
    }

    #[test]
    fn every_job_is_released_in_order_and_not_before_its_time() {
        let s = Schedule::new(Instant::now(), 20_000.0, 0.0, 0.05);
        let mut released = Vec::new();
        let lateness = s.run(|k, due| {
            assert!(Instant::now() >= due);
            assert!(Instant::now() - due < Duration::from_secs(1));
            released.push(k);
            true
        });
        assert_eq!(released, (0..1000).collect::<Vec<_>>());
        assert_eq!(lateness.len(), 1000);
    }

    #[test]
    fn emit_returning_false_stops_the_schedule() {
        let s = Schedule::new(Instant::now(), 100_000.0, 0.0, 1.0);
        let mut n = 0;
        s.run(|_, _| {
            n += 1;
            n < 10
        });
        assert_eq!(n, 10);
    }
}
