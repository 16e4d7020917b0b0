//! Time as a dependency. Components ask a [`Clock`] for "now" instead of the system, so the
//! same pipeline runs on the wall clock in production and on a virtual clock (driven by span
//! timestamps) in tests and in `sluice replay`. Waiting (batch timeouts, retry backoff) uses
//! tokio's timer, which tests can pause and advance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the Unix epoch.
    fn now_unix_nanos(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_unix_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to: for deterministic tests and offline replay.
#[derive(Debug, Default)]
pub struct VirtualClock(AtomicU64);

impl VirtualClock {
    pub fn new(start_unix_nanos: u64) -> Arc<Self> {
        Arc::new(VirtualClock(AtomicU64::new(start_unix_nanos)))
    }
    /// Moves the clock forward to `t` (never backwards: replayed data can be out of order).
    pub fn advance_to(&self, t: u64) {
        self.0.fetch_max(t, Ordering::Relaxed);
    }
}

impl Clock for VirtualClock {
    fn now_unix_nanos(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_only_moves_forward() {
        let c = VirtualClock::new(10);
        c.advance_to(5);
        assert_eq!(c.now_unix_nanos(), 10);
        c.advance_to(20);
        assert_eq!(c.now_unix_nanos(), 20);
        assert!(WallClock.now_unix_nanos() > 1_600_000_000_000_000_000);
    }
}
