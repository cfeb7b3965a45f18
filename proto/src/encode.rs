//! Building messages: [`MessageWriter`] writes a header and AVPs straight into a `BytesMut`.
//!
//! Lengths are patched in place rather than computed up front, so grouped AVPs of any shape
//! are written in one pass: `begin_group` writes a header with a placeholder length,
//! `end_group` patches it. The writer enforces a size limit before every write and stops at
//! the first error (kept until [`MessageWriter::finish`]), so a caller can chain calls
//! without checking each one and a failed encode never allocates past the limit.
//!
//! [`MessageWriter::avps_only`] writes AVPs without a message header: the body of an answer
//! the application gives, or the AVPs of a request it originates, which the node completes
//! and puts under a header of its own.

use bytes::{BufMut, Bytes, BytesMut};

use crate::avp::{padded, AvpFlags, AVP_HEADER_LEN, AVP_VENDOR_HEADER_LEN, MAX_AVP_LEN, MAX_DEPTH};
use crate::error::EncodeError;
use crate::header::{Header, HEADER_LEN, MAX_MESSAGE_LEN};
use crate::value::Value;

/// Writes one Diameter message into a buffer. See the module docs.
///
/// The V flag is derived from `vendor` (set iff `vendor != 0`), so flags given by callers
/// cannot contradict the Vendor-ID field; the other flag bits are written as given.
#[derive(Debug)]
pub struct MessageWriter {
    buf: BytesMut,
    /// Where this message starts in `buf` (a writer may append to a buffer holding others).
    start: usize,
    /// Start offsets of the open grouped AVPs.
    groups: [usize; MAX_DEPTH],
    depth: usize,
    max_len: usize,
    error: Option<EncodeError>,
    /// No message header: [`finish`](Self::finish) gives the AVPs alone.
    avps_only: bool,
}

impl MessageWriter {
    /// A writer for a message with `header` (its `length` is ignored and patched at the end).
    pub fn new(header: Header) -> MessageWriter {
        MessageWriter::with_buffer(BytesMut::with_capacity(512), header)
    }

    /// A writer for AVPs alone, without a message header (see the module docs): `len`
    /// and the size limit count the AVPs only, and [`finish`](Self::finish) returns them.
    pub fn avps_only() -> MessageWriter {
        MessageWriter::avps_only_with_capacity(256)
    }

    /// [`avps_only`](Self::avps_only) with room for `capacity` bytes from the start: a caller
    /// that knows about how large the AVPs will be (the JSON they are read from is an upper
    /// estimate) saves the buffer's regrowth copies (~1k instructions per Ro CCR-I).
    pub fn avps_only_with_capacity(capacity: usize) -> MessageWriter {
        MessageWriter::avps_only_in(BytesMut::with_capacity(capacity))
    }

    /// [`avps_only`](Self::avps_only), appending to `buf` (cleared first): a caller that
    /// encodes one set of AVPs after another keeps the buffer, [`finish_buf`](Self::finish_buf)
    /// gives it back, and nothing is allocated once it has grown (libdmbridge's script replies,
    /// issue 15 item 2).
    pub fn avps_only_in(mut buf: BytesMut) -> MessageWriter {
        buf.clear();
        MessageWriter {
            buf,
            start: 0,
            groups: [0; MAX_DEPTH],
            depth: 0,
            max_len: MAX_MESSAGE_LEN,
            error: None,
            avps_only: true,
        }
    }

    /// A writer for an answer to `request` (see [`Header::answer`]).
    pub fn answer_to(request: &Header) -> MessageWriter {
        MessageWriter::new(request.answer())
    }

    /// Appends the message to `buf` (which may already hold data: earlier messages queued on
    /// a connection); [`finish_buf`](Self::finish_buf) gives the buffer back.
    pub fn with_buffer(mut buf: BytesMut, header: Header) -> MessageWriter {
        let start = buf.len();
        header.encode(&mut buf);
        MessageWriter {
            buf,
            start,
            groups: [0; MAX_DEPTH],
            depth: 0,
            max_len: MAX_MESSAGE_LEN,
            error: None,
            avps_only: false,
        }
    }

