//! JSON -> AVP: a hand-written streaming parser that encodes each AVP into a
//! [`MessageWriter`] as soon as its value is read.
//!
//! No tree is built: the parser walks the text once, looks each key up in the dictionary,
//! reads the value the AVP's type asks for and writes the AVP (grouped AVPs through
//! `begin_group`/`end_group`, which patch lengths in place). Strings without escapes are
//! written from the input text itself; only escaped strings and hex/base64 payloads go
//! through a scratch buffer, which a [`JsonReader`] keeps between calls.
//!
//! Hostile input: recursion happens only for grouped AVPs and is bounded by
//! [`MAX_DEPTH`]; the output is bounded by the writer's `max_len`; the input size is the
//! caller's to bound. Nothing here panics; every fault is a [`JsonError`] with the path of
//! the AVP at fault.

use std::borrow::Cow;
use std::net::IpAddr;

use bytes::BytesMut;

use crate::avp::{AvpFlags, MAX_DEPTH};
use crate::dict::Dictionary;
use crate::encode::MessageWriter;
use crate::header::{Flags, Header, VERSION};
use crate::value::{unix_to_ntp, Address, Value};
use crate::AvpType;

use super::bytes_text::{decode_base64, decode_hex};
use super::error::{JsonError, JsonErrorKind as K, PathSegment};
use super::swar;
use super::time::parse_rfc3339;

type R<T> = Result<T, JsonError>;

/// A reusable JSON->AVP reader: holds the dictionary and a scratch buffer (for escaped
/// strings and hex/base64 payloads) that keeps its capacity from one message to the next.
#[derive(Debug)]
pub struct JsonReader<'d> {
    dict: &'d Dictionary,
    scratch: Vec<u8>,
}

impl<'d> JsonReader<'d> {
    /// A reader for messages of `dict`; make one per connection or worker and reuse it, so the
    /// scratch buffer is allocated once.
    pub fn new(dict: &'d Dictionary) -> JsonReader<'d> {
        JsonReader::with_scratch(dict, Vec::new())
    }

    /// A reader for messages of `dict` with a scratch buffer kept elsewhere between readers
    /// (cleared before use; [`into_scratch`](Self::into_scratch) gives it back): for a caller
    /// whose dictionary may change under it, such as libdmbridge's worker, which cannot keep
    /// the reader itself (issue 15 item 2: no allocation per reply).
    pub fn with_scratch(dict: &'d Dictionary, scratch: Vec<u8>) -> JsonReader<'d> {
        JsonReader { dict, scratch }
    }

    /// The scratch buffer, for the next [`with_scratch`](Self::with_scratch).
    pub fn into_scratch(self) -> Vec<u8> {
        self.scratch
    }

    /// Parses a §4 AVP array and appends its AVPs to `w` (at the writer's current position:
    /// a message body, or inside an open group). On error the writer may hold part of the
    /// AVPs; discard it.
    pub fn read_avps(&mut self, json: &str, w: &mut MessageWriter) -> Result<(), JsonError> {
        let mut p = Parser::new(json, self.dict, &mut self.scratch);
        p.ws();
        p.list(w, 0)?;
        p.end()
    }

    /// Parses a §8 message document and encodes the message, at most `max_len` bytes.
    pub fn read_message(&mut self, json: &str, max_len: usize) -> Result<bytes::Bytes, JsonError> {
        let mut p = Parser::new(json, self.dict, &mut self.scratch);
        p.ws();
        let buf = p.message(max_len)?;
        p.end()?;
        Ok(buf)
    }
}

/// Parses a §4 AVP array into `w` (see [`JsonReader::read_avps`]).
pub fn read_avps(json: &str, dict: &Dictionary, w: &mut MessageWriter) -> Result<(), JsonError> {
    JsonReader::new(dict).read_avps(json, w)
}

/// Parses a §8 message document (see [`JsonReader::read_message`]).
pub fn read_message(
    json: &str,
    dict: &Dictionary,
    max_len: usize,
) -> Result<bytes::Bytes, JsonError> {
    JsonReader::new(dict).read_message(json, max_len)
}

/// A JSON string as found: borrowed from the input when it has no escapes, else decoded into
/// the scratch buffer.
enum JStr<'a> {
    Src(&'a str),
    Scratch,
}

/// A JSON number: its text and, when it is an integer that fits, its magnitude.
struct Number<'a> {
    text: &'a str,
    neg: bool,
    /// `Some` for an integer (no fraction, no exponent) whose magnitude fits in a u64.
    magnitude: Option<u64>,
    /// No fraction and no exponent.
    integral: bool,
}

/// What a key resolves to.
#[derive(Clone, Copy)]
struct Target {
    code: u32,
    vendor: u32,
    flags: u8,
    /// `None` for an AVP the dictionary does not know (given by code).
    ty: Option<AvpType>,
}

struct Parser<'a, 'd, 's> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    dict: &'d Dictionary,
    scratch: &'s mut Vec<u8>,
}

