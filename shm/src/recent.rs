//! The moving average of recent round trips behind the sync path's two bounded polls: the
//! worker's wait for its answer (`sync_spin_us`, [`crate::worker`]) and the bridge driver's
//! wait for a peer's answer (`[app] busy_poll_us`). Both poll only while the recent round
//! trips fit in their bound, so a slow peer or a loaded box turns the poll off by itself and
//! short round trips bring it back (BENCHMARKS.md "Session 10: the sync round trip").

use std::time::Duration;

/// A poll's bound and the moving average of the round trips it is measured against (weight
/// 1/8 for the newest, each round trip clamped at twice the bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentRoundTrips {
    bound_ns: u64,
    recent_ns: u64,
}

impl RecentRoundTrips {
    /// No round trip seen yet: a non-zero bound allows the first poll.
    pub fn new(bound: Duration) -> RecentRoundTrips {
        RecentRoundTrips {
            bound_ns: u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX),
            recent_ns: 0,
        }
    }

    /// The longest a poll may run; zero: never poll.
    pub fn bound(&self) -> Duration {
        Duration::from_nanos(self.bound_ns)
    }

    /// Changes the bound; the average is kept.
    pub fn set_bound(&mut self, bound: Duration) {
        self.bound_ns = RecentRoundTrips::new(bound).bound_ns;
    }

    /// A non-zero bound, and the recent round trips no longer than it.
    pub fn within_bound(&self) -> bool {
        self.bound_ns != 0 && self.recent_ns <= self.bound_ns
    }

    /// Feeds one round trip in, clamped at twice the bound: one outlier (a peer's hiccup, a
    /// preempted bridge) then stops the poll for a call or two, not for dozens, while round
    /// trips that are all longer than the bound take the average past it within a few calls.
    pub fn record(&mut self, took: Duration) {
        let ns = u64::try_from(took.as_nanos())
            .unwrap_or(u64::MAX)
            .min(self.cap_ns());
        self.recent_ns = self.recent_ns - self.recent_ns / 8 + ns / 8;
    }

    /// The cores are busy: the average jumps to its clamp (twice the bound), so polling
    /// resumes only after about six round trips shorter than the bound.
    pub fn back_off(&mut self) {
        self.recent_ns = self.recent_ns.max(self.cap_ns());
    }

    fn cap_ns(&self) -> u64 {
        self.bound_ns.saturating_mul(2)
    }
}
