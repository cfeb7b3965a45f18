//! The 20-byte Diameter message header (RFC 6733 §3).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Version    |                 Message Length                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | command flags |                  Command Code                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Application-ID                        |
//! |                      Hop-by-Hop Identifier                    |
//! |                      End-to-End Identifier                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Header::decode`] reads the fields as they are (any version, any flags) so that even a
//! message we must reject can be answered with its own identifiers; the checks that decide
//! whether it is acceptable live in [`Header::check`] and in `validate`.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, BytesMut};

use crate::error::HeaderError;

/// Size of the Diameter header in bytes.
pub const HEADER_LEN: usize = 20;
/// The only Diameter version (RFC 6733).
pub const VERSION: u8 = 1;
/// The largest length a 24-bit Message Length can declare.
pub const MAX_MESSAGE_LEN: usize = 0x00FF_FFFF;

/// The command flags octet. A bitset rather than bools so that reserved bits survive a
/// decode/encode round trip and can be checked (DIAMETER_INVALID_HDR_BITS, 3008).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// R: the message is a request.
    pub const R: u8 = 0x80;
    /// P: the message may be proxied, relayed or redirected.
    pub const P: u8 = 0x40;
    /// E: the answer carries a protocol error.
    pub const E: u8 = 0x20;
    /// T: the request may be a retransmission after a link failover.
    pub const T: u8 = 0x10;
    /// The four low bits, which RFC 6733 reserves and requires to be zero.
    pub const RESERVED: u8 = 0x0F;

    /// No bits set: the starting point for building flags with [`with`](Self::with).
    pub const fn empty() -> Flags {
        Flags(0)
    }
    /// The raw octet, reserved bits included, for encoding and for the 3008 check.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Whether every bit of `bit` (one of the constants, or several or-ed) is set.
    pub const fn contains(self, bit: u8) -> bool {
        self.0 & bit == bit
    }
    /// `self` with `bit` set.
    pub const fn with(self, bit: u8) -> Flags {
        Flags(self.0 | bit)
    }
    /// `self` with `bit` cleared.
    pub const fn without(self, bit: u8) -> Flags {
        Flags(self.0 & !bit)
    }
    /// R: a request, which needs an answer with the same Hop-by-Hop and End-to-End ids (§3).
    pub const fn is_request(self) -> bool {
        self.contains(Self::R)
    }
    /// P: the request may be relayed (§6.1.9), and the answer keeps the bit (§6.2).
    pub const fn is_proxiable(self) -> bool {
        self.contains(Self::P)
    }
    /// E: an answer carrying a 3xxx protocol error in the generic error layout (§7.2).
    pub const fn is_error(self) -> bool {
        self.contains(Self::E)
    }
    /// T: a request re-sent after failover (§5.5.4); a server looks it up in its duplicate cache
    /// (End-to-End id + Origin-Host) instead of running it twice.
    pub const fn is_retransmit(self) -> bool {
        self.contains(Self::T)
    }
    /// The reserved bits that are set (should be 0).
    pub const fn reserved(self) -> u8 {
        self.0 & Self::RESERVED
    }
}

const LETTERS: [(u8, char); 4] = [
    (Flags::R, 'R'),
    (Flags::P, 'P'),
    (Flags::E, 'E'),
    (Flags::T, 'T'),
];

/// The letters of the set bits in the order R, P, E, T (DESIGN §8); "" when none.
/// Reserved bits have no letter and are not shown.
impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in LETTERS {
            if self.contains(bit) {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags(\"{self}\"")?;
        if self.reserved() != 0 {
            write!(f, " reserved={:#x}", self.reserved())?;
        }
        f.write_str(")")
    }
}

/// Error parsing a flags string: a character other than R, P, E, T (case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid header flag letter {0:?}: expected letters from \"RPET\"")]
pub struct FlagsParseError(pub char);

impl FromStr for Flags {
    type Err = FlagsParseError;

