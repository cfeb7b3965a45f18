//! Checking a received message against the dictionary, with the exact RFC 6733 §7.1
//! Result-Code and Failed-AVP an answer must carry.
//!
//! What is checked, in wire order (the first fault wins, as a peer answers one error):
//!
//! | Result-Code | when |
//! |---|---|
//! | 5011 DIAMETER_UNSUPPORTED_VERSION | version is not 1 |
//! | 5015 DIAMETER_INVALID_MESSAGE_LENGTH | Message Length is < 20, not a multiple of 4, or not the size of the message |
//! | 3008 DIAMETER_INVALID_HDR_BITS | reserved header bits set; a request without R or with E; an answer with R or T |
//! | 5014 DIAMETER_INVALID_AVP_LENGTH | an AVP's length does not fit its container or its header, or a fixed-size type (Unsigned32, Time, ...) or Address has the wrong payload length |
//! | 3009 DIAMETER_INVALID_AVP_BITS | reserved AVP flag bits set, or a bit the dictionary says MUST NOT be set is set |
//! | 5001 DIAMETER_AVP_UNSUPPORTED | an AVP unknown to the dictionary carries the M bit |
//! | 5004 DIAMETER_INVALID_AVP_VALUE | text types (UTF8String, DiameterIdentity, DiameterURI, IPFilterRule, QoSFilterRule) that are not UTF-8; grouped nesting deeper than [`MAX_DEPTH`] |
//! | 5008 DIAMETER_AVP_NOT_ALLOWED | an AVP the ABNF does not allow (not listed in a closed ABNF, or listed with max 0), or a fixed-position AVP (`< Session-Id >`) not at its position |
//! | 5009 DIAMETER_AVP_OCCURS_TOO_MANY_TIMES | more occurrences than the ABNF's max (Failed-AVP: the first one over the limit) |
//! | 5005 DIAMETER_MISSING_AVP | fewer occurrences than the ABNF's min (Failed-AVP: an AVP of that code and vendor with a zero-filled payload of the type's minimal length, RFC 6733 §7.5) |
//!
//! Grouped AVPs are checked against their own ABNF the same way, recursively; a fault inside
//! one is reported with the enclosing grouped AVP(s) wrapped around the offending AVP, as
//! RFC 6733 §7.5 allows. The one exception is Failed-AVP, whose contents are the faulty
//! AVPs another node reported and are not checked. Error answers (E bit) are checked against the generic
//! `answer-message` ABNF of RFC 6733 §7.2, not the command's.
//!
//! Choices where the RFC leaves room (made for interoperability with real peers):
//! - Unknown AVPs without the M bit are ignored, whatever the ABNF (RFC 6733 §4.1: such a
//!   message MUST NOT be rejected).
//! - A bit the dictionary says MUST be set but that is clear (typically M) is accepted by
//!   default: the sender only says the AVP is optional to understand, and dictionaries in the
//!   OpenSIPS format mark every AVP M. [`Options::strict_must_bits`] turns it into 3009.
//! - Enumerated values outside the dictionary's list are accepted (the dictionary model has
//!   no notion of a closed enumeration, and new values appear in every 3GPP release); the
//!   script sees the integer. So 5004 is never raised for an enumeration.
//! - The P header bit is not compared with the command's definition (peers differ).
//! - Fixed-position rules are checked for the leading `< AVP >` rules of an ABNF (all real
//!   ABNFs put them first): such an AVP must come before every other AVP, in ABNF order.
//!
//! Cost: no allocation on the success path. Occurrences are counted in a stack array (heap
//! only for ABNFs of more than [`STACK_RULES`] rules), and the ABNF is searched from the
//! last matched rule on, so a message in ABNF order costs about one comparison per AVP.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::avp::{
    padded, AvpFlags, AvpRef, AvpRefs, AVP_HEADER_LEN, AVP_VENDOR_HEADER_LEN, MAX_DEPTH,
};
use crate::dict::{AvpDef, Dictionary, Rule, RuleKind, Rules};
use crate::error::AvpError;
use crate::header::{Flags, HEADER_LEN, VERSION};
use crate::message::Message;
use crate::result_code as rc;
use crate::value::Value;
use crate::AvpType;

/// ABNFs with up to this many rules count occurrences on the stack.
pub const STACK_RULES: usize = 64;

/// A protocol error found in a message: what to answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    /// The RFC 6733 Result-Code (3xxx are sent with the E bit, see [`is_protocol_error`]).
    ///
    /// [`is_protocol_error`]: ProtocolError::is_protocol_error
    pub result_code: u32,
    /// One encoded AVP (header and payload, without trailing padding) to put inside the
    /// answer's Failed-AVP, when the error concerns an AVP.
    pub failed_avp: Option<Bytes>,
    /// What is wrong, for Error-Message and logs.
    pub message: String,
}

impl ProtocolError {
    pub(crate) fn new(
        result_code: u32,
        failed_avp: Option<Bytes>,
        message: String,
    ) -> ProtocolError {
        ProtocolError {
            result_code,
            failed_avp,
            message,
        }
    }