    /// Replaces the message's header (its `length` is ignored and patched at the end), for a
    /// writer that learns the header only while the AVPs are written: in a JSON message
    /// `"cmd_code"` may come after `"avps"`. No effect in [`avps_only`](Self::avps_only)
    /// mode, which has no header.
    pub fn set_header(&mut self, header: Header) {
        if self.avps_only {
            return;
        }
        if let Some(dst) = self.buf.get_mut(self.start..self.start + HEADER_LEN) {
            dst.copy_from_slice(&header.to_bytes());
        }
    }

    /// Limits the message to `max` bytes (capped at the 24-bit maximum); writes that would
    /// exceed it fail with [`EncodeError::TooLarge`].
    pub fn max_len(mut self, max: usize) -> MessageWriter {
        self.max_len = max.min(MAX_MESSAGE_LEN);
        self
    }

    /// Bytes written so far for this message, header included (none in
    /// [`avps_only`](Self::avps_only) mode).
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Nothing written yet: never for a message (its header is written at construction).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first error met, if any (writing stops there).
    pub fn error(&self) -> Option<EncodeError> {
        self.error
    }

    /// Number of grouped AVPs begun and not yet ended.
    pub fn open_groups(&self) -> usize {
        self.depth
    }

    fn fail(&mut self, e: EncodeError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Reserves room for `n` more bytes if the limit allows; else records the error.
    fn room(&mut self, n: usize) -> bool {
        if self.error.is_some() {
            return false;
        }
        if self.len().saturating_add(n) > self.max_len {
            self.fail(EncodeError::TooLarge { max: self.max_len });
            return false;
        }
        self.buf.reserve(n);
        true
    }

    fn put_header(&mut self, code: u32, flags: u8, vendor: u32, len: usize) {
        let flags = if vendor != 0 {
            flags | AvpFlags::V
        } else {
            flags & !AvpFlags::V
        };
        self.buf.put_u32(code);
        self.buf
            .put_u32((u32::from(flags) << 24) | (len as u32 & 0x00FF_FFFF));
        if vendor != 0 {
            self.buf.put_u32(vendor);
        }
    }

    fn header_len(vendor: u32) -> usize {
        if vendor != 0 {
            AVP_VENDOR_HEADER_LEN
        } else {
            AVP_HEADER_LEN
        }
    }

    /// Writes an AVP with a raw payload, plus padding.
    pub fn avp(&mut self, code: u32, flags: u8, vendor: u32, data: &[u8]) -> &mut Self {
        let len = Self::header_len(vendor) + data.len();
        if len > MAX_AVP_LEN {
            self.fail(EncodeError::AvpTooLarge { code });
            return self;
        }
        if self.room(padded(len)) {
            self.put_header(code, flags, vendor, len);
            self.buf.put_slice(data);
            self.buf.put_bytes(0, padded(len) - len);
        }
        self
    }

    /// Writes an AVP with a typed payload. A Grouped value is written as its raw payload.
    pub fn value(&mut self, code: u32, flags: u8, vendor: u32, value: &Value<'_>) -> &mut Self {
        let len = Self::header_len(vendor) + value.encoded_len();
        if len > MAX_AVP_LEN {
            self.fail(EncodeError::AvpTooLarge { code });
            return self;
        }
        if self.room(padded(len)) {
            let at = self.buf.len();
            self.put_header(code, flags, vendor, len);
            if let Err(e) = value.encode(&mut self.buf) {
                self.buf.truncate(at);
                self.fail(e.into());
                return self;
            }
            self.buf.put_bytes(0, padded(len) - len);
        }
        self
    }

    /// Unsigned32 / Enumerated-as-unsigned convenience.
    pub fn u32(&mut self, code: u32, flags: u8, vendor: u32, v: u32) -> &mut Self {
        self.avp(code, flags, vendor, &v.to_be_bytes())
    }

    /// Unsigned64 convenience.
    pub fn u64(&mut self, code: u32, flags: u8, vendor: u32, v: u64) -> &mut Self {
        self.avp(code, flags, vendor, &v.to_be_bytes())
    }

    /// Integer32 / Enumerated convenience.
    pub fn i32(&mut self, code: u32, flags: u8, vendor: u32, v: i32) -> &mut Self {
        self.avp(code, flags, vendor, &v.to_be_bytes())
    }

    /// Integer64 convenience.
    pub fn i64(&mut self, code: u32, flags: u8, vendor: u32, v: i64) -> &mut Self {
        self.avp(code, flags, vendor, &v.to_be_bytes())
    }

    /// Text (UTF8String, DiameterIdentity, DiameterURI, ...) convenience.
    pub fn str(&mut self, code: u32, flags: u8, vendor: u32, s: &str) -> &mut Self {
        self.avp(code, flags, vendor, s.as_bytes())
    }

    /// Copies an already encoded AVP (e.g. [`crate::AvpRef::raw`] of a request's Proxy-Info
    /// for the answer, or a Failed-AVP entry) and pads it. The AVP Length in `raw` must equal
    /// `raw.len()`, so a copied AVP cannot desynchronise the message.
    pub fn raw(&mut self, raw: &[u8]) -> &mut Self {
        let declared = match raw.get(4..8) {
            Some(&[_, a, b, c]) => u32::from_be_bytes([0, a, b, c]) as usize,
            _ => usize::MAX,
        };
        if declared != raw.len() {
            self.fail(EncodeError::BadRawAvp);
            return self;
        }
        if self.room(padded(raw.len())) {
            self.buf.put_slice(raw);
            self.buf.put_bytes(0, padded(raw.len()) - raw.len());
        }
        self
    }

    /// Opens a Grouped AVP: AVPs written until the matching [`end_group`](Self::end_group)
    /// are its children. At most [`MAX_DEPTH`] groups may be open at once.
    pub fn begin_group(&mut self, code: u32, flags: u8, vendor: u32) -> &mut Self {
        if self.depth >= MAX_DEPTH {
            self.fail(EncodeError::TooDeep(MAX_DEPTH));
            return self;
        }
        let hl = Self::header_len(vendor);
        if self.room(hl) {
            if let Some(slot) = self.groups.get_mut(self.depth) {
                *slot = self.buf.len();
            }
            self.depth += 1;
            self.put_header(code, flags, vendor, hl);
        }
        self
    }

    /// Closes the innermost open Grouped AVP, patching its length (which includes its
    /// children's padding, so the group itself needs none).
    pub fn end_group(&mut self) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        if self.depth == 0 {
            self.fail(EncodeError::UnbalancedGroup);
            return self;
        }
        self.depth -= 1;
        let at = self.groups.get(self.depth).copied().unwrap_or(0);
        let len = self.buf.len() - at;
        if len > MAX_AVP_LEN {
            let code = self
                .buf
                .get(at..at + 4)
                .and_then(|c| c.try_into().ok())
                .map_or(0, u32::from_be_bytes);
            self.fail(EncodeError::AvpTooLarge { code });
            return self;
        }
        if let Some(l) = self.buf.get_mut(at + 5..at + 8) {
            l.copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        }
        self
    }

