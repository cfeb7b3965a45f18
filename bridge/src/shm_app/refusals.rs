//! Refusals at the local seam, logged once per cause and uid per interval (DESIGN §10: every
//! refusal is logged and counted, rate-limited under floods): a local process reconnecting in a
//! loop must not flood the log, and the line that is written says how many were not.
//!
//! The counting itself is `dmshm::bridge::SeamCounters` (every refusal, by cause), published in
//! the status document under `counters.seam`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dmshm::bridge::RefusalCause;

/// At most one line per (cause, uid) this often.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Most (cause, uid) pairs remembered; beyond, the quiet ones are forgotten.
const MAX_KEYS: usize = 1024;

/// Per (cause, uid): when the last line was written and how many refusals were not logged since.
#[derive(Debug, Default)]
pub struct RefusalLog {
    last: HashMap<(RefusalCause, u32), (Instant, u64)>,
}

impl RefusalLog {
    /// Whether to log this refusal now; `Some(n)`: yes, and `n` earlier ones of the same cause
    /// and uid were not logged.
    pub fn admit(&mut self, cause: RefusalCause, uid: u32, now: Instant) -> Option<u64> {
        if self.last.len() >= MAX_KEYS && !self.last.contains_key(&(cause, uid)) {
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < INTERVAL);
        }
        match self.last.get_mut(&(cause, uid)) {
            Some((at, suppressed)) if now.saturating_duration_since(*at) < INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                *at = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                if self.last.len() < MAX_KEYS {
                    self.last.insert((cause, uid), (now, 0));
                }
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_cause_and_uid_per_interval_with_the_count_of_the_rest() {
        let mut l = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(l.admit(RefusalCause::NotAllowed, 1000, t0), Some(0));
        for i in 1..=5 {
            assert_eq!(
                l.admit(
                    RefusalCause::NotAllowed,
                    1000,
                    t0 + Duration::from_millis(i)
                ),
                None
            );
        }
        // Another uid or cause has its own line.
        assert_eq!(l.admit(RefusalCause::NotAllowed, 1001, t0), Some(0));
        assert_eq!(l.admit(RefusalCause::NoSlot, 1000, t0), Some(0));
        // After the interval: logged again, with the 5 that were not.
        assert_eq!(
            l.admit(RefusalCause::NotAllowed, 1000, t0 + INTERVAL),
            Some(5)
        );
        assert_eq!(l.admit(RefusalCause::NotAllowed, 1000, t0 + INTERVAL), None);
    }

    #[test]
    fn memory_is_bounded_under_many_uids() {
        let mut l = RefusalLog::default();
        let t0 = Instant::now();
        for uid in 0..(MAX_KEYS as u32 * 3) {
            assert!(l.admit(RefusalCause::NotAllowed, uid, t0).is_some());
        }
        assert!(l.last.len() <= MAX_KEYS);
    }
}
