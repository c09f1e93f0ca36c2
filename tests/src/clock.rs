//! The host clock, set by the caller so that time-dependent filter behaviour (rate limits, ticks)
//! is deterministic in tests.
//!
//! It answers `proxy_get_current_time_nanoseconds` and WASI `clock_time_get` (realtime and
//! monotonic), and drives tick timers. Both clocks move together; the monotonic one never goes
//! back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// 2025-01-01T00:00:00Z: the default wall-clock start, so replays print the same times anywhere.
pub const DEFAULT_START_UNIX_NANOS: u64 = 1_735_689_600 * 1_000_000_000;

/// Offset of the monotonic clock from zero: Envoy's monotonic time is an arbitrary point (uptime);
/// a non-zero start catches a module that treats 0 as "never".
const MONOTONIC_START_NANOS: u64 = 1_000_000_000_000;

#[derive(Debug)]
pub struct SimClock {
    start_unix_nanos: u64,
    /// Nanoseconds elapsed since the start; both clocks derive from it.
    elapsed_nanos: AtomicU64,
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::new(DEFAULT_START_UNIX_NANOS)
    }
}

impl SimClock {
    /// A clock whose wall time starts at `start_unix_nanos`.
    pub fn new(start_unix_nanos: u64) -> SimClock {
        SimClock {
            start_unix_nanos,
            elapsed_nanos: AtomicU64::new(0),
        }
    }

    /// Wall-clock time, Unix nanoseconds.
    pub fn realtime_nanos(&self) -> u64 {
        self.start_unix_nanos
            .saturating_add(self.elapsed_nanos.load(Ordering::Acquire))
    }

    /// Monotonic time, nanoseconds from an arbitrary origin.
    pub fn monotonic_nanos(&self) -> u64 {
        MONOTONIC_START_NANOS.saturating_add(self.elapsed_nanos.load(Ordering::Acquire))
    }

    /// Time elapsed since the clock's start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::Acquire))
    }

    /// Moves the clock to `elapsed` after its start. Time never goes back: an earlier value is
    /// ignored and the current elapsed time returned.
    pub fn set_elapsed(&self, elapsed: Duration) -> Duration {
        let target = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let previous = self.elapsed_nanos.fetch_max(target, Ordering::AcqRel);
        Duration::from_nanos(previous.max(target))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .elapsed_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(by))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_moves_only_forward() {
        let clock = SimClock::new(1_000);
        clock.set_elapsed(Duration::from_millis(5));
        assert_eq!(clock.realtime_nanos(), 1_000 + 5_000_000);
        clock.set_elapsed(Duration::from_millis(2));
        assert_eq!(clock.elapsed(), Duration::from_millis(5));
        clock.advance(Duration::from_millis(1));
        assert_eq!(clock.elapsed(), Duration::from_millis(6));
        assert_eq!(clock.monotonic_nanos(), MONOTONIC_START_NANOS + 6_000_000);
    }
}
