//! The one timer of a loop whose next deadline moves (the node loop, the shm driver).
//!
//! Re-arming a tokio `Sleep` costs a trip through the timer wheel, so a loop re-arms it only
//! when its next deadline changed, and parks it an hour ahead when there is none. A `Sleep`
//! that completed stays complete until it is reset: polled again, it is `Ready` again at
//! once. So the timer must never be left completed: with the "re-arm only on a change" rule,
//! a loop whose last deadline passed and had no next one kept the completed sleep (no
//! deadline, none armed: no change) and turned at 100% of a core without sleeping: a bridge
//! with no SIP-server worker attached did that after its first refused request (the status
//! refresh was its only deadline). [`Alarm`] keeps the rule in one place: [`Alarm::ring`]
//! parks the sleep again as it completes.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Where the sleep waits while no deadline is armed.
const PARKED: Duration = Duration::from_secs(3600);

/// A timer armed for the next deadline of a loop (see the module docs).
pub(crate) struct Alarm {
    sleep: Pin<Box<Sleep>>,
    /// The deadline the sleep waits for; `None`: parked (never completed).
    armed: Option<Instant>,
}

impl Alarm {
    /// A parked alarm.
    pub(crate) fn new() -> Alarm {
        Alarm {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now() + PARKED)),
            armed: None,
        }
    }

    /// Arms the alarm for `next` (or parks it), touching the timer only if that changed.
    pub(crate) fn set(&mut self, next: Option<Instant>) {
        if next != self.armed {
            self.armed = next;
            let at = next.unwrap_or_else(|| Instant::now() + PARKED);
            self.sleep.as_mut().reset(at);
        }
    }

    /// Completes when the armed deadline is reached, and parks the alarm as it does, so the
    /// next turn sleeps unless [`Alarm::set`] arms it again. For a `select!` branch: dropped
    /// before completing (another branch won), it changes nothing.
    pub(crate) async fn ring(&mut self) {
        self.sleep.as_mut().await;
        self.armed = None;
        self.sleep.as_mut().reset(Instant::now() + PARKED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    fn poll_once(a: &mut Alarm) -> Poll<()> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut f = std::pin::pin!(a.ring());
        f.as_mut().poll(&mut cx)
    }

    /// The spin this type exists to prevent: a deadline passes and no next one is set. The
    /// alarm must then wait (Pending), not complete on every poll.
    #[tokio::test]
    async fn a_rung_alarm_with_no_next_deadline_waits() {
        let mut a = Alarm::new();
        assert!(poll_once(&mut a).is_pending(), "parked");
        a.set(Some(Instant::now() + Duration::from_millis(1)));
        a.ring().await;
        a.set(None);
        for _ in 0..3 {
            assert!(poll_once(&mut a).is_pending(), "rang once, then parked");
        }
        // Armed again for a deadline already past: rings at once, once.
        a.set(Some(Instant::now()));
        a.ring().await;
        a.set(None);
        assert!(poll_once(&mut a).is_pending());
    }

    #[tokio::test]
    async fn the_same_deadline_set_again_does_not_rearm() {
        let mut a = Alarm::new();
        let t = Instant::now() + Duration::from_millis(1);
        a.set(Some(t));
        a.set(Some(t));
        a.ring().await;
        assert!(poll_once(&mut a).is_pending());
    }
}
