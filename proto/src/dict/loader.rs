//! The dictionary file format: OpenSIPS `aaa_diameter` dictionaries, plus a few extensions.
//!
//! OpenSIPS users bring their `extra-avps-file` unchanged, so the syntax is exactly theirs
//! (read from `modules/aaa_diameter/app_opensips/avps.c`). Line by line; `#` starts a comment:
//!
//! ```text
//! VENDOR 10415 TGPP
//! ATTRIBUTE Public-Identity 601 string 10415      # name code [type [vendor]]
//! ATTRIBUTE 3GPP-SIP-Auth-Data-Item 612 grouped 10415
//! {
//!     3GPP-SIP-Item-Number | OPTIONAL | 1          # AVP | FIXED_HEAD|REQUIRED|OPTIONAL | max
//!     3GPP-SIP-Authenticate | OPTIONAL | 1
//! }
//! APPLICATION-AUTH 16777216/10415 3GPP Cx          # APPLICATION[-AUTH|-ACC] id[/vendor] name
//! REQUEST 303 Multimedia-Auth-Request
//! {
//!     Session-Id | FIXED_HEAD | 1
//!     Public-Identity | REQUIRED | 1
//! }
//! ANSWER 303 Multimedia-Auth-Answer
//! { ... }
//! ```
//!
//! What the OpenSIPS syntax means here, as in OpenSIPS:
//! - Types are matched like OpenSIPS does (case-insensitive, by prefix): `string`/`utf8string`
//!   (OctetString / UTF8String), `hex`/`hexstring` (OctetString, binary), `ip*` (Address),
//!   `time*` (Time), `unsigned`/`unsigned32`, `unsigned64`, `integer`/`integer32`,
//!   `integer64`, `float`/`float32`, `float64`, `grouped`; no type means `string`. The RFC
//!   6733 names (`OctetString`, `Enumerated`, `DiameterIdentity`, `DiameterURI`,
//!   `IPFilterRule`, `QoSFilterRule`, `Address`, `Time`, ...) are accepted too.
//! - An AVP with a vendor gets the V bit; every AVP gets the M bit (unless a flag word says
//!   otherwise, below).
//! - Max: `-1` is unbounded, `0` forbids the AVP, `N` at most N. `FIXED_HEAD` and `REQUIRED`
//!   need at least one occurrence, `OPTIONAL` none.
//! - A block may be wrapped in `{` `}` lines or end at the first blank line (both as in
//!   OpenSIPS). Sub-AVPs must be defined somewhere in the same file or in an earlier one
//!   (OpenSIPS needs them earlier in the file; forward references are accepted here).
//! - `APPLICATION` without `-AUTH`/`-ACC` is an accounting application (OpenSIPS's rule).
//! - `REQUEST`/`ANSWER` belong to the application declared last before them in the same file
//!   (the base protocol, id 0, if none); a name like `My-Custom-Request` (or `Multimedia-Auth
//!   Request`) gives the command name `My-Custom`. Each REQUEST needs its ANSWER.
//!
//! Extensions (all optional; OpenSIPS ignores unknown lines, so files that use them on
//! separate lines still load there):
//! - `VALUE <avp-name> <value-name> <number>` (FreeRADIUS style): a named value of an
//!   Enumerated (or Integer32/Unsigned32) AVP, e.g. `VALUE Subscription-Id-Type END_USER_E164 0`.
//! - `ALIAS <avp-name> <other-name>`: another name that resolves to the AVP on input (the
//!   AVP keeps showing its own name), e.g. `ALIAS User-Data Cx-User-Data`.
//! - Flag words after the vendor on an ATTRIBUTE line: `M` (M bit must be set, the default),
//!   `M?` (may), `!M` (must not). For an IETF AVP with flag words write vendor `0`.
//! - `NAMES freediameter`: from this file on, output (JSON keys, tools) uses the names of
//!   freeDiameter's dictionaries, as OpenSIPS aaa_diameter scripts see them (see
//!   [`super::freediameter`]); input accepts both namings either way.
//! - `COMMAND <code> <request-abbr> <answer-abbr> [not-proxiable]`: the abbreviations scripts
//!   see as event names (`E_DM_PPR`) and whether the P bit is set (it is by default, as in
//!   OpenSIPS), for the command of the current application. Commands without one have no
//!   abbreviation (the event is then `E_DM_<code>`).
//! - In a block, `AVP | OPTIONAL | -1` states the ABNF's `*[ AVP ]`: other AVPs are allowed.
//!   That is the default (freeDiameter under OpenSIPS never rejects unlisted AVPs); a block
//!   opened with `{ closed` allows only the AVPs it lists.
//! - Max may also be `*` (unbounded) or `min*max` / `min*` as in ABNF (`2*5`, `1*`).
//! - Keywords are case-insensitive; `FIXED` is accepted for `FIXED_HEAD`.
//!
//! Re-declaring what is already defined (a user file repeating built-in AVPs, as OpenSIPS
//! files do) is accepted when compatible: same wire format (all string-like types are one
//! format; Integer32/Unsigned32/Enumerated/Time another), and then the later name becomes the
//! AVP's display name with the earlier one kept as an alias; the earlier type, flags and values
//! stay; sub-AVP or command rules not yet listed are added. An incompatible re-declaration
//! (another wire format, grouped vs. not, or a name already used for another code within one
//! file) is an error.