    /// Writes a Grouped AVP whose children `f` writes.
    pub fn group(
        &mut self,
        code: u32,
        flags: u8,
        vendor: u32,
        f: impl FnOnce(&mut Self),
    ) -> &mut Self {
        self.begin_group(code, flags, vendor);
        f(self);
        self.end_group()
    }

    /// Patches the Message Length and returns the whole buffer (with anything it held before
    /// this message). On error the partial message is removed from the buffer and the error
    /// returned; the buffer is dropped.
    pub fn finish_buf(mut self) -> Result<BytesMut, EncodeError> {
        self.seal()?;
        Ok(self.buf)
    }

    /// Checks that the message is whole and patches its Message Length.
    fn seal(&mut self) -> Result<(), EncodeError> {
        if self.error.is_none() && self.depth != 0 {
            self.fail(EncodeError::OpenGroups(self.depth));
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        if !self.avps_only {
            let len = self.len() as u32;
            if let Some(l) = self.buf.get_mut(self.start + 1..self.start + 4) {
                l.copy_from_slice(&len.to_be_bytes()[1..]);
            }
        }
        Ok(())
    }

    /// [`finish`](Self::finish) for a writer over an arena ([`with_buffer`](Self::with_buffer)
    /// of an empty buffer with spare capacity): the message is split off the front of the
    /// buffer, which comes back empty with the capacity left after the message, in the same
    /// allocation. Once the buffer is shared (its first split makes it so), neither the
    /// split, nor [`Bytes`] made of it, nor [`Bytes::try_into_mut`] of a unique one
    /// allocates: many messages are encoded into one allocation, freed when the last of them
    /// is dropped (the node's answers, issue 15 item 2). Bytes the buffer held before the
    /// message are not part of it, and are dropped. On error the buffer comes back emptied
    /// (its allocation kept) with the error.
    pub fn finish_split(mut self) -> (Result<Bytes, EncodeError>, BytesMut) {
        let start = self.start;
        if let Err(e) = self.seal() {
            self.buf.clear();
            return (Err(e), self.buf);
        }
        let mut message = self.buf.split();
        if start > 0 {
            let _ = message.split_to(start);
        }
        (Ok(message.freeze()), self.buf)
    }

    /// Patches the Message Length and returns this message's bytes (the AVPs alone in
    /// [`avps_only`](Self::avps_only) mode).
    pub fn finish(self) -> Result<Bytes, EncodeError> {
        let start = self.start;
        let mut buf = self.finish_buf()?;
        if start == 0 {
            // The buffer is the message: frozen as it is, still uniquely owned (`split_off`
            // would make it a shared buffer, an allocation, for nothing).
            return Ok(buf.freeze());
        }
        Ok(buf.split_off(start).freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avp::AvpRefs;
    use crate::header::{Flags, HEADER_LEN};
    use crate::message::Message;
    use crate::value::Address;

    fn hdr() -> Header {
        Header::request(272, 4, 1, 2)
    }

    #[test]
    fn writes_header_avps_and_padding() {
        let mut w = MessageWriter::new(hdr());
        w.str(263, AvpFlags::M, 0, "abc")
            .u32(258, AvpFlags::M, 0, 4);
        let b = w.finish().unwrap();
        assert_eq!(b.len(), 20 + 12 + 12);
        assert_eq!(&b[..4], &[1, 0, 0, 44]);
        assert_eq!(b[4], Flags::R);
        // Session-Id: code 263, flags M, length 11, "abc", one pad byte.
        assert_eq!(
            &b[20..32],
            &[0, 0, 1, 7, 0x40, 0, 0, 11, b'a', b'b', b'c', 0]
        );
        assert_eq!(&b[32..44], &[0, 0, 1, 2, 0x40, 0, 0, 12, 0, 0, 0, 4]);
    }

    #[test]
    fn vendor_flag_follows_vendor_id() {
        let mut w = MessageWriter::new(hdr());
        // V given without vendor is cleared; vendor given without V sets it.
        w.u32(1, AvpFlags::V | AvpFlags::M, 0, 1)
            .u32(2, AvpFlags::M, 10415, 2);
        let m = Message::decode(w.finish().unwrap()).unwrap();
        let v: Vec<_> = m.avp_refs().collect::<Result<_, _>>().unwrap();
        assert_eq!(v[0].flags, AvpFlags(AvpFlags::M));
        assert_eq!(v[1].flags, AvpFlags(AvpFlags::V | AvpFlags::M));
        assert_eq!(v[1].vendor, 10415);
    }

    #[test]
    fn nested_groups_patch_lengths() {
        let mut w = MessageWriter::new(hdr());
        w.group(456, AvpFlags::M, 0, |w| {
            w.u32(432, AvpFlags::M, 0, 1);
            w.group(437, AvpFlags::M, 0, |w| {
                w.u64(421, AvpFlags::M, 0, 99);
            });
            w.str(1, 0, 10415, "x");
        });
        w.u32(268, AvpFlags::M, 0, 2001);
        let m = Message::decode(w.finish().unwrap()).unwrap();
        let top: Vec<_> = m.avp_refs().collect::<Result<_, _>>().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].raw.len(), 8 + 12 + (8 + 16) + 16);
        let kids: Vec<_> = top[0].group().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            kids.iter().map(|a| a.code).collect::<Vec<_>>(),
            [432, 437, 1]
        );
        let gk: Vec<_> = kids[1].group().collect::<Result<_, _>>().unwrap();
        assert_eq!(gk[0].data, 99u64.to_be_bytes());
        assert_eq!(top[1].data, 2001u32.to_be_bytes());
    }