    /// Whether the answer must carry the E bit (a 3xxx protocol error).
    pub fn is_protocol_error(&self) -> bool {
        rc::is_protocol_error(self.result_code)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.result_code)?;
        if let Some(n) = rc::name(self.result_code) {
            write!(f, "{n} ")?;
        }
        write!(f, "({})", self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// Knobs for the choices listed in the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Report 3009 when a flag the dictionary says MUST be set is clear.
    pub strict_must_bits: bool,
}

/// Validates a received request (see the module docs for what is checked).
pub fn validate_request(msg: &Message, dict: &Dictionary) -> Result<(), ProtocolError> {
    validate_with(msg, dict, Some(true), Options::default())
}

/// Validates a received answer.
pub fn validate_answer(msg: &Message, dict: &Dictionary) -> Result<(), ProtocolError> {
    validate_with(msg, dict, Some(false), Options::default())
}

/// Validates a message as a request or an answer according to its R bit.
pub fn validate(msg: &Message, dict: &Dictionary) -> Result<(), ProtocolError> {
    validate_with(msg, dict, None, Options::default())
}

/// [`validate`] with explicit [`Options`]; `request` says what the caller expects (`None`:
/// whatever the R bit says).
pub fn validate_with(
    msg: &Message,
    dict: &Dictionary,
    request: Option<bool>,
    opts: Options,
) -> Result<(), ProtocolError> {
    let is_request = preflight(msg, request)?;
    let h = &msg.header;
    let cmd = dict.command(h.app_id, h.code);
    let rules = if !is_request && h.flags.is_error() {
        Some(error_answer_rules())
    } else {
        cmd.map(|c| if is_request { &c.request } else { &c.answer })
    };
    let ctx = Ctx { dict, opts };
    ctx.container(&msg.body, HEADER_LEN, 0, rules, None)
        .map_err(|e| in_command(*e, cmd, is_request))
}

/// The header checks shared by every validator: version (5011), length (5015), header bits
/// (3008). Returns whether the message is to be treated as a request.
pub(crate) fn preflight(msg: &Message, request: Option<bool>) -> Result<bool, ProtocolError> {
    let h = &msg.header;
    if h.version != VERSION {
        return Err(ProtocolError::new(
            rc::DIAMETER_UNSUPPORTED_VERSION,
            None,
            format!("version {} is not 1", h.version),
        ));
    }
    let len = h.length as usize;
    if len < HEADER_LEN || !len.is_multiple_of(4) || len != msg.len() {
        return Err(ProtocolError::new(
            rc::DIAMETER_INVALID_MESSAGE_LENGTH,
            None,
            format!("message length {len} for a {}-byte message", msg.len()),
        ));
    }
    let is_request = request.unwrap_or(h.flags.is_request());
    check_header_bits(h.flags, is_request)?;
    Ok(is_request)
}

/// Names the command in an error message ("... in Credit-Control-Request").
#[cold]
pub(crate) fn in_command(
    mut e: ProtocolError,
    cmd: Option<&crate::dict::CommandDef>,
    is_request: bool,
) -> ProtocolError {
    if let Some(c) = cmd {
        let kind = if is_request { "Request" } else { "Answer" };
        e.message = format!("{} in {}-{kind}", e.message, c.name);
    }
    e
}

fn check_header_bits(f: Flags, is_request: bool) -> Result<(), ProtocolError> {
    let why = if f.reserved() != 0 {
        Some("reserved header bits set")
    } else if is_request && !f.is_request() {
        Some("request without the R bit")
    } else if is_request && f.is_error() {
        Some("E bit set on a request")
    } else if !is_request && f.is_request() {
        Some("R bit set on an answer")
    } else if !is_request && f.is_retransmit() {
        Some("T bit set on an answer")
    } else {
        None
    };
    match why {
        Some(w) => Err(ProtocolError::new(
            rc::DIAMETER_INVALID_HDR_BITS,
            None,
            format!("{w} (flags {:#04x})", f.bits()),
        )),
        None => Ok(()),
    }
}

/// RFC 6733 §7.2 `answer-message`: the shape of every error answer (E bit).
pub(crate) fn error_answer_rules() -> &'static Rules {
    static RULES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        let r = |code, kind, min, max| Rule {
            code,
            vendor: 0,
            kind,
            min,
            max,
        };
        Rules {
            rules: vec![
                r(263, RuleKind::Fixed, 0, Some(1)),    // Session-Id
                r(264, RuleKind::Required, 1, Some(1)), // Origin-Host
                r(296, RuleKind::Required, 1, Some(1)), // Origin-Realm
                r(268, RuleKind::Required, 1, Some(1)), // Result-Code
                r(278, RuleKind::Optional, 0, Some(1)), // Origin-State-Id
                r(281, RuleKind::Optional, 0, Some(1)), // Error-Message
                r(294, RuleKind::Optional, 0, Some(1)), // Error-Reporting-Host
                r(279, RuleKind::Optional, 0, Some(1)), // Failed-AVP
                r(297, RuleKind::Optional, 0, Some(1)), // Experimental-Result
                r(284, RuleKind::Optional, 0, None),    // Proxy-Info
            ],
            extensible: true,
        }
    })
}

/// The chain of grouped AVPs enclosing the one being checked, innermost first, for wrapping
/// a Failed-AVP (lives on the stack; only read on the error path).
pub(crate) struct Path<'p> {
    pub(crate) code: u32,
    pub(crate) flags: u8,
    pub(crate) vendor: u32,
    pub(crate) parent: Option<&'p Path<'p>>,
}

pub(crate) struct Ctx<'d> {
    pub(crate) dict: &'d Dictionary,
    pub(crate) opts: Options,
}

/// Rules an ABNF may have for its counters to use the small stack array.
const SMALL_RULES: usize = 16;
/// Rules an ABNF may have for its counters to use the medium stack array.
const MEDIUM_RULES: usize = 32;

/// Occurrence counters: on the stack for ordinary ABNFs. Most grouped AVPs have a handful
/// of rules, so they get a small array: building a variant zeroes only its own bytes, which
/// saves clearing all [`STACK_RULES`] counters for every nested container.
pub(crate) enum Counts {
    Small([u16; SMALL_RULES]),
    Medium([u16; MEDIUM_RULES]),
    Stack([u16; STACK_RULES]),
    Heap(Vec<u16>),
}

impl Counts {
    pub(crate) fn new(n: usize) -> Counts {
        if n <= SMALL_RULES {
            Counts::Small([0; SMALL_RULES])
        } else if n <= MEDIUM_RULES {
            Counts::Medium([0; MEDIUM_RULES])
        } else if n <= STACK_RULES {
            Counts::Stack([0; STACK_RULES])
        } else {
            Counts::Heap(vec![0; n])
        }
    }
    pub(crate) fn slice(&mut self) -> &mut [u16] {
        match self {
            Counts::Small(a) => a,
            Counts::Medium(a) => a,
            Counts::Stack(a) => a,
            Counts::Heap(v) => v,
        }
    }
}

/// Position and occurrence bookkeeping for one container.
pub(crate) struct Tally {
    fixed_head: usize,
    last_fixed: Option<usize>,
    pub(crate) seen_other: bool,
}

impl Tally {
    pub(crate) fn new(fixed_head: usize) -> Tally {
        Tally {
            fixed_head,
            last_fixed: None,
            seen_other: false,
        }
    }

    /// Records an occurrence of rule `i`, whose max is `max` (`u32::MAX` for none): 5009
    /// past its max (5008 for max 0), 5008 for a fixed-position AVP out of place.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hit(
        &mut self,
        ctx: &Ctx<'_>,
        list: &[Rule],
        counts: &mut [u16],
        i: usize,
        max: u32,
        def: &AvpDef,
        avp: &AvpRef<'_>,
        path: Option<&Path<'_>>,
    ) -> Result<(), Box<ProtocolError>> {
        let Some(c) = counts.get_mut(i) else {
            return Ok(());
        };
        *c = c.saturating_add(1);
        if u32::from(*c) > max {
            if let Some(rule) = list.get(i) {
                return Err(ctx.too_many(def, avp, rule, path));
            }
        }
        if i < self.fixed_head {
            if self.seen_other || self.last_fixed.is_some_and(|l| l >= i) {
                return Err(ctx.not_allowed(def, avp, "is not at its fixed position", path));
            }
            self.last_fixed = Some(i);
        } else {
            self.seen_other = true;
        }
        Ok(())
    }
}

