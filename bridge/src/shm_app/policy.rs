//! The shared-memory application's decisions, as a plain type with time passed in (DESIGN
//! §6): attachment epochs, which answer a request no declared worker serves gets (3001 or
//! 3004 during the declaration grace period), and the bridge's own answer for each way a
//! request can fail to reach a worker ([`Policy::own_answer`]: 3001, 3004 or 5012). Which
//! worker gets a request is the data plane's round robin among the workers that declared its
//! event ([`dmshm::bridge::Bridge::dispatch`], pure and tested there); this type decides what
//! its outcome means on the wire.
//! The tokio task ([`super::driver`]) only feeds it events and the clock.
//!
//! **3001 or 3004.** A worker attaches, then declares the event names it serves (a Handles
//! record). Right after a bridge or SIP-server restart workers re-attach before they
//! re-declare; a permanent 3001 DIAMETER_COMMAND_UNSUPPORTED for a command about to be
//! served would be wrong, so a request no declared worker serves is answered 3004
//! DIAMETER_TOO_BUSY (transient) while a worker attached less than the grace period ago has
//! not declared yet. Two limits keep that rule from hiding a definite 3001:
//! - a worker that declares it serves nothing (an empty Handles record: an OpenSIPS MI or
//!   Kamailio RPC process attaching to read the status) is declared, and delays nothing;
//! - once any attached worker has declared a non-empty set, the SIP server's script is known
//!   (all its workers run the same script and declare the same events): a command outside
//!   it is a definite 3001, whatever attaches later.

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use dmproto::result_code::{
    DIAMETER_COMMAND_UNSUPPORTED, DIAMETER_TOO_BUSY, DIAMETER_UNABLE_TO_COMPLY,
};
use dmshm::bridge::{Dispatch, SlotId};

/// The counter a request the bridge answered itself goes under (the status and metrics
/// report them apart: an operator acts differently on each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnAnswerKind {
    /// No worker could take it now (3004): queues full, none attached, or not declared yet.
    Busy,
    /// The SIP server's script serves no such event (3001).
    Unhandled,
    /// It can never fit a worker's ring (5012): a configuration limit to raise.
    TooBig,
}

/// The bridge's own answer to a request no worker took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnAnswer {
    /// RFC 6733 §7.1 Result-Code: 3001 and 3004 are protocol errors (E bit, a DRA may route
    /// the request elsewhere, §6.1.4 for 3004), 5012 is permanent.
    pub code: u32,
    /// The Error-Message AVP's text (RFC 6733 §7.3): says what to change.
    pub message: String,
    /// Which counter it goes under.
    pub kind: OwnAnswerKind,
}

/// What is known of one attached worker's declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Declared {
    /// Attached at this time, nothing declared yet.
    Not(Instant),
    /// Declared it serves nothing.
    Nothing,
    /// Declared at least one event name.
    Events,
}

/// See the module docs.
#[derive(Debug)]
pub struct Policy {
    grace: Duration,
    /// Bumped on every attach to a slot, so outcomes never reach a later tenant of it. Read
    /// twice per originated request (its epoch when sent, the check when its outcome comes):
    /// FxHash, keyed by our own slot numbers.
    epochs: FxHashMap<SlotId, u64>,
    /// Attached workers and their declarations.
    attached: FxHashMap<SlotId, Declared>,
}

impl Policy {
    /// `grace`: how long an attached worker that has not declared its events yet counts as
    /// "not ready" (3004) rather than "serves nothing".
    pub fn new(grace: Duration) -> Policy {
        Policy {
            grace,
            epochs: FxHashMap::default(),
            attached: FxHashMap::default(),
        }
    }

    /// A worker attached to `slot` at `now`; returns its epoch.
    pub fn attached(&mut self, slot: SlotId, now: Instant) -> u64 {
        self.attached.insert(slot, Declared::Not(now));
        let e = self.epochs.entry(slot).or_insert(0);
        *e += 1;
        *e
    }

    /// The worker in `slot` declared the event names it serves (`serves_any`: at least one).
    pub fn declared(&mut self, slot: SlotId, serves_any: bool) {
        if let Some(d) = self.attached.get_mut(&slot) {
            *d = if serves_any {
                Declared::Events
            } else {
                Declared::Nothing
            };
        }
    }