    /// Parses letters from "RPET" in any order (repetition is harmless).
    fn from_str(s: &str) -> Result<Flags, FlagsParseError> {
        let mut bits = 0u8;
        for c in s.chars() {
            let bit = LETTERS
                .iter()
                .find(|(_, l)| l.eq_ignore_ascii_case(&c))
                .map(|(b, _)| *b)
                .ok_or(FlagsParseError(c))?;
            bits |= bit;
        }
        Ok(Flags(bits))
    }
}

/// A decoded Diameter header. Fields are 24-bit where the wire says so (`length`, `code`);
/// [`Header::encode`] writes only their low 24 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Version: 1 for RFC 6733; anything else is kept as received so the 5011 answer can still be
    /// built.
    pub version: u8,
    /// Message Length: header plus body, in bytes.
    pub length: u32,
    /// The command flags, reserved bits included.
    pub flags: Flags,
    /// Command Code (24 bits): with the R bit and `app_id`, what the message is (e.g. 272
    /// Credit-Control).
    pub code: u32,
    /// Application-ID: which application's dictionary and routing apply (§2.4); 0 for the base
    /// protocol's own commands.
    pub app_id: u32,
    /// Hop-by-Hop Identifier: unique per connection at the sender, rewritten by each relay
    /// (§6.1.9), and the key that matches an answer to its outstanding request.
    pub hop_by_hop: u32,
    /// End-to-End Identifier: set by the originator and kept through relays; with Origin-Host it
    /// detects duplicates (§3).
    pub end_to_end: u32,
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    // Callers guarantee `b.len() >= at + 4`; `get` keeps this panic-free regardless.
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

impl Header {
    /// A version-1 request header with a zero length (the writer patches it).
    pub fn request(code: u32, app_id: u32, hop_by_hop: u32, end_to_end: u32) -> Header {
        Header {
            version: VERSION,
            length: 0,
            flags: Flags(Flags::R),
            code,
            app_id,
            hop_by_hop,
            end_to_end,
        }
    }

    /// The header of an answer to `self` (a request): same command code, application and
    /// identifiers; R, E and T cleared; P kept (RFC 6733 §6.2: an answer keeps the
    /// request's P bit). Reserved bits are cleared. The length is left 0 for the writer.
    pub fn answer(&self) -> Header {
        Header {
            version: VERSION,
            length: 0,
            flags: Flags(self.flags.0 & Flags::P),
            ..*self
        }
    }

    /// Like [`answer`](Self::answer) with the E bit set, for protocol-error answers (3xxx).
    pub fn error_answer(&self) -> Header {
        let mut h = self.answer();
        h.flags = h.flags.with(Flags::E);
        h
    }

    /// Reads the 20 header bytes at the start of `buf` without judging them: version,
    /// length and flags are returned as found. Fails only when fewer than 20 bytes exist.
    pub fn decode(buf: &[u8]) -> Result<Header, HeaderError> {
        if buf.len() < HEADER_LEN {
            return Err(HeaderError::Truncated { len: buf.len() });
        }
        let w0 = be32(buf, 0);
        let w1 = be32(buf, 4);
        Ok(Header {
            version: (w0 >> 24) as u8,
            length: w0 & 0x00FF_FFFF,
            flags: Flags((w1 >> 24) as u8),
            code: w1 & 0x00FF_FFFF,
            app_id: be32(buf, 8),
            hop_by_hop: be32(buf, 12),
            end_to_end: be32(buf, 16),
        })
    }

    /// Checks the version and the declared length (>= 20, multiple of 4); not whether the
    /// length matches any buffer.
    pub fn check(&self) -> Result<(), HeaderError> {
        check_prefix(self.version, self.length)
    }

