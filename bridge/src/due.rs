//! The branches of a task's `select!` polled only when their own waker fired.
//!
//! A `select!` polls every enabled branch on every turn of its loop, whichever branch's waker
//! woke the task, and a wake-up of the bridge is about two turns of the node loop and of the
//! shm driver. With one request per wake-up (Kamailio `async_direct 1`), the `mpsc` receives
//! of the branches that did not fire were the largest fixed cost of a wake-up left, ~170
//! instructions each, 8.6-8.9 per call (BENCHMARKS.md "Session 18: the cost of a bridge
//! wake-up").
//!
//! A [`Gate`] gives its branch a waker of its own, which marks the branch due and then wakes
//! the task ([`TaskWaker`]). A branch that is not due returns `Pending` at once: its source
//! still holds the gate's waker from the branch's last `Pending` poll and keeps it until it
//! fires, so skipping the poll loses nothing. The mark is taken before the poll and the source
//! re-checks after storing a waker, so a wake-up that races with the poll marks the branch
//! again. A branch that was `Ready` stays due: its source may hold more, and its next poll
//! registers the waker again. The `select!` itself is unchanged (its random start keeps the
//! branches fair).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// A task's waker, shared by the wakers of its gates. Set on every poll of the task (a turn
/// of its loop), before any gate is polled.
#[derive(Default)]
pub(crate) struct TaskWaker(Mutex<Option<Waker>>);

impl TaskWaker {
    /// Keeps `w` (cloned only when it is not the one kept already: the same task's waker is
    /// kept across polls).
    pub(crate) fn set(&self, w: &Waker) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *g {
            Some(kept) => kept.clone_from(w),
            None => *g = Some(w.clone()),
        }
    }

    /// [`TaskWaker::set`] with the waker of the task that awaits this (returns at once).
    pub(crate) async fn set_current(&self) {
        std::future::poll_fn(|cx| {
            self.set(cx.waker());
            Poll::Ready(())
        })
        .await
    }

    fn wake(&self) {
        if let Some(w) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            w.wake_by_ref();
        }
    }
}

struct Due {
    due: AtomicBool,
    task: Arc<TaskWaker>,
}

impl Wake for Due {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Marked before the task is woken: the poll it causes sees the mark.
        self.due.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One branch's gate (see the module docs).
pub(crate) struct Gate {
    due: Arc<Due>,
    /// `due` as a `Waker`, made once: a source keeps it without a clone (`Waker::will_wake`).
    waker: Waker,
}

impl Gate {
    /// A gate whose branch is due (polled on the next turn).
    pub(crate) fn new(task: &Arc<TaskWaker>) -> Gate {
        let due = Arc::new(Due {
            due: AtomicBool::new(true),
            task: task.clone(),
        });
        let waker = Waker::from(due.clone());
        Gate { due, waker }
    }

    /// The branch's future for a `select!`: `poll` (a source's `poll_recv`, say) through
    /// [`Gate::poll`] on every poll of it.
    pub(crate) fn ready<'a, T>(
        &'a self,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<T> + 'a,
    ) -> impl std::future::Future<Output = T> + 'a {
        std::future::poll_fn(move |_| self.poll(&mut poll))
    }

    /// `poll` with this gate's waker if the branch is due, else `Pending` at once.
    pub(crate) fn poll<T>(&self, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        if !self.due.due.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        let mut cx = Context::from_waker(&self.waker);
        let r = poll(&mut cx);
        if r.is_ready() {
            // Polled again next turn: more may be there, and that poll registers again.
            self.due.due.store(true, Ordering::Relaxed);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use tokio::sync::mpsc;

    /// One turn: the task's waker set, then the gated receive polled once.
    async fn turn(
        task: &TaskWaker,
        gate: &Gate,
        rx: &mut mpsc::UnboundedReceiver<u32>,
        polls: &Cell<u32>,
    ) -> Poll<Option<u32>> {
        task.set_current().await;
        std::future::poll_fn(|_| {
            Poll::Ready(gate.poll(|cx| {
                polls.set(polls.get() + 1);
                rx.poll_recv(cx)
            }))
        })
        .await
    }

    /// A gated receive is skipped until its channel wakes it, and then takes what came.
    #[tokio::test]
    async fn a_gate_polls_its_branch_only_when_woken() {
        let task = Arc::new(TaskWaker::default());
        let gate = Gate::new(&task);
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let polls = Cell::new(0);
        // Due at first: polled, empty, now waits on the channel.
        assert!(turn(&task, &gate, &mut rx, &polls).await.is_pending());
        assert_eq!(polls.get(), 1);
        // Not woken: not polled.
        assert!(turn(&task, &gate, &mut rx, &polls).await.is_pending());
        assert_eq!(polls.get(), 1);
        // A send wakes it: polled, ready, and due again for the next turn.
        tx.send(7).unwrap();
        assert_eq!(
            turn(&task, &gate, &mut rx, &polls).await,
            Poll::Ready(Some(7))
        );
        assert!(turn(&task, &gate, &mut rx, &polls).await.is_pending());
        assert_eq!(polls.get(), 3);
        // Closed: the close wakes it, ready with None as an ungated receive.
        drop(tx);
        assert_eq!(turn(&task, &gate, &mut rx, &polls).await, Poll::Ready(None));
        assert_eq!(polls.get(), 4);
    }
}
