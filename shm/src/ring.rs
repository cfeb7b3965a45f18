//! The single-producer, single-consumer byte ring that carries records between
//! one worker and the bridge.
//!
//! # Protocol
//!
//! The ring is a power-of-two byte area plus a [`RingHeader`] holding two
//! monotonically increasing 64-bit byte positions: `tail` (written only by the
//! producer) and `head` (written only by the consumer). `tail - head` bytes are
//! in use. Positions never wrap in practice (2^64 bytes), so "full" and
//! "empty" need no extra bit.
//!
//! A record is an 8-byte frame header — `len: u32` and its bitwise complement
//! (a cheap guard against a corrupted or hostile peer) — followed by `len`
//! payload bytes, padded to 8. The frame header therefore never straddles the
//! end of the area; the payload may, and is copied in two pieces. That keeps
//! every byte of the area usable, so any record up to the configured maximum
//! fits as soon as enough bytes are free (no "skip to start" padding records
//! that would need twice the maximum).
//!
//! Publication is the classic Release/Acquire pair: the producer writes the
//! frame and payload, then stores `tail` with `Release`; the consumer loads
//! `tail` with `Acquire` before reading the bytes. Symmetrically the consumer
//! stores `head` with `Release` after copying a record out, and the producer
//! loads it with `Acquire` before overwriting those bytes.
//!
//! # Wake-ups (Dekker with fences)
//!
//! A doorbell (one byte on the control socket) costs two system calls, so it
//! is sent only when the other side said it will sleep:
//!
//! * consumer, before blocking: `consumer_sleeping = 1`, `fence(SeqCst)`,
//!   re-check `tail`; only if the ring is still empty may it block;
//! * producer, after publishing `tail`: `fence(SeqCst)`, then if
//!   `consumer_sleeping` is set, clear it (swap) and ring the doorbell.
//!
//! The two SeqCst fences order the store of one side before its load of the
//! other side's variable, so at least one side sees the other: either the
//! producer sees the flag (and rings), or the consumer sees the new tail (and
//! does not sleep). `producer_waiting` is the mirror image for a full ring:
//! the producer arms it and re-checks `head`; the consumer, after freeing
//! space, fences and rings if it is set. Both are checked by the loom models
//! in this module's tests (feature `loom`, see the crate docs).
//!
//! Nothing here blocks, allocates in shared memory or takes a lock; the ring
//! never trusts positions or lengths read from the other process and reports
//! [`PushError::Corrupt`] or [`RingError`] instead of reading out of bounds.

use crate::sync::{dekker_fence, fence, AtomicU32, AtomicU64};
use std::fmt;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

/// Ordering of the tail store that publishes a record. Weakened to Relaxed
/// under `--cfg dmshm_mutant_relaxed_publish` (with feature `loom`) to show
/// that the loom models catch the data race that follows.
#[cfg(not(dmshm_mutant_relaxed_publish))]
const PUBLISH: std::sync::atomic::Ordering = Release;
#[cfg(dmshm_mutant_relaxed_publish)]
const PUBLISH: std::sync::atomic::Ordering = Relaxed;

/// Size of the per-record frame header (length and its complement).
pub const FRAME_HEADER: usize = 8;

/// Bytes a record with `len` payload bytes occupies in the ring.
pub const fn frame_size(len: usize) -> u64 {
    (FRAME_HEADER + ((len + 7) & !7)) as u64
}

/// Keeps one value on its own cache line so the producer's and the
/// consumer's positions do not false-share.
#[repr(C, align(64))]
#[derive(Default)]
pub struct CacheLine<T>(pub T);

/// Wake-up flags, see the module docs.
#[repr(C)]
#[derive(Default)]
pub struct RingFlags {
    /// Set by the consumer before it blocks; cleared by whoever rings.
    consumer_sleeping: AtomicU32,
    /// Set by the producer when it found the ring full and wants to be told
    /// when space is freed.
    producer_waiting: AtomicU32,
}

