//! Request templates: a DESIGN §8 message JSON compiled once into a byte program that renders
//! a fresh request per send with a few `memcpy`s.
//!
//! The bench shares the machine with the server under test, so the per-request cost must be
//! close to copying the bytes. The template is therefore encoded once (with the placeholder
//! text still in it), and then compiled: every AVP subtree without a placeholder becomes one
//! [`Op::Copy`] of already-encoded bytes (adjacent ones merged), a string AVP holding
//! placeholders becomes an [`Op::Field`] whose literal pieces are copied and whose
//! placeholders are formatted in place, and a Grouped AVP enclosing such a field becomes an
//! [`Op::Open`]/[`Op::Close`] pair so that its length can be patched after its children are
//! written. A template without placeholders is a single copy. The header's hop-by-hop and
//! end-to-end ids are patched in place.
//!
//! Placeholders, in string values only: `{{counter}}` (the request's sequence number in the
//! run, from 0), `{{random}}` (a pseudo-random 32-bit number), `{{session}}` (a fresh
//! Session-Id `<origin-host>;<high 32 bits>;<low 32 bits>`, RFC 6733 §8.8) and `{{conn}}`
//! (the connection's index). Any other `{{name}}` is an error at load time, so a typo never
//! goes out on the wire as literal text.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use dmproto::avp::{padded, MAX_DEPTH};
use dmproto::dict::Dictionary;
use dmproto::header::HEADER_LEN;
use dmproto::{AvpRefs, AvpType, Message};
use serde_json::{json, Value as Json};

/// AVP codes the bench fills in when a template leaves them out.
pub mod code {
    pub use dmproto::avp_code::{
        DESTINATION_HOST, DESTINATION_REALM, ORIGIN_HOST, ORIGIN_REALM, SESSION_ID,
    };
}

/// Where the bench stands and whom it addresses: the values filled into a template that
/// omits them, and the Origin-Host inside `{{session}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub origin_host: String,
    pub origin_realm: String,
    pub destination_realm: String,
    pub destination_host: Option<String>,
    /// High 32 bits of generated Session-Ids (RFC 6733 suggests the start time).
    pub session_high: u32,
}

/// Per-request values of the placeholders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subst {
    pub counter: u64,
    pub random: u32,
    pub conn: u32,
}

/// A template that could not be loaded; the message names the JSON path or AVP at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

/// One placeholder kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Counter,
    Random,
    Session,
    Conn,
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "counter" => Var::Counter,
            "random" => Var::Random,
            "session" => Var::Session,
            "conn" => Var::Conn,
            _ => return None,
        })
    }
}

/// A piece of a string value: literal bytes of the encoded template, or a placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Lit { start: u32, end: u32 },
    Var(Var),
}

/// One step of the render program; offsets index [`Template::bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Copy encoded bytes (whole AVPs with their padding).
    Copy {
        start: u32,
        end: u32,
    },
    /// Write a Grouped AVP's header; its length is patched at the matching `Close`.
    Open {
        start: u32,
        hdr_len: u8,
    },
    Close,
    /// A string AVP with placeholders: header (length patched), parts, padding.
    Field {
        start: u32,
        hdr_len: u8,
        parts_start: u32,
        parts_end: u32,
    },
}

/// A compiled request template. See the module docs.
#[derive(Clone, Debug)]
pub struct Template {
    /// The template encoded once, placeholders as literal text; the header comes first.
    bytes: Bytes,
    ops: Vec<Op>,
    parts: Vec<Part>,
    origin_host: Box<[u8]>,
    session_high: u32,
    app_id: u32,
}

/// Largest template accepted (the encoded form): requests of a load test are small, and a
/// bound keeps every 24-bit length patch in range even with substitutions.
pub const MAX_TEMPLATE_LEN: usize = 1 << 20;

impl Template {
    /// Fills what the template omits (module docs), encodes it with `dict` and compiles it.
    pub fn compile(
        msg: &Json,
        id: &Identity,
        dict: &Dictionary,
    ) -> Result<Template, TemplateError> {
        let filled = fill(msg, id, dict)?;
        let bytes = encode(&filled, dict)?;
        let m = Message::decode(bytes.clone())
            .map_err(|e| TemplateError(format!("encoded template does not decode: {e}")))?;
        if !m.is_request() {
            return err("$.flags: a request template needs the R flag");
        }
        let mut c = Compiler {
            dict,
            ops: Vec::new(),
            parts: Vec::new(),
        };
        c.list(m.avp_refs(), 0)?;
        Ok(Template {
            app_id: m.header.app_id,
            bytes,
            ops: c.ops,
            parts: c.parts,
            origin_host: id.origin_host.as_bytes().into(),
            session_high: id.session_high,
        })
    }

