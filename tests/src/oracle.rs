//! Comparing the product's decoder with tshark, field by field.
//!
//! For every message: the header fields; for every AVP at every depth: code, flags, vendor,
//! length and the exact bytes; and the value, decoded by `dmproto` with its dictionary type,
//! against the value tshark shows. Where the two dictionaries disagree on an AVP's type or
//! tshark does not know an AVP, the bytes are still compared and a note is recorded.

use bytes::Bytes;
use dmproto::dict::Dictionary;
use dmproto::value::Address;
use dmproto::{AvpRef, AvpRefs, AvpType, Message, Value};

use crate::tshark::{TsAvp, TsMessage};
use crate::wire::from_hex;

/// The outcome of one comparison.
#[derive(Debug, Default, Clone)]
pub struct Comparison {
    /// Disagreements: each is a bug on one side (or in this comparison).
    pub mismatches: Vec<String>,
    /// Differences of dictionary knowledge (tshark knows an AVP we do not, or types it
    /// differently): bytes were compared, the value could not be.
    pub notes: Vec<String>,
    /// AVPs compared (all depths).
    pub avps: usize,
    /// AVP values compared by their decoded value (not only by bytes).
    pub values: usize,
}

impl Comparison {
    /// Panics with every mismatch, labelled with `what`.
    pub fn assert_ok(&self, what: &str) {
        if !self.mismatches.is_empty() {
            panic!(
                "{what}: dmproto and tshark disagree:\n  {}",
                self.mismatches.join("\n  ")
            );
        }
    }
}

/// Decodes `bytes` with `dmproto::Message::decode` and the built-in dictionary and compares
/// the result with tshark's decoding `ts` of the same bytes.
pub fn compare_decode_with_tshark(bytes: &[u8], ts: &TsMessage) -> Comparison {
    let mut cmp = Comparison::default();
    let msg = match Message::decode(Bytes::copy_from_slice(bytes)) {
        Ok(m) => m,
        Err(e) => {
            cmp.mismatches
                .push(format!("dmproto refused the message: {e}"));
            return cmp;
        }
    };
    let h = &msg.header;
    let ours = (
        h.flags.0,
        h.code,
        h.app_id,
        h.hop_by_hop,
        h.end_to_end,
        h.length as usize,
    );
    let theirs = (ts.flags, ts.cmd_code, ts.app_id, ts.hbh, ts.e2e, ts.length);
    if ours != theirs {
        cmp.mismatches.push(format!(
            "header (flags, code, app, hbh, e2e, len): dmproto {ours:?} tshark {theirs:?}"
        ));
    }
    compare_avps(
        "",
        msg.avp_refs(),
        &ts.avps,
        Dictionary::builtin(),
        &mut cmp,
    );
    cmp
}

fn compare_avps(
    path: &str,
    ours: AvpRefs<'_>,
    theirs: &[TsAvp],
    dict: &Dictionary,
    cmp: &mut Comparison,
) {
    let mut n = 0usize;
    for item in ours {
        let a = match item {
            Ok(a) => a,
            Err(e) => {
                cmp.mismatches.push(format!("{path}[{n}]: dmproto: {e}"));
                return;
            }
        };
        let Some(t) = theirs.get(n) else {
            cmp.mismatches
                .push(format!("{path}[{n}]: AVP {} only seen by dmproto", a.code));
            n += 1;
            continue;
        };
        let def = dict.avp(a.code, a.vendor);
        let name = def.map_or_else(
            || format!("{}:{}", a.code, a.vendor),
            |d| d.name.to_string(),
        );
        let here = format!("{path}/{name}");
        compare_one(&here, &a, t, def.map(|d| d.ty), dict, cmp);
        n += 1;
    }
    if theirs.len() > n {
        cmp.mismatches.push(format!(
            "{path}: tshark sees {} AVPs, dmproto {n}",
            theirs.len()
        ));
    }
}