/// The shared control block of one ring. Lives in shared memory in
/// production (all-zero bytes are a valid, empty ring) and on the heap in the
/// loom models.
#[repr(C)]
#[derive(Default)]
pub struct RingHeader {
    head: CacheLine<AtomicU64>,
    tail: CacheLine<AtomicU64>,
    flags: CacheLine<RingFlags>,
}

impl RingHeader {
    /// Empties the ring. Only valid while neither side uses it (the bridge
    /// calls this before handing a slot to a new worker).
    pub fn reset(&self) {
        self.head.0.store(0, Relaxed);
        self.tail.0.store(0, Relaxed);
        self.flags.0.consumer_sleeping.store(0, Relaxed);
        self.flags.0.producer_waiting.store(0, Relaxed);
        fence(SeqCst);
    }
}

/// The memory a ring lives in: its header and its data area.
///
/// # Safety
///
/// Implementors guarantee that `header()` and the `capacity()` bytes of the
/// data area stay valid for as long as the value lives, that `capacity()` is
/// a constant power of two and at least 16, and that `write`/`read` touch only
/// `[off, off + len)` of the data area.
pub unsafe trait RingMem {
    /// The shared control block.
    fn header(&self) -> &RingHeader;
    /// Size of the data area in bytes (power of two).
    fn capacity(&self) -> u64;
    /// Copies `src` into the data area at `off`.
    ///
    /// # Safety
    ///
    /// `off + src.len() <= capacity()`, and the ring protocol guarantees the
    /// consumer is not reading those bytes.
    unsafe fn write(&self, off: usize, src: &[u8]);
    /// Copies bytes at `off` out of the data area.
    ///
    /// # Safety
    ///
    /// `off + dst.len() <= capacity()`, and the ring protocol guarantees the
    /// producer published and is not writing those bytes.
    unsafe fn read(&self, off: usize, dst: &mut [u8]);
}

/// Why a push did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Not enough free bytes right now; nothing was written (backpressure).
    Full,
    /// The record is larger than the configured maximum; it can never fit.
    TooBig {
        /// The record's size in bytes (its payload, without the ring's framing).
        len: usize,
        /// The largest record this ring accepts, in bytes.
        max: usize,
    },
    /// The consumer's position is impossible; the other process is broken.
    Corrupt,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full => f.write_str("ring full (the other side is not keeping up)"),
            PushError::TooBig { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the configured maximum of {max} bytes"
                )
            }
            PushError::Corrupt => f.write_str("ring corrupted by the other process"),
        }
    }
}

impl std::error::Error for PushError {}

/// A ring whose shared state makes no sense (bad positions or frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingError {
    /// What was wrong, for logs.
    pub what: &'static str,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ring corrupted by the other process: {}", self.what)
    }
}

impl std::error::Error for RingError {}

/// Copies `src` to ring position `pos`, splitting at the end of the area.
///
/// # Safety
///
/// The bytes `[pos, pos + src.len())` (modulo capacity) are owned by the
/// caller's side of the protocol and `src.len() <= capacity`.
unsafe fn write_wrapped<M: RingMem>(mem: &M, pos: u64, src: &[u8]) {
    let cap = mem.capacity();
    let off = (pos & (cap - 1)) as usize;
    let first = src.len().min(cap as usize - off);
    let (a, b) = src.split_at(first);
    // SAFETY: off + a.len() <= cap by construction; b (if any) starts at 0
    // and b.len() <= cap - a.len(); ownership per the caller's contract.
    unsafe {
        mem.write(off, a);
        if !b.is_empty() {
            mem.write(0, b);
        }
    }
}

/// Copies from ring position `pos` into `dst`, splitting at the end.
///
/// # Safety
///
/// As for [`write_wrapped`], for bytes the producer has published.
unsafe fn read_wrapped<M: RingMem>(mem: &M, pos: u64, dst: &mut [u8]) {
    let cap = mem.capacity();
    let off = (pos & (cap - 1)) as usize;
    let first = dst.len().min(cap as usize - off);
    let (a, b) = dst.split_at_mut(first);
    // SAFETY: see write_wrapped.
    unsafe {
        mem.read(off, a);
        if !b.is_empty() {
            mem.read(0, b);
        }
    }
}

