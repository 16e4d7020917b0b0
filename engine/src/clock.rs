//! Time as a dependency. Components ask a [`Clock`] for "now" instead of the system, so the
//! same pipeline runs on the wall clock in production and on a virtual clock (driven by span
//! timestamps) in tests and in offline replay. Waiting (batch timeouts, retry backoff) uses
//! tokio's timer, which tests can pause and advance.
//!
//! A virtual clock changes how timer-driven components behave: they must not wait for a wall
//! timer that would fire in 30 real seconds, but fire as soon as the *virtual* time passes their
//! deadline. [`Clock::is_virtual`] tells them so; a component that holds data for a while
//! (`tail_sampling`) then checks its deadlines whenever data arrives (after reporting the data's
//! timestamps with [`Clock::observe_data_time`]), so a 30 s decision wait over a captured hour of
//! traces runs as fast as the data can be read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the Unix epoch.
    fn now_unix_nanos(&self) -> u64;

    /// Reports a timestamp seen in the data (a span's end time). A clock driven by the data
    /// moves forward to it; the wall clock and a manually driven clock ignore it.
    fn observe_data_time(&self, _unix_nanos: u64) {}

    /// True when time moves only when told (virtual), never by itself: components then check
    /// their deadlines on every arrival instead of on a wall-clock timer.
    fn is_virtual(&self) -> bool {
        false
    }
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
///
/// [`VirtualClock::new`] moves only on [`VirtualClock::advance_to`];
/// [`VirtualClock::driven_by_data`] also moves to every timestamp components report with
/// [`Clock::observe_data_time`], so "now" is the newest span end time seen so far.
#[derive(Debug, Default)]
pub struct VirtualClock {
    now: AtomicU64,
    follows_data: bool,
}

impl VirtualClock {
    pub fn new(start_unix_nanos: u64) -> Arc<Self> {
        Arc::new(VirtualClock {
            now: AtomicU64::new(start_unix_nanos),
            follows_data: false,
        })
    }
    /// A clock whose "now" is the newest data timestamp observed (never moving backwards).
    pub fn driven_by_data(start_unix_nanos: u64) -> Arc<Self> {
        Arc::new(VirtualClock {
            now: AtomicU64::new(start_unix_nanos),
            follows_data: true,
        })
    }
    /// Moves the clock forward to `t` (never backwards: replayed data can be out of order).
    pub fn advance_to(&self, t: u64) {
        self.now.fetch_max(t, Ordering::Relaxed);
    }
    /// Moves the clock forward by `d`.
    pub fn advance_by(&self, d: std::time::Duration) {
        self.now.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Clock for VirtualClock {
    fn now_unix_nanos(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
    fn observe_data_time(&self, unix_nanos: u64) {
        if self.follows_data {
            self.advance_to(unix_nanos);
        }
    }
    fn is_virtual(&self) -> bool {
        true
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
        c.observe_data_time(100);
        assert_eq!(c.now_unix_nanos(), 20, "a manual clock ignores data time");
        c.advance_by(std::time::Duration::from_nanos(5));
        assert_eq!(c.now_unix_nanos(), 25);
        assert!(c.is_virtual() && !WallClock.is_virtual());
        assert!(WallClock.now_unix_nanos() > 1_600_000_000_000_000_000);
    }

    #[test]
    fn data_driven_clock_follows_the_newest_timestamp() {
        let c = VirtualClock::driven_by_data(0);
        c.observe_data_time(50);
        c.observe_data_time(40);
        assert_eq!(c.now_unix_nanos(), 50);
        WallClock.observe_data_time(1); // no effect, no panic
    }
}