impl Ctx<'_> {
    fn name(&self, code: u32, vendor: u32) -> String {
        match self.dict.avp(code, vendor) {
            Some(d) => format!("{} ({code})", d.name),
            None if vendor != 0 => format!("{code}:{vendor}"),
            None => code.to_string(),
        }
    }

    /// Checks the AVPs in `buf` (a message body or a grouped payload at `depth`) against
    /// `rules` (`None`: no ABNF known, only the per-AVP checks).
    ///
    /// The loop body is what every AVP of every message costs, so each check is one
    /// predictable branch and every way of failing is in a `#[cold]` function.
    pub(crate) fn container(
        &self,
        buf: &[u8],
        base: usize,
        depth: usize,
        rules: Option<&Rules>,
        path: Option<&Path<'_>>,
    ) -> Result<(), Box<ProtocolError>> {
        // An empty closed ABNF is treated as "no ABNF": nothing real is defined that way.
        let rules = rules.filter(|r| !r.rules.is_empty() || r.extensible);
        let list: &[Rule] = rules.map_or(&[], |r| &r.rules);
        let extensible = rules.is_none_or(|r| r.extensible);
        // Leading fixed-position rules (`< Session-Id >`).
        let fixed_head = list
            .iter()
            .take_while(|r| r.kind == RuleKind::Fixed)
            .count();
        let mut counts = Counts::new(list.len());
        let counts = counts.slice();
        let mut hint = 0usize;
        let mut tally = Tally::new(fixed_head);

        for item in AvpRefs::nested(buf, base, depth) {
            let avp = match item {
                Ok(a) => a,
                Err(e) => return Err(self.structural(e, path)),
            };
            let flags = avp.flags.bits();
            let Some(def) = self.dict.avp(avp.code, avp.vendor) else {
                if flags & (AvpFlags::M | AvpFlags::RESERVED) != 0 {
                    return Err(self.unknown(&avp, path));
                }
                // RFC 6733 §4.1: an unrecognised AVP without M is ignored.
                tally.seen_other = true;
                continue;
            };
            self.check_known(def.ty, self.masks(def), def, &avp, path)?;
            match find_rule(list, avp.code, avp.vendor, &mut hint) {
                Some(i) => {
                    let max = list.get(i).and_then(|r| r.max).unwrap_or(u32::MAX);
                    tally.hit(self, list, counts, i, max, def, &avp, path)?
                }
                None if !extensible => {
                    return Err(self.not_allowed(def, &avp, "is not allowed here", path));
                }
                None => tally.seen_other = true,
            }

            if def.ty == AvpType::Grouped && !is_failed_avp(avp.code, avp.vendor) {
                if depth >= MAX_DEPTH {
                    return Err(self.too_deep(&avp, path));
                }
                let inner = Path {
                    code: avp.code,
                    flags,
                    vendor: avp.vendor,
                    parent: path,
                };
                self.container(
                    avp.data,
                    avp.offset + avp.header_len(),
                    depth + 1,
                    Some(&def.group),
                    Some(&inner),
                )?;
            }
        }

        let short = list
            .iter()
            .zip(counts.iter())
            .any(|(rule, &n)| u32::from(n) < rule.min);
        if short {
            return Err(self.first_missing(list, counts, path));
        }
        Ok(())
    }

    /// The flag masks `check_known` applies to an AVP defined by `def`: bits that must be
    /// clear (reserved ones and the dictionary's must-not), and bits that must be set (only
    /// with [`Options::strict_must_bits`]). V is left out: the (code, vendor) look-up that
    /// found `def` already implies it.
    #[inline(always)]
    pub(crate) fn masks(&self, def: &AvpDef) -> (u8, u8) {
        let forbid = AvpFlags::RESERVED | (def.flags.must_not & !AvpFlags::V);
        let need = if self.opts.strict_must_bits {
            def.flags.must & !AvpFlags::V
        } else {
            0
        };
        (forbid, need)
    }

    /// The checks of one known AVP that need no ABNF: flag bits (3009) and the value (5014
    /// for lengths, 5004 for text). Takes the type and masks separately from `def` so a
    /// caller holding them elsewhere (the compiled [`crate::Validator`]) does not touch the
    /// definition's memory unless there is an error to report.
    #[inline(always)]
    pub(crate) fn check_known(
        &self,
        ty: AvpType,
        (forbid, need): (u8, u8),
        def: &AvpDef,
        avp: &AvpRef<'_>,
        path: Option<&Path<'_>>,
    ) -> Result<(), Box<ProtocolError>> {
        let flags = avp.flags.bits();
        if (flags & forbid) | (need & !flags) != 0 {
            return Err(self.bad_bits(def, avp, need, path));
        }
        if let Err(e) = Value::check(ty, avp.data) {
            return Err(self.bad_value(def, avp, e, path));
        }
        Ok(())
    }

    #[cold]
    pub(crate) fn too_deep(&self, avp: &AvpRef<'_>, path: Option<&Path<'_>>) -> Box<ProtocolError> {
        self.fail(
            rc::DIAMETER_INVALID_AVP_VALUE,
            avp.raw,
            path,
            format!("grouped AVPs nested deeper than {MAX_DEPTH}"),
        )
    }

    #[cold]
    pub(crate) fn unknown(&self, avp: &AvpRef<'_>, path: Option<&Path<'_>>) -> Box<ProtocolError> {
        let name = self.name(avp.code, avp.vendor);
        if avp.flags.reserved() != 0 {
            return self.fail(
                rc::DIAMETER_INVALID_AVP_BITS,
                avp.raw,
                path,
                format!("reserved flag bits set on AVP {name}"),
            );
        }
        self.fail(
            rc::DIAMETER_AVP_UNSUPPORTED,
            avp.raw,
            path,
            format!("unknown AVP {name} with the M bit"),
        )
    }

    #[cold]
    pub(crate) fn bad_bits(
        &self,
        def: &AvpDef,
        avp: &AvpRef<'_>,
        must: u8,
        path: Option<&Path<'_>>,
    ) -> Box<ProtocolError> {
        let f = avp.flags.bits();
        let forbidden = f & def.flags.must_not & !AvpFlags::V;
        let what = if avp.flags.reserved() != 0 {
            "reserved flag bits set".to_string()
        } else if forbidden != 0 {
            format!("flag {} must not be set", AvpFlags(forbidden))
        } else {
            format!("flag {} must be set", AvpFlags(must & !f))
        };
        self.fail(
            rc::DIAMETER_INVALID_AVP_BITS,
            avp.raw,
            path,
            format!("AVP {}: {what}", def.name),
        )
    }

    #[cold]
    pub(crate) fn bad_value(
        &self,
        def: &AvpDef,
        avp: &AvpRef<'_>,
        e: crate::error::ValueError,
        path: Option<&Path<'_>>,
    ) -> Box<ProtocolError> {
        self.fail(
            e.result_code(),
            avp.raw,
            path,
            format!("AVP {}: {e}", def.name),
        )
    }

    #[cold]
    pub(crate) fn too_many(
        &self,
        def: &AvpDef,
        avp: &AvpRef<'_>,
        rule: &Rule,
        path: Option<&Path<'_>>,
    ) -> Box<ProtocolError> {
        let max = rule.max.unwrap_or(0);
        if max == 0 {
            return self.not_allowed(def, avp, "is not allowed", path);
        }
        self.fail(
            rc::DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
            avp.raw,
            path,
            format!("AVP {} occurs more than {max} time(s)", def.name),
        )
    }

    #[cold]
    pub(crate) fn not_allowed(
        &self,
        def: &AvpDef,
        avp: &AvpRef<'_>,
        why: &str,
        path: Option<&Path<'_>>,
    ) -> Box<ProtocolError> {
        self.fail(
            rc::DIAMETER_AVP_NOT_ALLOWED,
            avp.raw,
            path,
            format!("AVP {} {why}", def.name),
        )
    }

    #[cold]
    pub(crate) fn first_missing(
        &self,
        list: &[Rule],
        counts: &[u16],
        path: Option<&Path<'_>>,
    ) -> Box<ProtocolError> {
        match list
            .iter()
            .zip(counts.iter())
            .find(|(rule, &n)| u32::from(n) < rule.min)
        {
            Some((rule, _)) => self.missing(rule, path),
            None => Box::new(ProtocolError::new(
                rc::DIAMETER_MISSING_AVP,
                None,
                "missing AVP".into(),
            )),
        }
    }

    /// 5014 (or 5004 for depth) for an AVP whose structure is broken: Failed-AVP gets the
    /// header as read and a zero-filled payload of the minimal length (RFC 6733 §7.1.5).
    pub(crate) fn structural(&self, e: AvpError, path: Option<&Path<'_>>) -> Box<ProtocolError> {
        let ty = self.dict.avp(e.code, e.vendor).map(|d| d.ty);
        let avp = minimal_avp(e.code, e.flags, e.vendor, ty);
        self.fail(e.result_code(), &avp, path, e.to_string())
    }

    /// 5005 with an AVP of the missing code (RFC 6733 §7.5).
    pub(crate) fn missing(&self, rule: &Rule, path: Option<&Path<'_>>) -> Box<ProtocolError> {
        let def = self.dict.avp(rule.code, rule.vendor);
        let flags = def.map_or(AvpFlags::M, |d| d.flags.must);
        let avp = minimal_avp(rule.code, flags, rule.vendor, def.map(|d| d.ty));
        let what = if rule.min > 1 {
            format!(
                "AVP {} must occur at least {} times",
                self.name(rule.code, rule.vendor),
                rule.min
            )
        } else {
            format!("missing AVP {}", self.name(rule.code, rule.vendor))
        };
        self.fail(rc::DIAMETER_MISSING_AVP, &avp, path, what)
    }

    /// Builds the error with `avp` wrapped in the enclosing grouped AVPs.
    pub(crate) fn fail(
        &self,
        code: u32,
        avp: &[u8],
        path: Option<&Path<'_>>,
        message: String,
    ) -> Box<ProtocolError> {
        let mut cur = Bytes::copy_from_slice(avp);
        let mut p = path;
        while let Some(g) = p {
            cur = encode_avp(g.code, g.flags, g.vendor, &cur, true);
            p = g.parent;
        }
        Box::new(ProtocolError::new(code, Some(cur), message))
    }
}