/// The writing end of a ring. Exactly one may exist per ring at a time.
pub struct Producer<M: RingMem> {
    mem: M,
    tail: u64,
    head_cache: u64,
    max_record: usize,
}

impl<M: RingMem> Producer<M> {
    /// Takes the writing end. `max_record` (payload bytes) is clamped so a
    /// record always fits in an empty ring.
    pub fn new(mem: M, max_record: usize) -> Self {
        let cap = mem.capacity();
        let tail = mem.header().tail.0.load(Relaxed);
        let head_cache = mem.header().head.0.load(Acquire);
        let max_record = max_record.min(cap as usize - FRAME_HEADER);
        Producer {
            mem,
            tail,
            head_cache,
            max_record,
        }
    }

    /// Largest payload accepted by [`Producer::push`].
    pub fn max_record(&self) -> usize {
        self.max_record
    }

    /// Free bytes as last seen (may be more in reality).
    fn free_cached(&self) -> Result<u64, PushError> {
        let used = self.tail.wrapping_sub(self.head_cache);
        let cap = self.mem.capacity();
        if used > cap {
            return Err(PushError::Corrupt);
        }
        Ok(cap - used)
    }

    /// Appends one record made of the concatenation of `parts` and publishes
    /// it. Never blocks: a full ring is reported as [`PushError::Full`] and
    /// nothing is written.
    ///
    /// Ordering: the free space is judged against an Acquire load of `head` (the consumer
    /// has finished copying those bytes out), and the frame and payload are written before
    /// the Release store of `tail`, so a consumer that Acquire-loads the new `tail` reads the
    /// whole record. Call [`needs_wakeup`](Self::needs_wakeup) after the last push of a batch.
    pub fn push(&mut self, parts: &[&[u8]]) -> Result<(), PushError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.max_record {
            return Err(PushError::TooBig {
                len,
                max: self.max_record,
            });
        }
        let need = frame_size(len);
        if self.free_cached()? < need {
            self.head_cache = self.mem.header().head.0.load(Acquire);
            if self.free_cached()? < need {
                return Err(PushError::Full);
            }
        }
        let len32 = len as u32;
        let mut frame = [0u8; FRAME_HEADER];
        let (l, c) = frame.split_at_mut(4);
        l.copy_from_slice(&len32.to_le_bytes());
        c.copy_from_slice(&(!len32).to_le_bytes());
        // SAFETY: the `need` bytes from `tail` are free (checked against the
        // Acquire-loaded head above), so the consumer does not read them until
        // we publish the new tail below. Each piece is at most `max_record`
        // which is below the capacity.
        unsafe {
            write_wrapped(&self.mem, self.tail, &frame);
            let mut pos = self.tail + FRAME_HEADER as u64;
            for p in parts {
                write_wrapped(&self.mem, pos, p);
                pos += p.len() as u64;
            }
        }
        self.tail += need;
        self.mem.header().tail.0.store(self.tail, PUBLISH);
        Ok(())
    }

    /// After one or more pushes: true if the consumer declared it sleeps and
    /// must be woken (the flag is cleared, so exactly one doorbell is sent).
    ///
    /// The SeqCst fence orders our `tail` store before the flag load; it pairs with the fence
    /// in [`Consumer::prepare_sleep`], so either we see the flag or the consumer sees the new
    /// `tail` (no lost wake-up, module docs).
    pub fn needs_wakeup(&self) -> bool {
        dekker_fence();
        let f = &self.mem.header().flags.0.consumer_sleeping;
        f.load(Relaxed) != 0 && f.swap(0, Relaxed) != 0
    }

    /// After [`PushError::Full`]: asks the consumer to ring when it frees
    /// space. Returns true if `bytes` payload bytes already fit (retry now
    /// instead of waiting).
    pub fn arm_space_wakeup(&mut self, bytes: usize) -> bool {
        self.mem.header().flags.0.producer_waiting.store(1, Relaxed);
        dekker_fence();
        self.head_cache = self.mem.header().head.0.load(Acquire);
        matches!(self.free_cached(), Ok(free) if free >= frame_size(bytes))
    }

    /// The position just past the last record pushed: this side's own `tail`, read from the
    /// producer's copy (no load of shared memory, nothing added to a push). A record that
    /// ended at `p` has been taken by the consumer once its position ([`Producer::consumed`])
    /// reached `p`.
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// The consumer's position now (one Acquire load of `head`): every record that ended at
    /// or before it was copied out by the consumer, none after it was. The worker reads it
    /// once when the bridge went away, to tell the requests the bridge took from those it
    /// never saw. Not checked against our `tail`: a caller comparing positions with it
    /// treats an impossible value as "taken" (the careful answer).
    pub fn consumed(&self) -> u64 {
        self.mem.header().head.0.load(Acquire)
    }

    /// True if no record is waiting to be consumed.
    pub fn is_drained(&self) -> bool {
        self.mem.header().head.0.load(Acquire) == self.tail
    }

    /// Bytes published and not yet consumed (frames included), at most the capacity: the
    /// ring's depth as the metrics show it. One load of the other side's position.
    pub fn used_bytes(&self) -> u64 {
        used(&self.mem, self.mem.header().head.0.load(Acquire), self.tail)
    }
}

