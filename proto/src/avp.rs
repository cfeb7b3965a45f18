//! AVPs (RFC 6733 §4.1) as zero-copy views over a received message.
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           AVP Code                            |
//! |V M P r r r r r|                  AVP Length                   |
//! |                        Vendor-ID (opt)                        |
//! |    Data ...
//! +-+-+-+-+-+-+-+-+
//! ```
//!
//! Two views of the same parse, because they serve different callers:
//! - [`AvpRef`] / [`AvpRefs`] borrow a `&[u8]`: no reference counting at all, which is what
//!   validation and AVP->JSON on the hot path want.
//! - [`Avp`] / [`AvpIter`] hold `bytes::Bytes` slices of the message, for callers that keep
//!   an AVP after the message is gone (Failed-AVP, Proxy-Info copied into an answer). Each
//!   slice costs a reference-count increment, so prefer [`AvpRef`] in loops; an `AvpRef` can
//!   be turned into an `Avp` with [`AvpRef::to_avp`] without copying.
//!
//! Both iterators check every length against the enclosing buffer, yield an [`AvpError`] on
//! the first structural fault and then stop: they never panic and never read out of bounds.
//! Grouped AVPs are iterated the same way through `group()`, with nesting bounded by
//! [`MAX_DEPTH`] so hostile input cannot drive unbounded recursion in callers.

use std::fmt;

use bytes::Bytes;

use crate::error::{AvpError, AvpErrorKind};

/// AVP header size without Vendor-ID.
pub const AVP_HEADER_LEN: usize = 8;
/// AVP header size with Vendor-ID (V bit set).
pub const AVP_VENDOR_HEADER_LEN: usize = 12;
/// The largest AVP length the 24-bit AVP Length field can declare.
pub const MAX_AVP_LEN: usize = 0x00FF_FFFF;
/// Deepest grouped nesting accepted: a top-level AVP is depth 0, its children depth 1, ...
/// Iterating the children of an AVP at depth `MAX_DEPTH` yields [`AvpErrorKind::TooDeep`].
/// Real dictionaries nest 4-5 levels (e.g. Ro Service-Information); 16 leaves headroom.
pub const MAX_DEPTH: usize = 16;

/// Rounds a length up to the 4-byte AVP alignment.
#[inline]
pub const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// The AVP flags octet: V (vendor), M (mandatory), P (protected) and five reserved bits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AvpFlags(pub u8);

impl AvpFlags {
    /// V (§4.1): a 4-byte Vendor-ID follows the AVP header; the code is then in that vendor's
    /// space.
    pub const V: u8 = 0x80;
    /// M (§4.1): the receiver must understand the AVP or reject the message with 5001; our
    /// dictionary decides what we understand.
    pub const M: u8 = 0x40;
    /// P (§4.1): reserved for end-to-end security, which RFC 6733 deprecates; carried but not acted
    /// on.
    pub const P: u8 = 0x20;
    /// Must be zero (RFC 6733 §4.1); a set bit is DIAMETER_INVALID_AVP_BITS (3009).
    pub const RESERVED: u8 = 0x1F;

    /// The raw octet, reserved bits included, for encoding and for the 3009 check.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Whether every bit of `bit` is set.
    pub const fn contains(self, bit: u8) -> bool {
        self.0 & bit == bit
    }
    /// V bit: the header is 12 bytes and carries a Vendor-ID.
    pub const fn is_vendor(self) -> bool {
        self.contains(Self::V)
    }
    /// M bit: unknown here means 5001 DIAMETER_AVP_UNSUPPORTED.
    pub const fn is_mandatory(self) -> bool {
        self.contains(Self::M)
    }
    /// P bit (deprecated end-to-end security).
    pub const fn is_protected(self) -> bool {
        self.contains(Self::P)
    }
    /// The reserved bits that are set (must be 0: 3009 otherwise).
    pub const fn reserved(self) -> u8 {
        self.0 & Self::RESERVED
    }
}