use super::{Dictionary, Origin};
use crate::dict::model::*;
use crate::AvpType;
use rustc_hash::{FxHashMap, FxHashSet};
use std::fmt;

/// A dictionary file error, shown as `file:line: what`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DictError {
    /// File name (or the origin given to [`Dictionary::load_str`]).
    pub origin: String,
    /// 1-based line; 0 when the error is about the whole file (it could not be read).
    pub line: usize,
    /// What is wrong on that line.
    pub kind: DictErrorKind,
}

/// What went wrong in a dictionary file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DictErrorKind {
    /// The file could not be read.
    Io(String),
    /// A line that starts with no known keyword.
    UnknownKeyword(String),
    /// An ATTRIBUTE type that is not a Diameter or OpenSIPS type name.
    UnknownType(String),
    /// A number that is missing, not decimal, or out of range.
    BadNumber {
        /// Which number the line needed (e.g. "AVP code", "vendor id").
        what: &'static str,
        /// The text found in its place.
        text: String,
    },
    /// Malformed line.
    Syntax(String),
    /// A block or VALUE names an AVP no dictionary defines.
    UndefinedAvp(String),
    /// A definition that contradicts an earlier one.
    Conflict(String),
    /// A `{` block that never closes.
    Unterminated {
        /// The 1-based line of the opening `{`, which is where the fix belongs.
        opened: usize,
    },
}

impl fmt::Display for DictErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DictErrorKind::Io(e) => write!(f, "cannot read: {e}"),
            DictErrorKind::UnknownKeyword(k) => write!(
                f,
                "unknown keyword '{k}' (expected VENDOR, ATTRIBUTE, VALUE, ALIAS, NAMES, APPLICATION, \
                 REQUEST, ANSWER or COMMAND)"
            ),
            DictErrorKind::UnknownType(t) => write!(f, "unknown AVP type '{t}'"),
            DictErrorKind::BadNumber { what, text } => write!(f, "bad {what} '{text}'"),
            DictErrorKind::Syntax(s) => f.write_str(s),
            DictErrorKind::UndefinedAvp(n) => write!(f, "undefined AVP '{n}'"),
            DictErrorKind::Conflict(s) => f.write_str(s),
            DictErrorKind::Unterminated { opened } => {
                write!(f, "block opened at line {opened} is never closed with '}}'")
            }
        }
    }
}

impl fmt::Display for DictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.origin, self.line, self.kind)
    }
}

impl std::error::Error for DictError {}

// ---------------------------------------------------------------------------------------
// Parsing: text -> items (no dictionary needed yet, so forward references are possible).
// ---------------------------------------------------------------------------------------

/// One rule line of a block, names unresolved.
#[derive(Debug)]
struct PRule {
    line: usize,
    name: String,
    kind: RuleKind,
    min: u32,
    max: Option<u32>,
}

#[derive(Debug, Default)]
struct PBlock {
    rules: Vec<PRule>,
    /// `{ closed`: only the listed AVPs are allowed.
    closed: bool,
}

#[derive(Debug)]
struct PAvp {
    file: u32,
    line: usize,
    name: String,
    code: u32,
    vendor: u32,
    ty: AvpType,
    /// Explicit flag words given (extension); `None` = defaults.
    flags: Option<FlagRule>,
    body: Option<PBlock>,
}

#[derive(Debug)]
struct PCmd {
    file: u32,
    line: usize,
    app_id: u32,
    code: u32,
    is_request: bool,
    /// Name without the -Request/-Answer suffix.
    base: String,
    /// Name as written.
    full: String,
    body: PBlock,
}

#[derive(Debug)]
struct PInfo {
    file: u32,
    line: usize,
    app_id: u32,
    code: u32,
    req_abbr: String,
    ans_abbr: String,
    proxiable: bool,
}

#[derive(Debug)]
struct PAlias {
    file: u32,
    line: usize,
    name: String,
    alias: String,
}

#[derive(Debug)]
struct PValue {
    file: u32,
    line: usize,
    avp: String,
    name: String,
    value: i32,
}

/// A parsed file, ready to apply to a dictionary.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// File names; items refer to them by index, so several files can be applied as one.
    origins: Vec<Box<str>>,
    vendors: Vec<(usize, VendorDef)>,
    apps: Vec<(usize, AppDef)>,
    avps: Vec<PAvp>,
    values: Vec<PValue>,
    aliases: Vec<PAlias>,
    commands: Vec<PCmd>,
    infos: Vec<PInfo>,
    /// `NAMES freediameter`: show freeDiameter's names from now on.
    pub(crate) freediameter_names: bool,
}

struct Ctx<'a> {
    origin: &'a str,
}

impl Ctx<'_> {
    fn err(&self, line: usize, kind: DictErrorKind) -> DictError {
        DictError {
            origin: self.origin.to_string(),
            line,
            kind,
        }
    }
    fn syntax(&self, line: usize, msg: impl Into<String>) -> DictError {
        self.err(line, DictErrorKind::Syntax(msg.into()))
    }
    fn num(&self, line: usize, what: &'static str, text: &str) -> DictError {
        self.err(
            line,
            DictErrorKind::BadNumber {
                what,
                text: text.to_string(),
            },
        )
    }
}

