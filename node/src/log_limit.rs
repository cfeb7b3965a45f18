//! Flood control for log lines: at most a burst of lines of one kind per period, the rest
//! counted and reported with the next line that is let through (or by [`LogLimit::flush`]).
//!
//! Sans-IO like the rest of the crate: the caller passes the time. One `LogLimit` per kind of
//! line (refused CERs, framing errors, bridge-made 3004s...), kept beside the state that
//! logs it, so a flood of one kind does not hide the others. Typical use:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use dmnode::log_limit::LogLimit;
//! let mut refusals = LogLimit::new(Duration::from_secs(10), 5);
//! let now = Instant::now();
//! if let Some(suppressed) = refusals.admit(now) {
//!     tracing::warn!(suppressed, "CER refused: ...");
//! }
//! ```
//!
//! A suppressed event costs a comparison and an increment: no allocation, no lock.
use std::time::{Duration, Instant};

/// Lets through at most `burst` events per `period`; see the module docs.
#[derive(Clone, Debug)]
pub struct LogLimit {
    period: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimit {
    /// `burst` lines per `period` (a `burst` of 0 is taken as 1).
    pub const fn new(period: Duration, burst: u32) -> LogLimit {
        LogLimit {
            period,
            burst: if burst == 0 { 1 } else { burst },
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// The usual limit for refusal and error lines: 10 per 10 seconds.
    pub const fn refusals() -> LogLimit {
        LogLimit::new(Duration::from_secs(10), 10)
    }

    /// `Some(n)` when this event may be logged, `n` being how many were suppressed since
    /// the last line let through (log it, e.g. as a `suppressed` field); `None` when it must
    /// not be logged (it is counted).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < self.period => {
                if self.in_window >= self.burst {
                    self.suppressed += 1;
                    return None;
                }
                self.in_window += 1;
            }
            _ => {
                self.window_start = Some(now);
                self.in_window = 1;
            }
        }
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Events suppressed since the last line let through, taken (reset to 0) once their
    /// window is over: for a periodic summary line when the flood stopped and no further
    /// event will carry the count.
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        let over = match self.window_start {
            Some(s) => now.saturating_duration_since(s) >= self.period,
            None => true,
        };
        if over && self.suppressed > 0 {
            self.window_start = None;
            self.in_window = 0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            None
        }
    }

    /// Events suppressed and not reported yet.
    pub fn pending(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_quiet_then_count() {
        let t0 = Instant::now();
        let mut l = LogLimit::new(Duration::from_secs(10), 3);
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0 + Duration::from_secs(1)), Some(0));
        for i in 0..100 {
            assert_eq!(l.admit(t0 + Duration::from_millis(1000 + i)), None);
        }
        assert_eq!(l.pending(), 100);
        // Still inside the window: no summary yet.
        assert_eq!(l.flush(t0 + Duration::from_secs(9)), None);
        // The next window's first line carries the count, once.
        assert_eq!(l.admit(t0 + Duration::from_secs(10)), Some(100));
        assert_eq!(l.admit(t0 + Duration::from_secs(10)), Some(0));
    }

    #[test]
    fn flush_reports_a_flood_that_stopped() {
        let t0 = Instant::now();
        let mut l = LogLimit::new(Duration::from_secs(1), 1);
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0), None);
        assert_eq!(l.admit(t0), None);
        assert_eq!(l.flush(t0 + Duration::from_secs(2)), Some(2));
        assert_eq!(l.flush(t0 + Duration::from_secs(3)), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(3)), Some(0));
    }
}
