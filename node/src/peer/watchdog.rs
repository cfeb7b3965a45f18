//! The RFC 3539 §3.4 transport-failure watchdog, one per peer connection.
//!
//! Diameter's DWR/DWA exchange detects a dead peer faster than TCP does. The algorithm is the
//! state table of RFC 3539 §3.4.1, verbatim:
//!
//! - **OKAY**: traffic flows; when Tw passes without any received message a DWR is sent, and
//!   when a second Tw passes with that DWR unanswered the connection is *suspect*.
//! - **SUSPECT**: new requests go elsewhere and pending ones are failed over; any received
//!   message brings the connection back (failback), another silent Tw closes it.
//! - **DOWN**: the connection is closed. Reconnecting is the peer state machine's job (Tc,
//!   with backoff) rather than the watchdog's `AttemptOpen()`, so DOWN has no timer here; what
//!   DOWN remembers is that the *next* connection must prove itself.
//! - **REOPEN**: a connection re-established after DOWN is not trusted until three DWAs in a
//!   row have come back; only then does it return to OKAY (failback).
//!
//! Tw is jittered by up to ±2 s on every arming (RFC 3539 §3.4.1 `SetWatchdog()`), so that
//! peers restarted together do not send DWRs in lockstep. The randomness comes from a seed
//! given at construction, which keeps the tests deterministic.
//!
//! A graceful close (DPR/DPA) is not a failure: [`Watchdog::reset`] returns to INITIAL so the
//! next connection is trusted at once.

use std::time::{Duration, Instant};

/// RFC 3539 §3.4.1: Tw must not be below 6 seconds.
pub const MIN_TW: Duration = Duration::from_secs(6);
/// The jitter bound applied to each Tw.
pub const JITTER: Duration = Duration::from_secs(2);
/// DWAs needed in REOPEN before the connection is used again.
pub const REOPEN_DWAS: i32 = 3;

/// The watchdog states of RFC 3539 §3.4.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchdogState {
    /// No connection has been up yet (or the last one closed gracefully).
    Initial,
    /// Traffic or DWAs arrive: the connection carries requests (the only usable state).
    Okay,
    /// A DWR went unanswered for Tw: no new requests, pending ones failed over; any message
    /// received brings it back to OKAY, another silent Tw closes it.
    Suspect,
    /// The connection was closed as dead; the next one starts in REOPEN.
    Down,
    /// A connection re-established after DOWN, on probation: three DWAs in a row
    /// ([`REOPEN_DWAS`]) before OKAY.
    Reopen,
}

/// What the watchdog asks of its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchdogAction {
    /// Send a DWR on the connection.
    SendDwr,
    /// Stop routing new requests to the connection and resend its pending requests elsewhere.
    Failover,
    /// The connection may carry requests again.
    Failback,
    /// Close the connection: it is considered dead.
    Close,
}

/// The watchdog of one peer connection.
#[derive(Clone, Debug)]
pub struct Watchdog {
    state: WatchdogState,
    tw: Duration,
    /// A DWR is outstanding.
    pending: bool,
    /// DWAs received in REOPEN; -1 after a silent Tw in REOPEN (the next one closes).
    num_dwa: i32,
    deadline: Option<Instant>,
    rng: u64,
}