    pub fn app_id(&self) -> u32 {
        self.app_id
    }

    /// The payload of the first top-level AVP with this code and vendor (as encoded, with
    /// placeholders unexpanded).
    pub fn top_level_data(&self, code: u32, vendor: u32) -> Option<Vec<u8>> {
        let m = Message::decode(self.bytes.clone()).ok()?;
        m.find_ref(code, vendor).map(|a| a.data.to_vec())
    }

    /// True when every request is the same bytes apart from the header ids.
    pub fn is_static(&self) -> bool {
        self.ops.iter().all(|op| matches!(op, Op::Copy { .. }))
    }

    /// Appends one request to `out` with these ids and placeholder values. Never fails: the
    /// program was checked at compile time, and lengths stay in range (bounded template,
    /// bounded substitutions).
    pub fn write(&self, out: &mut BytesMut, hop_by_hop: u32, end_to_end: u32, s: &Subst) {
        let bytes = &self.bytes[..];
        let msg = out.len();
        out.reserve(bytes.len() + 64);
        out.put_slice(bytes.get(..HEADER_LEN).unwrap_or_default());
        let mut open = [0usize; MAX_DEPTH + 1];
        let mut depth = 0usize;
        for op in &self.ops {
            match *op {
                Op::Copy { start, end } => {
                    out.put_slice(bytes.get(start as usize..end as usize).unwrap_or_default())
                }
                Op::Open { start, hdr_len } => {
                    if let Some(slot) = open.get_mut(depth) {
                        *slot = out.len();
                        depth += 1;
                    }
                    let s = start as usize;
                    out.put_slice(bytes.get(s..s + hdr_len as usize).unwrap_or_default());
                }
                Op::Close => {
                    depth = depth.saturating_sub(1);
                    let at = open.get(depth).copied().unwrap_or(msg);
                    let len = out.len() - at;
                    patch24(out, at + 5, len);
                }
                Op::Field {
                    start,
                    hdr_len,
                    parts_start,
                    parts_end,
                } => {
                    let at = out.len();
                    let s0 = start as usize;
                    out.put_slice(bytes.get(s0..s0 + hdr_len as usize).unwrap_or_default());
                    let parts = self
                        .parts
                        .get(parts_start as usize..parts_end as usize)
                        .unwrap_or_default();
                    for part in parts {
                        match *part {
                            Part::Lit { start, end } => out.put_slice(
                                bytes.get(start as usize..end as usize).unwrap_or_default(),
                            ),
                            Part::Var(v) => self.put_var(out, v, s),
                        }
                    }
                    let len = out.len() - at;
                    patch24(out, at + 5, len);
                    out.put_bytes(0, padded(len) - len);
                }
            }
        }
        let len = out.len() - msg;
        patch24(out, msg + 1, len);
        if let Some(ids) = out.get_mut(msg + 12..msg + 20) {
            ids[..4].copy_from_slice(&hop_by_hop.to_be_bytes());
            ids[4..].copy_from_slice(&end_to_end.to_be_bytes());
        }
    }

    fn put_var(&self, out: &mut BytesMut, v: Var, s: &Subst) {
        match v {
            Var::Counter => put_decimal(out, s.counter),
            Var::Random => put_decimal(out, u64::from(s.random)),
            Var::Conn => put_decimal(out, u64::from(s.conn)),
            Var::Session => {
                // <DiameterIdentity>;<high 32 bits>;<low 32 bits>: the counter's upper half
                // carries into the high part, so ids stay unique past 2^32 requests.
                out.put_slice(&self.origin_host);
                out.put_u8(b';');
                let high = self.session_high.wrapping_add((s.counter >> 32) as u32);
                put_decimal(out, u64::from(high));
                out.put_u8(b';');
                put_decimal(out, s.counter & 0xFFFF_FFFF);
            }
        }
    }
}