/// Strips a `#` comment (at the start or after white space) and surrounding white space.
fn clean(line: &str) -> &str {
    let mut cut = line.len();
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes.get(i - 1).is_some_and(|c| c.is_ascii_whitespace())) {
            cut = i;
            break;
        }
    }
    line.get(..cut).unwrap_or(line).trim()
}

/// Splits off the first white-space separated word.
fn word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Decimal u32 as OpenSIPS's `parse_uint` accepts it (no sign).
fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

const KEYWORDS: &[&str] = &[
    "VENDOR",
    "ATTRIBUTE",
    "VALUE",
    "ALIAS",
    "NAMES",
    "APPLICATION",
    "APPLICATION-AUTH",
    "APPLICATION-ACC",
    "REQUEST",
    "ANSWER",
    "COMMAND",
];

fn is_keyword(w: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w))
}

/// The AVP type for an ATTRIBUTE type word: the RFC names first, then OpenSIPS's prefix rules.
fn parse_type(w: &str) -> Option<AvpType> {
    if let Ok(t) = w.parse::<AvpType>() {
        return Some(t);
    }
    let l = w.to_ascii_lowercase();
    let t = if l.starts_with("ip") {
        AvpType::Address
    } else if l.starts_with("hex") {
        AvpType::OctetString
    } else if l.starts_with("time") {
        AvpType::Time
    } else if l.starts_with("utf8string") {
        AvpType::UTF8String
    } else if l.starts_with("string") {
        AvpType::OctetString
    } else if l.starts_with("unsigned64") {
        AvpType::Unsigned64
    } else if l.starts_with("unsigned") {
        AvpType::Unsigned32
    } else if l.starts_with("integer64") {
        AvpType::Integer64
    } else if l.starts_with("integer") {
        AvpType::Integer32
    } else if l.starts_with("float64") {
        AvpType::Float64
    } else if l.starts_with("float") {
        AvpType::Float32
    } else if l.starts_with("grouped") {
        AvpType::Grouped
    } else {
        return None;
    };
    Some(t)
}

/// Strips a "-Request"/" Request"/"Request" style suffix (case-insensitive).
fn strip_suffix<'a>(name: &'a str, suffix: &str) -> &'a str {
    let n = name.len();
    let s = suffix.len();
    if n > s && name.is_char_boundary(n - s) && name[n - s..].eq_ignore_ascii_case(suffix) {
        let base = name[..n - s].trim_end_matches(['-', ' ', '_', '\t']);
        if !base.is_empty() {
            return base;
        }
    }
    name
}

/// Text lines with 1-based numbers, comments stripped. The flag tells a truly blank line
/// (which ends a brace-less block, as in OpenSIPS) from a comment-only one.
struct Lines<'a> {
    inner: std::iter::Peekable<std::iter::Enumerate<std::str::Lines<'a>>>,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Option<(usize, &'a str, bool)> {
        self.inner
            .next()
            .map(|(i, l)| (i + 1, clean(l), l.trim().is_empty()))
    }
    fn peek(&mut self) -> Option<(usize, &'a str, bool)> {
        self.inner
            .peek()
            .map(|&(i, l)| (i + 1, clean(l), l.trim().is_empty()))
    }
}

