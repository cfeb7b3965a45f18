//! Where the node encodes its messages without an allocation per message (issue 15 item 2):
//! answers one after another into shared chunks ([`Arena`]), the requests it originates
//! into buffers their answers give back ([`Pool`]).
//!
//! Each encoded message leaves the node as [`Bytes`] that outlive the call that made them:
//! an answer to a peer's request is queued on the connection *and* kept by the duplicate
//! cache ([`crate::duplicates`], RFC 6733 §6.5: a retransmission gets the same answer
//! bytes), for up to `[limits] dup_cache_ttl`. One buffer per answer was two allocations
//! (the buffer, and `Bytes`' shared header when it was frozen). Here answers are split off
//! the front of one chunk of [`CHUNK`] bytes ([`MessageWriter::finish_split`]): a split of a
//! shared `BytesMut` allocates nothing, and the chunk is freed by whichever of its messages
//! is dropped last. One chunk (two allocations) serves about `CHUNK / message size`
//! messages: ~100 answers of 150 bytes.
//!
//! **Bound.** The arena keeps one chunk, the one being written. A filled chunk is not kept
//! here: it lives exactly as long as one of its messages does, and those are bounded by
//! their holders — the duplicate cache (`dup_cache_entries`, `dup_cache_ttl`) and the
//! connections' write queues (the driver's buffer budget). So a burst pins no memory for
//! ever: every chunk is freed at the latest `dup_cache_ttl` after its last answer was cached.
//! What a chunk pins can exceed its live messages' bytes (one cached answer keeps its whole
//! chunk); the cache evicts in about the order the answers were written (oldest first, by
//! count, bytes or age), so a chunk's messages go at about the same time and the chunks alive
//! hold about the cache's bytes plus the chunk being written.
//!
//! A chunk whose messages are all gone is rewound in place instead of replaced
//! ([`BytesMut::try_reclaim`]: one atomic load, never an allocation).

use bytes::{Bytes, BytesMut};
use dmproto::{EncodeError, Header, MessageWriter};

/// Bytes per chunk: enough for ~100 typical answers per allocation, and small enough that
/// the chunks a sparse cache pins stay modest (16 KiB each, below glibc's mmap threshold).
pub const CHUNK: usize = 16 * 1024;

/// A message starts in a new chunk when less than this is left in the current one: most
/// answers fit in it, so few are copied by a growth mid-message (a longer one still is:
/// the writer grows the buffer, which becomes the next chunk). At most this much of a
/// chunk is left unused.
pub const ROOM: usize = 1024;

/// See the module docs.
#[derive(Debug)]
pub struct Arena {
    /// The chunk being written: empty, its capacity what is left of it.
    chunk: BytesMut,
    /// Bytes of a new chunk ([`CHUNK`] unless [`Arena::with_chunk`] says otherwise).
    size: usize,
}

impl Default for Arena {
    fn default() -> Arena {
        Arena::with_chunk(CHUNK)
    }
}

impl Arena {
    /// An arena with no chunk yet (the first message allocates one).
    pub fn new() -> Arena {
        Arena::default()
    }

    /// An arena whose chunks are `size` bytes (other users of the same scheme: the bridge's
    /// worker-request AVPs and `run --echo`'s bodies).
    pub fn with_chunk(size: usize) -> Arena {
        Arena {
            chunk: BytesMut::new(),
            size,
        }
    }

    /// The current chunk with room for `need` more bytes: as it is, rewound in place when
    /// none of its slices is alive ([`BytesMut::try_reclaim`]), or a new one (`size`, or
    /// `need` when larger). Write at its end and `split` the message off.
    pub fn room(&mut self, need: usize) -> &mut BytesMut {
        let size = self.size.max(need);
        if self.chunk.capacity() < need && !self.chunk.try_reclaim(size) {
            self.chunk = BytesMut::with_capacity(size);
        }
        &mut self.chunk
    }

    /// A writer for a message with `header`, in the current chunk: hand it back to
    /// [`Arena::finish`].
    pub fn writer(&mut self, header: Header) -> MessageWriter {
        let chunk = std::mem::take(self.room(ROOM));
        MessageWriter::with_buffer(chunk, header)
    }

    /// A writer for AVPs alone (a message body), with room for `need` bytes in the current
    /// chunk: hand it back to [`Arena::finish`].
    pub fn avps_writer(&mut self, need: usize) -> MessageWriter {
        let chunk = std::mem::take(self.room(need));
        MessageWriter::avps_only_in(chunk)
    }

    /// The message `w` wrote ([`MessageWriter::finish`]); the chunk's rest is kept for the
    /// next one (also when the message failed).
    pub fn finish(&mut self, w: MessageWriter) -> Result<Bytes, EncodeError> {
        let (message, rest) = w.finish_split();
        self.chunk = rest;
        message
    }
}