    #[test]
    fn typed_values() {
        let mut w = MessageWriter::new(hdr());
        w.value(
            257,
            AvpFlags::M,
            0,
            &Value::Address(Address::V4([10, 0, 0, 1].into())),
        )
        .value(55, AvpFlags::M, 0, &Value::Time(1_700_000_000))
        .i32(1, 0, 0, -1)
        .i64(2, 0, 0, -2);
        let m = Message::decode(w.finish().unwrap()).unwrap();
        let v: Vec<_> = m.avp_refs().collect::<Result<_, _>>().unwrap();
        assert_eq!(v[0].data, [0, 1, 10, 0, 0, 1]);
        assert_eq!(
            Value::decode(crate::AvpType::Time, v[1].data).unwrap(),
            Value::Time(1_700_000_000)
        );
        assert_eq!(v[2].data, [0xFF; 4]);
        assert_eq!(v[3].data, (-2i64).to_be_bytes());
    }

    #[test]
    fn value_error_leaves_no_partial_avp() {
        let mut w = MessageWriter::new(hdr());
        w.u32(1, 0, 0, 1);
        let before = w.len();
        w.value(55, 0, 0, &Value::Time(i64::MIN));
        assert_eq!(w.len(), before);
        assert!(matches!(w.error(), Some(EncodeError::Value(_))));
        w.u32(2, 0, 0, 2); // ignored after the error
        assert_eq!(w.len(), before);
        assert!(w.finish().is_err());
    }