/// Bytes between `head` and `tail`, clamped to the capacity (the other side may have written
/// impossible positions; that is found and reported by push/pop, not here).
fn used<M: RingMem>(mem: &M, head: u64, tail: u64) -> u64 {
    tail.wrapping_sub(head).min(mem.capacity())
}

/// The reading end of a ring. Exactly one may exist per ring at a time.
pub struct Consumer<M: RingMem> {
    mem: M,
    head: u64,
    tail_cache: u64,
    max_record: usize,
}

impl<M: RingMem> Consumer<M> {
    /// Takes the reading end. Records longer than `max_record` are treated as
    /// corruption.
    pub fn new(mem: M, max_record: usize) -> Self {
        let head = mem.header().head.0.load(Relaxed);
        let tail_cache = mem.header().tail.0.load(Acquire);
        Consumer {
            mem,
            head,
            tail_cache,
            max_record,
        }
    }

    /// True if nothing is published (refreshes the cached tail).
    pub fn is_empty(&mut self) -> bool {
        if self.head != self.tail_cache {
            return false;
        }
        self.tail_cache = self.mem.header().tail.0.load(Acquire);
        self.head == self.tail_cache
    }

    /// Copies the next record's payload into `buf` (replacing its contents).
    /// `Ok(false)` when the ring is empty.
    ///
    /// Ordering and ownership: `tail` is Acquire-loaded before the bytes are read, and the
    /// copy is complete before `head` is stored with Release, which hands those bytes back to
    /// the producer. Nothing is read in place, so the producer may overwrite the area at
    /// once. A length that fails its complement check or exceeds the published bytes or
    /// `max_record` is a [`RingError`]: the other process is broken, never trusted.
    pub fn pop_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, RingError> {
        if self.is_empty() {
            return Ok(false);
        }
        let avail = self.tail_cache.wrapping_sub(self.head);
        if avail > self.mem.capacity() || avail < FRAME_HEADER as u64 {
            return Err(RingError {
                what: "impossible tail position",
            });
        }
        let mut frame = [0u8; FRAME_HEADER];
        // SAFETY: at least FRAME_HEADER bytes from head are published (avail
        // checked above, tail loaded with Acquire).
        unsafe { read_wrapped(&self.mem, self.head, &mut frame) };
        let (l, c) = frame.split_at(4);
        let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]);
        let chk = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if chk != !len {
            return Err(RingError {
                what: "bad frame header",
            });
        }
        let len = len as usize;
        if len > self.max_record || frame_size(len) > avail {
            return Err(RingError {
                what: "frame longer than the published bytes or the maximum",
            });
        }
        buf.clear();
        buf.resize(len, 0);
        // SAFETY: the whole frame lies within the published range (checked).
        unsafe { read_wrapped(&self.mem, self.head + FRAME_HEADER as u64, buf) };
        self.head += frame_size(len);
        self.mem.header().head.0.store(self.head, Release);
        Ok(true)
    }

    /// Bytes published and not yet consumed (frames included), at most the capacity.
    pub fn used_bytes(&self) -> u64 {
        used(&self.mem, self.head, self.mem.header().tail.0.load(Acquire))
    }

    /// Declares that the consumer is about to block and re-checks the ring.
    /// Returns true if it is still empty (blocking is safe: the producer will
    /// ring); false if a record raced in (do not block; the flag is cleared).
    ///
    /// The flag store, a SeqCst fence, then the `tail` load: the mirror of
    /// [`Producer::needs_wakeup`] (Dekker, module docs; checked by the loom models).
    pub fn prepare_sleep(&mut self) -> bool {
        self.mem
            .header()
            .flags
            .0
            .consumer_sleeping
            .store(1, Relaxed);
        dekker_fence();
        if self.is_empty() {
            true
        } else {
            self.mem
                .header()
                .flags
                .0
                .consumer_sleeping
                .store(0, Relaxed);
            false
        }
    }

    /// Withdraws a sleep declared by [`prepare_sleep`](Self::prepare_sleep) (or left armed by
    /// an earlier one) while the consumer stays awake and polls the ring itself: the worker's
    /// bounded spin in a sync wait, so the producer skips the doorbell of an answer the
    /// spinner is about to see. Safe at any time: the consumer blocks only after a later
    /// `prepare_sleep`, whose flag store, fence and re-check come after this store; a
    /// producer that still saw the old flag rings once more, and the worker reads that
    /// doorbell as a no-op (checked by `loom_no_lost_wakeup_after_spin`).
    pub fn cancel_sleep(&mut self) {
        self.mem
            .header()
            .flags
            .0
            .consumer_sleeping
            .store(0, Relaxed);
    }

    /// After popping: true if the producer is waiting for space and must be
    /// told (the flag is cleared, so exactly one doorbell is sent).
    pub fn space_wakeup_needed(&self) -> bool {
        dekker_fence();
        let f = &self.mem.header().flags.0.producer_waiting;
        f.load(Relaxed) != 0 && f.swap(0, Relaxed) != 0
    }
}