    /// Appends the 20 header bytes to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_slice(&self.to_bytes());
    }

    /// The header's 20 bytes (RFC 6733 §3), for writing over a header already in a buffer.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let words = [
            ((self.version as u32) << 24) | (self.length & 0x00FF_FFFF),
            ((self.flags.0 as u32) << 24) | (self.code & 0x00FF_FFFF),
            self.app_id,
            self.hop_by_hop,
            self.end_to_end,
        ];
        let mut out = [0; HEADER_LEN];
        for (dst, w) in out.chunks_exact_mut(4).zip(words) {
            dst.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// The checks that need only the first 4 bytes (version + length): what a stream framer can
/// decide before the rest of the header arrives.
pub(crate) fn check_prefix(version: u8, length: u32) -> Result<(), HeaderError> {
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    if (length as usize) < HEADER_LEN || !length.is_multiple_of(4) {
        return Err(HeaderError::BadLength(length));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: 1,
            length: 0x01_0203 * 4,
            flags: Flags(Flags::R | Flags::P),
            code: 0x00AB_CDEF,
            app_id: 16_777_216,
            hop_by_hop: 0xDEAD_BEEF,
            end_to_end: 7,
        }
    }

    #[test]
    fn round_trip_all_fields() {
        let h = sample();
        let mut b = BytesMut::new();
        h.encode(&mut b);
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(&b[..8], &[1, 0x04, 0x08, 0x0C, 0xC0, 0xAB, 0xCD, 0xEF]);
        assert_eq!(Header::decode(&b).unwrap(), h);
    }

    #[test]
    fn encode_truncates_24_bit_fields() {
        let mut h = sample();
        h.code = 0xFF00_0001;
        h.length = 0xFF00_0014;
        let mut b = BytesMut::new();
        h.encode(&mut b);
        let d = Header::decode(&b).unwrap();
        assert_eq!(d.code, 1);
        assert_eq!(d.length, 20);
        assert_eq!(d.version, 1);
        assert_eq!(d.flags, h.flags);
    }

    #[test]
    fn decode_truncated() {
        assert_eq!(
            Header::decode(&[1; 19]),
            Err(HeaderError::Truncated { len: 19 })
        );
        assert_eq!(Header::decode(&[]), Err(HeaderError::Truncated { len: 0 }));
    }

    #[test]
    fn decode_keeps_bad_version_and_reserved_bits() {
        let mut raw = [0u8; 20];
        raw[0] = 2;
        raw[3] = 20;
        raw[4] = 0x8F;
        let h = Header::decode(&raw).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.flags.reserved(), 0x0F);
        assert!(h.flags.is_request());
        assert_eq!(h.check(), Err(HeaderError::Version(2)));
        assert_eq!(h.check().unwrap_err().result_code(), 5011);
    }

    #[test]
    fn check_lengths() {
        let mut h = sample();
        for (len, ok) in [(20, true), (24, true), (16, false), (0, false), (22, false)] {
            h.length = len;
            assert_eq!(h.check().is_ok(), ok, "length {len}");
        }
        h.length = 22;
        assert_eq!(h.check().unwrap_err().result_code(), 5015);
    }

    #[test]
    fn flags_letters() {
        assert_eq!(Flags(0).to_string(), "");
        assert_eq!(Flags(0xF0).to_string(), "RPET");
        assert_eq!(Flags(Flags::R | Flags::T).to_string(), "RT");
        assert_eq!(Flags(Flags::P | 0x01).to_string(), "P");
        assert_eq!("TR".parse::<Flags>().unwrap(), Flags(0x90));
        assert_eq!("rpet".parse::<Flags>().unwrap(), Flags(0xF0));
        assert_eq!("".parse::<Flags>().unwrap(), Flags(0));
        assert_eq!("RX".parse::<Flags>(), Err(FlagsParseError('X')));
        for bits in 0u8..=0xF0 {
            let f = Flags(bits & 0xF0);
            assert_eq!(f.to_string().parse::<Flags>().unwrap(), f);
        }
        assert_eq!(format!("{:?}", Flags(0x81)), "Flags(\"R\" reserved=0x1)");
    }

    #[test]
    fn answer_header() {
        let mut req = sample();
        req.flags = Flags(Flags::R | Flags::P | Flags::T | 0x02);
        let a = req.answer();
        assert_eq!(a.flags, Flags(Flags::P));
        assert_eq!(
            (a.code, a.app_id, a.hop_by_hop, a.end_to_end),
            (req.code, req.app_id, req.hop_by_hop, req.end_to_end)
        );
        assert_eq!(a.length, 0);
        req.flags = Flags(Flags::R);
        assert_eq!(req.answer().flags, Flags(0));
        assert_eq!(req.error_answer().flags, Flags(Flags::E));
    }
}