/// Letters of the set bits in the order V, M, P ("" for none); reserved bits are not shown.
impl fmt::Display for AvpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(Self::V, 'V'), (Self::M, 'M'), (Self::P, 'P')] {
            if self.contains(bit) {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for AvpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AvpFlags(\"{self}\"")?;
        if self.reserved() != 0 {
            write!(f, " reserved={:#x}", self.reserved())?;
        }
        f.write_str(")")
    }
}

/// The parsed header of one AVP and its bytes.
#[derive(Clone, Copy)]
pub(crate) struct Parsed<'a> {
    /// `(vendor << 32) | code`, one word: callers that look the AVP up by both (the
    /// validator's tables) load it whole, and a whole-word load after two half-word stores
    /// would stall store forwarding on every AVP.
    pub(crate) key: u64,
    pub(crate) flags: u8,
    /// The whole AVP without padding.
    pub(crate) raw: &'a [u8],
    /// The payload.
    pub(crate) data: &'a [u8],
    /// How far the next AVP is from this one's start (padding included).
    pub(crate) step: usize,
}

impl<'a> Parsed<'a> {
    #[inline(always)]
    pub(crate) fn code(&self) -> u32 {
        self.key as u32
    }

    #[inline(always)]
    pub(crate) fn vendor(&self) -> u32 {
        (self.key >> 32) as u32
    }

    /// The public view of this AVP, found at `offset` in the message at nesting `depth`:
    /// one construction for [`AvpRefs`] and the compiled validator's full path.
    #[inline(always)]
    pub(crate) fn view(&self, offset: usize, depth: u8) -> AvpRef<'a> {
        AvpRef {
            code: self.code(),
            flags: AvpFlags(self.flags),
            vendor: self.vendor(),
            data: self.data,
            raw: self.raw,
            offset,
            depth,
        }
    }
}

#[inline]
fn be32_at(buf: &[u8], at: usize) -> Option<u32> {
    match buf.get(at..at.checked_add(4)?) {
        Some(&[a, b, c, d]) => Some(u32::from_be_bytes([a, b, c, d])),
        _ => None,
    }
}

/// Parses the AVP starting at `pos` in `buf`. `base` is the offset of `buf` in the message
/// (for error reporting).
///
/// The success path runs for every AVP of every message, so it is straight-line code: one
/// 8-byte big-endian load for code, flags and length, a conditional move for the Vendor-ID
/// and one combined range check. The rare shapes (fewer than 12 bytes left, a last grouped
/// AVP without its padding) are handled inline with values, never by merging in a parse done
/// elsewhere: a result that some path fills through memory makes every path go through
/// memory, which costs a store-and-reload of the whole view per AVP.
#[inline(always)]
pub(crate) fn parse_at(buf: &[u8], pos: usize, base: usize) -> Result<Parsed<'_>, AvpError> {
    let rest = buf.get(pos..).unwrap_or_default();
    let (w, v) = match rest.first_chunk::<12>() {
        Some(h) => (
            u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]),
            u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        ),
        None => short_header(rest),
    };
    let code = (w >> 32) as u32;
    let flags = (w >> 24) as u8;
    let len = (w & 0x00FF_FFFF) as usize;
    let vendor = if flags & AvpFlags::V != 0 { v } else { 0 };
    // 8, or 12 with the V bit (0x80 >> 5 == 4).
    let hdr = AVP_HEADER_LEN | usize::from((flags & AvpFlags::V) >> 5);
    let padded_len = padded(len);
    let fits = padded_len <= rest.len();
    // The last AVP of a grouped payload sometimes comes without its padding; accept it when
    // it ends exactly at the end of the buffer, since nothing can follow it.
    let step = if fits { padded_len } else { len };
    if len < hdr || !(fits || len == rest.len()) {
        return Err(parse_error(buf, pos, base));
    }
    // In range by the checks above (`len <= padded_len`); `get` keeps that visible to the
    // optimiser without a panicking path.
    let (Some((raw, _)), Some(data)) = (rest.split_at_checked(len), rest.get(hdr..len)) else {
        return Err(parse_error(buf, pos, base));
    };
    Ok(Parsed {
        key: (u64::from(vendor) << 32) | u64::from(code),
        flags,
        raw,
        data,
        step,
    })
}

