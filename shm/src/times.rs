//! The script's side of each request it sends, per request: two fixed-bucket histograms
//! in each worker's own segment, written by that worker, summed by the bridge at scrape
//! time (issue 15 item 3: "p99 below 1 ms added by the bridge and module").
//!
//! The bridge measures its round trip for a request (the worker's record taken -> the
//! outcome record about to be published) and puts it in the [`crate::record::Answer`]. The
//! worker measures its own (the library's call entered -> the completion handed back to the
//! module: JSON -> record, the ring, the doorbell, the wake-up or poll, the answer's way
//! back, record -> what the module reads) and records, for every completion that came with
//! the bridge's figure:
//!
//! * [`ScriptTimes::round_trip`]: the worker's round trip;
//! * [`ScriptTimes::outside_bridge`]: that minus the bridge's, i.e. what the SIP server's
//!   process and the hops between the processes add.
//!
//! The bounds are the bridge's latency buckets ([`BOUNDS_US`], also those of its
//! `dmbridge_script_request_*` histograms), so the exported histograms can be subtracted
//! from each other bucket by bucket.
//!
//! A reply-to request ([`crate::record::ReplyTo`]) is sent by one process and its outcome
//! taken by another, so neither has both ends of the round trip from its own clock reads:
//! the sender stamps its send time ([`monotonic_ns`]) into the request, the bridge echoes it
//! in the outcome, and the receiver counts `now - stamp` ([`stamp_age`]) with the bridge's
//! figure, as for its own requests.
//!
//! Single writer per histogram (its worker, one thread at a time by the library's caller
//! contract): an observation is a relaxed load and store per field, no locked instruction;
//! the bridge reads with relaxed loads. A reader may see a bucket incremented and the sum
//! not yet (or the other way round) for one observation; the exported count is the buckets'
//! sum, so the histogram itself stays coherent.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Upper bounds (microseconds) of the latency buckets, the last bucket being +Inf: Diameter
/// answers on a LAN take sub-millisecond to tens of milliseconds; timeouts are seconds. The
/// bridge's and the library's shares of a request are tens to hundreds of microseconds, and
/// issue 15's goal is stated at 1 ms, so the buckets below 1 ms are fine enough to read a
/// p99 there (25 µs steps at the bottom, 250 µs around the goal).
pub const BOUNDS_US: [u64; 22] = [
    25, 50, 75, 100, 150, 250, 375, 500, 750, 1_000, 1_500, 2_500, 5_000, 10_000, 25_000, 50_000,
    100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
];

/// Buckets of a histogram: one per bound and +Inf.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// The bucket of `d`: the first bound >= it in whole microseconds (as the bridge's own
/// histograms count), [`BOUNDS_US`]`.len()` (+Inf) past the last.
pub fn bucket(d: Duration) -> usize {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    BOUNDS_US.partition_point(|&b| b < us)
}

/// Now on CLOCK_MONOTONIC in nanoseconds: the clock of a reply-to send stamp.
///
/// Why this clock: the stamp is read by another process (the receiving attachment), so it
/// must be a clock every process on the host shares, counting from the same origin.
/// CLOCK_MONOTONIC is system-wide (since boot), never set back by settimeofday or NTP steps
/// (CLOCK_REALTIME is), and is the clock Rust's `Instant` reads on Linux, so a stamp and the
/// receiver's own `Instant`-based round trips measure alike. One vDSO read, no system call.
/// (Processes in different time namespaces see it offset; the bridge and the SIP server's
/// workers run in one. A stamp that reads as in the future is not counted: [`stamp_age`].)
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// The oldest send stamp counted: no request waits longer than its timeout (a u32 of
/// milliseconds, about 49.7 days) plus the bridge's and the queues' delays (an hour is
/// generous). An older stamp is not a real round trip (a stamp the sender never wrote, a
/// bug): it would only fill the +Inf bucket and the sum.
pub const MAX_STAMP_AGE: Duration = Duration::from_millis(u32::MAX as u64 + 3_600_000);

/// The round trip from a send stamp `sent_ns` to `now_ns` (both [`monotonic_ns`]), or
/// `None` when it is not one: a stamp in the future (another clock, a damaged record) or
/// older than [`MAX_STAMP_AGE`]. Never panics, whatever the stamp.
pub fn stamp_age(now_ns: u64, sent_ns: u64) -> Option<Duration> {
    let age = Duration::from_nanos(now_ns.checked_sub(sent_ns)?);
    (age <= MAX_STAMP_AGE).then_some(age)
}

/// One histogram in shared memory (all-zero is empty).
#[repr(C)]
pub struct ShmHistogram {
    /// Non-cumulative counts; the last one is +Inf.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of the observations in nanoseconds (whole microseconds would lose about half a
    /// microsecond per observation, a few per cent of a 20 µs part).
    sum_ns: AtomicU64,
}