pub(crate) fn parse(text: &str, origin: &str) -> Result<Parsed, DictError> {
    let cx = Ctx { origin };
    let mut lines = Lines {
        inner: text.lines().enumerate().peekable(),
    };
    let mut out = Parsed {
        origins: vec![origin.into()],
        ..Parsed::default()
    };
    let mut app_id = 0u32;

    while let Some((ln, line, _)) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let (kw, rest) = word(line);
        let kw_up = kw.to_ascii_uppercase();
        match kw_up.as_str() {
            "VENDOR" => {
                let (id, name) = word(rest);
                let id = parse_u32(id).ok_or_else(|| cx.num(ln, "vendor id", id))?;
                if name.is_empty() {
                    return Err(cx.syntax(ln, "VENDOR needs a name: VENDOR <id> <name>"));
                }
                out.vendors.push((
                    ln,
                    VendorDef {
                        id,
                        name: name.into(),
                    },
                ));
            }
            "ATTRIBUTE" => {
                let avp = parse_attribute(&cx, ln, rest, &mut lines)?;
                out.avps.push(avp);
            }
            "VALUE" => {
                let (avp, r) = word(rest);
                let (name, r) = word(r);
                let (num, r) = word(r);
                if avp.is_empty() || name.is_empty() || num.is_empty() || !r.is_empty() {
                    return Err(cx.syntax(ln, "expected VALUE <avp-name> <value-name> <number>"));
                }
                let value: i32 = if let Ok(v) = num.parse::<i32>() {
                    v
                } else {
                    return Err(cx.num(ln, "enumerated value", num));
                };
                out.values.push(PValue {
                    file: 0,
                    line: ln,
                    avp: avp.into(),
                    name: name.into(),
                    value,
                });
            }
            "NAMES" => {
                if !rest.eq_ignore_ascii_case("freediameter") {
                    return Err(cx.syntax(
                        ln,
                        "expected NAMES freediameter (output freeDiameter's AVP names)",
                    ));
                }
                out.freediameter_names = true;
            }
            "ALIAS" => {
                let (name, r) = word(rest);
                let (alias, r) = word(r);
                if name.is_empty() || alias.is_empty() || !r.is_empty() {
                    return Err(cx.syntax(ln, "expected ALIAS <avp-name> <other-name>"));
                }
                out.aliases.push(PAlias {
                    file: 0,
                    line: ln,
                    name: name.into(),
                    alias: alias.into(),
                });
            }
            k if k.starts_with("APPLICATION") => {
                let mut r = rest;
                let mut suffix = &k["APPLICATION".len()..];
                if suffix.is_empty() {
                    // OpenSIPS allows "APPLICATION -AUTH".
                    let (w, r2) = word(rest);
                    if w.eq_ignore_ascii_case("-AUTH") || w.eq_ignore_ascii_case("-ACC") {
                        suffix = if w.eq_ignore_ascii_case("-AUTH") {
                            "-AUTH"
                        } else {
                            "-ACC"
                        };
                        r = r2;
                    }
                }
                let kind = match suffix {
                    "-AUTH" => AppKind::Auth,
                    "-ACC" | "" => AppKind::Acct,
                    _ => return Err(cx.err(ln, DictErrorKind::UnknownKeyword(kw.into()))),
                };
                let (id_part, r) = split_app_id(r);
                let (id_s, vendor_s) = match id_part.split_once('/') {
                    Some((a, b)) => (a.trim(), Some(b.trim())),
                    None => (id_part, None),
                };
                let id = parse_u32(id_s).ok_or_else(|| cx.num(ln, "application id", id_s))?;
                let vendor = match vendor_s {
                    Some(v) => parse_u32(v).ok_or_else(|| cx.num(ln, "vendor id", v))?,
                    None => 0,
                };
                if r.is_empty() {
                    return Err(cx.syntax(ln, "APPLICATION needs a name"));
                }
                app_id = id;
                out.apps.push((
                    ln,
                    AppDef {
                        id,
                        vendor,
                        name: r.into(),
                        kind,
                    },
                ));
            }
            "REQUEST" | "ANSWER" => {
                let is_request = kw_up == "REQUEST";
                let (code_s, name) = word(rest);
                let code = parse_u32(code_s)
                    .filter(|&c| c <= 0x00ff_ffff)
                    .ok_or_else(|| cx.num(ln, "command code", code_s))?;
                if name.is_empty() {
                    return Err(cx.syntax(ln, format!("{kw_up} needs a command name")));
                }
                let base = strip_suffix(name, if is_request { "Request" } else { "Answer" });
                let body = parse_block(&cx, ln, &mut lines)?;
                out.commands.push(PCmd {
                    file: 0,
                    line: ln,
                    app_id,
                    code,
                    is_request,
                    base: base.into(),
                    full: name.into(),
                    body,
                });
            }
            "COMMAND" => {
                let (code_s, r) = word(rest);
                let code = parse_u32(code_s)
                    .filter(|&c| c <= 0x00ff_ffff)
                    .ok_or_else(|| cx.num(ln, "command code", code_s))?;
                let (req, r) = word(r);
                let (ans, r) = word(r);
                let (px, r) = word(r);
                if req.is_empty() || ans.is_empty() || !r.is_empty() {
                    return Err(cx.syntax(
                        ln,
                        "expected COMMAND <code> <request-abbr> <answer-abbr> [not-proxiable]",
                    ));
                }
                let proxiable = match px.to_ascii_lowercase().as_str() {
                    "" | "proxiable" => true,
                    "not-proxiable" => false,
                    _ => {
                        return Err(cx.syntax(
                            ln,
                            format!("unknown COMMAND option '{px}' (expected not-proxiable)"),
                        ))
                    }
                };
                for a in [req, ans] {
                    if a.len() > 16 || !a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                        return Err(cx.syntax(
                            ln,
                            format!("abbreviation '{a}' must be 1-16 letters, digits or '_'"),
                        ));
                    }
                }
                out.infos.push(PInfo {
                    file: 0,
                    line: ln,
                    app_id,
                    code,
                    req_abbr: req.into(),
                    ans_abbr: ans.into(),
                    proxiable,
                });
            }
            _ if line.starts_with('{') || line.starts_with('}') || line.contains('|') => {
                return Err(cx.syntax(
                    ln,
                    "AVP rule or brace outside an ATTRIBUTE ... grouped, REQUEST or ANSWER block",
                ));
            }
            _ => return Err(cx.err(ln, DictErrorKind::UnknownKeyword(kw.into()))),
        }
    }
    Ok(out)
}

/// Splits "16777216/10415 3GPP Cx" or "16777216 / 10415 3GPP Cx" into the id part and the name.
fn split_app_id(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let digits_end = |t: &str| t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let a = digits_end(s);
    let after = s[a..].trim_start();
    if let Some(v) = after.strip_prefix('/') {
        let v = v.trim_start();
        let b = digits_end(v);
        let consumed = s.len() - v.len() + b;
        let name = v[b..].trim();
        // The id part is everything consumed, spaces around '/' included.
        return (s[..consumed].trim(), name);
    }
    // Not "id/vendor": the id is the first word.
    word(s)
}

