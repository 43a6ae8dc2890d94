//! The one clock of a process. Every rule that depends on time takes `now` from a
//! [`Clock`] handed in at start-up, so tests move time by hand instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The system clock, ms since the Unix epoch. Prefer a [`Clock`] handed in: this is what
/// [`Clock::System`] reads, and what code with no clock of its own (log lines, ids) uses.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where a process reads the time: the system clock, or a manual one that only moves when
/// told (tests). Cheap to clone; clones of a manual clock share one time.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// Wall-clock time.
    #[default]
    System,
    /// A time set by hand, ms since the Unix epoch.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at `start_ms`.
    pub fn manual(start_ms: i64) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(start_ms)))
    }

    /// A manual clock starting at the system time now.
    pub fn manual_at_now() -> Self {
        Self::manual(now_ms())
    }

    /// The time now, ms since the Unix epoch.
    pub fn now(&self) -> i64 {
        match self {
            Clock::System => now_ms(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward by `ms` (no effect on the system clock).
    pub fn advance(&self, ms: i64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(ms, Ordering::SeqCst);
        }
    }

    /// Sets a manual clock to `ms` (no effect on the system clock).
    pub fn set(&self, ms: i64) {
        if let Clock::Manual(t) = self {
            t.store(ms, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let other = clock.clone();
        assert_eq!(clock.now(), 1_000);
        other.advance(250);
        assert_eq!(clock.now(), 1_250);
        clock.set(5);
        assert_eq!(other.now(), 5);
    }

    #[test]
    fn the_system_clock_reads_wall_time() {
        let before = now_ms();
        let read = Clock::System.now();
        assert!(read >= before && read <= now_ms());
        Clock::System.advance(10_000);
        assert!(Clock::System.now() < before + 10_000);
    }
}
