//! A small stand-in for proto's message-JSON encoder (DESIGN §4 and §8), used only until
//! `dmproto::json` lands; the template compiler needs nothing from it but "JSON message in,
//! encoded bytes out", so swapping it is a one-line change in `template.rs`.
//!
//! It covers what request templates use: names from the dictionary, `"code"` and
//! `"code:vendor"` keys, integers, strings, `{"hex":..}`, addresses, grouped arrays and
//! enumerated values by name. Errors name the JSON path at fault.

use bytes::Bytes;
use dmproto::dict::Dictionary;
use dmproto::{AvpType, Flags, Header, MessageWriter, Value};
use serde_json::Value as Json;

/// Encodes a DESIGN §8 message object. `hop_by_hop`/`end_to_end` default to 0.
pub fn encode_message(dict: &Dictionary, msg: &Json) -> Result<Bytes, String> {
    let obj = msg.as_object().ok_or("$: expected a JSON object")?;
    let num = |k: &str| -> Result<u32, String> {
        match obj.get(k) {
            None => Ok(0),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("$.{k}: expected an unsigned 32-bit integer")),
        }
    };
    let cmd_code = match obj.get("cmd_code") {
        Some(_) => num("cmd_code")?,
        None => return Err("$.cmd_code: missing".into()),
    };
    if cmd_code > 0x00FF_FFFF {
        return Err("$.cmd_code: larger than 24 bits".into());
    }
    let flags: Flags = match obj.get("flags") {
        None => Flags(Flags::R),
        Some(Json::String(s)) => s
            .parse()
            .map_err(|_| format!("$.flags: bad flag letters {s:?} (R, P, E, T)"))?,
        Some(_) => return Err("$.flags: expected a string".into()),
    };
    let mut header = Header::request(
        cmd_code,
        num("app_id")?,
        num("hop_by_hop")?,
        num("end_to_end")?,
    );
    header.flags = flags;
    let avps = match obj.get("avps") {
        None => &[][..],
        Some(Json::Array(a)) => a.as_slice(),
        Some(_) => return Err("$.avps: expected an array".into()),
    };
    let mut w = MessageWriter::new(header);
    write_avps(dict, &mut w, avps, "$.avps", 0)?;
    w.finish().map_err(|e| format!("$.avps: {e}"))
}

fn write_avps(
    dict: &Dictionary,
    w: &mut MessageWriter,
    avps: &[Json],
    path: &str,
    depth: usize,
) -> Result<(), String> {
    if depth > dmproto::avp::MAX_DEPTH {
        return Err(format!("{path}: nested too deeply"));
    }
    for (i, item) in avps.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let (key, value) = match item.as_object() {
            Some(o) if o.len() == 1 => o.iter().next().ok_or("unreachable")?,
            _ => return Err(format!("{path}: expected an object with one key")),
        };
        let path = format!("{path}.{key}");
        let (code, vendor, ty, flags) = resolve(dict, key).ok_or_else(|| {
            format!("{path}: unknown AVP name (use \"code\" or \"code:vendor\" for AVPs not in the dictionary)")
        })?;
        write_avp(dict, w, code, vendor, ty, flags, value, &path, depth)?;
    }
    Ok(())
}

/// (code, vendor, type, flags to set) for a key; `None` type means "not in the dictionary".
fn resolve(dict: &Dictionary, key: &str) -> Option<(u32, u32, Option<AvpType>, u8)> {
    if let Some(d) = dict.avp_by_name(key) {
        return Some((d.code, d.vendor, Some(d.ty), d.flags.must));
    }
    let (code, vendor) = match key.split_once(':') {
        Some((c, v)) => (c.parse().ok()?, v.parse().ok()?),
        None => (key.parse().ok()?, 0),
    };
    match dict.avp(code, vendor) {
        Some(d) => Some((code, vendor, Some(d.ty), d.flags.must)),
        None => Some((code, vendor, None, 0)),
    }
}

#[allow(clippy::too_many_arguments)]
fn write_avp(
    dict: &Dictionary,
    w: &mut MessageWriter,
    code: u32,
    vendor: u32,
    ty: Option<AvpType>,
    flags: u8,
    value: &Json,
    path: &str,
    depth: usize,
) -> Result<(), String> {
    let bad = |what: &str| format!("{path}: expected {what}");
    if let Some(h) = value.as_object().and_then(|o| o.get("hex")) {
        let s = h.as_str().ok_or_else(|| bad("a hex string"))?;
        let bytes = hex(s).ok_or_else(|| bad("an even number of hex digits"))?;
        w.avp(code, flags, vendor, &bytes);
        return Ok(());
    }
    let Some(ty) = ty else {
        // Unknown AVP: text is taken as its bytes, anything else needs {"hex":..}.
        let s = value
            .as_str()
            .ok_or_else(|| bad("a string or {\"hex\":..} for an AVP not in the dictionary"))?;
        w.avp(code, flags, vendor, s.as_bytes());
        return Ok(());
    };
    let int = || value.as_i64().ok_or_else(|| bad("an integer"));
    let uint = || value.as_u64().ok_or_else(|| bad("an unsigned integer"));
    let range = |_| bad("an integer in the type's range");
    let v = match ty {
        AvpType::Grouped => {
            let kids = value.as_array().ok_or_else(|| bad("an array"))?;
            w.begin_group(code, flags, vendor);
            write_avps(dict, w, kids, path, depth + 1)?;
            w.end_group();
            return Ok(());
        }
        AvpType::Integer32 => Value::Integer32(i32::try_from(int()?).map_err(range)?),
        AvpType::Integer64 => Value::Integer64(int()?),
        AvpType::Unsigned32 => Value::Unsigned32(u32::try_from(uint()?).map_err(range)?),
        AvpType::Unsigned64 => Value::Unsigned64(uint()?),
        AvpType::Float32 => Value::Float32(value.as_f64().ok_or_else(|| bad("a number"))? as f32),
        AvpType::Float64 => Value::Float64(value.as_f64().ok_or_else(|| bad("a number"))?),
        AvpType::Time => Value::Time(int()?),
        AvpType::Enumerated => match value {
            Json::String(s) => Value::Enumerated(
                dict.avp(code, vendor)
                    .and_then(|d| d.enum_value(s))
                    .ok_or_else(|| bad("a known enumeration name"))?,
            ),
            _ => Value::Enumerated(i32::try_from(int()?).map_err(range)?),
        },
        AvpType::Address => {
            let s = value.as_str().ok_or_else(|| bad("an IP address string"))?;
            let ip: std::net::IpAddr = s.parse().map_err(|_| bad("an IP address"))?;
            Value::Address(ip.into())
        }
        AvpType::OctetString
        | AvpType::UTF8String
        | AvpType::DiameterIdentity
        | AvpType::DiameterURI
        | AvpType::IPFilterRule
        | AvpType::QoSFilterRule => {
            let s = value.as_str().ok_or_else(|| bad("a string"))?;
            w.avp(code, flags, vendor, s.as_bytes());
            return Ok(());
        }
    };
    w.value(code, flags, vendor, &v);
    match w.error() {
        Some(e) => Err(format!("{path}: {e}")),
        None => Ok(()),
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() & 1 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    b.chunks(2)
        .map(|p| match p {
            [h, l] => Some((digit(*h)? * 16 + digit(*l)?) as u8),
            _ => None,
        })
        .collect()
}