fn parse_attribute(
    cx: &Ctx<'_>,
    ln: usize,
    rest: &str,
    lines: &mut Lines<'_>,
) -> Result<PAvp, DictError> {
    let (name, r) = word(rest);
    if name.is_empty() {
        return Err(cx.syntax(ln, "expected ATTRIBUTE <name> <code> [type [vendor]]"));
    }
    let (code_s, r) = word(r);
    let code = parse_u32(code_s)
        .filter(|&c| c != 0)
        .ok_or_else(|| cx.num(ln, "AVP code", code_s))?;
    let (ty_s, mut r) = word(r);
    let ty = if ty_s.is_empty() {
        AvpType::OctetString
    } else {
        parse_type(ty_s).ok_or_else(|| cx.err(ln, DictErrorKind::UnknownType(ty_s.into())))?
    };
    let mut vendor = 0;
    let (v, r2) = word(r);
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        vendor = parse_u32(v).ok_or_else(|| cx.num(ln, "vendor id", v))?;
        r = r2;
    }
    let mut m_rule: Option<(bool, bool)> = None; // (must, must_not)
    while !r.is_empty() {
        let (w, r2) = word(r);
        r = r2;
        m_rule = Some(match w {
            "M" | "m" => (true, false),
            "M?" | "m?" => (false, false),
            "!M" | "!m" | "-M" | "-m" => (false, true),
            _ if w.starts_with('-') || w.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(cx.num(ln, "vendor id", w))
            }
            _ => {
                return Err(cx.syntax(
                    ln,
                    format!("unexpected '{w}' after the type (expected a vendor id or M, M?, !M)"),
                ))
            }
        });
    }
    let mut flags = default_flags(vendor);
    if let Some((must, must_not)) = m_rule {
        flags.must &= !avp_flags::M;
        if must {
            flags.must |= avp_flags::M;
        }
        if must_not {
            flags.must_not |= avp_flags::M;
        }
    }
    let body = if ty == AvpType::Grouped {
        Some(parse_block(cx, ln, lines)?)
    } else {
        None
    };
    Ok(PAvp {
        file: 0,
        line: ln,
        name: name.into(),
        code,
        vendor,
        ty,
        flags: m_rule.map(|_| flags),
        body,
    })
}

/// The flag rule OpenSIPS gives every AVP: M set, V set exactly when there is a vendor.
pub(crate) fn default_flags(vendor: u32) -> FlagRule {
    if vendor != 0 {
        FlagRule {
            must: avp_flags::M | avp_flags::V,
            must_not: 0,
        }
    } else {
        FlagRule {
            must: avp_flags::M,
            must_not: avp_flags::V,
        }
    }
}

/// Parses the block after an ATTRIBUTE ... grouped / REQUEST / ANSWER line.
fn parse_block(cx: &Ctx<'_>, opener: usize, lines: &mut Lines<'_>) -> Result<PBlock, DictError> {
    let mut block = PBlock::default();
    // Comment lines between the opener and its '{' are skipped.
    while matches!(lines.peek(), Some((_, "", false))) {
        lines.next();
    }
    if let Some((ln, l, _)) = lines.peek().filter(|(_, l, _)| l.starts_with('{')) {
        lines.next();
        let after = l[1..].trim();
        if after.eq_ignore_ascii_case("closed") {
            block.closed = true;
        } else if after.contains('|') {
            block.rules.push(parse_rule(cx, ln, after)?);
        } else if !after.is_empty() {
            return Err(cx.syntax(ln, format!("unexpected '{after}' after '{{'")));
        }
        loop {
            let Some((ln, l, _)) = lines.next() else {
                return Err(cx.err(opener, DictErrorKind::Unterminated { opened: opener }));
            };
            if l.is_empty() {
                continue;
            }
            if let Some(after) = l.strip_prefix('}') {
                if !after.trim().is_empty() {
                    return Err(cx.syntax(ln, "unexpected text after '}'"));
                }
                return Ok(block);
            }
            let (w, _) = word(l);
            if is_keyword(w) && !l.contains('|') {
                return Err(cx.err(opener, DictErrorKind::Unterminated { opened: opener }));
            }
            block.rules.push(parse_rule(cx, ln, l)?);
        }
    }
    // OpenSIPS's brace-less form: rule lines up to a blank line or a '}' line.
    while let Some((ln, l, blank)) = lines.peek() {
        if blank {
            lines.next();
            break;
        }
        if l.is_empty() {
            lines.next(); // comment
            continue;
        }
        if let Some(after) = l.strip_prefix('}') {
            lines.next();
            if !after.trim().is_empty() {
                return Err(cx.syntax(ln, "unexpected text after '}'"));
            }
            break;
        }
        let (w, _) = word(l);
        if is_keyword(w) && !l.contains('|') {
            break;
        }
        lines.next();
        block.rules.push(parse_rule(cx, ln, l)?);
    }
    Ok(block)
}