/// The header words of an AVP with fewer than 12 bytes left (only an empty or tiny last
/// AVP without Vendor-ID fits): the first 8 bytes, or a length of 0 (which
/// [`parse_at`] rejects) when there are not even 8.
#[cold]
#[inline(never)]
fn short_header(rest: &[u8]) -> (u64, u32) {
    match rest.first_chunk::<8>() {
        Some(h) => (u64::from_be_bytes(*h), 0),
        None => (0, 0),
    }
}

/// Works out why the AVP at `pos` does not parse, with as much of its header as exists.
#[cold]
fn parse_error(buf: &[u8], pos: usize, base: usize) -> AvpError {
    let rest = buf.get(pos..).unwrap_or_default();
    let mut err = AvpError {
        kind: AvpErrorKind::TruncatedHeader,
        offset: base + pos,
        code: be32_at(rest, 0).unwrap_or(0),
        flags: 0,
        vendor: 0,
    };
    let Some(w1) = be32_at(rest, 4) else {
        return err;
    };
    let flags = (w1 >> 24) as u8;
    let len = (w1 & 0x00FF_FFFF) as usize;
    err.flags = flags;
    let hdr = if flags & AvpFlags::V != 0 {
        match be32_at(rest, 8) {
            Some(v) => err.vendor = v,
            None => return err,
        }
        AVP_VENDOR_HEADER_LEN
    } else {
        AVP_HEADER_LEN
    };
    err.kind = if len < hdr {
        AvpErrorKind::LengthTooShort
    } else {
        AvpErrorKind::LengthOverrun
    };
    err
}

/// A borrowed view of one AVP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvpRef<'a> {
    /// AVP Code (§4.1): with `vendor`, names the AVP in the dictionary.
    pub code: u32,
    /// The flags as received, so validation can check them against the dictionary's M/V rules.
    pub flags: AvpFlags,
    /// Vendor-ID, 0 when the V bit is clear.
    pub vendor: u32,
    /// The payload, without padding.
    pub data: &'a [u8],
    /// The whole AVP (header and payload) without padding: a ready-made Failed-AVP entry.
    pub raw: &'a [u8],
    /// Offset of the AVP's first byte within the message.
    pub offset: usize,
    /// Nesting depth: 0 for a top-level AVP.
    pub depth: u8,
}

impl<'a> AvpRef<'a> {
    /// Header length: 12 with a Vendor-ID, else 8.
    pub fn header_len(&self) -> usize {
        self.raw.len() - self.data.len()
    }

    /// Iterates the payload as a Grouped AVP's children (meaningful only when the dictionary
    /// says the AVP is Grouped). Yields [`AvpErrorKind::TooDeep`] past [`MAX_DEPTH`].
    pub fn group(&self) -> AvpRefs<'a> {
        AvpRefs::nested(
            self.data,
            self.offset + self.header_len(),
            self.depth as usize + 1,
        )
    }

    /// The owned, reference-counted form, sliced from `backing` without copying when
    /// `backing` is the buffer this view was taken from (else the bytes are copied).
    pub fn to_avp(&self, backing: &Bytes) -> Avp {
        Avp {
            code: self.code,
            flags: self.flags,
            vendor: self.vendor,
            data: slice_of(backing, self.data),
            raw: slice_of(backing, self.raw),
            offset: self.offset,
            depth: self.depth,
        }
    }
}

fn slice_of(backing: &Bytes, sub: &[u8]) -> Bytes {
    let b = backing.as_ptr() as usize;
    let s = sub.as_ptr() as usize;
    if sub.is_empty() {
        Bytes::new()
    } else if s >= b && s + sub.len() <= b + backing.len() {
        backing.slice_ref(sub)
    } else {
        Bytes::copy_from_slice(sub)
    }
}

/// Iterator over the AVPs of a body or a grouped payload, borrowing it.
#[derive(Clone, Debug)]
pub struct AvpRefs<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    depth: usize,
    done: bool,
}

