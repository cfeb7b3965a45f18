//! Splitting a TCP (or TLS) byte stream into Diameter messages.
//!
//! The framer owns one `BytesMut`; bytes read from the socket are appended to it and complete
//! messages are split off the front as `Bytes` without copying. It decides on a message's
//! fate as soon as the first 4 bytes (version + length) are in, so a hostile peer cannot make
//! it buffer a message larger than the configured maximum: what is held at any time is at
//! most one partial message (< max) plus one read.
//!
//! A framing error means the stream can no longer be split reliably, so the framer stays in
//! that error (every later call returns it) and the connection should be closed — after
//! answering with [`FrameError::result_code`] when the error carries a header (RFC 6733
//! §7.1: 5011 for a wrong version, 5015 for an impossible length).

use bytes::{Bytes, BytesMut};

use crate::error::HeaderError;
use crate::header::{check_prefix, Header, HEADER_LEN, MAX_MESSAGE_LEN};
use crate::result_code as rc;

/// Default maximum message size: 1 MiB (Cx/Sh User-Data reaches tens of kB; RFC 6733 allows
/// up to 16 MiB, which no real peer sends).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 20;
/// Extra room beyond one maximal message that [`Framer::feed`] accepts undrained, so a read
/// that carries the end of one message and the start of others fits.
pub const READ_SLACK: usize = 64 * 1024;

/// What is wrong with the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameErrorKind {
    /// The version octet is not 1.
    Version(u8),
    /// The declared length is below 20 or not a multiple of 4.
    BadLength(u32),
    /// The declared length exceeds the configured maximum.
    TooLarge {
        /// The header's Message Length.
        len: u32,
        /// The limit in force (small before the capabilities exchange, DESIGN §10).
        max: usize,
    },
    /// The caller fed more bytes without draining complete frames first.
    BufferFull {
        /// One maximal message plus [`READ_SLACK`], in bytes.
        limit: usize,
    },
}

/// A framing error, with the offending message's header when 20 bytes of it were buffered
/// (so it can still be answered with its own hop-by-hop and end-to-end ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(self.kind))]
pub struct FrameError {
    /// What broke the framing; decides 5011, 5015 or no answer.
    pub kind: FrameErrorKind,
    /// The offending message's header, when 20 bytes of it had arrived: the answer needs its
    /// Hop-by-Hop and End-to-End ids, and without them the connection is closed unanswered.
    pub header: Option<Header>,
}

fn describe(k: FrameErrorKind) -> String {
    match k {
        FrameErrorKind::Version(v) => format!("unsupported Diameter version {v}"),
        FrameErrorKind::BadLength(l) => {
            format!("invalid message length {l}: must be >= 20 and a multiple of 4")
        }
        FrameErrorKind::TooLarge { len, max } => {
            format!("message length {len} exceeds the maximum of {max} bytes")
        }
        FrameErrorKind::BufferFull { limit } => {
            format!("receive buffer limit of {limit} bytes reached without draining frames")
        }
    }
}

impl FrameError {
    /// The Result-Code to answer the offending message with, if it is a peer's fault
    /// (5011 or 5015); `None` for [`FrameErrorKind::BufferFull`], a local misuse.
    pub fn result_code(&self) -> Option<u32> {
        match self.kind {
            FrameErrorKind::Version(_) => Some(rc::DIAMETER_UNSUPPORTED_VERSION),
            FrameErrorKind::BadLength(_) | FrameErrorKind::TooLarge { .. } => {
                Some(rc::DIAMETER_INVALID_MESSAGE_LENGTH)
            }
            FrameErrorKind::BufferFull { .. } => None,
        }
    }

    /// The message is over the configured size limit (or would overflow the buffer): the
    /// receiver's limit refused it, rather than the sender breaking the framing.
    pub fn is_size_limit(&self) -> bool {
        matches!(
            self.kind,
            FrameErrorKind::TooLarge { .. } | FrameErrorKind::BufferFull { .. }
        )
    }
}

/// Stream framer; see the module docs.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max_message: usize,
    error: Option<FrameError>,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(DEFAULT_MAX_MESSAGE_LEN)
    }
}

impl Framer {
    /// A framer accepting messages up to `max_message_len` bytes (clamped to 20..=2^24-1).
    pub fn new(max_message_len: usize) -> Framer {
        Framer {
            buf: BytesMut::new(),
            max_message: max_message_len.clamp(HEADER_LEN, MAX_MESSAGE_LEN),
            error: None,
        }
    }