impl Watchdog {
    /// `tw` below [`MIN_TW`] is raised to it. `seed` feeds the jitter.
    pub fn new(tw: Duration, seed: u64) -> Watchdog {
        Watchdog {
            state: WatchdogState::Initial,
            tw: tw.max(MIN_TW),
            pending: false,
            num_dwa: 0,
            deadline: None,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// The current §3.4.1 state (for status and metrics).
    pub fn state(&self) -> WatchdogState {
        self.state
    }

    /// Whether requests may be routed to this connection.
    pub fn is_usable(&self) -> bool {
        self.state == WatchdogState::Okay
    }

    /// When [`Watchdog::on_timeout`] must be called next.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The connection came up (capabilities exchanged). From INITIAL it is trusted at once;
    /// after DOWN it enters REOPEN and a DWR is sent.
    pub fn connection_up(&mut self, now: Instant) -> Option<WatchdogAction> {
        match self.state {
            WatchdogState::Down => {
                self.num_dwa = 0;
                self.pending = true;
                self.set_watchdog(now);
                self.state = WatchdogState::Reopen;
                Some(WatchdogAction::SendDwr)
            }
            _ => {
                self.pending = false;
                self.set_watchdog(now);
                self.state = WatchdogState::Okay;
                None
            }
        }
    }

    /// The connection was lost or closed because of a failure.
    pub fn connection_down(&mut self) {
        self.state = WatchdogState::Down;
        self.pending = false;
        self.deadline = None;
    }

    /// The connection was closed gracefully (DPR/DPA): the next one starts trusted.
    pub fn reset(&mut self) {
        self.state = WatchdogState::Initial;
        self.pending = false;
        self.deadline = None;
    }

    /// A DWA arrived.
    pub fn on_dwa(&mut self, now: Instant) -> Option<WatchdogAction> {
        match self.state {
            WatchdogState::Okay => {
                self.pending = false;
                self.set_watchdog(now);
                None
            }
            WatchdogState::Suspect => {
                self.pending = false;
                self.set_watchdog(now);
                self.state = WatchdogState::Okay;
                Some(WatchdogAction::Failback)
            }
            WatchdogState::Reopen => {
                self.pending = false;
                // As in RFC 3539: a DWA after a silent Tw (num_dwa == -1) only brings the
                // count back to zero, so three more are needed.
                self.num_dwa += 1;
                if self.num_dwa >= REOPEN_DWAS {
                    self.state = WatchdogState::Okay;
                    self.set_watchdog(now);
                    Some(WatchdogAction::Failback)
                } else {
                    None
                }
            }
            WatchdogState::Initial | WatchdogState::Down => None,
        }
    }

    /// Any other message (including DWR) arrived: it proves the peer alive.
    ///
    /// In REOPEN, RFC 3539 throws such traffic away for failover purposes: it does not count
    /// towards the three DWAs. (The node still answers incoming requests; see the peer FSM.)
    pub fn on_traffic(&mut self, now: Instant) -> Option<WatchdogAction> {
        match self.state {
            WatchdogState::Okay => {
                self.set_watchdog(now);
                None
            }
            WatchdogState::Suspect => {
                self.set_watchdog(now);
                self.state = WatchdogState::Okay;
                Some(WatchdogAction::Failback)
            }
            WatchdogState::Reopen | WatchdogState::Initial | WatchdogState::Down => None,
        }
    }

    /// The deadline passed. Calling it early does nothing.
    pub fn on_timeout(&mut self, now: Instant) -> Option<WatchdogAction> {
        match self.deadline {
            Some(d) if d <= now => {}
            _ => return None,
        }
        match self.state {
            WatchdogState::Okay if !self.pending => {
                self.pending = true;
                self.set_watchdog(now);
                Some(WatchdogAction::SendDwr)
            }
            WatchdogState::Okay => {
                self.set_watchdog(now);
                self.state = WatchdogState::Suspect;
                Some(WatchdogAction::Failover)
            }
            WatchdogState::Suspect => {
                self.connection_down();
                Some(WatchdogAction::Close)
            }
            WatchdogState::Reopen if !self.pending => {
                self.pending = true;
                self.set_watchdog(now);
                Some(WatchdogAction::SendDwr)
            }
            WatchdogState::Reopen if self.num_dwa < 0 => {
                self.connection_down();
                Some(WatchdogAction::Close)
            }
            WatchdogState::Reopen => {
                self.num_dwa = -1;
                self.set_watchdog(now);
                None
            }
            WatchdogState::Initial | WatchdogState::Down => {
                self.deadline = None;
                None
            }
        }
    }

    /// `SetWatchdog()`: Tw ± up to 2 s, uniformly, at millisecond granularity.
    fn set_watchdog(&mut self, now: Instant) {
        // xorshift64: plenty for jitter, and deterministic per seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = JITTER.as_millis() as u64 * 2 + 1;
        let offset = self.rng % span;
        let base = self.tw - JITTER;
        self.deadline = Some(now + base + Duration::from_millis(offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WatchdogAction::*;
    use WatchdogState::*;

    const TW: Duration = Duration::from_secs(30);

    fn up() -> (Watchdog, Instant) {
        let now = Instant::now();
        let mut w = Watchdog::new(TW, 42);
        assert_eq!(w.state(), Initial);
        assert_eq!(w.connection_up(now), None);
        (w, now)
    }

    /// Fires the watchdog at its deadline and returns what it asked for.
    fn fire(w: &mut Watchdog) -> (Option<WatchdogAction>, Instant) {
        let at = w.deadline().expect("armed");
        (w.on_timeout(at), at)
    }

    #[test]
    fn initial_connection_up_is_okay_and_usable() {
        let (w, now) = up();
        assert_eq!(w.state(), Okay);
        assert!(w.is_usable());
        let d = w.deadline().unwrap() - now;
        assert!(d >= TW - JITTER && d <= TW + JITTER, "{d:?}");
    }

    #[test]
    fn jitter_varies_and_stays_within_two_seconds() {
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..50 {
            let mut w = Watchdog::new(TW, seed);
            w.connection_up(now);
            let d = w.deadline().unwrap() - now;
            assert!(d >= TW - JITTER && d <= TW + JITTER, "{d:?}");
            seen.insert(d);
        }
        assert!(
            seen.len() > 10,
            "jitter should vary with the seed: {seen:?}"
        );
    }

    #[test]
    fn tw_is_at_least_six_seconds() {
        let now = Instant::now();
        let mut w = Watchdog::new(Duration::from_secs(1), 3);
        w.connection_up(now);
        assert!(w.deadline().unwrap() - now >= MIN_TW - JITTER);
    }

    #[test]
    fn okay_silence_sends_dwr_then_dwa_keeps_okay() {
        let (mut w, _) = up();
        let (a, at) = fire(&mut w);
        assert_eq!(a, Some(SendDwr));
        assert_eq!(w.state(), Okay);
        assert_eq!(w.on_dwa(at + Duration::from_millis(5)), None);
        assert_eq!(w.state(), Okay);
        // The DWA cleared `pending`: the next silent Tw sends a DWR again, not a failover.
        assert_eq!(fire(&mut w).0, Some(SendDwr));
    }

    #[test]
    fn early_timeout_does_nothing() {
        let (mut w, now) = up();
        assert_eq!(w.on_timeout(now + Duration::from_secs(1)), None);
        assert_eq!(w.state(), Okay);
    }

    #[test]
    fn traffic_resets_the_timer() {
        let (mut w, now) = up();
        let first = w.deadline().unwrap();
        let later = now + Duration::from_secs(20);
        assert_eq!(w.on_traffic(later), None);
        assert!(w.deadline().unwrap() > first);
        assert_eq!(w.on_timeout(first), None, "old deadline no longer fires");
    }

    #[test]
    fn unanswered_dwr_makes_suspect_with_failover_then_down() {
        let (mut w, _) = up();
        assert_eq!(fire(&mut w).0, Some(SendDwr));
        assert_eq!(fire(&mut w).0, Some(Failover));
        assert_eq!(w.state(), Suspect);
        assert!(!w.is_usable());
        assert_eq!(fire(&mut w).0, Some(Close));
        assert_eq!(w.state(), Down);
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn suspect_recovers_on_dwa_or_any_traffic() {
        for by_dwa in [true, false] {
            let (mut w, _) = up();
            fire(&mut w);
            let (_, at) = fire(&mut w);
            assert_eq!(w.state(), Suspect);
            let a = if by_dwa {
                w.on_dwa(at)
            } else {
                w.on_traffic(at)
            };
            assert_eq!(a, Some(Failback));
            assert_eq!(w.state(), Okay);
            assert!(w.is_usable());
        }
    }

    #[test]
    fn connection_down_from_any_state_goes_down() {
        let (mut w, _) = up();
        w.connection_down();
        assert_eq!(w.state(), Down);
        assert_eq!(w.on_traffic(Instant::now()), None);
        assert_eq!(w.on_dwa(Instant::now()), None);
    }

    fn reopened() -> (Watchdog, Instant) {
        let (mut w, now) = up();
        w.connection_down();
        let a = w.connection_up(now);
        assert_eq!(a, Some(SendDwr));
        assert_eq!(w.state(), Reopen);
        assert!(!w.is_usable());
        (w, now)
    }

    #[test]
    fn reopen_needs_three_dwas() {
        let (mut w, now) = reopened();
        assert_eq!(w.on_dwa(now), None);
        assert_eq!(w.state(), Reopen);
        assert_eq!(fire(&mut w).0, Some(SendDwr));
        assert_eq!(w.on_dwa(now), None);
        assert_eq!(w.state(), Reopen);
        assert_eq!(fire(&mut w).0, Some(SendDwr));
        assert_eq!(w.on_dwa(now), Some(Failback));
        assert_eq!(w.state(), Okay);
    }

    #[test]
    fn reopen_ignores_other_traffic() {
        let (mut w, now) = reopened();
        assert_eq!(w.on_traffic(now), None);
        assert_eq!(w.state(), Reopen);
        assert!(!w.is_usable());
    }

    #[test]
    fn reopen_silence_twice_closes() {
        let (mut w, _) = reopened();
        // Pending DWR unanswered for Tw: one more chance (NumDWA = -1).
        assert_eq!(fire(&mut w).0, None);
        assert_eq!(w.state(), Reopen);
        // Still nothing: down.
        assert_eq!(fire(&mut w).0, Some(Close));
        assert_eq!(w.state(), Down);
    }

    #[test]
    fn reopen_late_dwa_restarts_the_count() {
        let (mut w, now) = reopened();
        assert_eq!(w.on_dwa(now), None);
        fire(&mut w); // SendDwr
        fire(&mut w); // silent: num_dwa = -1
        assert_eq!(w.on_dwa(now), None);
        assert_eq!(w.state(), Reopen);
        for _ in 0..2 {
            fire(&mut w);
            assert_eq!(w.on_dwa(now), None);
            assert_eq!(w.state(), Reopen);
        }
        fire(&mut w);
        assert_eq!(w.on_dwa(now), Some(Failback));
        assert_eq!(w.state(), Okay);
    }

    #[test]
    fn graceful_reset_trusts_the_next_connection() {
        let (mut w, now) = up();
        w.reset();
        assert_eq!(w.state(), Initial);
        assert_eq!(w.connection_up(now), None);
        assert_eq!(w.state(), Okay);
    }
}