impl<'a> AvpRefs<'a> {
    /// Iterates `buf` as a sequence of top-level AVPs; `base` is the offset of `buf` within
    /// its message (20 for a message body), used for [`AvpRef::offset`] and errors.
    pub fn new(buf: &'a [u8], base: usize) -> AvpRefs<'a> {
        AvpRefs::nested(buf, base, 0)
    }

    /// Like [`new`](Self::new) for a payload at nesting `depth`.
    pub fn nested(buf: &'a [u8], base: usize, depth: usize) -> AvpRefs<'a> {
        AvpRefs {
            buf,
            pos: 0,
            base,
            depth,
            done: false,
        }
    }

    /// The bytes not yet iterated.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
}

impl<'a> Iterator for AvpRefs<'a> {
    type Item = Result<AvpRef<'a>, AvpError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        if self.depth > MAX_DEPTH {
            self.done = true;
            return Some(Err(too_deep(self.base)));
        }
        match parse_at(self.buf, self.pos, self.base) {
            Ok(p) => {
                let offset = self.base + self.pos;
                self.pos += p.step;
                Some(Ok(p.view(offset, self.depth as u8)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for AvpRefs<'_> {}

#[cold]
pub(crate) fn too_deep(offset: usize) -> AvpError {
    AvpError {
        kind: AvpErrorKind::TooDeep,
        offset,
        code: 0,
        flags: 0,
        vendor: 0,
    }
}

/// One AVP holding reference-counted slices of its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Avp {
    /// AVP Code (§4.1): with `vendor`, names the AVP in the dictionary.
    pub code: u32,
    /// The flags as received, so validation can check them against the dictionary's M/V rules.
    pub flags: AvpFlags,
    /// Vendor-ID, 0 when the V bit is clear.
    pub vendor: u32,
    /// The payload, without padding.
    pub data: Bytes,
    /// The whole AVP (header and payload) without padding: a ready-made Failed-AVP entry.
    pub raw: Bytes,
    /// Offset of the AVP's first byte within the message.
    pub offset: usize,
    /// Nesting depth: 0 for a top-level AVP.
    pub depth: u8,
}

impl Avp {
    /// Iterates the payload as a Grouped AVP's children.
    pub fn group(&self) -> AvpIter {
        AvpIter::nested(
            self.data.clone(),
            self.offset + self.raw.len() - self.data.len(),
            self.depth as usize + 1,
        )
    }

    /// A borrowed view of this AVP.
    pub fn as_ref(&self) -> AvpRef<'_> {
        AvpRef {
            code: self.code,
            flags: self.flags,
            vendor: self.vendor,
            data: &self.data,
            raw: &self.raw,
            offset: self.offset,
            depth: self.depth,
        }
    }
}

/// Iterator over the AVPs of a body or grouped payload, yielding [`Avp`]s that share `buf`.
#[derive(Clone, Debug)]
pub struct AvpIter {
    buf: Bytes,
    pos: usize,
    base: usize,
    depth: usize,
    done: bool,
}

impl AvpIter {
    /// Iterates `buf` as top-level AVPs; `base` is its offset within the message.
    pub fn new(buf: Bytes, base: usize) -> AvpIter {
        AvpIter::nested(buf, base, 0)
    }

    /// Like [`new`](Self::new) for a payload at nesting `depth`.
    pub fn nested(buf: Bytes, base: usize, depth: usize) -> AvpIter {
        AvpIter {
            buf,
            pos: 0,
            base,
            depth,
            done: false,
        }
    }
}

impl Iterator for AvpIter {
    type Item = Result<Avp, AvpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        if self.depth > MAX_DEPTH {
            self.done = true;
            return Some(Err(too_deep(self.base)));
        }
        match parse_at(&self.buf, self.pos, self.base) {
            Ok(p) => {
                let start = self.pos;
                let (hdr, end) = (p.raw.len() - p.data.len(), start + p.raw.len());
                self.pos += p.step;
                Some(Ok(Avp {
                    code: p.code(),
                    flags: AvpFlags(p.flags),
                    vendor: p.vendor(),
                    data: self.buf.slice(start + hdr..end),
                    raw: self.buf.slice(start..end),
                    offset: self.base + start,
                    depth: self.depth as u8,
                }))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for AvpIter {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-built AVP bytes (not via the encoder, so encoder bugs cannot mask parser bugs).
    fn avp(code: u32, flags: u8, vendor: Option<u32>, data: &[u8], pad: bool) -> Vec<u8> {
        let hdr = if vendor.is_some() { 12 } else { 8 };
        let len = (hdr + data.len()) as u32;
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(&((u32::from(flags) << 24) | len).to_be_bytes());
        if let Some(vid) = vendor {
            v.extend_from_slice(&vid.to_be_bytes());
        }
        v.extend_from_slice(data);
        if pad {
            v.resize(padded(v.len()), 0);
        }
        v
    }

    #[test]
    fn iterates_plain_and_vendor_avps() {
        let mut body = avp(263, 0x40, None, b"abc", true);
        body.extend(avp(701, 0xC0, Some(10415), &[1, 2, 3, 4, 5], true));
        body.extend(avp(1, 0x00, None, &[], true));
        let v: Vec<_> = AvpRefs::new(&body, 20).collect::<Result<_, _>>().unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!((v[0].code, v[0].vendor, v[0].data), (263, 0, &b"abc"[..]));
        assert_eq!(v[0].raw.len(), 11);
        assert_eq!(v[0].offset, 20);
        assert!(v[0].flags.is_mandatory() && !v[0].flags.is_vendor());
        assert_eq!(
            (v[1].code, v[1].vendor, v[1].data),
            (701, 10415, &[1, 2, 3, 4, 5][..])
        );
        assert_eq!(v[1].offset, 32);
        assert_eq!(v[1].header_len(), 12);
        assert_eq!(v[1].flags.to_string(), "VM");
        assert_eq!(v[2].offset, 52);
        assert!(v[2].data.is_empty());

        // The Bytes flavour agrees, and its slices share the buffer.
        let bytes = Bytes::from(body.clone());
        let owned: Vec<_> = AvpIter::new(bytes.clone(), 20)
            .collect::<Result<_, _>>()
            .unwrap();
        for (o, r) in owned.iter().zip(&v) {
            assert_eq!(o.as_ref(), *r);
        }
        let via_ref = AvpRefs::new(&bytes, 20).next().unwrap().unwrap();
        let converted = via_ref.to_avp(&bytes);
        assert_eq!(converted, owned[0]);
        assert_eq!(converted.raw.as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn to_avp_copies_foreign_slices() {
        let body = avp(1, 0, None, b"xy", true);
        let r = AvpRefs::new(&body, 0).next().unwrap().unwrap();
        let other = Bytes::from_static(b"unrelated");
        let a = r.to_avp(&other);
        assert_eq!(&a.data[..], b"xy");
    }

    fn first_err(buf: &[u8]) -> AvpError {
        let mut it = AvpRefs::new(buf, 20);
        let e = it.find_map(|r| r.err()).expect("an error");
        assert!(it.next().is_none(), "iterator must stop after an error");
        e
    }

    #[test]
    fn truncated_headers() {
        let e = first_err(&[0, 0, 1, 7, 0x40]);
        assert_eq!(e.kind, AvpErrorKind::TruncatedHeader);
        assert_eq!((e.code, e.offset), (263, 20));
        assert_eq!(first_err(&[0, 0]).code, 0);
        // V bit set but no room for the Vendor-ID.
        let e = first_err(&[0, 0, 0, 1, 0x80, 0, 0, 12]);
        assert_eq!((e.kind, e.flags), (AvpErrorKind::TruncatedHeader, 0x80));
        assert_eq!(e.result_code(), 5014);
    }

    #[test]
    fn length_too_short() {
        // Length 7 < 8.
        let e = first_err(&[0, 0, 0, 1, 0, 0, 0, 7]);
        assert_eq!(e.kind, AvpErrorKind::LengthTooShort);
        // V bit with length 8 < 12.
        let e = first_err(&[0, 0, 0, 1, 0x80, 0, 0, 8, 0, 0, 0x28, 0xAF]);
        assert_eq!((e.kind, e.vendor), (AvpErrorKind::LengthTooShort, 10415));
    }

    #[test]
    fn length_overrun_and_padding() {
        let mut b = avp(1, 0, None, b"abcd", true);
        b[7] = 13; // claims one byte more than present
        assert_eq!(first_err(&b).kind, AvpErrorKind::LengthOverrun);
        // An AVP without padding followed by another: parsing resumes at the padded position,
        // inside the next AVP, and the garbage found there is reported at that offset.
        let mut b = avp(1, 0, None, b"abc", false);
        b.extend(avp(2, 0, None, b"x", true));
        let e = first_err(&b);
        assert_eq!((e.kind, e.offset), (AvpErrorKind::LengthOverrun, 32));
        // ...but the very last AVP without padding is accepted.
        let b = avp(1, 0, None, b"abc", false);
        let v: Vec<_> = AvpRefs::new(&b, 0).collect::<Result<_, _>>().unwrap();
        assert_eq!(v[0].data, b"abc");
        // A second AVP after an unpadded one starts misaligned: its header is cut short.
        let mut b = avp(1, 0, None, b"abc", false);
        b.extend([0, 0, 0, 1, 0, 0, 0, 8]);
        assert_eq!(first_err(&b).kind, AvpErrorKind::TruncatedHeader);
    }

    #[test]
    fn grouped_iteration_and_offsets() {
        let inner = [
            avp(444, 0x40, None, b"123", true),
            avp(450, 0x40, None, &[0, 0, 0, 1], true),
        ]
        .concat();
        let g = avp(443, 0x40, None, &inner, true);
        let body = [avp(263, 0x40, None, b"s", true), g].concat();
        let top: Vec<_> = AvpRefs::new(&body, 20).collect::<Result<_, _>>().unwrap();
        let kids: Vec<_> = top[1].group().collect::<Result<_, _>>().unwrap();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[0].offset, 20 + 12 + 8);
        assert_eq!(kids[0].depth, 1);
        assert_eq!(kids[1].data, &[0, 0, 0, 1]);
        let owned = AvpIter::new(Bytes::from(body.clone()), 20)
            .nth(1)
            .unwrap()
            .unwrap();
        let okids: Vec<_> = owned.group().collect::<Result<_, _>>().unwrap();
        assert_eq!(okids[1].as_ref(), kids[1]);
        // A grouped payload that is not AVPs reports an error, with the inner offset.
        let bad = avp(443, 0, None, &[1, 2, 3], true);
        let g = AvpRefs::new(&bad, 20).next().unwrap().unwrap();
        let e = g.group().next().unwrap().unwrap_err();
        assert_eq!((e.kind, e.offset), (AvpErrorKind::TruncatedHeader, 28));
    }

    #[test]
    fn depth_is_bounded() {
        let mut b = avp(1, 0, None, b"leaf", true);
        for _ in 0..(MAX_DEPTH + 2) {
            b = avp(2, 0, None, &b, true);
        }
        let mut cur = AvpRefs::new(&b, 0).next().unwrap().unwrap();
        let mut reached = 0;
        loop {
            match cur.group().next() {
                Some(Ok(a)) => {
                    cur = a;
                    reached += 1;
                }
                Some(Err(e)) => {
                    assert_eq!(e.kind, AvpErrorKind::TooDeep);
                    assert_eq!(e.result_code(), 5004);
                    break;
                }
                None => panic!("ran out of nesting"),
            }
        }
        assert_eq!(reached, MAX_DEPTH);
    }

    #[test]
    fn flags_display() {
        assert_eq!(AvpFlags(0xE0).to_string(), "VMP");
        assert_eq!(AvpFlags(0x41).to_string(), "M");
        assert_eq!(AvpFlags(0x41).reserved(), 1);
        assert_eq!(
            format!("{:?}", AvpFlags(0x41)),
            "AvpFlags(\"M\" reserved=0x1)"
        );
        assert!(AvpFlags(0x20).is_protected());
    }

    #[test]
    fn empty_buffer_yields_nothing() {
        assert!(AvpRefs::new(&[], 0).next().is_none());
        assert!(AvpIter::new(Bytes::new(), 0).next().is_none());
    }
}