    /// The worker in `slot` is gone.
    pub fn gone(&mut self, slot: SlotId) {
        self.attached.remove(&slot);
    }

    /// The current attachment epoch of `slot` (0: never attached).
    pub fn epoch(&self, slot: SlotId) -> u64 {
        self.epochs.get(&slot).copied().unwrap_or(0)
    }

    /// Whether an outcome for the tenant of `slot` at `epoch` may still be delivered.
    pub fn is_current(&self, slot: SlotId, epoch: u64) -> bool {
        self.epoch(slot) == epoch
    }

    /// The bridge's own answer when `dispatch` did not hand the request for `event` to a
    /// worker, at `now`; `None` when it did (`Dispatch::Sent`: the worker answers).
    pub fn own_answer(&self, dispatch: &Dispatch, event: &str, now: Instant) -> Option<OwnAnswer> {
        let (code, message, kind) = match dispatch {
            Dispatch::Sent { .. } => return None,
            Dispatch::Unhandled => match self.unhandled(now) {
                DIAMETER_TOO_BUSY => (
                    DIAMETER_TOO_BUSY,
                    "SIP-server workers attached but not ready yet (events not declared)".into(),
                    OwnAnswerKind::Busy,
                ),
                code => (
                    code,
                    format!("no SIP-server route handles E_DM_{event}"),
                    OwnAnswerKind::Unhandled,
                ),
            },
            // RFC 6733 §7.1.3: 3004 "the node is too busy", transient: a DRA retries elsewhere.
            Dispatch::Busy => (
                DIAMETER_TOO_BUSY,
                "every SIP-server worker queue is full".into(),
                OwnAnswerKind::Busy,
            ),
            Dispatch::NoWorker => (
                DIAMETER_TOO_BUSY,
                "no SIP-server worker is attached".into(),
                OwnAnswerKind::Busy,
            ),
            // Permanent for this request: retrying elsewhere would hit the same limit.
            Dispatch::TooBig { len, max } => (
                DIAMETER_UNABLE_TO_COMPLY,
                format!(
                    "request too large for the SIP-server queue ({len} bytes as JSON, max {max}; raise [app] max_message_size)"
                ),
                OwnAnswerKind::TooBig,
            ),
        };
        Some(OwnAnswer {
            code,
            message,
            kind,
        })
    }