fn compare_one(
    here: &str,
    a: &AvpRef<'_>,
    t: &TsAvp,
    ty: Option<AvpType>,
    dict: &Dictionary,
    cmp: &mut Comparison,
) {
    cmp.avps += 1;
    let our_vendor = (a.flags.0 & 0x80 != 0).then_some(a.vendor);
    if (a.code, a.flags.0, our_vendor, a.raw.len()) != (t.code, t.flags, t.vendor, t.len) {
        cmp.mismatches.push(format!(
            "{here}: (code, flags, vendor, len) dmproto {:?} tshark {:?}",
            (a.code, a.flags.0, our_vendor, a.raw.len()),
            (t.code, t.flags, t.vendor, t.len)
        ));
        return;
    }
    if t.raw.get(..t.len) != Some(a.raw) {
        cmp.mismatches.push(format!("{here}: bytes differ"));
        return;
    }
    let Some(ty) = ty else {
        if let Some(n) = &t.name {
            cmp.notes.push(format!(
                "{here}: not in dmproto's dictionary; tshark calls it {n}"
            ));
        }
        return;
    };
    if ty == AvpType::Grouped {
        if t.children.is_empty() && !a.data.is_empty() {
            cmp.notes
                .push(format!("{here}: Grouped for dmproto, not for tshark"));
        } else {
            compare_avps(here, a.group(), &t.children, dict, cmp);
        }
        return;
    }
    let value = match Value::decode(ty, a.data) {
        Ok(v) => v,
        Err(e) => {
            cmp.mismatches.push(format!(
                "{here}: dmproto cannot decode its {ty:?} value: {e}"
            ));
            return;
        }
    };
    match value_matches(&value, t) {
        Some(true) => cmp.values += 1,
        Some(false) => cmp.mismatches.push(format!(
            "{here}: dmproto {value:?}, tshark {:?} {:?}",
            t.value, t.details
        )),
        None => cmp.notes.push(format!(
            "{here}: {ty:?} for dmproto; tshark shows {:?} as {:?}",
            t.name, t.value
        )),
    }
}

/// `Some(equal?)` when tshark's shown value can be read as our type, `None` when tshark
/// evidently types the AVP differently.
fn value_matches(v: &Value<'_>, t: &TsAvp) -> Option<bool> {
    let shown = t.value.as_deref();
    let int = |ours: i128| -> Option<bool> { shown?.parse::<i128>().ok().map(|x| x == ours) };
    match *v {
        Value::Unsigned32(x) => int(x.into()),
        Value::Unsigned64(x) => int(x.into()),
        Value::Integer32(x) | Value::Enumerated(x) => int(x.into()),
        Value::Integer64(x) => int(x.into()),
        Value::Float32(x) => shown?
            .parse::<f64>()
            .ok()
            .map(|y| (f64::from(x) - y).abs() <= f64::from(x).abs() * 1e-6),
        Value::Float64(x) => shown?
            .parse::<f64>()
            .ok()
            .map(|y| (x - y).abs() <= x.abs() * 1e-12),
        Value::UTF8String(s)
        | Value::DiameterIdentity(s)
        | Value::DiameterURI(s)
        | Value::IPFilterRule(s)
        | Value::QoSFilterRule(s) => text_or_hex(shown?, s.as_bytes()),
        Value::OctetString(b) => text_or_hex(shown?, b),
        Value::Address(addr) => match addr {
            Address::V4(ip) => Some(t.detail("IPv4")? == ip.to_string()),
            Address::V6(ip) => Some(t.detail("IPv6")? == ip.to_string()),
            Address::Other { .. } => None,
        },
        Value::Time(unix) => Some(same_time(shown?, unix)),
        Value::Grouped(_) => None,
    }
}

