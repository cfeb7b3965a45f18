//! Rate mode's fine clock: a thread that wakes the connections every 100 µs or so, so an
//! open-loop schedule leaves in small groups instead of bursts.
//!
//! Why a thread: tokio's timer has a 1 ms resolution (its wheel's slot, and `epoll_wait`
//! takes milliseconds), so a connection that sleeps until its next scheduled request wakes
//! at the next millisecond and sends everything due since the last one at once: at 140k/s a
//! burst of ~140 requests, which the server then serves one after the other — the last one
//! waits the whole burst's service time, and that queueing is the client's doing, not the
//! server's. `std::thread::sleep` is a `clock_nanosleep` on a high-resolution timer (plus the
//! kernel's timer slack, 50 µs by default), and a `Notify` from another thread wakes the
//! runtime at once, so with this clock a connection sends every `period` instead.
//!
//! The latency is still measured from each request's own schedule time (coordinated
//! omission free): pacing only changes when requests leave, not what is measured.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

/// The shortest default tick (`--tick-us` goes lower). Each tick costs the client a thread
/// wake-up, a runtime wake-up and a `write`, and the answers come back in smaller groups
/// (more reads): measured on the 2-core box (echo bridge, load ~12), 50 µs ticks took the
/// client from ~1 to ~5 µs of CPU per request at 50-80k/s, CPU the server under test then
/// lacks. 100 µs halves the wake-ups and still cuts a 140k/s burst from ~140 requests
/// (~0.8 ms of service at 175k/s) to ~14.
pub const MIN_PERIOD: Duration = Duration::from_micros(100);
/// From here on tokio's own timer is as fine as the tick: no thread.
pub const MAX_PERIOD: Duration = Duration::from_millis(1);
/// Requests per connection per tick the period aims at.
const PER_TICK: f64 = 4.0;

/// The tick for `per_sec` requests per second spread over `connections`: about
/// [`PER_TICK`] requests per connection per tick, within [`MIN_PERIOD`, `MAX_PERIOD`];
/// `None` when tokio's 1 ms timer already sends at most that many per wake-up.
pub fn period(per_sec: f64, connections: u32) -> Option<Duration> {
    let per_conn = per_sec / f64::from(connections.max(1));
    if !(per_conn.is_finite() && per_conn > 0.0) {
        return None;
    }
    let ideal = Duration::try_from_secs_f64(PER_TICK / per_conn).ok()?;
    (ideal < MAX_PERIOD).then(|| ideal.max(MIN_PERIOD))
}

/// The running clock; stopped (and joined) by [`Pacer::stop`] or on drop.
#[derive(Debug)]
pub struct Pacer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Pacer {
    /// Starts a thread that calls `notify_one` on each of `targets` every `period` (a
    /// `Notify` keeps one permit, so a connection busy at the tick polls right after).
    pub fn start(period: Duration, targets: Vec<Arc<Notify>>) -> std::io::Result<Pacer> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || {
                while !flag.load(Relaxed) {
                    std::thread::sleep(period);
                    for t in &targets {
                        t.notify_one();
                    }
                }
            })?;
        Ok(Pacer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread (within one period) and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_aims_at_a_few_requests_per_tick_within_bounds() {
        // 140k/s on one connection: 4 per tick would be 28.6 µs, floored to 100 µs.
        assert_eq!(period(140_000.0, 1), Some(MIN_PERIOD));
        assert_eq!(MIN_PERIOD, Duration::from_micros(100));
        // 20k/s: 200 µs (4 requests per tick).
        assert_eq!(period(20_000.0, 1), Some(Duration::from_micros(200)));
        // The same rate over 4 connections: each sends a quarter, so 800 µs ticks.
        assert_eq!(period(20_000.0, 4), Some(Duration::from_micros(800)));
        // Slow enough that tokio's 1 ms timer sends under 4 per wake-up: no thread.
        assert_eq!(period(4_000.0, 1), None);
        assert_eq!(period(100.0, 1), None);
        assert_eq!(period(0.0, 1), None);
        assert_eq!(period(f64::NAN, 1), None);
    }

    #[test]
    fn the_clock_ticks_every_target_and_stops() {
        let targets: Vec<_> = (0..2).map(|_| Arc::new(Notify::new())).collect();
        let mut p = Pacer::start(MIN_PERIOD, targets.clone()).expect("thread");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for t in &targets {
                // Several ticks in a row: each one arrives (a stalled clock times out here).
                for _ in 0..5 {
                    tokio::time::timeout(Duration::from_secs(5), t.notified())
                        .await
                        .expect("a tick");
                }
            }
        });
        p.stop();
        assert!(p.thread.is_none());
    }
}