    /// The configured maximum message size.
    pub fn max_message_len(&self) -> usize {
        self.max_message
    }

    /// Changes the maximum message size from the next message on (clamped like
    /// [`Framer::new`]). The node frames with a small limit until the capabilities exchange
    /// has identified the peer, then raises it (DESIGN §10: what a stranger can make us buffer
    /// is small).
    pub fn set_max_message_len(&mut self, max_message_len: usize) {
        self.max_message = max_message_len.clamp(HEADER_LEN, MAX_MESSAGE_LEN);
    }

    /// The most bytes the framer holds: one partial maximal message plus [`READ_SLACK`].
    pub fn buffer_limit(&self) -> usize {
        self.max_message + READ_SLACK
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the bytes buffered and not yet framed, leaving the framer empty: when the
    /// stream stops carrying Diameter (in-band TLS after CER/CEA, RFC 3588 §2.1), what was
    /// read past the last message (a ClientHello) belongs to the next layer.
    pub fn take_buffered(&mut self) -> Bytes {
        std::mem::take(&mut self.buf).freeze()
    }

    /// The error the framer is stuck in, if any.
    pub fn error(&self) -> Option<FrameError> {
        self.error
    }

    /// Appends bytes read from the stream. Fails (without buffering anything) when the
    /// framer is in error or the bytes would exceed [`buffer_limit`](Self::buffer_limit);
    /// drain [`next_frame`](Self::next_frame) until `None` between feeds to stay within it.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let limit = self.buffer_limit();
        if self.buf.len().saturating_add(data.len()) > limit {
            return Err(FrameError {
                kind: FrameErrorKind::BufferFull { limit },
                header: None,
            });
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// For reading straight into the framer's buffer (e.g. tokio's `read_buf`): reserves up
    /// to `chunk` bytes of spare capacity, never beyond [`buffer_limit`](Self::buffer_limit),
    /// and returns the buffer. Only append to it; do not remove bytes.
    pub fn read_space(&mut self, chunk: usize) -> Result<&mut BytesMut, FrameError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let limit = self.buffer_limit();
        let room = limit.saturating_sub(self.buf.len()).min(chunk);
        if room == 0 {
            return Err(FrameError {
                kind: FrameErrorKind::BufferFull { limit },
                header: None,
            });
        }
        self.buf.reserve(room);
        Ok(&mut self.buf)
    }

    /// The next complete message, split off without copying; `Ok(None)` when more bytes are
    /// needed. After an error every call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let (version, len) = match self.buf.get(..4) {
            Some(&[v, a, b, c]) => (v, u32::from_be_bytes([0, a, b, c])),
            _ => return Ok(None),
        };
        let kind = match check_prefix(version, len) {
            Err(HeaderError::Version(v)) => Some(FrameErrorKind::Version(v)),
            Err(_) => Some(FrameErrorKind::BadLength(len)),
            Ok(()) if len as usize > self.max_message => Some(FrameErrorKind::TooLarge {
                len,
                max: self.max_message,
            }),
            Ok(()) => None,
        };
        if let Some(kind) = kind {
            let e = FrameError {
                kind,
                header: Header::decode(&self.buf).ok(),
            };
            self.error = Some(e);
            // Nothing more will be framed from this stream: release the memory.
            self.buf = BytesMut::new();
            return Err(e);
        }
        let len = len as usize;
        if self.buf.len() < len {
            // Make sure the rest of this message fits without further reallocation steps.
            self.buf.reserve(len - self.buf.len());
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::MessageWriter;
    use crate::message::Message;

    fn msg(hbh: u32, payload: usize) -> Bytes {
        let mut w = MessageWriter::new(Header::request(280, 0, hbh, hbh));
        w.avp(1, 0, 0, &vec![7u8; payload]);
        w.finish().unwrap()
    }

    fn drain(f: &mut Framer) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(b) = f.next_frame().unwrap() {
            out.push(b);
        }
        out
    }