impl ShmHistogram {
    /// Counts `d`. Single writer: load and store, not read-modify-write.
    fn record(&self, d: Duration) {
        let b = &self.buckets[bucket(d)];
        b.store(b.load(Relaxed).wrapping_add(1), Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns
            .store(self.sum_ns.load(Relaxed).wrapping_add(ns), Relaxed);
    }

    /// The counts now.
    pub fn counts(&self) -> HistogramCounts {
        let mut c = HistogramCounts::default();
        for (to, from) in c.buckets.iter_mut().zip(&self.buckets) {
            *to = from.load(Relaxed);
        }
        c.sum_ns = self.sum_ns.load(Relaxed);
        c
    }
}

/// A copy of a histogram's counts, or a sum of several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramCounts {
    /// Non-cumulative counts per bucket of [`BOUNDS_US`], the last one +Inf.
    pub buckets: [u64; BUCKETS],
    /// Sum of the observations in nanoseconds.
    pub sum_ns: u64,
}

impl HistogramCounts {
    /// Observations (the buckets' sum).
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, &b| a.wrapping_add(b))
    }

    /// Adds `o`'s counts (wrapping: a worker may write anything into its own segment; a
    /// nonsense count must not panic the bridge).
    pub fn add(&mut self, o: &HistogramCounts) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a = a.wrapping_add(*b);
        }
        self.sum_ns = self.sum_ns.wrapping_add(o.sum_ns);
    }
}

/// The two histograms of one worker, in its segment's slot area
/// ([`crate::segment::Segment::script_times`]).
#[repr(C)]
pub struct ScriptTimes {
    /// The worker's round trip of each request the bridge answered: the library's call
    /// entered (`send_request`, `send_request_async`) -> the completion handed back; for a
    /// reply-to request, the sender's call entered (its send stamp) -> the completion handed
    /// back by the receiving library, which counts it here (not the sender).
    pub round_trip: ShmHistogram,
    /// The same minus the bridge's round trip carried in the answer record.
    pub outside_bridge: ShmHistogram,
}

impl ScriptTimes {
    /// One request: the worker's round trip and the bridge's. Worker only.
    pub(crate) fn record(&self, round_trip: Duration, bridge: Duration) {
        self.round_trip.record(round_trip);
        self.outside_bridge
            .record(round_trip.saturating_sub(bridge));
    }

    /// The counts now.
    pub fn counts(&self) -> ScriptTimesCounts {
        ScriptTimesCounts {
            round_trip: self.round_trip.counts(),
            outside_bridge: self.outside_bridge.counts(),
        }
    }
}

/// A copy of [`ScriptTimes`], or a sum over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptTimesCounts {
    /// See [`ScriptTimes::round_trip`].
    pub round_trip: HistogramCounts,
    /// See [`ScriptTimes::outside_bridge`].
    pub outside_bridge: HistogramCounts,
}

impl ScriptTimesCounts {
    /// Adds `o` (the bridge's sum over workers).
    pub(crate) fn add(&mut self, o: &ScriptTimesCounts) {
        self.round_trip.add(&o.round_trip);
        self.outside_bridge.add(&o.outside_bridge);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_sums() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_micros(25)), 0);
        assert_eq!(
            bucket(Duration::from_nanos(25_999)),
            0,
            "whole microseconds"
        );
        assert_eq!(bucket(Duration::from_micros(26)), 1);
        assert_eq!(bucket(Duration::from_secs(6)), BUCKETS - 1);
        // SAFETY: atomics only; all-zero is a valid, empty ScriptTimes.
        let t: ScriptTimes = unsafe { std::mem::zeroed() };
        t.record(Duration::from_micros(120), Duration::from_micros(90));
        t.record(Duration::from_micros(40), Duration::from_micros(90));
        let c = t.counts();
        assert_eq!(c.round_trip.count(), 2);
        assert_eq!(c.round_trip.buckets[1], 1, "40 us in (25, 50]");
        assert_eq!(c.round_trip.buckets[4], 1, "120 us in (100, 150]");
        assert_eq!(c.round_trip.sum_ns, 160_000);
        assert_eq!(c.outside_bridge.buckets[1], 1, "30 us");
        assert_eq!(
            c.outside_bridge.buckets[0], 1,
            "0, not below: the bridge's longer"
        );
        assert_eq!(c.outside_bridge.sum_ns, 30_000);
        let mut sum = ScriptTimesCounts::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(sum.round_trip.count(), 4);
    }

    /// A send stamp counts only as a round trip that can be one: not from the future, not
    /// older than the longest timeout; never a panic or a wrap, whatever the stamp.
    #[test]
    fn stamp_ages() {
        let now = 10 * MAX_STAMP_AGE.as_nanos() as u64;
        assert_eq!(
            stamp_age(now, now - 1_500),
            Some(Duration::from_nanos(1_500))
        );
        assert_eq!(stamp_age(now, now), Some(Duration::ZERO));
        assert_eq!(stamp_age(now, now + 1), None, "in the future");
        assert_eq!(stamp_age(now, u64::MAX), None);
        let oldest = now - MAX_STAMP_AGE.as_nanos() as u64;
        assert_eq!(stamp_age(now, oldest), Some(MAX_STAMP_AGE));
        assert_eq!(stamp_age(now, oldest - 1), None, "absurdly old");
        assert_eq!(stamp_age(0, 0), Some(Duration::ZERO));
        let (a, b) = (monotonic_ns(), monotonic_ns());
        assert!(a > 0 && b >= a, "{a} {b}");
        assert!(stamp_age(monotonic_ns(), a).is_some());
    }
}