/// Heap-backed ring memory for single-process use (tests, benches, loom).
#[cfg(any(test, feature = "loom"))]
pub mod heap {
    use super::{RingHeader, RingMem};
    use std::sync::Arc;

    #[cfg(feature = "loom")]
    type Cell = loom::cell::UnsafeCell<u8>;
    #[cfg(not(feature = "loom"))]
    type Cell = std::cell::UnsafeCell<u8>;

    /// A ring's header and data on the heap.
    pub struct HeapRing {
        header: RingHeader,
        data: Vec<Cell>,
    }

    // SAFETY: all shared mutation goes through atomics or through data
    // bytes whose exclusive ownership the ring protocol hands over with
    // Release/Acquire (which loom verifies).
    unsafe impl Sync for HeapRing {}
    // SAFETY: as above; nothing thread-bound inside.
    unsafe impl Send for HeapRing {}

    impl HeapRing {
        /// A ring with `cap` data bytes (power of two, >= 16).
        pub fn new(cap: usize) -> Arc<HeapRing> {
            assert!(cap.is_power_of_two() && cap >= 16, "bad test ring capacity");
            Arc::new(HeapRing {
                header: RingHeader::default(),
                data: (0..cap).map(|_| Cell::new(0)).collect(),
            })
        }
    }