/// `Name | REQUIRED | 1`
fn parse_rule(cx: &Ctx<'_>, ln: usize, l: &str) -> Result<PRule, DictError> {
    let mut parts = l.split('|').map(str::trim);
    let name = parts.next().unwrap_or("");
    let pos = parts.next().unwrap_or("");
    let count = parts.next();
    if parts.next().is_some()
        || name.is_empty()
        || name.contains(|c: char| c.is_ascii_whitespace())
        || pos.is_empty()
    {
        return Err(cx.syntax(
            ln,
            format!("expected '<AVP> | FIXED_HEAD|REQUIRED|OPTIONAL | <max>', got '{l}'"),
        ));
    }
    let kind = match pos.to_ascii_uppercase().as_str() {
        "FIXED_HEAD" | "FIXED" => RuleKind::Fixed,
        "REQUIRED" => RuleKind::Required,
        "OPTIONAL" => RuleKind::Optional,
        _ => {
            return Err(cx.syntax(
                ln,
                format!("bad position '{pos}' (expected FIXED_HEAD, REQUIRED or OPTIONAL)"),
            ))
        }
    };
    let default_min = if kind == RuleKind::Optional { 0 } else { 1 };
    let (min, max) = match count.unwrap_or("1") {
        "" => (default_min, Some(1)),
        "-1" | "*" => (default_min, None),
        c => {
            if let Some((a, b)) = c.split_once('*') {
                let min = if a.is_empty() {
                    default_min
                } else {
                    parse_u32(a).ok_or_else(|| cx.num(ln, "minimum count", a))?
                };
                let max = if b.is_empty() {
                    None
                } else {
                    Some(parse_u32(b).ok_or_else(|| cx.num(ln, "maximum count", b))?)
                };
                (min, max)
            } else {
                let max = parse_u32(c).ok_or_else(|| cx.num(ln, "maximum count", c))?;
                (default_min, Some(max))
            }
        }
    };
    if let Some(m) = max {
        if min > m {
            return Err(cx.syntax(ln, format!("{name}: minimum {min} is above maximum {m}")));
        }
    }
    Ok(PRule {
        line: ln,
        name: name.into(),
        kind,
        min,
        max,
    })
}

// ---------------------------------------------------------------------------------------
// Applying: items -> dictionary, resolving names and checking conflicts.
// ---------------------------------------------------------------------------------------

/// Whether two AVP types put the same bytes on the wire (all string-like types and Address
/// are octets; Integer32, Unsigned32, Enumerated and Time are 4 bytes; ...): what decides
/// whether a re-declaration, or another dictionary's definition, is compatible.
pub fn same_wire_format(a: AvpType, b: AvpType) -> bool {
    wire_class(a) == wire_class(b)
}

/// The wire format family, for deciding whether a re-declaration is compatible.
fn wire_class(t: AvpType) -> u8 {
    match t {
        AvpType::OctetString
        | AvpType::UTF8String
        | AvpType::DiameterIdentity
        | AvpType::DiameterURI
        | AvpType::IPFilterRule
        | AvpType::QoSFilterRule
        | AvpType::Address => 0,
        AvpType::Integer32 | AvpType::Unsigned32 | AvpType::Enumerated | AvpType::Time => 1,
        AvpType::Integer64 | AvpType::Unsigned64 => 2,
        AvpType::Float32 => 3,
        AvpType::Float64 => 4,
        AvpType::Grouped => 5,
    }
}

impl Parsed {
    /// Appends another parsed file, so that several files resolve names as one (the built-in
    /// files refer to each other's AVPs in both directions).
    pub(crate) fn append(&mut self, mut other: Parsed) {
        let off = self.origins.len() as u32;
        self.origins.append(&mut other.origins);
        self.vendors.append(&mut other.vendors);
        self.apps.append(&mut other.apps);
        self.avps.extend(other.avps.into_iter().map(|mut a| {
            a.file += off;
            a
        }));
        self.values.extend(other.values.into_iter().map(|mut v| {
            v.file += off;
            v
        }));
        self.aliases.extend(other.aliases.into_iter().map(|mut a| {
            a.file += off;
            a
        }));
        self.commands
            .extend(other.commands.into_iter().map(|mut c| {
                c.file += off;
                c
            }));
        self.infos.extend(other.infos.into_iter().map(|mut c| {
            c.file += off;
            c
        }));
        self.freediameter_names |= other.freediameter_names;
    }
}

/// Error construction for the apply phase, where items come from several files.
struct Files<'a>(&'a [Box<str>]);

impl Files<'_> {
    fn name(&self, file: u32) -> &str {
        self.0.get(file as usize).map(|s| &**s).unwrap_or("?")
    }
    fn err(&self, file: u32, line: usize, kind: DictErrorKind) -> DictError {
        DictError {
            origin: self.name(file).to_string(),
            line,
            kind,
        }
    }
    fn syntax(&self, file: u32, line: usize, msg: impl Into<String>) -> DictError {
        self.err(file, line, DictErrorKind::Syntax(msg.into()))
    }
    fn conflict(&self, file: u32, line: usize, msg: impl Into<String>) -> DictError {
        self.err(file, line, DictErrorKind::Conflict(msg.into()))
    }
    fn origin(&self, file: u32, line: usize) -> Origin {
        Origin {
            file: self.name(file).into(),
            line,
        }
    }
}