/// Encodes a (filled) message JSON with proto's §8 reader, within [`MAX_TEMPLATE_LEN`].
fn encode(msg: &Json, dict: &Dictionary) -> Result<Bytes, TemplateError> {
    dmproto::json::read_message(&msg.to_string(), dict, MAX_TEMPLATE_LEN)
        .map_err(|e| TemplateError(format!("$: {e}")))
}

/// Writes the low 24 bits of `len` at `at..at+3` (a Message or AVP Length field).
fn patch24(out: &mut BytesMut, at: usize, len: usize) {
    if let Some(f) = out.get_mut(at..at + 3) {
        f.copy_from_slice(&(len as u32).to_be_bytes()[1..]);
    }
}

/// Decimal formatting without `fmt` (this runs for every placeholder of every request).
pub fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.put_slice(buf.get(i..).unwrap_or_default());
}

struct Compiler<'d> {
    dict: &'d Dictionary,
    ops: Vec<Op>,
    parts: Vec<Part>,
}

impl Compiler<'_> {
    fn copy(&mut self, start: usize, end: usize) {
        if let Some(Op::Copy { end: prev_end, .. }) = self.ops.last_mut() {
            if *prev_end as usize == start {
                *prev_end = end as u32;
                return;
            }
        }
        self.ops.push(Op::Copy {
            start: start as u32,
            end: end as u32,
        });
    }

    /// Compiles a list of AVPs; `limit` (0 for the top level) caps the padded end of the
    /// last AVP of a group that came without padding.
    fn list(&mut self, avps: AvpRefs<'_>, limit: usize) -> Result<(), TemplateError> {
        for a in avps {
            let a = a.map_err(|e| TemplateError(format!("encoded template: {e}")))?;
            let start = a.offset;
            let mut end = start + padded(a.raw.len());
            if limit != 0 {
                end = end.min(limit);
            }
            let hdr_len = a.header_len() as u8;
            if find_placeholder(a.data).is_none() {
                self.copy(start, end);
                continue;
            }
            let ty = self.dict.avp(a.code, a.vendor).map(|d| d.ty);
            match ty {
                Some(AvpType::Grouped) => {
                    self.ops.push(Op::Open {
                        start: start as u32,
                        hdr_len,
                    });
                    self.list(a.group(), start + a.raw.len())?;
                    self.ops.push(Op::Close);
                    // A group's length includes its children's padding: it needs none itself.
                }
                None
                | Some(
                    AvpType::OctetString
                    | AvpType::UTF8String
                    | AvpType::DiameterIdentity
                    | AvpType::DiameterURI
                    | AvpType::IPFilterRule
                    | AvpType::QoSFilterRule,
                ) => {
                    let data_at = start + hdr_len as usize;
                    let parts_start = self.parts.len() as u32;
                    self.field_parts(a.data, data_at, a.code, a.vendor)?;
                    self.ops.push(Op::Field {
                        start: start as u32,
                        hdr_len,
                        parts_start,
                        parts_end: self.parts.len() as u32,
                    });
                }
                // Binary payloads cannot hold placeholders (they came from numbers); the
                // braces are a coincidence of the bytes.
                Some(_) => self.copy(start, end),
            }
        }
        Ok(())
    }

    fn field_parts(
        &mut self,
        data: &[u8],
        at: usize,
        code: u32,
        vendor: u32,
    ) -> Result<(), TemplateError> {
        let mut pos = 0;
        while let Some((open, close, name)) = find_placeholder(data.get(pos..).unwrap_or_default())
        {
            let Some(var) = Var::parse(name) else {
                let avp = match self.dict.avp(code, vendor) {
                    Some(d) => d.name.to_string(),
                    None if vendor == 0 => code.to_string(),
                    None => format!("{code}:{vendor}"),
                };
                return err(format!(
                    "AVP {avp}: unknown placeholder {{{{{name}}}}} (known: counter, random, session, conn)"
                ));
            };
            if open > 0 {
                self.parts.push(Part::Lit {
                    start: (at + pos) as u32,
                    end: (at + pos + open) as u32,
                });
            }
            self.parts.push(Part::Var(var));
            pos += close;
        }
        if pos < data.len() {
            self.parts.push(Part::Lit {
                start: (at + pos) as u32,
                end: (at + data.len()) as u32,
            });
        }
        Ok(())
    }
}