    // SAFETY: header and data live as long as the Arc; capacity is the
    // (power of two) length of `data`; write/read stay in bounds (slice
    // indexing would panic otherwise, which only tests exercise).
    unsafe impl RingMem for Arc<HeapRing> {
        fn header(&self) -> &RingHeader {
            &self.header
        }
        fn capacity(&self) -> u64 {
            self.data.len() as u64
        }
        unsafe fn write(&self, off: usize, src: &[u8]) {
            for (i, b) in src.iter().enumerate() {
                #[cfg(feature = "loom")]
                self.data[off + i].with_mut(|p| {
                    // SAFETY: exclusive per the ring protocol (loom checks).
                    unsafe { *p = *b }
                });
                #[cfg(not(feature = "loom"))]
                // SAFETY: exclusive per the ring protocol.
                unsafe {
                    *self.data[off + i].get() = *b
                };
            }
        }
        unsafe fn read(&self, off: usize, dst: &mut [u8]) {
            for (i, b) in dst.iter_mut().enumerate() {
                #[cfg(feature = "loom")]
                self.data[off + i].with(|p| {
                    // SAFETY: published per the ring protocol (loom checks).
                    *b = unsafe { *p }
                });
                #[cfg(not(feature = "loom"))]
                // SAFETY: published per the ring protocol.
                unsafe {
                    *b = *self.data[off + i].get()
                };
            }
        }
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::heap::HeapRing;
    use super::*;
    use std::collections::VecDeque;

    fn pair(
        cap: usize,
        max: usize,
    ) -> (
        Producer<std::sync::Arc<HeapRing>>,
        Consumer<std::sync::Arc<HeapRing>>,
    ) {
        let r = HeapRing::new(cap);
        (Producer::new(r.clone(), max), Consumer::new(r, max))
    }

    fn payload(seed: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
            .collect()
    }

    /// Every record size at every start offset of a small ring, so each
    /// wrap-around split (header at end, payload split anywhere) is covered.
    #[test]
    fn exhaustive_sizes_and_offsets() {
        let cap = 64;
        for start in (0..cap).step_by(8) {
            for len in 0..=(cap - FRAME_HEADER) {
                let (mut p, mut c) = pair(cap, cap);
                let mut buf = Vec::new();
                // Move both positions to `start`.
                if start > 0 {
                    p.push(&[&payload(0, start - FRAME_HEADER)]).unwrap();
                    assert!(c.pop_into(&mut buf).unwrap());
                }
                let want = payload(len, len);
                let (a, b) = want.split_at(len / 3);
                p.push(&[a, b]).unwrap();
                assert!(c.pop_into(&mut buf).unwrap());
                assert_eq!(buf, want, "start {start} len {len}");
                assert!(!c.pop_into(&mut buf).unwrap());
            }
        }
    }

    /// Random interleavings of pushes and pops against a VecDeque model: the
    /// ring accepts exactly when the model says there is room and returns
    /// the same records in order.
    #[test]
    fn matches_model() {
        use proptest::prelude::*;
        let cfg = ProptestConfig {
            cases: 200,
            ..ProptestConfig::default()
        };
        proptest!(cfg, |(ops in proptest::collection::vec((any::<bool>(), 0usize..100), 1..300))| {
            let cap = 256;
            let (mut p, mut c) = pair(cap, 120);
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut used = 0u64;
            let mut buf = Vec::new();
            for (i, (is_push, len)) in ops.into_iter().enumerate() {
                if is_push {
                    let rec = payload(i, len);
                    let r = p.push(&[&rec]);
                    if len > 120 {
                        prop_assert_eq!(r, Err(PushError::TooBig { len, max: 120 }));
                    } else if used + frame_size(len) > cap as u64 {
                        prop_assert_eq!(r, Err(PushError::Full));
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        used += frame_size(len);
                        model.push_back(rec);
                    }
                } else {
                    let got = c.pop_into(&mut buf).unwrap();
                    match model.pop_front() {
                        Some(want) => {
                            prop_assert!(got);
                            used -= frame_size(want.len());
                            prop_assert_eq!(&buf, &want);
                        }
                        None => prop_assert!(!got),
                    }
                }
                // The depth the metrics export, from either end.
                prop_assert_eq!(p.used_bytes(), used);
                prop_assert_eq!(c.used_bytes(), used);
            }
        });
    }