/// tshark shows OctetStrings as colon hex, and text types as text.
fn text_or_hex(shown: &str, bytes: &[u8]) -> Option<bool> {
    if shown.as_bytes() == bytes {
        return Some(true);
    }
    let looks_hex = shown.len() == bytes.len() * 3 - usize::from(!bytes.is_empty())
        && shown.bytes().all(|c| c.is_ascii_hexdigit() || c == b':');
    if looks_hex {
        return from_hex(shown).ok().map(|h| h == bytes);
    }
    Some(false)
}

/// tshark shows Time as `Nov 22, 2026 01:57:10.000000000 UTC`.
fn same_time(shown: &str, unix: i64) -> bool {
    let (y, mo, d, h, mi, s) = civil(unix);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .get(mo.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("?");
    let expected = format!("{month} {d}, {y} {h:02}:{mi:02}:{s:02}");
    let norm: Vec<&str> = shown.split_whitespace().collect();
    norm.join(" ").starts_with(&expected)
}

/// Unix seconds to (year, month, day, hour, minute, second), proleptic Gregorian, UTC.
fn civil(unix: i64) -> (i64, u32, u32, i64, i64, i64) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Compares one `dmbridge decode` JSON document (DESIGN §8) with tshark's decoding of the same
/// message: header fields, the flag letters, and each AVP's key (name, `"code"` or
/// `"code:vendor"`), position and value per DESIGN §4.
pub fn compare_json_with_tshark(doc: &serde_json::Value, ts: &TsMessage) -> Comparison {
    let mut cmp = Comparison::default();
    let int = |k: &str| doc.get(k).and_then(serde_json::Value::as_u64);
    let ours = (
        int("cmd_code"),
        int("app_id"),
        int("hop_by_hop"),
        int("end_to_end"),
    );
    let theirs = (
        Some(u64::from(ts.cmd_code)),
        Some(u64::from(ts.app_id)),
        Some(u64::from(ts.hbh)),
        Some(u64::from(ts.e2e)),
    );
    if ours != theirs {
        cmp.mismatches.push(format!(
            "header (cmd_code, app_id, hbh, e2e): json {ours:?} tshark {theirs:?}"
        ));
    }
    let letters: String = [(0x80, 'R'), (0x40, 'P'), (0x20, 'E'), (0x10, 'T')]
        .iter()
        .filter(|(bit, _)| ts.flags & bit != 0)
        .map(|(_, c)| *c)
        .collect();
    if doc.get("flags").and_then(serde_json::Value::as_str) != Some(letters.as_str()) {
        cmp.mismatches.push(format!(
            "flags: json {:?} tshark {letters:?}",
            doc.get("flags")
        ));
    }
    match doc.get("avps").and_then(serde_json::Value::as_array) {
        Some(avps) => compare_json_avps("", avps, &ts.avps, Dictionary::builtin(), &mut cmp),
        None => cmp.mismatches.push("no \"avps\" array".into()),
    }
    cmp
}

fn compare_json_avps(
    path: &str,
    ours: &[serde_json::Value],
    theirs: &[TsAvp],
    dict: &Dictionary,
    cmp: &mut Comparison,
) {
    if ours.len() != theirs.len() {
        cmp.mismatches.push(format!(
            "{path}: json has {} AVPs, tshark {}",
            ours.len(),
            theirs.len()
        ));
    }
    for (i, (entry, t)) in ours.iter().zip(theirs).enumerate() {
        let Some((key, value)) = entry
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
        else {
            cmp.mismatches
                .push(format!("{path}[{i}]: not a single-key object: {entry}"));
            continue;
        };
        let here = format!("{path}/{key}");
        cmp.avps += 1;
        // The key names the AVP: by code, code:vendor, or dictionary name.
        let by_code = key.split_once(':').map_or_else(
            || key.parse::<u32>().ok().map(|c| (c, 0)),
            |(c, v)| Some((c.parse().ok()?, v.parse().ok()?)),
        );
        let ident = by_code.or_else(|| dict.avp_by_name(key).map(|d| (d.code, d.vendor)));
        match ident {
            Some(id) if id == (t.code, t.vendor.unwrap_or(0)) => {}
            Some(id) => {
                cmp.mismatches.push(format!(
                    "{here}: key means {id:?}, tshark sees ({}, {:?})",
                    t.code, t.vendor
                ));
                continue;
            }
            None => {
                cmp.mismatches.push(format!(
                    "{here}: key is neither a code nor a dictionary name"
                ));
                continue;
            }
        }
        match json_value_matches(value, t) {
            Ok(true) => {
                if !value.is_array() {
                    cmp.values += 1;
                }
            }
            Ok(false) => cmp.mismatches.push(format!(
                "{here}: json {value}, tshark {:?} {:?}",
                t.value, t.details
            )),
            Err(note) => cmp.notes.push(format!("{here}: {note}")),
        }
        if let Some(children) = value.as_array() {
            if t.children.is_empty() {
                cmp.notes
                    .push(format!("{here}: grouped in json, not for tshark"));
            } else {
                compare_json_avps(&here, children, &t.children, dict, cmp);
            }
        }
    }
}

/// `Ok(equal?)`, or `Err(note)` when tshark's view cannot be compared with this JSON type.
fn json_value_matches(v: &serde_json::Value, t: &TsAvp) -> Result<bool, String> {
    use serde_json::Value as J;
    let shown = t.value.as_deref();
    match v {
        J::Array(_) => Ok(true),
        J::Number(n) => {
            if let Some(x) = n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
            {
                if let Some(s) = shown {
                    if let Ok(y) = s.parse::<i128>() {
                        return Ok(x == y);
                    }
                    if let Ok(unix) = i64::try_from(x) {
                        if same_time(s, unix) {
                            return Ok(true);
                        }
                    }
                }
                // Fall back to the bytes: a big-endian integer of the AVP's data length.
                let data = t.data();
                let be = data
                    .iter()
                    .fold(0i128, |acc, b| (acc << 8) | i128::from(*b));
                let signed = match data.len() {
                    4 => i128::from(i32::from_be_bytes([data[0], data[1], data[2], data[3]])),
                    8 => i128::from(i64::from_be_bytes(data.try_into().unwrap_or([0; 8]))),
                    _ => be,
                };
                Ok(x == be || x == signed)
            } else if let (Some(x), Some(s)) = (n.as_f64(), shown) {
                s.parse::<f64>()
                    .map(|y| (x - y).abs() <= x.abs() * 1e-6)
                    .map_err(|_| format!("float vs {s:?}"))
            } else {
                Err(format!("number vs {shown:?}"))
            }
        }
        J::String(s) => {
            if let Some(ip) = t.detail("IPv4").or_else(|| t.detail("IPv6")) {
                return Ok(ip == s);
            }
            Ok(t.data() == s.as_bytes())
        }
        J::Object(o) => match o.get("hex").and_then(J::as_str) {
            Some(h) => Ok(from_hex(h).ok().as_deref() == Some(t.data())),
            None => Err(format!("object value {v}")),
        },
        other => Err(format!("unexpected JSON value {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_795_312_630), (2026, 11, 22, 1, 57, 10));
        assert!(same_time(
            "Nov 22, 2026 01:57:10.000000000 UTC",
            1_795_312_630
        ));
        assert!(!same_time(
            "Nov 22, 2026 01:57:11.000000000 UTC",
            1_795_312_630
        ));
    }

    #[test]
    fn octets_as_text_or_hex() {
        assert_eq!(text_or_hex("ab", b"ab"), Some(true));
        assert_eq!(text_or_hex("00:01:ff", &[0, 1, 255]), Some(true));
        assert_eq!(text_or_hex("00:01:fe", &[0, 1, 255]), Some(false));
        assert_eq!(text_or_hex("zz", b"ab"), Some(false));
    }
}
