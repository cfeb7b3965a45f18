//! Typed AVP payloads: decoding and encoding every data format of RFC 6733 §4.2-4.3.
//!
//! [`Value`] borrows from the payload it was decoded from (strings and octets are not
//! copied), and the same type is what an encoder is handed, so JSON->AVP can encode from its
//! own buffers without building owned values first.
//!
//! Errors map onto Result-Codes: a fixed-size format with the wrong payload length is
//! [`ValueError::Length`] (DIAMETER_INVALID_AVP_LENGTH, 5014), text that is not UTF-8 is
//! [`ValueError::Utf8`] (DIAMETER_INVALID_AVP_VALUE, 5004).

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

use crate::error::ValueError;
use crate::AvpType;

/// IANA address family numbers used by the Address format (RFC 6733 §4.3.1).
pub mod family {
    /// Address family 1 (IPv4): a 4-byte address follows.
    pub const IPV4: u16 = 1;
    /// Address family 2 (IPv6): a 16-byte address follows.
    pub const IPV6: u16 = 2;
}

/// An Address payload: a 2-byte address family followed by the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Address<'a> {
    /// Family 1; shown to scripts as dotted-quad text.
    V4(Ipv4Addr),
    /// Family 2; shown to scripts in RFC 5952 text form.
    V6(Ipv6Addr),
    /// Any other family (e.g. 8 = E.164), kept as received.
    Other {
        /// The IANA address family number, needed to re-encode the payload unchanged.
        family: u16,
        /// The address bytes after the family, unchecked: their length depends on the family.
        addr: &'a [u8],
    },
}

impl Address<'_> {
    /// The IANA family number.
    pub fn family(&self) -> u16 {
        match self {
            Address::V4(_) => family::IPV4,
            Address::V6(_) => family::IPV6,
            Address::Other { family, .. } => *family,
        }
    }

    fn encoded_len(&self) -> usize {
        2 + match self {
            Address::V4(_) => 4,
            Address::V6(_) => 16,
            Address::Other { addr, .. } => addr.len(),
        }
    }
}

impl From<std::net::IpAddr> for Address<'static> {
    fn from(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(a) => Address::V4(a),
            std::net::IpAddr::V6(a) => Address::V6(a),
        }
    }
}

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const NTP_UNIX_OFFSET: i64 = 2_208_988_800;
/// Smallest Unix time a Time AVP can carry: NTP era 0 starting at 0x80000000 (1968-01-20).
pub const TIME_MIN_UNIX: i64 = 0x8000_0000 - NTP_UNIX_OFFSET;
/// Largest Unix time a Time AVP can carry: era 1 up to 0x7FFFFFFF (2104-02-26).
pub const TIME_MAX_UNIX: i64 = (1 << 32) + 0x7FFF_FFFF - NTP_UNIX_OFFSET;

/// Converts a Time AVP's 32-bit NTP seconds to Unix seconds.
///
/// RFC 6733 §4.3.1 (after RFC 5905/4330): the 32-bit counter wraps on 2036-02-07; values with
/// the most significant bit set are in era 0 (1968-2036), values with it clear are in era 1
/// (2036-2104). This keeps every time a live peer can send unambiguous.
pub const fn ntp_to_unix(ntp: u32) -> i64 {
    if ntp & 0x8000_0000 != 0 {
        ntp as i64 - NTP_UNIX_OFFSET
    } else {
        ntp as i64 + (1 << 32) - NTP_UNIX_OFFSET
    }
}

/// Converts Unix seconds to a Time AVP's NTP seconds, or `None` outside
/// [`TIME_MIN_UNIX`]..=[`TIME_MAX_UNIX`] (the window [`ntp_to_unix`] can express).
pub const fn unix_to_ntp(unix: i64) -> Option<u32> {
    if unix < TIME_MIN_UNIX || unix > TIME_MAX_UNIX {
        return None;
    }
    // In range, the NTP time is in [2^31, 2^32 + 2^31); the low 32 bits select the era.
    Some((unix + NTP_UNIX_OFFSET) as u64 as u32)
}