/// Buffers kept for the requests the node originates, each one request's alone: the pending
/// table keeps a request for a resend after failover (RFC 6733 §5.5.4) and writes its
/// hop-by-hop id and T flag into it in place ([`crate::pending::stamp`]), which needs the
/// request's buffer to itself (a shared chunk would make every stamp a copy). Its answer
/// gives it back ([`Pool::give`]); taken again ([`Pool::take`]), it is written, frozen, stamped
/// and sent without an allocation (a buffer is made shared once, when new, so that freezing
/// it and getting it back from [`Bytes`] never allocate).
///
/// **Bound:** at most [`POOL_MAX`] buffers of at most [`POOL_KEEP`] bytes each (2 MiB at
/// worst, ~128 KiB for requests of under a kilobyte): a burst of answers beyond that frees
/// its buffers, and one larger than that is not kept. A request given back while a
/// connection's write queue still holds it is not kept either (it is freed when written).
#[derive(Debug, Default)]
pub struct Pool {
    free: Vec<BytesMut>,
}

/// Most buffers a [`Pool`] keeps: about the requests a busy node has in flight per batch
/// of answers (the closed-loop benchmarks run 100 in flight).
pub const POOL_MAX: usize = 128;

/// Largest buffer a [`Pool`] keeps: the rare large request's buffer is freed with it.
pub const POOL_KEEP: usize = 16 * 1024;

/// Capacity of a new pool buffer: most requests fit, a larger one grows it.
const POOL_NEW: usize = 1024;

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool::default()
    }

    /// An empty buffer, uniquely owned and shared-kind: a kept one, or a new one.
    pub fn take(&mut self) -> BytesMut {
        let mut buf = self
            .free
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(POOL_NEW));
        // Makes a new buffer shared (one allocation, its header), so that `freeze` and
        // `Bytes::try_into_mut` keep it as it is; for a kept one, two reference counts.
        drop(buf.split_to(0));
        buf
    }

    /// `request`'s buffer back, kept if nothing else holds it and there is room.
    pub fn give(&mut self, request: Bytes) {
        if self.free.len() >= POOL_MAX {
            return;
        }
        if let Ok(mut buf) = request.try_into_mut() {
            if buf.capacity() <= POOL_KEEP {
                buf.clear();
                if self.free.capacity() == 0 {
                    // Once, to its bound: never regrown per request.
                    self.free.reserve_exact(POOL_MAX);
                }
                self.free.push(buf);
            }
        }
    }

    /// Buffers kept now.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// No buffer kept.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::Message;

    fn answer(arena: &mut Arena, e2e: u32, filler: usize) -> Result<Bytes, EncodeError> {
        let mut w = arena.writer(Header::request(272, 4, 1, e2e).answer());
        w.u32(268, 0x40, 0, 2001);
        w.avp(1, 0, 0, &vec![b'x'; filler]);
        arena.finish(w)
    }

    #[test]
    fn a_pool_buffer_comes_back_and_is_bounded() {
        let mut p = Pool::new();
        let mut b = p.take();
        b.extend_from_slice(b"request");
        let at = b.as_ptr();
        let sent = b.freeze();
        let queued = sent.clone();
        p.give(sent);
        assert!(p.is_empty(), "still queued: not kept");
        p.give(queued);
        assert_eq!(p.len(), 1);
        let again = p.take();
        assert_eq!((again.as_ptr(), again.len()), (at, 0));
        for _ in 0..POOL_MAX + 10 {
            p.give(Bytes::from(vec![0u8; 8]));
        }
        assert_eq!(p.len(), POOL_MAX);
    }

    #[test]
    fn messages_share_a_chunk_and_stay_whole() {
        let mut a = Arena::new();
        let kept: Vec<Bytes> = (0..200).map(|i| answer(&mut a, i, 100).unwrap()).collect();
        for (i, b) in kept.iter().enumerate() {
            let m = Message::decode(b.clone()).unwrap();
            assert_eq!(m.header.end_to_end, i as u32);
            assert_eq!(m.header.length as usize, b.len());
        }
    }

    #[test]
    fn a_long_message_and_a_failed_one_leave_the_arena_usable() {
        let mut a = Arena::new();
        let big = answer(&mut a, 1, 3 * CHUNK).unwrap();
        assert!(Message::decode(big).is_ok());
        let mut w = a
            .writer(Header::request(272, 4, 1, 2).answer())
            .max_len(100);
        w.avp(1, 0, 0, &[0; 200]);
        assert!(a.finish(w).is_err());
        let next = answer(&mut a, 3, 10).unwrap();
        assert_eq!(Message::decode(next).unwrap().header.end_to_end, 3);
    }

    #[test]
    fn a_chunk_whose_messages_are_gone_is_reused() {
        let mut a = Arena::new();
        let first = answer(&mut a, 1, 10).unwrap();
        let start = first.as_ptr();
        drop(first);
        // Fill it to below ROOM, dropping everything: the next message rewinds it.
        while a.chunk.capacity() >= ROOM {
            drop(answer(&mut a, 2, 200).unwrap());
        }
        let b = answer(&mut a, 3, 10).unwrap();
        assert_eq!(b.as_ptr(), start, "written at the chunk's start again");
        // Still held: the next chunk is a new one.
        while a.chunk.capacity() >= ROOM {
            drop(answer(&mut a, 4, 200).unwrap());
        }
        assert_ne!(answer(&mut a, 5, 10).unwrap().as_ptr(), start);
        drop(b);
    }
}