    #[test]
    fn size_limit_is_enforced_before_writing() {
        let mut w = MessageWriter::new(hdr()).max_len(64);
        w.avp(1, 0, 0, &[0; 30]);
        assert!(w.error().is_none());
        w.avp(2, 0, 0, &[0; 30]);
        assert_eq!(w.error(), Some(EncodeError::TooLarge { max: 64 }));
        assert_eq!(w.len(), 20 + 40);
        assert_eq!(w.finish(), Err(EncodeError::TooLarge { max: 64 }));
        // A single AVP larger than the 24-bit length.
        let big = vec![0u8; MAX_AVP_LEN];
        let mut w = MessageWriter::new(hdr());
        w.avp(9, 0, 0, &big);
        assert_eq!(w.error(), Some(EncodeError::AvpTooLarge { code: 9 }));
        assert_eq!(w.len(), 20);
    }

    #[test]
    fn group_balance_errors() {
        let mut w = MessageWriter::new(hdr());
        w.end_group();
        assert_eq!(w.finish(), Err(EncodeError::UnbalancedGroup));
        let mut w = MessageWriter::new(hdr());
        w.begin_group(1, 0, 0);
        assert_eq!(w.open_groups(), 1);
        assert_eq!(w.finish(), Err(EncodeError::OpenGroups(1)));
        let mut w = MessageWriter::new(hdr());
        for _ in 0..MAX_DEPTH {
            w.begin_group(1, 0, 0);
        }
        assert!(w.error().is_none());
        w.begin_group(1, 0, 0);
        assert_eq!(w.error(), Some(EncodeError::TooDeep(MAX_DEPTH)));
    }