/// The first `{{name}}` in `data` with `name` made of `[a-z_]`: (offset of `{{`, offset just
/// past `}}`, name).
fn find_placeholder(data: &[u8]) -> Option<(usize, usize, &str)> {
    let mut from = 0;
    while let Some(i) = data
        .get(from..)?
        .windows(2)
        .position(|w| w == b"{{")
        .map(|i| from + i)
    {
        let rest = data.get(i + 2..)?;
        let n = rest
            .iter()
            .take_while(|c| c.is_ascii_lowercase() || **c == b'_')
            .count();
        if n > 0 && rest.get(n..n + 2) == Some(b"}}") {
            let name = std::str::from_utf8(rest.get(..n)?).ok()?;
            return Some((i, i + 2 + n + 2, name));
        }
        from = i + 1;
    }
    None
}

/// The top-level key of a single-key AVP object, if it names `code` (by dictionary name,
/// `"code"` or `"code:0"`).
fn names_code(dict: &Dictionary, item: &Json, code: u32) -> bool {
    let Some((key, _)) = item.as_object().and_then(|o| o.iter().next()) else {
        return false;
    };
    if let Some(d) = dict.avp_by_name(key) {
        return d.code == code && d.vendor == 0;
    }
    let key = key.strip_suffix(":0").unwrap_or(key);
    key.parse::<u32>().ok() == Some(code)
}

/// The template with Session-Id (first, as `{{session}}`), Origin-Host, Origin-Realm,
/// Destination-Realm and (if configured) Destination-Host added where it lacks them, and a
/// default `flags` ("R", plus "P" when the dictionary says the command is proxiable or does
/// not know it).
fn fill(msg: &Json, id: &Identity, dict: &Dictionary) -> Result<Json, TemplateError> {
    let mut msg = msg.clone();
    let Some(obj) = msg.as_object_mut() else {
        return err("$: a template is a JSON object {\"cmd_code\":..,\"app_id\":..,\"avps\":[..]}");
    };
    let cmd = obj.get("cmd_code").and_then(Json::as_u64);
    let app = obj.get("app_id").and_then(Json::as_u64).unwrap_or(0);
    let Some(cmd) = cmd.and_then(|c| u32::try_from(c).ok()) else {
        return err("$.cmd_code: missing or not an unsigned integer");
    };
    let def = u32::try_from(app)
        .ok()
        .and_then(|a| dict.command_exact(a, cmd).or_else(|| dict.command(a, cmd)));
    if !obj.contains_key("flags") {
        let proxiable = !matches!(def, Some(d) if !d.proxiable);
        obj.insert("flags".into(), json!(if proxiable { "RP" } else { "R" }));
    }
    let avps = obj.entry("avps").or_insert_with(|| json!([]));
    let Some(avps) = avps.as_array_mut() else {
        return err("$.avps: expected an array");
    };
    let has = |avps: &[Json], code: u32| avps.iter().any(|a| names_code(dict, a, code));
    // Session-Id for commands whose ABNF has it, and for commands the dictionary does not
    // know (most application requests are session-based; test_app's are).
    let wants_session = match def {
        Some(d) => d
            .request
            .rules
            .iter()
            .any(|r| r.code == code::SESSION_ID && r.vendor == 0),
        None => true,
    };
    let mut front = Vec::new();
    if wants_session && !has(avps, code::SESSION_ID) {
        front.push(json!({"Session-Id": "{{session}}"}));
    }
    if !has(avps, code::ORIGIN_HOST) {
        front.push(json!({"Origin-Host": id.origin_host}));
    }
    if !has(avps, code::ORIGIN_REALM) {
        front.push(json!({"Origin-Realm": id.origin_realm}));
    }
    if !has(avps, code::DESTINATION_REALM) {
        front.push(json!({"Destination-Realm": id.destination_realm}));
    }
    if let Some(h) = &id.destination_host {
        if !has(avps, code::DESTINATION_HOST) {
            front.push(json!({"Destination-Host": h}));
        }
    }
    // The Session-Id must stay first (RFC 6733 §8.8): insert the filled AVPs after it when
    // the template has one at the front.
    let at = usize::from(
        avps.first()
            .is_some_and(|a| names_code(dict, a, code::SESSION_ID)),
    );
    avps.splice(at..at, front);
    Ok(msg)
}

#[cfg(test)]
mod tests;