    #[test]
    fn too_big_is_reported_and_clamped_to_capacity() {
        let (mut p, _c) = pair(64, 1 << 20);
        assert_eq!(p.max_record(), 56);
        assert_eq!(
            p.push(&[&[0u8; 57]]),
            Err(PushError::TooBig { len: 57, max: 56 })
        );
        assert_eq!(p.push(&[&[0u8; 56]]), Ok(()));
        assert_eq!(p.push(&[&[]]), Err(PushError::Full));
    }

    #[test]
    fn corrupt_frame_is_an_error_not_a_panic() {
        let r = HeapRing::new(64);
        let mut p = Producer::new(r.clone(), 56);
        let mut c = Consumer::new(r.clone(), 56);
        p.push(&[b"hello"]).unwrap();
        // Overwrite the frame header with garbage, as a broken peer might.
        // SAFETY: single-threaded test; no concurrent access.
        unsafe { r.write(0, &[0xff, 0xff, 0, 0, 0, 0, 0, 0]) };
        let mut buf = Vec::new();
        assert!(c.pop_into(&mut buf).is_err());
        // An impossible tail position is caught too.
        r.header().tail.0.store(1 << 40, Release);
        let mut c2 = Consumer::new(r.clone(), 56);
        assert!(c2.pop_into(&mut buf).is_err());
        let mut p2 = Producer::new(r.clone(), 56);
        r.header().head.0.store(0, Release);
        assert_eq!(p2.push(&[b"x"]), Err(PushError::Corrupt));
    }

    #[test]
    fn wakeup_flags() {
        let (mut p, mut c) = pair(64, 56);
        assert!(!p.needs_wakeup(), "nobody sleeps yet");
        assert!(c.prepare_sleep());
        p.push(&[b"a"]).unwrap();
        assert!(p.needs_wakeup());
        assert!(!p.needs_wakeup(), "exactly one doorbell per sleep");
        // A record published before the consumer re-checks: it must not sleep.
        assert!(!c.prepare_sleep());
        assert!(!p.needs_wakeup(), "flag was withdrawn");
        // Backpressure wake-up.
        let mut buf = Vec::new();
        assert!(c.pop_into(&mut buf).unwrap());
        while p.push(&[&[1u8; 8]]).is_ok() {}
        assert!(!p.arm_space_wakeup(8));
        assert!(c.pop_into(&mut buf).unwrap());
        assert!(c.space_wakeup_needed());
        assert!(!c.space_wakeup_needed());
    }

    /// Two real threads, many records of varying size: nothing lost,
    /// duplicated or reordered (a stress complement to the loom models).
    #[test]
    fn two_threads_stress() {
        let r = HeapRing::new(1024);
        let mut p = Producer::new(r.clone(), 400);
        let mut c = Consumer::new(r, 400);
        const N: usize = 20_000;
        let t = std::thread::spawn(move || {
            for i in 0..N {
                let rec = payload(i, i % 300);
                while p.push(&[&(i as u64).to_le_bytes(), &rec]) == Err(PushError::Full) {
                    std::thread::yield_now();
                }
            }
        });
        let mut buf = Vec::new();
        let mut i = 0;
        while i < N {
            if c.pop_into(&mut buf).unwrap() {
                let (n, rest) = buf.split_at(8);
                assert_eq!(u64::from_le_bytes(n.try_into().unwrap()), i as u64);
                assert_eq!(rest, payload(i, i % 300).as_slice());
                i += 1;
            } else {
                std::thread::yield_now();
            }
        }
        t.join().unwrap();
    }
}

#[cfg(all(test, feature = "loom"))]
mod loom_tests {
    //! Model-checked with `cargo test -p dmbridge-shm --lib --profile release-tests
    //! --features loom -- loom`.
    use super::heap::HeapRing;
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(f);
    }