/// A decoded AVP payload. Text formats are `&str` because they have been checked to be
/// UTF-8; Grouped is the raw payload, to iterate with [`crate::avp::AvpRefs`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// §4.2: the payload as received, not copied.
    OctetString(&'a [u8]),
    /// §4.2 Integer32.
    Integer32(i32),
    /// §4.2 Integer64.
    Integer64(i64),
    /// §4.2 Unsigned32.
    Unsigned32(u32),
    /// §4.2 Unsigned64.
    Unsigned64(u64),
    /// §4.2 Float32.
    Float32(f32),
    /// §4.2 Float64.
    Float64(f64),
    /// §4.4: the undecoded payload (the inner AVPs), so a caller that only forwards it pays
    /// nothing; iterate with [`crate::avp::AvpRefs`].
    Grouped(&'a [u8]),
    /// §4.3.1: the family-tagged address.
    Address(Address<'a>),
    /// Unix seconds (converted from NTP with the era rule of [`ntp_to_unix`]).
    Time(i64),
    /// §4.3.1: checked to be UTF-8 (5004 otherwise).
    UTF8String(&'a str),
    /// §4.3.1: an FQDN or realm, checked to be UTF-8.
    DiameterIdentity(&'a str),
    /// §4.3.1: an `aaa://` URI, checked to be UTF-8.
    DiameterURI(&'a str),
    /// §4.3.1: the numeric value; naming it is the dictionary's job.
    Enumerated(i32),
    /// §4.3.1: the rule text, checked to be UTF-8 and not parsed.
    IPFilterRule(&'a str),
    /// RFC 7155 QoSFilterRule: the rule text, checked to be UTF-8 and not parsed.
    QoSFilterRule(&'a str),
}

#[inline]
fn fixed<const N: usize>(ty: AvpType, data: &[u8]) -> Result<[u8; N], ValueError> {
    data.try_into().map_err(|_| ValueError::Length {
        ty,
        actual: data.len(),
    })
}

#[inline]
fn text(ty: AvpType, data: &[u8]) -> Result<&str, ValueError> {
    std::str::from_utf8(data).map_err(|_| ValueError::Utf8 { ty })
}

/// Decodes a payload that must be 4 bytes (Unsigned32 and friends), e.g. Result-Code.
#[inline]
pub fn decode_u32(data: &[u8]) -> Result<u32, ValueError> {
    fixed::<4>(AvpType::Unsigned32, data).map(u32::from_be_bytes)
}

/// Decodes a payload that must be 8 bytes as Unsigned64.
#[inline]
pub fn decode_u64(data: &[u8]) -> Result<u64, ValueError> {
    fixed::<8>(AvpType::Unsigned64, data).map(u64::from_be_bytes)
}

/// Decodes a UTF-8 text payload (UTF8String, DiameterIdentity, ...), e.g. Session-Id.
#[inline]
pub fn decode_str(data: &[u8]) -> Result<&str, ValueError> {
    text(AvpType::UTF8String, data)
}

/// Decodes an Address payload (§4.3.1): IPv4 and IPv6 must have exactly 4 and 16 address
/// bytes (5014 otherwise); other families are kept unchecked, since their lengths vary.
pub fn decode_address(data: &[u8]) -> Result<Address<'_>, ValueError> {
    let bad = ValueError::Length {
        ty: AvpType::Address,
        actual: data.len(),
    };
    let (fam, addr) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => return Err(bad),
    };
    match fam {
        family::IPV4 => <[u8; 4]>::try_from(addr)
            .map(|a| Address::V4(Ipv4Addr::from(a)))
            .map_err(|_| bad),
        family::IPV6 => <[u8; 16]>::try_from(addr)
            .map(|a| Address::V6(Ipv6Addr::from(a)))
            .map_err(|_| bad),
        family => Ok(Address::Other { family, addr }),
    }
}

/// The entry of [`CHECK`] for `ty`: what a caller that checks many values of one type
/// (the compiled validator, per table slot) stores instead of the type.
#[inline]
pub(crate) fn check_class(ty: AvpType) -> u8 {
    CHECK.get(ty as usize).copied().unwrap_or(ANY)
}

/// Whether [`Value::check`] accepts a payload of check class `class` (see [`check_class`]).
/// The boolean form lets the validator's per-AVP fast path branch once without building a
/// `Result` (the error is worked out by `check` only when this says no). The fixed lengths (the most common class on the wire) are
/// one comparison.
#[inline(always)]
pub(crate) fn is_valid_class(class: u8, data: &[u8]) -> bool {
    if class > ADDRESS {
        return data.len() == usize::from(class);
    }
    match class {
        ANY => true,
        TEXT => is_ascii(data) || std::str::from_utf8(data).is_ok(),
        _ => decode_address(data).is_ok(),
    }
}

/// `data.is_ascii()`, written for the short strings AVPs carry (host names, realms,
/// Session-Ids: 10-60 bytes): whole 8-byte words OR-ed together plus one overlapping last
/// word, where the standard version walks the unaligned ends byte by byte.
#[inline(always)]
fn is_ascii(data: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if data.len() > 64 {
        return data.is_ascii();
    }
    if let Some(last) = data.last_chunk::<8>() {
        let mut acc = u64::from_ne_bytes(*last);
        for word in data.chunks_exact(8) {
            acc |= <[u8; 8]>::try_from(word).map_or(HIGH, u64::from_ne_bytes);
        }
        return acc & HIGH == 0;
    }
    if let (Some(a), Some(b)) = (data.first_chunk::<4>(), data.last_chunk::<4>()) {
        return (u32::from_ne_bytes(*a) | u32::from_ne_bytes(*b)) & 0x8080_8080 == 0;
    }
    data.iter().fold(0, |acc, b| acc | b) < 0x80
}

const ANY: u8 = 0;
const TEXT: u8 = 1;
const ADDRESS: u8 = 2;
/// What [`Value::check`] does per type, indexed by the `AvpType` discriminant: a fixed
/// payload length (4 or 8), or one of the classes below. A unit test keeps it in step with
/// [`AvpType::fixed_len`] and the enum's order.
const CHECK: [u8; 16] = [
    ANY,     // OctetString
    4,       // Integer32
    8,       // Integer64
    4,       // Unsigned32
    8,       // Unsigned64
    4,       // Float32
    8,       // Float64
    ANY,     // Grouped
    ADDRESS, // Address
    4,       // Time
    TEXT,    // UTF8String
    TEXT,    // DiameterIdentity
    TEXT,    // DiameterURI
    4,       // Enumerated
    TEXT,    // IPFilterRule
    TEXT,    // QoSFilterRule
];

impl<'a> Value<'a> {
    /// Decodes `data` as `ty`, borrowing it: a wrong length for a fixed-size format is
    /// [`ValueError::Length`] (5014), text that is not UTF-8 [`ValueError::Utf8`] (5004).
    pub fn decode(ty: AvpType, data: &'a [u8]) -> Result<Value<'a>, ValueError> {
        Ok(match ty {
            AvpType::OctetString => Value::OctetString(data),
            AvpType::Integer32 => Value::Integer32(i32::from_be_bytes(fixed(ty, data)?)),
            AvpType::Integer64 => Value::Integer64(i64::from_be_bytes(fixed(ty, data)?)),
            AvpType::Unsigned32 => Value::Unsigned32(u32::from_be_bytes(fixed(ty, data)?)),
            AvpType::Unsigned64 => Value::Unsigned64(u64::from_be_bytes(fixed(ty, data)?)),
            AvpType::Float32 => Value::Float32(f32::from_be_bytes(fixed(ty, data)?)),
            AvpType::Float64 => Value::Float64(f64::from_be_bytes(fixed(ty, data)?)),
            AvpType::Grouped => Value::Grouped(data),
            AvpType::Address => Value::Address(decode_address(data)?),
            AvpType::Time => Value::Time(ntp_to_unix(u32::from_be_bytes(fixed(ty, data)?))),
            AvpType::UTF8String => Value::UTF8String(text(ty, data)?),
            AvpType::DiameterIdentity => Value::DiameterIdentity(text(ty, data)?),
            AvpType::DiameterURI => Value::DiameterURI(text(ty, data)?),
            AvpType::Enumerated => Value::Enumerated(i32::from_be_bytes(fixed(ty, data)?)),
            AvpType::IPFilterRule => Value::IPFilterRule(text(ty, data)?),
            AvpType::QoSFilterRule => Value::QoSFilterRule(text(ty, data)?),
        })
    }

    /// Checks that `data` is a valid `ty` payload without building the value; what
    /// validation runs on every AVP, so it classifies the type with one table load instead
    /// of matching twice, and checks ASCII (the common case) before full UTF-8.
    #[inline]
    pub fn check(ty: AvpType, data: &[u8]) -> Result<(), ValueError> {
        match CHECK.get(ty as usize).copied().unwrap_or(ANY) {
            ANY => Ok(()),
            TEXT => {
                if data.is_ascii() {
                    Ok(())
                } else {
                    text(ty, data).map(|_| ())
                }
            }
            ADDRESS => decode_address(data).map(|_| ()),
            n if data.len() == n as usize => Ok(()),
            _ => Err(ValueError::Length {
                ty,
                actual: data.len(),
            }),
        }
    }

    /// The format of this value.
    pub fn ty(&self) -> AvpType {
        match self {
            Value::OctetString(_) => AvpType::OctetString,
            Value::Integer32(_) => AvpType::Integer32,
            Value::Integer64(_) => AvpType::Integer64,
            Value::Unsigned32(_) => AvpType::Unsigned32,
            Value::Unsigned64(_) => AvpType::Unsigned64,
            Value::Float32(_) => AvpType::Float32,
            Value::Float64(_) => AvpType::Float64,
            Value::Grouped(_) => AvpType::Grouped,
            Value::Address(_) => AvpType::Address,
            Value::Time(_) => AvpType::Time,
            Value::UTF8String(_) => AvpType::UTF8String,
            Value::DiameterIdentity(_) => AvpType::DiameterIdentity,
            Value::DiameterURI(_) => AvpType::DiameterURI,
            Value::Enumerated(_) => AvpType::Enumerated,
            Value::IPFilterRule(_) => AvpType::IPFilterRule,
            Value::QoSFilterRule(_) => AvpType::QoSFilterRule,
        }
    }

    /// Payload length in bytes (without AVP header and padding).
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::OctetString(b) | Value::Grouped(b) => b.len(),
            Value::Integer32(_)
            | Value::Unsigned32(_)
            | Value::Float32(_)
            | Value::Time(_)
            | Value::Enumerated(_) => 4,
            Value::Integer64(_) | Value::Unsigned64(_) | Value::Float64(_) => 8,
            Value::Address(a) => a.encoded_len(),
            Value::UTF8String(s)
            | Value::DiameterIdentity(s)
            | Value::DiameterURI(s)
            | Value::IPFilterRule(s)
            | Value::QoSFilterRule(s) => s.len(),
        }
    }

    /// Appends the payload (no AVP header, no padding) to `buf`. Fails only for a Time
    /// outside the NTP window; nothing is written then.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), ValueError> {
        match *self {
            Value::OctetString(b) | Value::Grouped(b) => buf.put_slice(b),
            Value::Integer32(v) | Value::Enumerated(v) => buf.put_i32(v),
            Value::Integer64(v) => buf.put_i64(v),
            Value::Unsigned32(v) => buf.put_u32(v),
            Value::Unsigned64(v) => buf.put_u64(v),
            Value::Float32(v) => buf.put_f32(v),
            Value::Float64(v) => buf.put_f64(v),
            Value::Address(a) => {
                buf.put_u16(a.family());
                match a {
                    Address::V4(ip) => buf.put_slice(&ip.octets()),
                    Address::V6(ip) => buf.put_slice(&ip.octets()),
                    Address::Other { addr, .. } => buf.put_slice(addr),
                }
            }
            Value::Time(t) => buf.put_u32(unix_to_ntp(t).ok_or(ValueError::TimeRange(t))?),
            Value::UTF8String(s)
            | Value::DiameterIdentity(s)
            | Value::DiameterURI(s)
            | Value::IPFilterRule(s)
            | Value::QoSFilterRule(s) => buf.put_slice(s.as_bytes()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut b = BytesMut::new();
        v.encode(&mut b).unwrap();
        assert_eq!(b.len(), v.encoded_len(), "encoded_len of {v:?}");
        b.to_vec()
    }

    #[test]
    fn wire_bytes_of_every_type() {
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let cases: Vec<(Value, Vec<u8>)> = vec![
            (Value::OctetString(&[0, 1, 0xFF]), vec![0, 1, 0xFF]),
            (Value::Integer32(-2), vec![0xFF, 0xFF, 0xFF, 0xFE]),
            (Value::Integer64(-1), vec![0xFF; 8]),
            (Value::Unsigned32(0x0102_0304), vec![1, 2, 3, 4]),
            (
                Value::Unsigned64(u64::MAX - 1),
                [vec![0xFF; 7], vec![0xFE]].concat(),
            ),
            (Value::Float32(1.5), 1.5f32.to_be_bytes().to_vec()),
            (Value::Float64(-0.25), (-0.25f64).to_be_bytes().to_vec()),
            (Value::Grouped(&[0, 0, 1, 7]), vec![0, 0, 1, 7]),
            (
                Value::Address(Address::V4(Ipv4Addr::new(192, 0, 2, 1))),
                vec![0, 1, 192, 0, 2, 1],
            ),
            (
                Value::Address(Address::V6(v6)),
                [vec![0, 2], v6.octets().to_vec()].concat(),
            ),
            (
                Value::Address(Address::Other {
                    family: 8,
                    addr: b"4711",
                }),
                vec![0, 8, b'4', b'7', b'1', b'1'],
            ),
            (Value::Time(0), 2_208_988_800u32.to_be_bytes().to_vec()),
            (Value::UTF8String("é"), "é".as_bytes().to_vec()),
            (
                Value::DiameterIdentity("hss.example"),
                b"hss.example".to_vec(),
            ),
            (Value::DiameterURI("aaa://h:3868"), b"aaa://h:3868".to_vec()),
            (Value::Enumerated(-7), (-7i32).to_be_bytes().to_vec()),
            (
                Value::IPFilterRule("permit in ip from any to any"),
                b"permit in ip from any to any".to_vec(),
            ),
            (Value::QoSFilterRule("tag"), b"tag".to_vec()),
        ];
        let mut seen = std::collections::HashSet::new();
        for (v, wire) in cases {
            assert_eq!(enc(&v), wire, "{v:?}");
            assert_eq!(Value::decode(v.ty(), &wire).unwrap(), v);
            assert!(Value::check(v.ty(), &wire).is_ok());
            seen.insert(v.ty());
        }
        assert_eq!(seen.len(), AvpType::ALL.len(), "every type covered");
    }

    #[test]
    fn fixed_types_reject_wrong_length() {
        for ty in AvpType::ALL {
            let Some(n) = ty.fixed_len() else { continue };
            for len in [0, n - 1, n + 1, 2 * n] {
                let data = vec![0u8; len];
                let e = Value::decode(ty, &data).unwrap_err();
                assert_eq!(e, ValueError::Length { ty, actual: len });
                assert_eq!(e.result_code(), 5014);
                assert_eq!(Value::check(ty, &data), Err(e));
            }
        }
        assert!(decode_u32(&[1, 2, 3]).is_err());
        assert_eq!(decode_u32(&[0, 0, 7, 0xD1]), Ok(2001));
        assert_eq!(decode_u64(&[0, 0, 0, 0, 0, 0, 0, 9]), Ok(9));
        assert!(decode_u64(&[0; 4]).is_err());
    }

    #[test]
    fn text_types_reject_invalid_utf8() {
        for ty in [
            AvpType::UTF8String,
            AvpType::DiameterIdentity,
            AvpType::DiameterURI,
            AvpType::IPFilterRule,
            AvpType::QoSFilterRule,
        ] {
            let e = Value::decode(ty, &[b'a', 0xC3]).unwrap_err();
            assert_eq!(e, ValueError::Utf8 { ty });
            assert_eq!(e.result_code(), 5004);
            assert_eq!(Value::check(ty, &[0xFF]), Err(ValueError::Utf8 { ty }));
        }
        // Octets are octets: anything goes.
        assert!(Value::check(AvpType::OctetString, &[0xFF]).is_ok());
        assert_eq!(decode_str(b"s;1"), Ok("s;1"));
    }

    #[test]
    fn address_lengths() {
        for bad in [
            &[][..],
            &[0],
            &[0, 1, 1, 2, 3],
            &[0, 1, 1, 2, 3, 4, 5],
            &[0, 2, 0, 0],
        ] {
            let e = Value::decode(AvpType::Address, bad).unwrap_err();
            assert_eq!(e.result_code(), 5014, "{bad:?}");
        }
        // Unknown family with no address bytes is still representable.
        assert_eq!(
            decode_address(&[0, 9]).unwrap(),
            Address::Other {
                family: 9,
                addr: &[]
            }
        );
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(Address::from(ip).family(), 1);
    }

    #[test]
    fn time_era_rule() {
        // NTP 0x80000000 is the start of the era-0 window (1968-01-20T03:14:08Z).
        assert_eq!(ntp_to_unix(0x8000_0000), TIME_MIN_UNIX);
        assert_eq!(TIME_MIN_UNIX, -61_505_152);
        // 2036-02-07T06:28:15Z is the last second of era 0; the next wraps to NTP 0.
        assert_eq!(ntp_to_unix(0xFFFF_FFFF), 2_085_978_495);
        assert_eq!(ntp_to_unix(0), 2_085_978_496);
        assert_eq!(unix_to_ntp(2_085_978_496), Some(0));
        assert_eq!(unix_to_ntp(2_085_978_495), Some(0xFFFF_FFFF));
        // 2104-02-26T09:42:23Z is the last representable second.
        assert_eq!(ntp_to_unix(0x7FFF_FFFF), TIME_MAX_UNIX);
        assert_eq!(TIME_MAX_UNIX, 4_233_462_143);
        assert_eq!(unix_to_ntp(TIME_MAX_UNIX + 1), None);
        assert_eq!(unix_to_ntp(TIME_MIN_UNIX - 1), None);
        // A present-day time.
        assert_eq!(unix_to_ntp(1_700_000_000), Some(3_908_988_800));
        for ntp in [0u32, 1, 0x7FFF_FFFF, 0x8000_0000, 0xDEAD_BEEF, u32::MAX] {
            assert_eq!(unix_to_ntp(ntp_to_unix(ntp)), Some(ntp));
        }
        let mut b = BytesMut::new();
        assert_eq!(
            Value::Time(i64::MAX).encode(&mut b),
            Err(ValueError::TimeRange(i64::MAX))
        );
        assert!(b.is_empty(), "nothing written on error");
    }

    #[test]
    fn check_table_matches_the_types() {
        for ty in AvpType::ALL {
            let class = CHECK[ty as usize];
            match ty.fixed_len() {
                Some(n) => assert_eq!(class as usize, n, "{ty}"),
                None => assert!(class <= ADDRESS, "{ty}"),
            }
            let is_text = matches!(Value::decode(ty, &[0xFF]), Err(ValueError::Utf8 { .. }));
            assert_eq!(class == TEXT, is_text, "{ty}");
            assert_eq!(class == ADDRESS, ty == AvpType::Address, "{ty}");
        }
    }

    #[test]
    fn word_ascii_agrees_with_std() {
        // Every length around the word and 64-byte edges, with one high byte at each place.
        for n in 0..80 {
            let clean = vec![b'a'; n];
            assert!(is_ascii(&clean), "{n}");
            for at in 0..n {
                let mut v = clean.clone();
                v[at] = 0x80;
                assert!(!is_ascii(&v), "{n} {at}");
            }
        }
    }

    #[test]
    fn is_valid_agrees_with_check() {
        let samples: [&[u8]; 9] = [
            b"",
            b"ab",
            &[0, 0, 0, 1],
            &[0, 1, 10, 0, 0, 1],
            &[0; 8],
            &[0xFF],
            "grüße".as_bytes(),
            &[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0xC3],
        ];
        for ty in AvpType::ALL {
            for data in samples {
                assert_eq!(
                    is_valid_class(check_class(ty), data),
                    Value::check(ty, data).is_ok(),
                    "{ty} {data:?}"
                );
            }
        }
    }

    #[test]
    fn variable_types_accept_empty() {
        for ty in AvpType::ALL.into_iter().filter(|t| t.fixed_len().is_none()) {
            let r = Value::decode(ty, &[]);
            assert_eq!(r.is_ok(), ty != AvpType::Address, "{ty}");
        }
    }
}