/// Applies parsed files to `dict`. Not atomic by itself: callers apply to a copy.
pub(crate) fn apply(dict: &mut Dictionary, p: Parsed) -> Result<(), DictError> {
    let fx = Files(&p.origins);

    for (_, v) in &p.vendors {
        dict.insert_vendor(v.clone());
    }
    for (_, a) in &p.apps {
        dict.insert_app(a.clone());
    }

    // AVPs. Names bound by this load: name -> (index, file, line).
    let mut bound_here: FxHashMap<&str, (usize, u32, usize)> = FxHashMap::default();
    let mut created_here: FxHashSet<usize> = FxHashSet::default();
    let mut avp_idx: Vec<usize> = Vec::with_capacity(p.avps.len());
    for a in &p.avps {
        if let Some(&(j, file, line)) = bound_here.get(a.name.as_str()) {
            let same = dict
                .avps
                .get(j)
                .is_some_and(|d| d.code == a.code && d.vendor == a.vendor);
            if !same {
                return Err(fx.conflict(
                    a.file,
                    a.line,
                    format!(
                        "AVP name '{}' is already defined at {}:{line} with another code",
                        a.name,
                        fx.name(file)
                    ),
                ));
            }
        }
        let i = match dict.avp_by_key.get(&(a.code, a.vendor)).copied() {
            Some(i) => {
                let Some(existing) = dict.avps.get(i) else {
                    return Err(fx.syntax(a.file, a.line, "internal: dangling AVP index"));
                };
                let at = dict
                    .avp_origin
                    .get(i)
                    .map(|o| o.to_string())
                    .unwrap_or_default();
                if wire_class(existing.ty) != wire_class(a.ty) {
                    return Err(fx.conflict(
                        a.file,
                        a.line,
                        format!(
                            "AVP code {}{} is already defined as {} ({}) at {at}; here {} ({})",
                            a.code,
                            vendor_suffix(a.vendor),
                            existing.name,
                            existing.ty,
                            a.name,
                            a.ty
                        ),
                    ));
                }
                if created_here.contains(&i) && *existing.name != *a.name {
                    return Err(fx.conflict(
                        a.file,
                        a.line,
                        format!(
                            "AVP code {}{} is already defined as '{}' at {at}",
                            a.code,
                            vendor_suffix(a.vendor),
                            existing.name
                        ),
                    ));
                }
                if *existing.name != *a.name {
                    // The later name is shown from now on; the earlier one stays an alias.
                    dict.avp_by_name.insert(a.name.as_str().into(), i);
                    if let Some(d) = dict.avps.get_mut(i) {
                        d.name = a.name.as_str().into();
                    }
                }
                if let (Some(f), Some(d)) = (a.flags, dict.avps.get_mut(i)) {
                    d.flags = f;
                }
                i
            }
            None => {
                let def = AvpDef {
                    code: a.code,
                    vendor: a.vendor,
                    name: a.name.as_str().into(),
                    ty: a.ty,
                    flags: a.flags.unwrap_or_else(|| default_flags(a.vendor)),
                    enums: Vec::new(),
                    group: Rules {
                        rules: Vec::new(),
                        extensible: true,
                    },
                };
                let i = dict.insert_avp(def, fx.origin(a.file, a.line));
                // A later file may take over a name an earlier one used for another code.
                dict.avp_by_name.insert(a.name.as_str().into(), i);
                created_here.insert(i);
                i
            }
        };
        bound_here.insert(a.name.as_str(), (i, a.file, a.line));
        avp_idx.push(i);
    }

    for al in &p.aliases {
        let Some(&i) = dict.avp_by_name.get(al.name.as_str()) else {
            return Err(fx.err(
                al.file,
                al.line,
                DictErrorKind::UndefinedAvp(al.name.clone()),
            ));
        };
        match dict.avp_by_name.get(al.alias.as_str()) {
            Some(&j) if j != i => {
                let other = dict
                    .avps
                    .get(j)
                    .map(|d| (d.code, d.vendor))
                    .unwrap_or_default();
                return Err(fx.conflict(
                    al.file,
                    al.line,
                    format!(
                        "'{}' already names AVP {}{}",
                        al.alias,
                        other.0,
                        vendor_suffix(other.1)
                    ),
                ));
            }
            _ => {
                dict.avp_by_name.insert(al.alias.as_str().into(), i);
            }
        }
    }

    // Grouped bodies, now that every name of this load is known.
    for (a, &i) in p.avps.iter().zip(&avp_idx) {
        let Some(body) = &a.body else { continue };
        let resolved = resolve_rules(dict, &fx, a.file, &body.rules)?;
        if let Some(d) = dict.avps.get_mut(i) {
            merge_rules(&mut d.group, resolved, body.closed);
        }
    }

    for v in &p.values {
        let Some(&i) = dict.avp_by_name.get(v.avp.as_str()) else {
            return Err(fx.err(v.file, v.line, DictErrorKind::UndefinedAvp(v.avp.clone())));
        };
        let Some(d) = dict.avps.get_mut(i) else {
            continue;
        };
        if !matches!(
            d.ty,
            AvpType::Enumerated | AvpType::Integer32 | AvpType::Unsigned32
        ) {
            return Err(fx.syntax(
                v.file,
                v.line,
                format!("VALUE for {} which is {}, not Enumerated", d.name, d.ty),
            ));
        }
        if d.ty == AvpType::Unsigned32 && v.value < 0 {
            return Err(fx.err(
                v.file,
                v.line,
                DictErrorKind::BadNumber {
                    what: "Unsigned32 value",
                    text: v.value.to_string(),
                },
            ));
        }
        if let Some(e) = d.enums.iter().find(|e| *e.name == *v.name) {
            if e.value != v.value {
                return Err(fx.conflict(
                    v.file,
                    v.line,
                    format!(
                        "{}: value name {} already means {}",
                        d.name, v.name, e.value
                    ),
                ));
            }
            continue;
        }
        d.enums.push(EnumValue {
            value: v.value,
            name: v.name.as_str().into(),
        });
    }

    // Commands: gather the REQUEST and ANSWER blocks per (application, code).
    type Blocks<'p> = (Vec<&'p PCmd>, Vec<&'p PCmd>);
    let mut order: Vec<(u32, u32)> = Vec::new();
    let mut pairs: FxHashMap<(u32, u32), Blocks<'_>> = FxHashMap::default();
    for c in &p.commands {
        let e = pairs.entry((c.app_id, c.code)).or_insert_with(|| {
            order.push((c.app_id, c.code));
            (Vec::new(), Vec::new())
        });
        if c.is_request {
            e.0.push(c);
        } else {
            e.1.push(c);
        }
    }
    for key in order {
        let Some((reqs, anss)) = pairs.get(&key) else {
            continue;
        };
        let i = match dict.cmd_by_key.get(&key).copied() {
            Some(i) => i,
            None => {
                let (Some(r), Some(a)) = (reqs.first(), anss.first()) else {
                    let (c, what) = match (reqs.first(), anss.first()) {
                        (Some(r), _) => (r, "REQUEST {} has no ANSWER"),
                        (_, Some(a)) => (a, "ANSWER {} has no REQUEST"),
                        _ => continue,
                    };
                    return Err(fx.syntax(c.file, c.line, what.replace("{}", &key.1.to_string())));
                };
                let def = CommandDef {
                    code: key.1,
                    app_id: key.0,
                    name: r.base.as_str().into(),
                    request_abbr: "".into(),
                    answer_abbr: "".into(),
                    proxiable: true,
                    request: Rules::default(),
                    answer: Rules::default(),
                };
                let i = dict.insert_command(def, fx.origin(r.file, r.line));
                // New definitions take the closedness of their first block.
                if let Some(d) = dict.commands.get_mut(i) {
                    d.request.extensible = !r.body.closed;
                    d.answer.extensible = !a.body.closed;
                }
                i
            }
        };
        for (blocks, is_req) in [(reqs, true), (anss, false)] {
            for c in blocks {
                let rules = resolve_rules(dict, &fx, c.file, &c.body.rules)?;
                if let Some(d) = dict.commands.get_mut(i) {
                    let target = if is_req {
                        &mut d.request
                    } else {
                        &mut d.answer
                    };
                    let closed = !target.extensible;
                    merge_rules(target, rules, closed);
                }
                for n in [&c.base, &c.full] {
                    dict.cmd_by_name.entry(n.as_str().into()).or_insert(i);
                }
            }
        }
    }

    for info in &p.infos {
        let Some(i) = dict.cmd_by_key.get(&(info.app_id, info.code)).copied() else {
            return Err(fx.syntax(
                info.file,
                info.line,
                format!(
                    "COMMAND {} names no REQUEST/ANSWER {} of application {}",
                    info.code, info.code, info.app_id
                ),
            ));
        };
        if let Some(d) = dict.commands.get_mut(i) {
            d.request_abbr = info.req_abbr.as_str().into();
            d.answer_abbr = info.ans_abbr.as_str().into();
            d.proxiable = info.proxiable;
        }
        for a in [&info.req_abbr, &info.ans_abbr] {
            dict.cmd_by_abbr
                .entry(a.to_ascii_uppercase().into_boxed_str())
                .or_insert(i);
        }
    }
    Ok(())
}