    /// Data written before publication is what the consumer reads, across
    /// a wrap-around, and loom finds no data race on the bytes.
    #[test]
    fn loom_publish_and_wrap() {
        model(|| {
            let r = HeapRing::new(16);
            let mut p = Producer::new(r.clone(), 8);
            let mut c = Consumer::new(r, 8);
            let t = loom::thread::spawn(move || {
                // 3 records of 2 bytes -> 16 bytes each time, forces wraps.
                let mut sent = 0u8;
                while sent < 3 {
                    if p.push(&[&[sent, sent ^ 0x5a]]).is_ok() {
                        sent += 1;
                    } else {
                        loom::thread::yield_now();
                    }
                }
            });
            let mut buf = Vec::new();
            let mut got = 0u8;
            while got < 3 {
                if c.pop_into(&mut buf).unwrap() {
                    assert_eq!(buf, vec![got, got ^ 0x5a]);
                    got += 1;
                } else {
                    loom::thread::yield_now();
                }
            }
            t.join().unwrap();
        });
    }

    /// No lost wake-up: if the consumer decides to block, the producer rang.
    #[test]
    fn loom_no_lost_wakeup() {
        no_lost_wakeup(false);
    }

    /// No lost wake-up when the consumer spins first (the worker's sync wait): its sleep flag
    /// was left armed by an earlier wait, it withdraws it, polls once, and only then declares
    /// the sleep again.
    #[test]
    fn loom_no_lost_wakeup_after_spin() {
        no_lost_wakeup(true);
    }

    /// Whatever the interleaving with a producer that publishes and checks the flag, a
    /// consumer that blocks was rung, and the record is there to be read; `spin`: the flag
    /// starts armed and is withdrawn ([`Consumer::cancel_sleep`]) before the first poll.
    fn no_lost_wakeup(spin: bool) {
        model(move || {
            let r = HeapRing::new(16);
            let mut p = Producer::new(r.clone(), 8);
            let mut c = Consumer::new(r, 8);
            if spin {
                assert!(c.prepare_sleep(), "armed by an earlier wait");
            }
            let rang = Arc::new(AtomicBool::new(false));
            let rang2 = rang.clone();
            let t = loom::thread::spawn(move || {
                p.push(&[b"x"]).unwrap();
                if p.needs_wakeup() {
                    rang2.store(true, SeqCst);
                }
            });
            if spin {
                c.cancel_sleep();
            }
            let mut buf = Vec::new();
            let got_before = c.pop_into(&mut buf).unwrap();
            let sleeps = !got_before && c.prepare_sleep();
            t.join().unwrap();
            if sleeps {
                assert!(rang.load(SeqCst), "consumer slept but nobody rang");
            }
            // Either way the record is there to be read.
            if !got_before {
                assert!(c.pop_into(&mut buf).unwrap());
            }
        });
    }

    /// No lost space wake-up: a producer that waits for space is told.
    #[test]
    fn loom_no_lost_space_wakeup() {
        model(|| {
            let r = HeapRing::new(16);
            let mut p = Producer::new(r.clone(), 8);
            let mut c = Consumer::new(r, 8);
            p.push(&[&[1u8; 8]]).unwrap(); // 16 bytes: full
            let told = Arc::new(AtomicBool::new(false));
            let told2 = told.clone();
            let t = loom::thread::spawn(move || {
                let mut buf = Vec::new();
                assert!(c.pop_into(&mut buf).unwrap());
                if c.space_wakeup_needed() {
                    told2.store(true, SeqCst);
                }
            });
            let waits = p.push(&[b"y"]) == Err(PushError::Full) && !p.arm_space_wakeup(1);
            t.join().unwrap();
            if waits {
                assert!(told.load(SeqCst), "producer waits but nobody told it");
            }
        });
    }
}