fn err<T>(kind: K, offset: usize) -> R<T> {
    Err(JsonError::new(kind, offset))
}

impl<'a, 'd, 's> Parser<'a, 'd, 's> {
    fn new(src: &'a str, dict: &'d Dictionary, scratch: &'s mut Vec<u8>) -> Self {
        Parser {
            src,
            b: src.as_bytes(),
            pos: 0,
            dict,
            scratch,
        }
    }

    // ---- lexing ----

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// Consumes `c` (after whitespace) or fails with `what`.
    #[inline]
    fn expect(&mut self, c: u8, what: &'static str) -> R<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            err(K::Syntax(what), self.pos)
        }
    }

    fn end(&mut self) -> R<()> {
        self.ws();
        if self.pos == self.b.len() {
            Ok(())
        } else {
            err(K::Syntax("unexpected text after the end"), self.pos)
        }
    }

    /// Reads a string whose opening quote is at `pos`.
    fn string(&mut self) -> R<JStr<'a>> {
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        // Fast path: up to the closing quote with no escape, a word at a time while no byte
        // of the word can end or interrupt the string.
        while let Some(x) = swar::word_at(self.b, self.pos) {
            if swar::string_stop(x) {
                break;
            }
            self.pos += 8;
        }
        loop {
            match self.b.get(self.pos) {
                Some(b'"') => {
                    let s = self.src.get(start..self.pos).unwrap_or_default();
                    self.pos += 1;
                    return Ok(JStr::Src(s));
                }
                Some(b'\\') => break,
                Some(&c) if c < 0x20 => {
                    return err(K::Syntax("control character in string"), self.pos)
                }
                Some(_) => self.pos += 1,
                None => return err(K::Syntax("unterminated string"), open),
            }
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(self.b.get(start..self.pos).unwrap_or_default());
        loop {
            match self.b.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(JStr::Scratch);
                }
                Some(b'\\') => {
                    let at = self.pos;
                    self.pos += 1;
                    let c = self.peek();
                    self.pos += 1;
                    let plain = match c {
                        Some(b'"') => b'"',
                        Some(b'\\') => b'\\',
                        Some(b'/') => b'/',
                        Some(b'b') => 0x08,
                        Some(b'f') => 0x0C,
                        Some(b'n') => b'\n',
                        Some(b'r') => b'\r',
                        Some(b't') => b'\t',
                        Some(b'u') => {
                            let ch = self.unicode_escape(at)?;
                            let mut buf = [0u8; 4];
                            self.scratch
                                .extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return err(K::Syntax("invalid escape in string"), at),
                    };
                    self.scratch.push(plain);
                }
                Some(&c) if c < 0x20 => {
                    return err(K::Syntax("control character in string"), self.pos)
                }
                Some(_) => {
                    // A run of plain bytes: find its end a word at a time, copy it at once.
                    let run = self.pos;
                    self.pos += 1;
                    while let Some(x) = swar::word_at(self.b, self.pos) {
                        if swar::string_stop(x) {
                            break;
                        }
                        self.pos += 8;
                    }
                    while let Some(&c) = self.b.get(self.pos) {
                        if c == b'"' || c == b'\\' || c < 0x20 {
                            break;
                        }
                        self.pos += 1;
                    }
                    self.scratch
                        .extend_from_slice(self.b.get(run..self.pos).unwrap_or_default());
                }
                None => return err(K::Syntax("unterminated string"), open),
            }
        }
    }

    fn hex4(&mut self, at: usize) -> R<u32> {
        let digits = self
            .src
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|c| c.is_ascii_hexdigit()));
        match digits.and_then(|d| u32::from_str_radix(d, 16).ok()) {
            Some(v) => {
                self.pos += 4;
                Ok(v)
            }
            None => err(K::Syntax("invalid \\u escape"), at),
        }
    }

    /// `\uXXXX` (after the `u`), with UTF-16 surrogate pairs.
    fn unicode_escape(&mut self, at: usize) -> R<char> {
        let hi = self.hex4(at)?;
        let cp = if (0xD800..0xDC00).contains(&hi) {
            if self.b.get(self.pos..self.pos + 2) != Some(&b"\\u"[..]) {
                return err(K::Syntax("unpaired surrogate in \\u escape"), at);
            }
            self.pos += 2;
            let lo = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return err(K::Syntax("unpaired surrogate in \\u escape"), at);
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(cp)
            .ok_or_else(|| JsonError::new(K::Syntax("unpaired surrogate in \\u escape"), at))
    }

    /// The bytes of a string read by [`string`](Self::string).
    fn bytes_of<'x>(&'x self, s: &JStr<'a>) -> &'x [u8] {
        match s {
            JStr::Src(s) => s.as_bytes(),
            JStr::Scratch => self.scratch.as_slice(),
        }
    }

    /// The text of a string read by [`string`](Self::string) (escaped strings were built from
    /// valid UTF-8 and decoded escapes, so they are valid UTF-8 too).
    fn str_of(&self, s: &JStr<'a>) -> Cow<'a, str> {
        match s {
            JStr::Src(s) => Cow::Borrowed(s),
            JStr::Scratch => Cow::Owned(String::from_utf8_lossy(self.scratch).into_owned()),
        }
    }

    /// Reads a number starting at `pos` (JSON grammar, strictly).
    fn number(&mut self) -> R<Number<'a>> {
        let start = self.pos;
        let neg = self.peek() == Some(b'-');
        if neg {
            self.pos += 1;
        }
        let mut magnitude = Some(0u64);
        let digits_start = self.pos;
        while let Some(&c) = self.b.get(self.pos) {
            if !c.is_ascii_digit() {
                break;
            }
            magnitude = magnitude
                .and_then(|m| m.checked_mul(10))
                .and_then(|m| m.checked_add(u64::from(c - b'0')));
            self.pos += 1;
        }
        let ndigits = self.pos - digits_start;
        if ndigits == 0 {
            return err(K::Syntax("invalid number"), start);
        }
        if ndigits > 1 && self.b.get(digits_start) == Some(&b'0') {
            return err(K::Syntax("leading zero in number"), start);
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            integral = false;
            self.pos += 1;
            if !self.skip_digits() {
                return err(K::Syntax("invalid number"), start);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integral = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.skip_digits() {
                return err(K::Syntax("invalid number"), start);
            }
        }
        Ok(Number {
            text: self.src.get(start..self.pos).unwrap_or_default(),
            neg,
            magnitude: if integral { magnitude } else { None },
            integral,
        })
    }

    fn skip_digits(&mut self) -> bool {
        let s = self.pos;
        while let Some(c) = self.b.get(self.pos) {
            if !c.is_ascii_digit() {
                break;
            }
            self.pos += 1;
        }
        self.pos > s
    }

    // ---- AVPs ----

    /// `[ {..}, {..} ]` at nesting `depth` (0 = message body).
    fn list(&mut self, w: &mut MessageWriter, depth: usize) -> R<()> {
        self.expect(b'[', "expected '[' (an array of AVP objects)")?;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        let mut i = 0;
        loop {
            self.object(w, depth)
                .map_err(|e| e.within(PathSegment::Index(i)))?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => {
                    return err(
                        K::Syntax("expected ',' or ']' after an AVP object"),
                        self.pos,
                    )
                }
            }
            i += 1;
        }
    }

    /// `{"Key": value}`: one AVP per member (one member is the norm; several are written in
    /// text order, as `aaa_diameter` does).
    fn object(&mut self, w: &mut MessageWriter, depth: usize) -> R<()> {
        self.ws();
        if self.peek() != Some(b'{') {
            return err(K::Expected("an AVP object {\"name\": value}"), self.pos);
        }
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return err(K::Syntax("expected a string key"), self.pos);
            }
            let key_at = self.pos;
            let key = self.string()?;
            let key = self.str_of(&key);
            self.member(&key, key_at, w, depth)
                .map_err(|e| e.within(PathSegment::Key(key.into_owned())))?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return err(K::Syntax("expected ',' or '}' in AVP object"), self.pos),
            }
        }
    }

    /// `: value` for the AVP named `key`.
    fn member(&mut self, key: &str, key_at: usize, w: &mut MessageWriter, depth: usize) -> R<()> {
        let t = self.resolve(key, key_at)?;
        self.expect(b':', "expected ':' after the key")?;
        self.ws();
        let at = self.pos;
        self.value(t, w, depth)?;
        match w.error() {
            None => Ok(()),
            Some(e) => err(K::Encode(e), at),
        }
    }

    /// A key: a dictionary name, `code` or `code:vendor` (names may start with a digit,
    /// e.g. `3GPP-SIP-Method`, so the numeric forms are tried first and must be all digits).
    fn resolve(&self, key: &str, at: usize) -> R<Target> {
        let numeric = if key.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            match key.split_once(':') {
                Some((c, v)) => parse_u32(c).zip(parse_u32(v)),
                None => parse_u32(key).map(|c| (c, 0)),
            }
        } else {
            None
        };
        if let Some((code, vendor)) = numeric {
            return Ok(match self.dict.avp(code, vendor) {
                Some(d) => Target {
                    code,
                    vendor,
                    flags: d.flags.must & !AvpFlags::V,
                    ty: Some(d.ty),
                },
                None => Target {
                    code,
                    vendor,
                    flags: 0,
                    ty: None,
                },
            });
        }
        match self.dict.avp_by_name(key) {
            Some(d) => Ok(Target {
                code: d.code,
                vendor: d.vendor,
                flags: d.flags.must & !AvpFlags::V,
                ty: Some(d.ty),
            }),
            None => err(K::UnknownAvp(key.to_string()), at),
        }
    }

    fn value(&mut self, t: Target, w: &mut MessageWriter, depth: usize) -> R<()> {
        let at = self.pos;
        let (code, flags, vendor) = (t.code, t.flags, t.vendor);
        match (self.peek(), t.ty) {
            (Some(b'{'), _) => {
                self.raw_object()?;
                w.avp(code, flags, vendor, self.scratch.as_slice());
                Ok(())
            }
            (Some(b'['), Some(AvpType::Grouped) | None) => {
                if depth >= MAX_DEPTH {
                    return err(K::TooDeep, at);
                }
                w.begin_group(code, flags, vendor);
                self.list(w, depth + 1)?;
                w.end_group();
                Ok(())
            }
            (_, None) => {
                if self.peek() == Some(b'"') {
                    let s = self.string()?;
                    let bytes = self.bytes_of(&s);
                    w.avp(code, flags, vendor, bytes);
                    Ok(())
                } else {
                    err(
                        K::Expected("{\"hex\":...}, a string or an array (the dictionary does not know this AVP)"),
                        at,
                    )
                }
            }
            (_, Some(ty)) => self.typed(ty, code, flags, vendor, w),
        }
    }

    /// A value of a dictionary type other than the raw `{"hex"}` / `{"base64"}` forms.
    fn typed(
        &mut self,
        ty: AvpType,
        code: u32,
        flags: u8,
        vendor: u32,
        w: &mut MessageWriter,
    ) -> R<()> {
        let at = self.pos;
        match ty {
            AvpType::OctetString
            | AvpType::UTF8String
            | AvpType::DiameterIdentity
            | AvpType::DiameterURI
            | AvpType::IPFilterRule
            | AvpType::QoSFilterRule => {
                if self.peek() != Some(b'"') {
                    return err(K::Expected("string"), at);
                }
                let s = self.string()?;
                let bytes = self.bytes_of(&s);
                w.avp(code, flags, vendor, bytes);
            }
            // Integer types with named values in the dictionary (Result-Code's
            // DIAMETER_SUCCESS, ...) accept the names too.
            AvpType::Unsigned32 if self.peek() == Some(b'"') => {
                let v = self.enum_name(code, vendor, at)?;
                w.u32(code, flags, vendor, v as u32);
            }
            AvpType::Integer32 | AvpType::Enumerated if self.peek() == Some(b'"') => {
                let v = self.enum_name(code, vendor, at)?;
                w.i32(code, flags, vendor, v);
            }
            AvpType::Unsigned32 => {
                let v = self.int(ty, 0, u64::from(u32::MAX))?;
                w.u32(code, flags, vendor, v as u32);
            }
            AvpType::Integer32 | AvpType::Enumerated => {
                let v = self.int(ty, i64::from(i32::MIN), u64::from(i32::MAX as u32))?;
                w.i32(code, flags, vendor, v as i32);
            }
            AvpType::Unsigned64 => {
                let n = self.num(ty)?;
                match (n.neg, n.magnitude) {
                    (false, Some(m)) | (true, Some(m @ 0)) => {
                        w.u64(code, flags, vendor, m);
                    }
                    _ => return err(K::Range(ty.name()), at),
                }
            }
            AvpType::Integer64 => {
                let v = self.int(ty, i64::MIN, i64::MAX as u64)?;
                w.i64(code, flags, vendor, v);
            }
            AvpType::Time => {
                let unix = if self.peek() == Some(b'"') {
                    let s = self.string()?;
                    let text = self.str_of(&s);
                    parse_rfc3339(&text).ok_or_else(|| {
                        JsonError::new(K::Invalid(format!("{text:?} is not an RFC 3339 time")), at)
                    })?
                } else {
                    self.int(ty, i64::MIN, i64::MAX as u64)?
                };
                let ntp = unix_to_ntp(unix).ok_or_else(|| {
                    JsonError::new(
                        K::Invalid(format!(
                            "time {unix} is outside what a Time AVP can carry (1968-2104)"
                        )),
                        at,
                    )
                })?;
                w.u32(code, flags, vendor, ntp);
            }
            AvpType::Float32 => {
                let n = self.num(ty)?;
                match n.text.parse::<f32>() {
                    Ok(f) if f.is_finite() => {
                        w.avp(code, flags, vendor, &f.to_be_bytes());
                    }
                    _ => return err(K::Range(ty.name()), at),
                }
            }
            AvpType::Float64 => {
                let n = self.num(ty)?;
                match n.text.parse::<f64>() {
                    Ok(f) if f.is_finite() => {
                        w.avp(code, flags, vendor, &f.to_be_bytes());
                    }
                    _ => return err(K::Range(ty.name()), at),
                }
            }
            AvpType::Address => {
                if self.peek() != Some(b'"') {
                    return err(K::Expected("an IP address string"), at);
                }
                let s = self.string()?;
                let text = self.str_of(&s);
                let ip: IpAddr = text.parse().map_err(|_| {
                    JsonError::new(K::Invalid(format!("{text:?} is not an IP address")), at)
                })?;
                w.value(code, flags, vendor, &Value::Address(Address::from(ip)));
            }
            AvpType::Grouped => return err(K::Expected("an array of AVP objects"), at),
        }
        Ok(())
    }

    /// A string naming a value of the AVP's enumeration (the string's opening quote is at
    /// `pos`).
    fn enum_name(&mut self, code: u32, vendor: u32, at: usize) -> R<i32> {
        let s = self.string()?;
        let name = self.str_of(&s);
        let def = self.dict.avp(code, vendor);
        if def.is_some_and(|d| d.enums.is_empty()) {
            return err(K::Expected("integer"), at);
        }
        def.and_then(|d| d.enum_value(&name))
            .ok_or_else(|| JsonError::new(K::UnknownEnum(name.into_owned()), at))
    }

    /// Reads a number where type `ty` wants one.
    fn num(&mut self, ty: AvpType) -> R<Number<'a>> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => err(
                K::Expected(match ty {
                    AvpType::Float32 | AvpType::Float64 => "number",
                    AvpType::Enumerated => "integer or enumeration name",
                    AvpType::Time => "integer (Unix seconds) or RFC 3339 string",
                    _ => "integer",
                }),
                self.pos,
            ),
        }
    }

    /// Reads an integer in `min..=max` (as i64; `max` as u64 so that the Integer64 maximum
    /// fits the same code).
    fn int(&mut self, ty: AvpType, min: i64, max: u64) -> R<i64> {
        let at = self.pos;
        let n = self.num(ty)?;
        if !n.integral {
            return err(K::Expected("integer"), at);
        }
        let Some(m) = n.magnitude else {
            return err(K::Range(ty.name()), at);
        };
        if n.neg {
            // -m >= min  <=>  m <= -min (as u64)
            if m > min.unsigned_abs() {
                return err(K::Range(ty.name()), at);
            }
            Ok(0i64.wrapping_sub_unsigned(m))
        } else if m > max {
            err(K::Range(ty.name()), at)
        } else {
            Ok(m as i64)
        }
    }

    /// `{"hex":"..."}` or `{"base64":"..."}`: the payload bytes, left in the scratch buffer.
    fn raw_object(&mut self) -> R<()> {
        let at = self.pos;
        self.pos += 1; // '{'
        self.ws();
        if self.peek() != Some(b'"') {
            return err(K::Expected("{\"hex\":\"...\"} or {\"base64\":\"...\"}"), at);
        }
        let kind = match self.string()? {
            JStr::Src("hex") => b'h',
            JStr::Src("base64") => b'b',
            _ => return err(K::Expected("{\"hex\":\"...\"} or {\"base64\":\"...\"}"), at),
        };
        self.expect(b':', "expected ':' after the key")?;
        self.ws();
        let text_at = self.pos;
        if self.peek() != Some(b'"') {
            return err(K::Expected("string"), text_at);
        }
        // Hex and base64 need no escapes; take the raw text (an escape is a bad digit).
        let s = match self.string()? {
            JStr::Src(s) => s,
            JStr::Scratch => return err(K::Invalid("escape in hex/base64 text".into()), text_at),
        };
        self.scratch.clear();
        let r = if kind == b'h' {
            decode_hex(s.as_bytes(), self.scratch)
        } else {
            decode_base64(s.as_bytes(), self.scratch)
        };
        if let Err(i) = r {
            let what = if kind == b'h' { "hex" } else { "base64" };
            return err(
                K::Invalid(format!("invalid {what} at character {i}")),
                text_at + 1 + i,
            );
        }
        self.expect(b'}', "expected '}' after the hex/base64 string")
    }

    // ---- messages (DESIGN §8) ----

    fn message(&mut self, max_len: usize) -> R<bytes::Bytes> {
        if self.peek() != Some(b'{') {
            return err(
                K::Expected("a message object {\"cmd_code\":..., \"avps\":[...]}"),
                self.pos,
            );
        }
        self.pos += 1;
        // The header's fields may come after "avps": written with a placeholder header that
        // `set_header` replaces once the object is read.
        let mut w =
            MessageWriter::with_buffer(BytesMut::with_capacity(256), Header::request(0, 0, 0, 0))
                .max_len(max_len);
        let mut code = None;
        let mut app = None;
        let mut flags = None;
        let mut hbh = None;
        let mut e2e = None;
        let mut avps = false;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                self.ws();
                if self.peek() != Some(b'"') {
                    return err(K::Syntax("expected a string key"), self.pos);
                }
                let key_at = self.pos;
                let key = self.string()?;
                let key = self.str_of(&key).into_owned();
                self.expect(b':', "expected ':' after the key")?;
                self.ws();
                let within = |e: JsonError| e.within(PathSegment::Key(key.clone()));
                let seen = match key.as_str() {
                    "cmd_code" => code.replace(self.header_int(0xFF_FFFF).map_err(within)?).is_some(),
                    "app_id" => app.replace(self.header_int(u32::MAX).map_err(within)?).is_some(),
                    "hop_by_hop" => hbh.replace(self.header_int(u32::MAX).map_err(within)?).is_some(),
                    "end_to_end" => e2e.replace(self.header_int(u32::MAX).map_err(within)?).is_some(),
                    "flags" => flags.replace(self.header_flags().map_err(within)?).is_some(),
                    "avps" => {
                        self.list(&mut w, 0).map_err(within)?;
                        if let Some(e) = w.error() {
                            return Err(within(JsonError::new(K::Encode(e), self.pos)));
                        }
                        std::mem::replace(&mut avps, true)
                    }
                    _ => {
                        return err(K::Invalid(format!("unknown member {key:?} (expected cmd_code, app_id, flags, hop_by_hop, end_to_end, avps)")), key_at)
                    }
                };
                if seen {
                    return err(K::Invalid(format!("duplicate member {key:?}")), key_at);
                }
                self.ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return err(K::Syntax("expected ',' or '}' in message object"), self.pos),
                }
            }
        }
        let missing =
            |m: &str| JsonError::new(K::Invalid(format!("missing member {m:?}")), self.pos);
        let header = Header {
            version: VERSION,
            length: 0,
            flags: flags.ok_or_else(|| missing("flags"))?,
            code: code.ok_or_else(|| missing("cmd_code"))?,
            app_id: app.ok_or_else(|| missing("app_id"))?,
            hop_by_hop: hbh.unwrap_or(0),
            end_to_end: e2e.unwrap_or(0),
        };
        // "avps" may be omitted: a message without AVPs.
        w.set_header(header);
        w.finish()
            .map_err(|e| JsonError::new(K::Encode(e), self.pos))
    }

    fn header_int(&mut self, max: u32) -> R<u32> {
        let at = self.pos;
        let n = match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number()?,
            _ => return err(K::Expected("integer"), at),
        };
        match (n.neg, n.magnitude) {
            (false, Some(m)) if m <= u64::from(max) => Ok(m as u32),
            _ if !n.integral => err(K::Expected("integer"), at),
            _ => err(
                K::Invalid(format!("{} is out of range (0..={max})", n.text)),
                at,
            ),
        }
    }

    fn header_flags(&mut self) -> R<Flags> {
        let at = self.pos;
        if self.peek() != Some(b'"') {
            return err(K::Expected("a string of flag letters from \"RPET\""), at);
        }
        let s = self.string()?;
        let text = self.str_of(&s);
        text.parse::<Flags>()
            .map_err(|e| JsonError::new(K::Invalid(e.to_string()), at))
    }
}

/// A decimal u32 with digits only (no sign, no spaces).
fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