fn vendor_suffix(vendor: u32) -> String {
    if vendor == 0 {
        String::new()
    } else {
        format!(":{vendor}")
    }
}

fn resolve_rules(
    dict: &Dictionary,
    fx: &Files<'_>,
    file: u32,
    rules: &[PRule],
) -> Result<Vec<Rule>, DictError> {
    let mut out = Vec::with_capacity(rules.len());
    let mut seen: FxHashSet<(u32, u32)> = FxHashSet::default();
    for r in rules {
        if r.name.eq_ignore_ascii_case("AVP") {
            continue;
        }
        let Some(d) = dict.avp_by_name(&r.name) else {
            return Err(fx.err(file, r.line, DictErrorKind::UndefinedAvp(r.name.clone())));
        };
        if !seen.insert((d.code, d.vendor)) {
            return Err(fx.conflict(
                file,
                r.line,
                format!("{} is listed twice in this block", r.name),
            ));
        }
        out.push(Rule {
            code: d.code,
            vendor: d.vendor,
            kind: r.kind,
            min: r.min,
            max: r.max,
        });
    }
    Ok(out)
}

/// Adds rules for AVPs the target does not list yet. A target with no rules yet takes the
/// block's closedness.
fn merge_rules(target: &mut Rules, new: Vec<Rule>, closed: bool) {
    if target.rules.is_empty() {
        target.extensible = !closed;
    }
    for r in new {
        if !target
            .rules
            .iter()
            .any(|t| t.code == r.code && t.vendor == r.vendor)
        {
            target.rules.push(r);
        }
    }
}
