//! A received Diameter message: its header plus a zero-copy body.
//!
//! [`Message::decode`] checks only what the header says about the framing (version, length);
//! the AVPs are parsed lazily by the iterators, which report structural faults as they meet
//! them, and fully by `validate`. That keeps decoding O(1) and lets a caller that only needs
//! the Session-Id or the hop-by-hop id stop early.

use bytes::{Buf, Bytes, BytesMut};

use crate::avp::{Avp, AvpIter, AvpRef, AvpRefs};
use crate::error::{DecodeError, HeaderError};
use crate::header::{Header, HEADER_LEN};
use crate::value;

/// Session-Id AVP code (RFC 6733 §8.8).
pub use crate::avp_code::SESSION_ID;

/// One Diameter message. `body` holds the AVPs (everything after the 20-byte header) and
/// shares the buffer the message was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The decoded header, kept as received (even flags we reject) so an error answer can reuse its
    /// ids.
    pub header: Header,
    /// The AVPs after the header, a slice of the received buffer (no copy).
    pub body: Bytes,
}

impl Message {
    /// Decodes one complete message. `buf` must hold exactly the message (as the framer
    /// yields it): version 1, a length >= 20 and a multiple of 4, equal to `buf.len()`.
    /// The body is sliced from `buf`, not copied.
    pub fn decode(buf: Bytes) -> Result<Message, DecodeError> {
        let header = Header::decode(&buf)?;
        header.check()?;
        if header.length as usize != buf.len() {
            return Err(HeaderError::LengthMismatch {
                declared: header.length,
                actual: buf.len(),
            }
            .into());
        }
        // `advance` moves the start in place: no reference-count traffic, unlike `slice`.
        let mut body = buf;
        body.advance(HEADER_LEN);
        Ok(Message { header, body })
    }

    /// Iterates the top-level AVPs as reference-counted [`Avp`]s.
    pub fn avps(&self) -> AvpIter {
        AvpIter::new(self.body.clone(), HEADER_LEN)
    }

    /// Iterates the top-level AVPs as borrowed [`AvpRef`]s (no reference counting; the fast
    /// path for validation and JSON).
    pub fn avp_refs(&self) -> AvpRefs<'_> {
        AvpRefs::new(&self.body, HEADER_LEN)
    }

    /// The first top-level AVP with this code and vendor. Iteration stops at a structural
    /// error, so an AVP behind a malformed one is not found.
    pub fn find(&self, code: u32, vendor: u32) -> Option<Avp> {
        self.find_ref(code, vendor).map(|a| a.to_avp(&self.body))
    }

    /// Borrowed form of [`find`](Self::find).
    pub fn find_ref(&self, code: u32, vendor: u32) -> Option<AvpRef<'_>> {
        self.avp_refs()
            .map_while(Result::ok)
            .find(|a| a.code == code && a.vendor == vendor)
    }

    /// The Session-Id, if present (anywhere at top level) and valid UTF-8.
    pub fn session_id(&self) -> Option<&str> {
        self.find_str(SESSION_ID, 0)
    }

    /// The first top-level AVP with this code and vendor as text (UTF8String,
    /// DiameterIdentity: Origin-Host, ...); `None` if absent or not valid UTF-8.
    pub fn find_str(&self, code: u32, vendor: u32) -> Option<&str> {
        self.find_ref(code, vendor)
            .and_then(|a| value::decode_str(a.data).ok())
    }

    /// The first top-level AVP with this code and vendor decoded as Unsigned32 (Result-Code,
    /// Auth-Application-Id, ...); `None` if absent or not 4 bytes.
    pub fn find_u32(&self, code: u32, vendor: u32) -> Option<u32> {
        self.find_ref(code, vendor)
            .and_then(|a| value::decode_u32(a.data).ok())
    }

    /// The R bit: a request we must answer, rather than an answer to match to one we sent.
    pub fn is_request(&self) -> bool {
        self.header.flags.is_request()
    }

    /// Total length on the wire: header plus body.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Never true: a message has at least its header. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The header an answer to this request carries (see [`Header::answer`]).
    pub fn answer_header(&self) -> Header {
        self.header.answer()
    }

    /// Appends the message to `buf`, with the Message Length recomputed from the body.
    pub fn encode(&self, buf: &mut BytesMut) {
        let mut h = self.header;
        h.length = self.len() as u32;
        buf.reserve(self.len());
        h.encode(buf);
        buf.extend_from_slice(&self.body);
    }

    /// The message as one buffer (one copy of the body).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.len());
        self.encode(&mut b);
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::MessageWriter;
    use crate::header::Flags;

    fn sample() -> Bytes {
        let mut w = MessageWriter::new(Header::request(272, 4, 11, 22));
        w.str(SESSION_ID, 0x40, 0, "s;1")
            .u32(268, 0x40, 0, 2001)
            .str(1, 0xC0, 10415, "vendor");
        w.finish().unwrap()
    }

    #[test]
    fn decode_and_find() {
        let buf = sample();
        let m = Message::decode(buf.clone()).unwrap();
        assert_eq!(m.header.code, 272);
        assert_eq!(m.header.length as usize, buf.len());
        assert!(m.is_request());
        assert_eq!(m.len(), buf.len());
        assert_eq!(m.session_id(), Some("s;1"));
        assert_eq!(m.find_u32(268, 0), Some(2001));
        assert_eq!(m.find_u32(263, 0), None, "wrong length is None");
        let v = m.find(1, 10415).unwrap();
        assert_eq!(&v.data[..], b"vendor");
        assert!(m.find(1, 0).is_none(), "vendor is part of the key");
        assert_eq!(m.avps().count(), 3);
        assert_eq!(m.avp_refs().count(), 3);
        // Zero-copy: the body points into the input buffer.
        assert_eq!(m.body.as_ptr(), buf[20..].as_ptr());
        assert_eq!(m.to_bytes(), buf);
        assert!(!m.is_empty());
    }

    #[test]
    fn decode_errors() {
        let buf = sample();
        let e = Message::decode(buf.slice(..19)).unwrap_err();
        assert_eq!(e, DecodeError::Header(HeaderError::Truncated { len: 19 }));
        let e = Message::decode(buf.slice(..buf.len() - 4)).unwrap_err();
        assert!(matches!(
            e,
            DecodeError::Header(HeaderError::LengthMismatch { .. })
        ));
        assert_eq!(e.result_code(), 5015);
        let mut v = buf.to_vec();
        v[0] = 2;
        let e = Message::decode(Bytes::from(v)).unwrap_err();
        assert_eq!(e, DecodeError::Header(HeaderError::Version(2)));
        assert_eq!(e.result_code(), 5011);
        let mut v = buf.to_vec();
        v[3] = v[3].wrapping_add(2);
        assert_eq!(
            Message::decode(Bytes::from(v)).unwrap_err().result_code(),
            5015
        );
    }

    #[test]
    fn find_stops_at_malformed_avp() {
        let mut v = sample().to_vec();
        // Corrupt the second AVP's length so it overruns.
        let second = 20 + 12;
        v[second + 5] = 0xFF;
        let m = Message::decode(Bytes::from(v)).unwrap();
        assert_eq!(m.session_id(), Some("s;1"));
        assert!(m.find(1, 10415).is_none());
        assert!(m.avps().any(|r| r.is_err()));
    }

    #[test]
    fn answer_header_from_request() {
        let m = Message::decode(sample()).unwrap();
        let a = m.answer_header();
        assert_eq!(a.flags, Flags(0));
        assert_eq!((a.hop_by_hop, a.end_to_end, a.code), (11, 22, 272));
    }
}