    #[test]
    fn raw_copies_and_checks_length() {
        let mut w = MessageWriter::new(hdr());
        w.str(284, AvpFlags::M, 0, "proxy!");
        let src = Message::decode(w.finish().unwrap()).unwrap();
        let pi = src.avp_refs().next().unwrap().unwrap();
        let mut w = MessageWriter::answer_to(&src.header);
        w.raw(pi.raw);
        let a = Message::decode(w.finish().unwrap()).unwrap();
        assert!(!a.is_request());
        assert_eq!(a.avp_refs().next().unwrap().unwrap(), pi);
        let mut w = MessageWriter::new(hdr());
        w.raw(&pi.raw[..pi.raw.len() - 1]);
        assert_eq!(w.finish(), Err(EncodeError::BadRawAvp));
        let mut w = MessageWriter::new(hdr());
        w.raw(&[0, 0]);
        assert_eq!(w.error(), Some(EncodeError::BadRawAvp));
    }

    #[test]
    fn appends_to_existing_buffer() {
        let mut pre = BytesMut::new();
        pre.extend_from_slice(b"queued");
        let mut w = MessageWriter::with_buffer(pre, hdr());
        w.u32(1, 0, 0, 1);
        let buf = w.finish_buf().unwrap();
        assert_eq!(&buf[..6], b"queued");
        let m = Message::decode(buf.freeze().slice(6..)).unwrap();
        assert_eq!(m.len(), 32);
        let mut w = MessageWriter::with_buffer(BytesMut::from(&b"xx"[..]), hdr());
        w.u32(1, 0, 0, 1);
        assert_eq!(w.finish().unwrap().len(), 32);
        assert_eq!(AvpRefs::new(&[], 0).count(), 0);
    }

    #[test]
    fn avps_only_writes_no_header_and_limits_the_avps() {
        let mut w = MessageWriter::avps_only();
        assert!(w.is_empty());
        w.str(263, AvpFlags::M, 0, "abc").group(456, 0, 0, |w| {
            w.u32(432, 0, 0, 1);
        });
        assert_eq!(w.len(), 12 + 20);
        let avps = w.finish().unwrap();
        let mut m = MessageWriter::new(hdr());
        m.str(263, AvpFlags::M, 0, "abc").group(456, 0, 0, |w| {
            w.u32(432, 0, 0, 1);
        });
        let whole = m.finish().unwrap();
        assert_eq!(
            avps,
            whole.slice(HEADER_LEN..),
            "the same AVPs as under a header"
        );
        let mut w = MessageWriter::avps_only().max_len(12);
        w.str(1, 0, 0, "abcd");
        assert!(w.error().is_none());
        w.str(1, 0, 0, "e");
        assert_eq!(w.finish(), Err(EncodeError::TooLarge { max: 12 }));
        assert_eq!(MessageWriter::avps_only().finish().unwrap().len(), 0);
    }

    #[test]
    fn set_header_replaces_the_header_of_this_message_only() {
        // A message appended after another one: the first must not be touched.
        let mut buf = BytesMut::new();
        let mut first = MessageWriter::with_buffer(std::mem::take(&mut buf), hdr());
        first.u32(268, AvpFlags::M, 0, 2001);
        buf = first.finish_buf().unwrap();
        let before = buf.clone();
        let mut w = MessageWriter::with_buffer(buf, Header::request(0, 0, 0, 0));
        w.u32(268, AvpFlags::M, 0, 2001);
        let mut h = Header::request(301, 16777216, 7, 9);
        h.length = 12345; // ignored: patched at the end
        w.set_header(h);
        let all = w.finish_buf().unwrap();
        assert_eq!(&all[..before.len()], &before[..]);
        let m = Message::decode(bytes::Bytes::copy_from_slice(&all[before.len()..])).unwrap();
        assert_eq!(
            (
                m.header.app_id,
                m.header.code,
                m.header.hop_by_hop,
                m.header.end_to_end
            ),
            (16777216, 301, 7, 9)
        );
        assert_eq!(m.header.length as usize, all.len() - before.len());

        let mut w = MessageWriter::avps_only();
        w.u32(268, AvpFlags::M, 0, 2001);
        w.set_header(hdr());
        assert_eq!(w.finish().unwrap().len(), 12, "no header in avps_only mode");
    }
}