/// Failed-AVP (RFC 6733 §7.5) carries copies of the AVPs another node rejected: its contents
/// are wrong by definition (unknown, bad bits, bad lengths) and must not make the answer that
/// reports them invalid, so validation does not look inside it.
#[inline(always)]
pub(crate) fn is_failed_avp(code: u32, vendor: u32) -> bool {
    code == 279 && vendor == 0
}

/// Searches `rules` for (code, vendor) starting at `hint` and wrapping around; remembers the
/// hit, since AVPs mostly arrive in ABNF order.
#[inline]
fn find_rule(rules: &[Rule], code: u32, vendor: u32, hint: &mut usize) -> Option<usize> {
    let start = (*hint).min(rules.len());
    let (tail, head) = (rules.get(start..)?, rules.get(..start)?);
    let hit = tail
        .iter()
        .position(|r| r.code == code && r.vendor == vendor)
        .map(|i| i + start)
        .or_else(|| {
            head.iter()
                .position(|r| r.code == code && r.vendor == vendor)
        })?;
    *hint = hit;
    Some(hit)
}

/// An AVP with a zero-filled payload of the minimal valid length for `ty` (0 for variable
/// formats, 6 for an Address: family and an IPv4 address).
fn minimal_avp(code: u32, flags: u8, vendor: u32, ty: Option<AvpType>) -> Vec<u8> {
    let n = match ty {
        Some(AvpType::Address) => 6,
        Some(t) => t.fixed_len().unwrap_or(0),
        None => 0,
    };
    let zeros = [0u8; 8];
    encode_avp(
        code,
        flags,
        vendor,
        zeros.get(..n).unwrap_or_default(),
        false,
    )
    .to_vec()
}