    #[test]
    fn byte_by_byte_and_many_per_read() {
        let msgs: Vec<Bytes> = (0..5).map(|i| msg(i, i as usize * 7)).collect();
        let stream: Vec<u8> = msgs.iter().flat_map(|m| m.to_vec()).collect();
        // One byte at a time.
        let mut f = Framer::default();
        let mut got = Vec::new();
        for b in &stream {
            f.feed(std::slice::from_ref(b)).unwrap();
            got.extend(drain(&mut f));
        }
        assert_eq!(got, msgs);
        assert_eq!(f.buffered(), 0);
        // Everything in one read.
        let mut f = Framer::default();
        f.feed(&stream).unwrap();
        assert_eq!(drain(&mut f), msgs);
        // Arbitrary chunk boundaries.
        for chunk in [3, 19, 20, 21, 50] {
            let mut f = Framer::default();
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                f.feed(c).unwrap();
                got.extend(drain(&mut f));
            }
            assert_eq!(got, msgs, "chunk {chunk}");
        }
        for m in got {
            assert!(Message::decode(m).is_ok());
        }
    }

    #[test]
    fn read_space_appends_in_place() {
        let m = msg(1, 100);
        let mut f = Framer::new(4096);
        let space = f.read_space(16).unwrap();
        assert!(space.capacity() >= 16);
        space.extend_from_slice(&m[..16]);
        assert_eq!(f.next_frame().unwrap(), None);
        f.read_space(4096).unwrap().extend_from_slice(&m[16..]);
        assert_eq!(f.next_frame().unwrap(), Some(m));
    }

    fn error_of(bytes: &[u8], max: usize) -> FrameError {
        let mut f = Framer::new(max);
        f.feed(bytes).unwrap();
        let e = f.next_frame().unwrap_err();
        // Sticky: the stream is unusable from here on, and its buffer is released.
        assert_eq!(f.next_frame().unwrap_err(), e);
        assert_eq!(f.feed(&[1]).unwrap_err(), e);
        assert!(f.read_space(10).is_err());
        assert_eq!(f.buffered(), 0);
        assert_eq!(f.error(), Some(e));
        e
    }

    #[test]
    fn wrong_version() {
        let mut m = msg(9, 4).to_vec();
        m[0] = 2;
        let e = error_of(&m, 1000);
        assert_eq!(e.kind, FrameErrorKind::Version(2));
        assert_eq!(e.result_code(), Some(5011));
        assert_eq!(
            e.header.unwrap().hop_by_hop,
            9,
            "header kept for the answer"
        );
        // Decided on 4 bytes, before the header is complete: no header then.
        let e = error_of(&[0, 0, 0, 20], 1000);
        assert_eq!((e.kind, e.header), (FrameErrorKind::Version(0), None));
    }

    #[test]
    fn bad_lengths() {
        for len in [0u32, 4, 16, 19, 21, 22, 23] {
            let b = [1, 0, 0, len as u8];
            let e = error_of(&b, 1000);
            assert_eq!(e.kind, FrameErrorKind::BadLength(len));
            assert_eq!(e.result_code(), Some(5015));
        }
        let e = error_of(&[1, 0, 4, 0], 1000);
        assert_eq!(
            e.kind,
            FrameErrorKind::TooLarge {
                len: 1024,
                max: 1000
            }
        );
        assert_eq!(e.result_code(), Some(5015));
        // Exactly the maximum is fine.
        let m = msg(1, 1000 - 28);
        assert_eq!(m.len(), 1000);
        let mut f = Framer::new(1000);
        f.feed(&m).unwrap();
        assert_eq!(f.next_frame().unwrap(), Some(m));
        assert!(e.to_string().contains("1024"));
    }

    #[test]
    fn buffering_is_bounded() {
        let mut f = Framer::new(100);
        assert_eq!(f.buffer_limit(), 100 + READ_SLACK);
        let big = vec![0u8; f.buffer_limit() + 1];
        let e = f.feed(&big).unwrap_err();
        assert_eq!(
            e.kind,
            FrameErrorKind::BufferFull {
                limit: 100 + READ_SLACK
            }
        );
        assert_eq!(e.result_code(), None);
        assert_eq!(f.buffered(), 0, "nothing buffered on refusal");
        // Not sticky: the stream is still in sync.
        f.feed(&msg(1, 0)).unwrap();
        assert_eq!(drain(&mut f).len(), 1);
        // read_space never grants more than the limit.
        let mut f = Framer::new(100);
        f.feed(&[1u8; 10]).unwrap();
        let limit = f.buffer_limit();
        let s = f.read_space(usize::MAX).unwrap();
        assert!(s.capacity() - s.len() >= limit - 10);
        s.resize(limit, 0);
        assert_eq!(
            f.read_space(1).unwrap_err().kind,
            FrameErrorKind::BufferFull { limit }
        );
        // Clamped maximum.
        assert_eq!(Framer::new(0).max_message_len(), HEADER_LEN);
        assert_eq!(Framer::new(usize::MAX).max_message_len(), MAX_MESSAGE_LEN);
    }
}
