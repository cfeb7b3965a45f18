//! AVP -> JSON: written straight into a `String`, one pass over the AVPs, no intermediate
//! tree and no allocation beyond the output's own growth.
//!
//! The only failure is a structural fault in the top-level AVP list (which validation
//! rejects before this is called on the hot path); everything inside an AVP is shown, never
//! refused: a payload that does not decode as its dictionary type, or a grouped payload that
//! does not parse as AVPs (or nests deeper than [`crate::avp::MAX_DEPTH`]), becomes
//! `{"hex":"..."}`. A grouped AVP is written speculatively and rewound to its hex form on
//! such a fault, which costs nothing when the payload is fine.

use std::fmt::Write as _;

use crate::avp::{AvpRef, AvpRefs};
use crate::dict::{AvpDef, Dictionary};
use crate::error::AvpError;
use crate::value::{Address, Value};
use crate::AvpType;

use super::bytes_text::push_hex;
use super::swar;

/// Appends the AVPs of `avps` (a message body or a grouped payload) to `out` as a JSON array
/// (DESIGN §4). On a structural fault in the list itself `out` is restored to its length
/// before the call and the fault (with its byte offset in the message) is returned.
pub fn write_avps(out: &mut String, avps: AvpRefs<'_>, dict: &Dictionary) -> Result<(), AvpError> {
    let start = out.len();
    let r = write_list(out, avps, dict);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// [`write_avps`] into a new `String`.
pub fn avps_to_string(avps: AvpRefs<'_>, dict: &Dictionary) -> Result<String, AvpError> {
    let mut s = String::with_capacity(avps.remaining().len() * 2 + 16);
    write_avps(&mut s, avps, dict)?;
    Ok(s)
}

fn write_list(out: &mut String, avps: AvpRefs<'_>, dict: &Dictionary) -> Result<(), AvpError> {
    out.push('[');
    let mut first = true;
    for a in avps {
        let a = a?;
        if !first {
            out.push(',');
        }
        first = false;
        write_avp(out, &a, dict);
    }
    out.push(']');
    Ok(())
}

/// Writes `{"key":value}` for one AVP.
fn write_avp(out: &mut String, a: &AvpRef<'_>, dict: &Dictionary) {
    out.push_str("{\"");
    let def = dict.avp(a.code, a.vendor);
    match def {
        Some(d) => {
            push_escaped_str(out, &d.name);
        }
        None => push_code_key(out, a.code, a.vendor),
    }
    out.push_str("\":");
    match def {
        Some(d) => write_value(out, a, d, dict),
        None => push_hex_object(out, a.data),
    }
    out.push('}');
}

/// `code` or `code:vendor`: the key of an AVP the dictionary does not know.
pub(crate) fn push_code_key(out: &mut String, code: u32, vendor: u32) {
    out.push_str(itoa::Buffer::new().format(code));
    if vendor != 0 {
        out.push(':');
        out.push_str(itoa::Buffer::new().format(vendor));
    }
}

fn push_hex_object(out: &mut String, data: &[u8]) {
    out.push_str("{\"hex\":\"");
    push_hex(out, data);
    out.push_str("\"}");
}

fn write_value(out: &mut String, a: &AvpRef<'_>, def: &AvpDef, dict: &Dictionary) {
    if def.ty == AvpType::Grouped {
        let mark = out.len();
        if write_list(out, a.group(), dict).is_err() {
            out.truncate(mark);
            push_hex_object(out, a.data);
        }
        return;
    }
    let Ok(v) = Value::decode(def.ty, a.data) else {
        push_hex_object(out, a.data);
        return;
    };
    match v {
        Value::OctetString(b) => {
            let mark = out.len();
            let shown = std::str::from_utf8(b).is_ok_and(|s| {
                out.push('"');
                push_escaped(out, s, true)
            });
            if shown {
                out.push('"');
            } else {
                out.truncate(mark);
                push_hex_object(out, b);
            }
        }
        Value::UTF8String(s)
        | Value::DiameterIdentity(s)
        | Value::DiameterURI(s)
        | Value::IPFilterRule(s)
        | Value::QoSFilterRule(s) => {
            out.push('"');
            push_escaped_str(out, s);
            out.push('"');
        }
        Value::Integer32(n) | Value::Enumerated(n) => out.push_str(itoa::Buffer::new().format(n)),
        Value::Integer64(n) | Value::Time(n) => out.push_str(itoa::Buffer::new().format(n)),
        Value::Unsigned32(n) => out.push_str(itoa::Buffer::new().format(n)),
        Value::Unsigned64(n) => out.push_str(itoa::Buffer::new().format(n)),
        Value::Float32(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Value::Float64(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        // NaN and infinities have no JSON number: their exact bits, which read back unchanged.
        Value::Float32(_) | Value::Float64(_) => push_hex_object(out, a.data),
        Value::Address(Address::V4(ip)) => {
            let _ = write!(out, "\"{ip}\"");
        }
        Value::Address(Address::V6(ip)) => {
            let _ = write!(out, "\"{ip}\"");
        }
        // Other families (E.164, ...): the whole payload, family number included.
        Value::Address(Address::Other { .. }) => push_hex_object(out, a.data),
        Value::Grouped(_) => push_hex_object(out, a.data),
    }
}

/// What each byte needs when written inside a JSON string: 0 = copied as is; 1 = copied as
/// is in text, but looked at by the OctetString "is this text?" test (DEL, and 0xC2, the lead
/// byte of the C1 controls U+0080..U+009F); else the escape letter (`n`, `"`, ...) or `u`
/// for `\u00XX`. Other bytes >= 0x80 are 0: UTF-8 is copied through.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0A] = b'n';
    t[0x0C] = b'f';
    t[0x0D] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[0x7F] = 1;
    t[0xC2] = 1;
    t
};

/// Writes `s` JSON-escaped (without the quotes).
#[inline]
pub(crate) fn push_escaped_str(out: &mut String, s: &str) {
    push_escaped(out, s, false);
}

/// Writes `s` JSON-escaped (without quotes). With `octets`, returns false as soon as `s`
/// holds a control character other than TAB, LF, CR (C0, DEL, or C1 U+0080..U+009F): such an
/// OctetString is binary and is shown as hex instead (the caller rewinds). TAB, LF and CR are
/// allowed so that XML and other text payloads (Sh/Cx User-Data) stay readable.
///
/// Words of 8 bytes with nothing to escape are skipped whole (see [`super::swar`]); runs of
/// plain bytes are copied with one `push_str`.
fn push_escaped(out: &mut String, s: &str, octets: bool) -> bool {
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    loop {
        while let Some(x) = swar::word_at(bytes, i) {
            let mut stop =
                swar::has_less(x, 0x20) | swar::has_byte(x, b'"') | swar::has_byte(x, b'\\');
            if octets {
                stop |= swar::has_del_or_high(x);
            }
            if stop != 0 {
                break;
            }
            i += 8;
        }
        // Byte by byte through the word that stopped the fast loop (or the tail).
        let end = (i + 8).min(bytes.len());
        while i < end {
            let b = bytes.get(i).copied().unwrap_or(0);
            let e = ESCAPE[usize::from(b)];
            if e == 0 {
                i += 1;
                continue;
            }
            if e == 1 {
                if octets {
                    let c1 = b == 0xC2 && bytes.get(i + 1).is_some_and(|&n| n < 0xA0);
                    if b == 0x7F || c1 {
                        return false;
                    }
                }
                i += 1;
                continue;
            }
            if octets && matches!(e, b'u' | b'b' | b'f') {
                return false;
            }
            out.push_str(s.get(run..i).unwrap_or_default());
            out.push('\\');
            if e == b'u' {
                out.push_str("u00");
                out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
                out.push(char::from(HEX_DIGITS[usize::from(b & 0xF)]));
            } else {
                out.push(char::from(e));
            }
            i += 1;
            run = i;
        }
        if i >= bytes.len() {
            break;
        }
    }
    out.push_str(s.get(run..).unwrap_or_default());
    true
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends a message as the DESIGN §8 document
/// `{"cmd_code":272,"app_id":4,"flags":"RP","hop_by_hop":1,"end_to_end":2,"avps":[...]}`.
/// On a structural fault in the body, `out` is restored and the fault returned.
pub fn write_message(
    out: &mut String,
    msg: &crate::Message,
    dict: &Dictionary,
) -> Result<(), AvpError> {
    let start = out.len();
    let h = &msg.header;
    out.push_str("{\"cmd_code\":");
    out.push_str(itoa::Buffer::new().format(h.code));
    out.push_str(",\"app_id\":");
    out.push_str(itoa::Buffer::new().format(h.app_id));
    out.push_str(",\"flags\":\"");
    let _ = write!(out, "{}", h.flags);
    out.push_str("\",\"hop_by_hop\":");
    out.push_str(itoa::Buffer::new().format(h.hop_by_hop));
    out.push_str(",\"end_to_end\":");
    out.push_str(itoa::Buffer::new().format(h.end_to_end));
    out.push_str(",\"avps\":");
    if let Err(e) = write_list(out, msg.avp_refs(), dict) {
        out.truncate(start);
        return Err(e);
    }
    out.push('}');
    Ok(())
}