    /// The Result-Code for a request no declared worker serves, at `now` (module docs).
    pub fn unhandled(&self, now: Instant) -> u32 {
        let script_known = self.attached.values().any(|d| *d == Declared::Events);
        let fresh_undeclared = self
            .attached
            .values()
            .any(|d| matches!(d, Declared::Not(at) if now < *at + self.grace));
        if !script_known && fresh_undeclared {
            DIAMETER_TOO_BUSY
        } else {
            DIAMETER_COMMAND_UNSUPPORTED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(2);

    #[test]
    fn unhandled_is_busy_only_while_a_fresh_worker_has_not_declared() {
        let t0 = Instant::now();
        let mut p = Policy::new(GRACE);
        // Nobody attached (dispatch says NoWorker before asking) or all declared: 3001.
        assert_eq!(p.unhandled(t0), DIAMETER_COMMAND_UNSUPPORTED);
        // A worker just (re-)attached and not declared yet: not ready, transient.
        p.attached(3, t0);
        assert_eq!(p.unhandled(t0), DIAMETER_TOO_BUSY);
        assert_eq!(
            p.unhandled(t0 + Duration::from_millis(1999)),
            DIAMETER_TOO_BUSY
        );
        // Bounded: one that never declares (it only originates) stops counting.
        assert_eq!(p.unhandled(t0 + GRACE), DIAMETER_COMMAND_UNSUPPORTED);
        // Any one fresh undeclared worker is enough, while no script is known.
        p.attached(4, t0 + GRACE);
        assert_eq!(p.unhandled(t0 + GRACE), DIAMETER_TOO_BUSY);
        // It leaves: nothing fresh any more.
        p.gone(4);
        assert_eq!(p.unhandled(t0 + GRACE), DIAMETER_COMMAND_UNSUPPORTED);
    }

    #[test]
    fn a_worker_declaring_nothing_does_not_delay_3001() {
        // OpenSIPS's MI process attaching on the first dm_status, serving no event.
        let t0 = Instant::now();
        let mut p = Policy::new(GRACE);
        p.attached(7, t0);
        p.declared(7, false);
        assert_eq!(p.unhandled(t0), DIAMETER_COMMAND_UNSUPPORTED);
    }

    #[test]
    fn grace_never_turns_a_definite_3001_into_3004() {
        // The SIP workers declared their events; a late process attaches without declaring
        // (an MI process on an older module): the script is known, the command is not in it.
        let t0 = Instant::now();
        let mut p = Policy::new(GRACE);
        p.attached(1, t0);
        p.declared(1, true);
        assert_eq!(p.unhandled(t0), DIAMETER_COMMAND_UNSUPPORTED);
        let t1 = t0 + Duration::from_secs(60);
        p.attached(2, t1);
        assert_eq!(p.unhandled(t1), DIAMETER_COMMAND_UNSUPPORTED);
        // After a SIP-server restart (every declared worker gone) the grace applies again.
        p.gone(1);
        p.gone(2);
        let t2 = t1 + Duration::from_secs(1);
        p.attached(1, t2);
        assert_eq!(p.unhandled(t2), DIAMETER_TOO_BUSY);
        p.declared(1, true);
        assert_eq!(p.unhandled(t2), DIAMETER_COMMAND_UNSUPPORTED);
    }

    #[test]
    fn each_dispatch_outcome_has_its_own_answer() {
        let t0 = Instant::now();
        let mut p = Policy::new(GRACE);
        let sent = Dispatch::Sent {
            slot: 1,
            token: 9,
            catch_all: false,
        };
        assert_eq!(p.own_answer(&sent, "PPR", t0), None, "the worker answers");
        let answer = |p: &Policy, d: &Dispatch, now| {
            let a = p.own_answer(d, "PPR", now).expect("answered here");
            (a.code, a.kind)
        };
        assert_eq!(
            answer(&p, &Dispatch::NoWorker, t0),
            (DIAMETER_TOO_BUSY, OwnAnswerKind::Busy)
        );
        assert_eq!(
            answer(&p, &Dispatch::Busy, t0),
            (DIAMETER_TOO_BUSY, OwnAnswerKind::Busy)
        );
        let big = Dispatch::TooBig {
            len: 70000,
            max: 65536,
        };
        assert_eq!(
            answer(&p, &big, t0),
            (DIAMETER_UNABLE_TO_COMPLY, OwnAnswerKind::TooBig)
        );
        assert!(
            p.own_answer(&big, "PPR", t0).is_some_and(
                |a| a.message.contains("70000") && a.message.contains("max_message_size")
            )
        );
        // Unhandled: 3001 naming the event, but 3004 while a fresh worker has not declared.
        let a = p
            .own_answer(&Dispatch::Unhandled, "PPR", t0)
            .expect("answered");
        assert_eq!(
            (a.code, a.kind),
            (DIAMETER_COMMAND_UNSUPPORTED, OwnAnswerKind::Unhandled)
        );
        assert!(a.message.contains("E_DM_PPR"), "{}", a.message);
        p.attached(2, t0);
        assert_eq!(
            answer(&p, &Dispatch::Unhandled, t0),
            (DIAMETER_TOO_BUSY, OwnAnswerKind::Busy)
        );
        assert_eq!(
            answer(&p, &Dispatch::Unhandled, t0 + GRACE),
            (DIAMETER_COMMAND_UNSUPPORTED, OwnAnswerKind::Unhandled)
        );
    }

    #[test]
    fn epochs_tell_tenants_of_a_slot_apart() {
        let t0 = Instant::now();
        let mut p = Policy::new(GRACE);
        assert_eq!(p.epoch(5), 0);
        let first = p.attached(5, t0);
        assert!(p.is_current(5, first));
        p.gone(5);
        // Gone: its epoch stays until a new tenant attaches, whose outcomes are its own.
        let second = p.attached(5, t0);
        assert_ne!(first, second);
        assert!(!p.is_current(5, first));
        assert!(p.is_current(5, second));
        assert_eq!(p.epoch(6), 0);
    }
}
