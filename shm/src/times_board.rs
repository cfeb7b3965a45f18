//! The bridge's side of the workers' [`ScriptTimes`](crate::times::ScriptTimes): which
//! segments to read when the metrics are scraped, and the final counts of the workers gone.
//! Apart from [`crate::times`] (the histograms' layout in a segment, which
//! [`crate::segment`] places), because this side holds segments.

use std::sync::{Arc, Mutex};

use crate::segment::Segment;
use crate::times::ScriptTimesCounts;

/// The bridge's view of every worker's [`ScriptTimes`], shared with the metrics exporter,
/// which sums them when scraped ([`ScriptTimesBoard::sum`]). Touched on attach, detach and
/// scrape only, never per request (the workers write their segments directly).
///
/// A worker that detaches or dies: its counts are kept. When the bridge drops the worker it
/// reads the segment one last time (the worker has unmapped it or is gone: the counts are
/// final) and adds them to a total of departed workers, so the exported histograms only
/// grow, as a Prometheus histogram must (a count that went down would read as a counter
/// reset to `rate()` and `histogram_quantile()`, and a SIP server restarting its workers
/// would lose their requests from the figures). A restarted bridge starts from zero like
/// its other metrics (the board lives in its process).
#[derive(Default)]
pub struct ScriptTimesBoard {
    inner: Mutex<Board>,
}

#[derive(Default)]
struct Board {
    live: Vec<(u32, Segment)>,
    departed: ScriptTimesCounts,
}

impl std::fmt::Debug for ScriptTimesBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptTimesBoard")
    }
}

impl ScriptTimesBoard {
    /// A board shared between a bridge and an exporter.
    pub fn new() -> Arc<ScriptTimesBoard> {
        Arc::new(ScriptTimesBoard::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The worker of `slot` attached with `segment` (its slot 0 holds its histograms).
    pub(crate) fn attached(&self, slot: u32, segment: Segment) {
        let mut b = self.lock();
        b.live.retain(|(s, _)| *s != slot);
        b.live.push((slot, segment));
    }

    /// The worker of `slot` is gone: its final counts join the departed total.
    pub(crate) fn gone(&self, slot: u32) {
        let mut b = self.lock();
        if let Some(i) = b.live.iter().position(|(s, _)| *s == slot) {
            let (_, seg) = b.live.swap_remove(i);
            if let Some(t) = seg.script_times(0) {
                let c = t.counts();
                b.departed.add(&c);
            }
        }
    }

    /// The sum over the attached workers now and those gone before.
    pub fn sum(&self) -> ScriptTimesCounts {
        let b = self.lock();
        let mut total = b.departed;
        for (_, seg) in &b.live {
            if let Some(t) = seg.script_times(0) {
                total.add(&t.counts());
            }
        }
        total
    }
}