/// Encodes one AVP (V bit from `vendor`) without trailing padding. With `pad_data` the
/// payload (a child AVP being wrapped) is padded inside, so the result is a well-formed
/// grouped AVP.
fn encode_avp(code: u32, flags: u8, vendor: u32, data: &[u8], pad_data: bool) -> Bytes {
    let hl = if vendor != 0 {
        AVP_VENDOR_HEADER_LEN
    } else {
        AVP_HEADER_LEN
    };
    let dlen = if pad_data {
        padded(data.len())
    } else {
        data.len()
    };
    let len = hl + dlen;
    let mut b = BytesMut::with_capacity(len);
    let flags = if vendor != 0 {
        flags | AvpFlags::V
    } else {
        flags & !AvpFlags::V
    };
    b.put_u32(code);
    b.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00FF_FFFF));
    if vendor != 0 {
        b.put_u32(vendor);
    }
    b.put_slice(data);
    b.put_bytes(0, dlen - data.len());
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dict::{AvpDef, CommandDef, FlagRule, Origin};
    use crate::encode::MessageWriter;
    use crate::header::Header;

    const M: u8 = AvpFlags::M;
    const V3: u32 = 10415;

    // Every test below runs through both validators, which must agree exactly: these
    // shadow the glob-imported functions.
    fn validate_with(
        m: &Message,
        d: &Dictionary,
        request: Option<bool>,
        opts: Options,
    ) -> Result<(), ProtocolError> {
        let direct = super::validate_with(m, d, request, opts);
        let compiled =
            crate::validate::compiled::Validator::with_options(d, opts).validate_as(m, request);
        assert_eq!(direct, compiled, "direct and compiled validators disagree");
        direct
    }
    fn validate(m: &Message, d: &Dictionary) -> Result<(), ProtocolError> {
        validate_with(m, d, None, Options::default())
    }
    fn validate_request(m: &Message, d: &Dictionary) -> Result<(), ProtocolError> {
        validate_with(m, d, Some(true), Options::default())
    }
    fn validate_answer(m: &Message, d: &Dictionary) -> Result<(), ProtocolError> {
        validate_with(m, d, Some(false), Options::default())
    }

    fn rule(code: u32, vendor: u32, kind: RuleKind, min: u32, max: Option<u32>) -> Rule {
        Rule {
            code,
            vendor,
            kind,
            min,
            max,
        }
    }

    fn avp_def(code: u32, vendor: u32, name: &str, ty: AvpType, flags: FlagRule) -> AvpDef {
        AvpDef {
            code,
            vendor,
            name: name.into(),
            ty,
            flags,
            enums: Vec::new(),
            group: Rules {
                rules: Vec::new(),
                extensible: true,
            },
        }
    }

    fn origin() -> Origin {
        Origin {
            file: "test".into(),
            line: 1,
        }
    }

    /// A small dictionary built directly (not through the file loader), so these tests pin
    /// the validator's behaviour independently of the dictionary format.
    fn dict() -> Dictionary {
        let must_m = FlagRule {
            must: M,
            must_not: 0,
        };
        let vm = FlagRule {
            must: M | AvpFlags::V,
            must_not: 0,
        };
        let mut d = Dictionary::empty();
        for (code, name, ty) in [
            (263, "Session-Id", AvpType::UTF8String),
            (264, "Origin-Host", AvpType::DiameterIdentity),
            (296, "Origin-Realm", AvpType::DiameterIdentity),
            (268, "Result-Code", AvpType::Unsigned32),
            (258, "Auth-Application-Id", AvpType::Unsigned32),
            (416, "CC-Request-Type", AvpType::Enumerated),
            (432, "Rating-Group", AvpType::Unsigned32),
            (421, "CC-Total-Octets", AvpType::Unsigned64),
            (257, "Host-IP-Address", AvpType::Address),
            (55, "Event-Timestamp", AvpType::Time),
            (278, "Origin-State-Id", AvpType::Unsigned32),
            (293, "Destination-Host", AvpType::DiameterIdentity),
        ] {
            d.insert_avp(avp_def(code, 0, name, ty, must_m), origin());
        }
        d.insert_avp(
            avp_def(701, V3, "MSISDN", AvpType::OctetString, vm),
            origin(),
        );
        d.insert_avp(
            avp_def(
                628,
                V3,
                "Supported-Features",
                AvpType::OctetString,
                FlagRule {
                    must: AvpFlags::V,
                    must_not: M,
                },
            ),
            origin(),
        );
        let mut rsu = avp_def(437, 0, "Requested-Service-Unit", AvpType::Grouped, must_m);
        rsu.group = Rules {
            rules: vec![rule(421, 0, RuleKind::Optional, 0, Some(1))],
            extensible: true,
        };
        d.insert_avp(rsu, origin());
        let mut mscc = avp_def(
            456,
            0,
            "Multiple-Services-Credit-Control",
            AvpType::Grouped,
            must_m,
        );
        mscc.group = Rules {
            rules: vec![
                rule(432, 0, RuleKind::Required, 1, Some(1)),
                rule(437, 0, RuleKind::Optional, 0, Some(1)),
            ],
            extensible: false,
        };
        d.insert_avp(mscc, origin());
        // A grouped AVP that may contain itself: hostile nesting must stay bounded.
        let mut rec = avp_def(999, 0, "Recursive", AvpType::Grouped, must_m);
        rec.group = Rules {
            rules: vec![rule(999, 0, RuleKind::Optional, 0, None)],
            extensible: true,
        };
        d.insert_avp(rec, origin());

        let fixed = RuleKind::Fixed;
        let req = RuleKind::Required;
        let opt = RuleKind::Optional;
        d.insert_command(
            CommandDef {
                code: 272,
                app_id: 4,
                name: "Credit-Control".into(),
                request_abbr: "CCR".into(),
                answer_abbr: "CCA".into(),
                proxiable: true,
                request: Rules {
                    rules: vec![
                        rule(263, 0, fixed, 1, Some(1)),
                        rule(264, 0, req, 1, Some(1)),
                        rule(296, 0, req, 1, Some(1)),
                        rule(258, 0, req, 1, Some(1)),
                        rule(416, 0, req, 1, Some(1)),
                        rule(456, 0, opt, 0, None),
                        rule(55, 0, opt, 0, Some(1)),
                        rule(701, V3, opt, 0, Some(1)),
                    ],
                    extensible: true,
                },
                answer: Rules {
                    rules: vec![
                        rule(263, 0, fixed, 1, Some(1)),
                        rule(268, 0, req, 1, Some(1)),
                        rule(264, 0, req, 1, Some(1)),
                        rule(296, 0, req, 1, Some(1)),
                        rule(258, 0, req, 1, Some(1)),
                        rule(416, 0, req, 1, Some(1)),
                    ],
                    extensible: true,
                },
            },
            origin(),
        );
        d.insert_command(
            CommandDef {
                code: 280,
                app_id: 0,
                name: "Device-Watchdog".into(),
                request_abbr: "DWR".into(),
                answer_abbr: "DWA".into(),
                proxiable: false,
                request: Rules {
                    rules: vec![
                        rule(264, 0, req, 1, Some(1)),
                        rule(296, 0, req, 1, Some(1)),
                        rule(278, 0, opt, 0, Some(1)),
                        rule(293, 0, opt, 0, Some(0)),
                    ],
                    extensible: false,
                },
                answer: Rules::default(),
            },
            origin(),
        );
        d
    }

    fn ccr_header() -> Header {
        let mut h = Header::request(272, 4, 1, 2);
        h.flags = Flags(Flags::R | Flags::P);
        h
    }

    /// A valid CCR; `extra` writes more AVPs at the end.
    fn ccr(extra: impl FnOnce(&mut MessageWriter)) -> Message {
        ccr_with(ccr_header(), extra)
    }

    fn ccr_with(h: Header, extra: impl FnOnce(&mut MessageWriter)) -> Message {
        let mut w = MessageWriter::new(h);
        w.str(263, M, 0, "host;1;2")
            .str(264, M, 0, "client.example")
            .str(296, M, 0, "example")
            .u32(258, M, 0, 4)
            .u32(416, M, 0, 1)
            .group(456, M, 0, |w| {
                w.u32(432, M, 0, 7);
                w.group(437, M, 0, |w| {
                    w.u64(421, M, 0, 1000);
                });
            })
            .avp(701, M, V3, b"\x12\x34");
        extra(&mut w);
        Message::decode(w.finish().unwrap()).unwrap()
    }

    fn err(m: &Message) -> ProtocolError {
        validate(m, &dict()).expect_err("message must be rejected")
    }

    fn failed(e: &ProtocolError) -> &[u8] {
        e.failed_avp.as_deref().expect("a Failed-AVP")
    }

    #[test]
    fn valid_request_and_answer() {
        let d = dict();
        let m = ccr(|_| {});
        assert_eq!(validate_request(&m, &d), Ok(()));
        assert_eq!(validate(&m, &d), Ok(()));
        let mut w = MessageWriter::answer_to(&m.header);
        w.str(263, M, 0, "host;1;2")
            .u32(268, M, 0, 2001)
            .str(264, M, 0, "server")
            .str(296, M, 0, "example")
            .u32(258, M, 0, 4)
            .u32(416, M, 0, 1);
        let a = Message::decode(w.finish().unwrap()).unwrap();
        assert_eq!(validate_answer(&a, &d), Ok(()));
        assert_eq!(validate(&a, &d), Ok(()));
    }

    #[test]
    fn unsupported_version() {
        let mut m = ccr(|_| {});
        m.header.version = 2;
        let e = err(&m);
        assert_eq!((e.result_code, e.failed_avp.as_ref()), (5011, None));
    }

    #[test]
    fn invalid_message_length() {
        let mut m = ccr(|_| {});
        m.header.length += 4;
        assert_eq!(err(&m).result_code, 5015);
        m.header.length -= 6;
        assert_eq!(err(&m).result_code, 5015);
        m.header.length = 16;
        assert_eq!(err(&m).result_code, 5015);
    }

    #[test]
    fn invalid_header_bits() {
        let d = dict();
        for (flags, request) in [
            (Flags::R | 0x01, Some(true)),     // reserved bit
            (Flags::R | Flags::E, Some(true)), // E on a request
            (Flags::P, Some(true)),            // expected a request, R clear
            (Flags::R, Some(false)),           // expected an answer, R set
            (Flags::T, Some(false)),           // T on an answer
            (Flags::R | Flags::E, None),       // by the R bit: a request with E
        ] {
            let mut h = ccr_header();
            h.flags = Flags(flags);
            let m = ccr_with(h, |_| {});
            let e = validate_with(&m, &d, request, Options::default()).unwrap_err();
            assert_eq!(e.result_code, 3008, "flags {flags:#x}");
            assert!(e.is_protocol_error());
            assert!(e.failed_avp.is_none());
        }
        // T on a request is fine (a retransmission).
        let mut h = ccr_header();
        h.flags = Flags(Flags::R | Flags::T);
        assert_eq!(validate(&ccr_with(h, |_| {}), &d), Ok(()));
    }

    #[test]
    fn unknown_avp_with_m_bit() {
        let m = ccr(|w| {
            w.str(5555, M, 0, "what");
        });
        let e = err(&m);
        assert_eq!(e.result_code, 5001);
        assert_eq!(failed(&e), m.find(5555, 0).unwrap().raw);
        // Without M it is ignored, even in a closed ABNF.
        assert_eq!(
            validate(
                &ccr(|w| {
                    w.str(5555, 0, 0, "ok");
                }),
                &dict()
            ),
            Ok(())
        );
        let mut w = MessageWriter::new(Header::request(280, 0, 1, 1));
        w.str(264, M, 0, "h")
            .str(296, M, 0, "r")
            .u32(5555, 0, V3, 1);
        let dwr = Message::decode(w.finish().unwrap()).unwrap();
        assert_eq!(validate(&dwr, &dict()), Ok(()));
        // Vendor is part of the key: a known code with an unknown vendor is unknown.
        let e = err(&ccr(|w| {
            w.u32(268, M, 9, 1);
        }));
        assert_eq!(e.result_code, 5001);
    }

    #[test]
    fn invalid_avp_bits() {
        // Reserved AVP bits.
        let mut v = ccr(|_| {}).to_bytes().to_vec();
        v[20 + 4] |= 0x01; // Session-Id flags
        let m = Message::decode(Bytes::from(v)).unwrap();
        let e = err(&m);
        assert_eq!(e.result_code, 3009);
        assert_eq!(failed(&e)[4], 0x41);
        // A bit the dictionary forbids.
        let m = ccr(|w| {
            w.avp(628, M, V3, b"x");
        });
        let e = err(&m);
        assert_eq!(e.result_code, 3009);
        assert!(e.message.contains("Supported-Features"), "{}", e.message);
        assert_eq!(
            validate(
                &ccr(|w| {
                    w.avp(628, 0, V3, b"x");
                }),
                &dict()
            ),
            Ok(())
        );
        // A missing must-bit: accepted by default, 3009 in strict mode.
        let m = ccr(|w| {
            w.u32(55, 0, 0, 3_908_988_800);
        });
        assert_eq!(validate(&m, &dict()), Ok(()));
        let strict = Options {
            strict_must_bits: true,
        };
        let e = validate_with(&m, &dict(), None, strict).unwrap_err();
        assert_eq!(e.result_code, 3009);
        assert_eq!(failed(&e), m.find(55, 0).unwrap().raw);
    }

    #[test]
    fn invalid_avp_length_structural() {
        // Auth-Application-Id (4th AVP) claims more bytes than the message has.
        let good = ccr(|_| {});
        let at = good.find_ref(258, 0).unwrap().offset;
        let mut v = good.to_bytes().to_vec();
        v[at + 5..at + 8].copy_from_slice(&[0, 0x10, 0]);
        let e = err(&Message::decode(Bytes::from(v)).unwrap());
        assert_eq!(e.result_code, 5014);
        // Header as received and a zero payload of the type's minimal length.
        assert_eq!(failed(&e), [0, 0, 1, 2, 0x40, 0, 0, 12, 0, 0, 0, 0]);
        // Too short for its header.
        let mut v = good.to_bytes().to_vec();
        v[at + 7] = 4;
        assert_eq!(
            err(&Message::decode(Bytes::from(v)).unwrap()).result_code,
            5014
        );
    }

    #[test]
    fn invalid_avp_length_fixed_type() {
        let m = ccr(|w| {
            w.avp(55, M, 0, &[1, 2, 3]);
        });
        let e = err(&m);
        assert_eq!(e.result_code, 5014);
        assert_eq!(failed(&e), m.find(55, 0).unwrap().raw);
        let e = err(&ccr(|w| {
            w.avp(257, M, 0, &[0, 1, 1, 2, 3]);
        }));
        assert_eq!(e.result_code, 5014);
    }

    #[test]
    fn invalid_value_utf8() {
        let mut w = MessageWriter::new(ccr_header());
        w.avp(263, M, 0, b"bad\xff");
        let m = Message::decode(w.finish().unwrap()).unwrap();
        let e = err(&m);
        assert_eq!(e.result_code, 5004);
        assert_eq!(failed(&e), m.find(263, 0).unwrap().raw);
    }

    #[test]
    fn enumerated_values_are_open() {
        let mut w = MessageWriter::new(ccr_header());
        w.str(263, M, 0, "s")
            .str(264, M, 0, "h")
            .str(296, M, 0, "r")
            .u32(258, M, 0, 4)
            .i32(416, M, 0, 12345);
        let m = Message::decode(w.finish().unwrap()).unwrap();
        assert_eq!(validate(&m, &dict()), Ok(()));
    }

    #[test]
    fn missing_avp() {
        let mut w = MessageWriter::new(ccr_header());
        w.str(263, M, 0, "s")
            .str(264, M, 0, "h")
            .str(296, M, 0, "r")
            .u32(416, M, 0, 1);
        let m = Message::decode(w.finish().unwrap()).unwrap();
        let e = err(&m);
        assert_eq!(e.result_code, 5005);
        // Auth-Application-Id with a zero-filled Unsigned32.
        assert_eq!(failed(&e), [0, 0, 1, 2, 0x40, 0, 0, 12, 0, 0, 0, 0]);
        assert!(e.message.contains("Auth-Application-Id"), "{}", e.message);
        assert!(
            e.message.contains("Credit-Control-Request"),
            "{}",
            e.message
        );
        // A missing variable-length AVP gets an empty payload.
        let mut w = MessageWriter::new(ccr_header());
        w.str(263, M, 0, "s").str(264, M, 0, "h");
        let e = err(&Message::decode(w.finish().unwrap()).unwrap());
        assert_eq!(failed(&e), [0, 0, 1, 0x28, 0x40, 0, 0, 8]);
    }

    #[test]
    fn missing_fixed_session_id() {
        let mut w = MessageWriter::new(ccr_header());
        w.str(264, M, 0, "h")
            .str(296, M, 0, "r")
            .u32(258, M, 0, 4)
            .u32(416, M, 0, 1);
        let e = err(&Message::decode(w.finish().unwrap()).unwrap());
        assert_eq!(e.result_code, 5005);
        assert_eq!(failed(&e), [0, 0, 1, 7, 0x40, 0, 0, 8]);
    }

    #[test]
    fn missing_inside_grouped_is_wrapped() {
        let m = ccr(|w| {
            w.group(456, M, 0, |w| {
                w.group(437, M, 0, |_| {});
            });
        });
        let e = err(&m);
        assert_eq!(e.result_code, 5005);
        // MSCC { Rating-Group(zero) }.
        assert_eq!(
            failed(&e),
            [0, 0, 1, 0xC8, 0x40, 0, 0, 20, 0, 0, 1, 0xB0, 0x40, 0, 0, 12, 0, 0, 0, 0]
        );
    }

    #[test]
    fn fault_inside_nested_group_is_wrapped() {
        let m = ccr(|w| {
            w.group(456, M, 0, |w| {
                w.u32(432, M, 0, 1);
                w.group(437, M, 0, |w| {
                    w.avp(421, M, 0, &[0; 5]);
                });
            });
        });
        let e = err(&m);
        assert_eq!(e.result_code, 5014);
        let f = failed(&e);
        // MSCC > RSU > CC-Total-Octets (13 bytes, padded to 16 inside RSU).
        let outer = AvpRefs::new(f, 0).next().unwrap().unwrap();
        assert_eq!(outer.code, 456);
        assert_eq!(outer.raw.len(), f.len());
        let rsu = outer.group().next().unwrap().unwrap();
        assert_eq!(rsu.code, 437);
        let leaf: Vec<_> = rsu.group().collect::<Result<_, _>>().unwrap();
        assert_eq!(leaf.len(), 1);
        assert_eq!((leaf[0].code, leaf[0].data), (421, &[0u8; 5][..]));
    }

    #[test]
    pub(crate) fn not_allowed() {
        // Session-Id not first.
        let mut w = MessageWriter::new(ccr_header());
        w.str(264, M, 0, "h")
            .str(263, M, 0, "s")
            .str(296, M, 0, "r")
            .u32(258, M, 0, 4)
            .u32(416, M, 0, 1);
        let m = Message::decode(w.finish().unwrap()).unwrap();
        let e = err(&m);
        assert_eq!(e.result_code, 5008);
        assert_eq!(failed(&e), m.find(263, 0).unwrap().raw);
        // Not in a closed grouped ABNF.
        let m = ccr(|w| {
            w.group(456, M, 0, |w| {
                w.u32(432, M, 0, 1).u32(268, M, 0, 1);
            });
        });
        let e = err(&m);
        assert_eq!(e.result_code, 5008);
        let g = AvpRefs::new(failed(&e), 0).next().unwrap().unwrap();
        assert_eq!(g.code, 456);
        assert_eq!(g.group().count(), 1, "only the offending AVP inside");
        // Max 0 (`0*0[ Destination-Host ]`), and an AVP not in a closed command ABNF.
        for extra in [293u32, 268] {
            let mut w = MessageWriter::new(Header::request(280, 0, 1, 1));
            w.str(264, M, 0, "h")
                .str(296, M, 0, "r")
                .u32(extra, M, 0, 1);
            let e = err(&Message::decode(w.finish().unwrap()).unwrap());
            assert_eq!(e.result_code, 5008, "AVP {extra}");
        }
    }

    #[test]
    pub(crate) fn too_many() {
        let m = ccr(|w| {
            w.str(264, M, 0, "again").str(264, M, 0, "third");
        });
        let e = err(&m);
        assert_eq!(e.result_code, 5009);
        // The first occurrence over the limit.
        let second = m
            .avp_refs()
            .map_while(Result::ok)
            .filter(|a| a.code == 264)
            .nth(1)
            .unwrap();
        assert_eq!(failed(&e), second.raw);
        // A second Session-Id is also too many (and not at its position).
        let e = err(&ccr(|w| {
            w.str(263, M, 0, "s2");
        }));
        assert!(e.result_code == 5008 || e.result_code == 5009);
    }

    #[test]
    fn error_answers_use_the_generic_abnf() {
        let d = dict();
        let req = ccr(|_| {});
        let mut w = MessageWriter::new(req.header.error_answer());
        w.str(263, M, 0, "host;1;2")
            .str(264, M, 0, "server")
            .str(296, M, 0, "example")
            .u32(268, M, 0, 3002);
        let a = Message::decode(w.finish().unwrap()).unwrap();
        assert_eq!(validate_answer(&a, &d), Ok(()));
        let mut w = MessageWriter::new(req.header.error_answer());
        w.str(264, M, 0, "server").str(296, M, 0, "example");
        let e = validate_answer(&Message::decode(w.finish().unwrap()).unwrap(), &d).unwrap_err();
        assert_eq!(e.result_code, 5005);
        assert_eq!(failed(&e), [0, 0, 1, 12, 0x40, 0, 0, 12, 0, 0, 0, 0]);
        // The same answer without E must follow the CCA ABNF.
        let mut w = MessageWriter::answer_to(&req.header);
        w.str(263, M, 0, "s")
            .str(264, M, 0, "server")
            .str(296, M, 0, "example")
            .u32(268, M, 0, 2001);
        let e = validate_answer(&Message::decode(w.finish().unwrap()).unwrap(), &d).unwrap_err();
        assert_eq!(e.result_code, 5005);
    }

    #[test]
    fn failed_avp_contents_are_not_checked() {
        // An error answer reporting an unknown M-bit AVP with a bad length is itself valid.
        let req = ccr(|_| {});
        let mut w = MessageWriter::new(req.header.error_answer());
        w.str(263, M, 0, "host;1;2")
            .str(264, M, 0, "server")
            .str(296, M, 0, "example")
            .u32(268, M, 0, 5001)
            .group(279, M, 0, |w| {
                w.avp(5555, M | 0x01, 0, b"x").avp(268, M, 0, b"");
            });
        let a = Message::decode(w.finish().unwrap()).unwrap();
        let mut d = dict();
        let mut failed = avp_def(279, 0, "Failed-AVP", AvpType::Grouped, FlagRule::default());
        failed.group = Rules {
            rules: Vec::new(),
            extensible: true,
        };
        d.insert_avp(failed, origin());
        assert_eq!(validate_answer(&a, &d), Ok(()));
    }

    #[test]
    fn unknown_command_gets_per_avp_checks_only() {
        let d = dict();
        let mut w = MessageWriter::new(Header::request(8_388_620, 77, 1, 1));
        w.u32(268, M, 0, 1).u32(268, M, 0, 2);
        assert_eq!(
            validate(&Message::decode(w.finish().unwrap()).unwrap(), &d),
            Ok(())
        );
        let mut w = MessageWriter::new(Header::request(8_388_620, 77, 1, 1));
        w.avp(268, M, 0, &[1]);
        let e = validate(&Message::decode(w.finish().unwrap()).unwrap(), &d).unwrap_err();
        assert_eq!(e.result_code, 5014);
    }

    #[test]
    fn nesting_is_bounded() {
        fn nest(w: &mut MessageWriter, n: usize) {
            if n > 0 {
                w.group(999, M, 0, |w| nest(w, n - 1));
            }
        }
        let ok = ccr(|w| nest(w, MAX_DEPTH));
        assert_eq!(validate(&ok, &dict()), Ok(()));
        // The writer refuses to nest deeper, so build the hostile message by hand.
        let mut avp = Vec::new();
        for _ in 0..(MAX_DEPTH + 5) {
            let len = 8 + avp.len() as u32;
            let mut outer = vec![0, 0, 0x03, 0xE7, 0x40];
            outer.extend_from_slice(&len.to_be_bytes()[1..]);
            outer.extend(avp);
            avp = outer;
        }
        let mut w = MessageWriter::new(ccr_header());
        w.str(263, M, 0, "s")
            .str(264, M, 0, "h")
            .str(296, M, 0, "r")
            .u32(258, M, 0, 4)
            .u32(416, M, 0, 1)
            .raw(&avp);
        let e = err(&Message::decode(w.finish().unwrap()).unwrap());
        assert_eq!(e.result_code, 5004);
    }

    #[test]
    fn large_abnf_counts_on_the_heap() {
        let mut d = dict();
        let mut rules: Vec<Rule> = (0..STACK_RULES as u32 + 10)
            .map(|i| rule(10_000 + i, 0, RuleKind::Optional, 0, Some(1)))
            .collect();
        rules.push(rule(264, 0, RuleKind::Required, 1, Some(1)));
        d.insert_command(
            CommandDef {
                code: 9999,
                app_id: 0,
                name: "Big".into(),
                request_abbr: "BGR".into(),
                answer_abbr: "BGA".into(),
                proxiable: false,
                request: Rules {
                    rules,
                    extensible: true,
                },
                answer: Rules::default(),
            },
            origin(),
        );
        let mut w = MessageWriter::new(Header::request(9999, 0, 1, 1));
        w.str(296, M, 0, "r");
        let e = validate(&Message::decode(w.finish().unwrap()).unwrap(), &d).unwrap_err();
        assert_eq!(e.result_code, 5005);
        let mut w = MessageWriter::new(Header::request(9999, 0, 1, 1));
        w.str(264, M, 0, "h").str(264, M, 0, "h");
        let e = validate(&Message::decode(w.finish().unwrap()).unwrap(), &d).unwrap_err();
        assert_eq!(e.result_code, 5009);
    }

    #[test]
    fn find_rule_wraps_around() {
        let rules: Vec<Rule> = (1..=5)
            .map(|c| rule(c, 0, RuleKind::Optional, 0, None))
            .collect();
        let mut hint = 3;
        assert_eq!(find_rule(&rules, 5, 0, &mut hint), Some(4));
        assert_eq!(hint, 4);
        assert_eq!(find_rule(&rules, 1, 0, &mut hint), Some(0));
        assert_eq!(hint, 0);
        assert_eq!(find_rule(&rules, 9, 0, &mut hint), None);
        assert_eq!(hint, 0);
        assert_eq!(find_rule(&[], 1, 0, &mut hint), None);
        hint = 99;
        assert_eq!(find_rule(&rules, 2, 0, &mut hint), Some(1));
    }

    #[test]
    fn display() {
        let e = ProtocolError::new(5005, None, "missing AVP X".into());
        assert_eq!(e.to_string(), "5005 DIAMETER_MISSING_AVP (missing AVP X)");
        assert!(!e.is_protocol_error());
    }
}
