//! What a dictionary holds: AVP, command, application and vendor definitions as plain data.
//!
//! These types are the contract between the dictionary (which builds them from built-in and
//! user files), the validator (which checks messages against the rules) and the JSON mapping
//! (which needs names, types and enumerations). They are deliberately plain: no lookups here,
//! see [`super::Dictionary`] for those.

use crate::AvpType;

/// AVP header flag bits (RFC 6733 §4.1).
pub mod avp_flags {
    /// Vendor-Specific: a Vendor-ID field is present.
    pub const V: u8 = 0x80;
    /// Mandatory: the receiver must understand the AVP or reject the message (5001).
    pub const M: u8 = 0x40;
    /// Protected (deprecated by RFC 6733 but still on the wire).
    pub const P: u8 = 0x20;
}

/// Which AVP flag bits the dictionary requires set (`must`) and requires clear (`must_not`).
/// Used both to set bits when encoding from JSON (scripts never set bits) and to check bits
/// when validating (RFC 6733 §4.1: a violation is DIAMETER_INVALID_AVP_BITS, 3009).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlagRule {
    /// Bits (of [`avp_flags`]) that must be set: set when encoding from JSON, 3009 when missing on
    /// receipt (only with strict checks, since peers often get M wrong).
    pub must: u8,
    /// Bits that must be clear: never set when encoding, 3009 when set on receipt.
    pub must_not: u8,
}

/// One named value of an `Enumerated` AVP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnumValue {
    /// The number on the wire.
    pub value: i32,
    /// The name scripts see and may send instead of the number.
    pub name: Box<str>,
}

/// Where an AVP may stand in a command or grouped ABNF (RFC 6733 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// `< AVP >`: at a fixed position (e.g. Session-Id first).
    Fixed,
    /// `{ AVP }`: must be present.
    Required,
    /// `[ AVP ]`: may be present.
    Optional,
}

/// One line of an ABNF: `min*max<kind AVP>`. `max == None` means unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// AVP Code of the AVP the rule is about.
    pub code: u32,
    /// Its Vendor-Id, 0 for IETF AVPs: (code, vendor) is the identity the rule matches on.
    pub vendor: u32,
    /// How the AVP may appear: fixed position, required or optional.
    pub kind: RuleKind,
    /// Fewest occurrences (a `{ AVP }` is at least 1); fewer is 5005 DIAMETER_MISSING_AVP.
    pub min: u32,
    /// Most occurrences (`None`: unbounded); more is 5009, and `Some(0)` forbids the AVP (5008).
    pub max: Option<u32>,
}

/// The ABNF body of a command or a grouped AVP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// One rule per AVP the ABNF names, in ABNF order (fixed rules first, as they must appear).
    pub rules: Vec<Rule>,
    /// True when the ABNF ends with `*[ AVP ]`: AVPs not listed are allowed (unless they carry
    /// the M bit and are unknown, which is 5001 anyway).
    pub extensible: bool,
}

/// One AVP definition.
#[derive(Clone, Debug, PartialEq)]
pub struct AvpDef {
    /// AVP Code (§4.1); with `vendor`, the AVP's identity.
    pub code: u32,
    /// Vendor-Id, 0 for IETF AVPs; non-zero means the V bit is set on the wire (§4.1).
    pub vendor: u32,
    /// The name JSON keys and dictionaries use (e.g. "Subscription-Id").
    pub name: Box<str>,
    /// The payload format: how to decode, validate and show it.
    pub ty: AvpType,
    /// Which flag bits the AVP must and must not carry.
    pub flags: FlagRule,
    /// Named values, for `Enumerated` AVPs (may be empty).
    pub enums: Vec<EnumValue>,
    /// The ABNF of a `Grouped` AVP; empty rules and `extensible` when the dictionary gives none.
    pub group: Rules,
}

impl AvpDef {
    /// The name of an enumerated value, if the dictionary knows one.
    pub fn enum_name(&self, value: i32) -> Option<&str> {
        self.enums
            .iter()
            .find(|e| e.value == value)
            .map(|e| &*e.name)
    }

    /// The value of a named enumeration member (exact match).
    pub fn enum_value(&self, name: &str) -> Option<i32> {
        self.enums
            .iter()
            .find(|e| &*e.name == name)
            .map(|e| e.value)
    }
}

/// Whether an application is an authentication/authorization or an accounting application;
/// it decides which AVP (Auth-Application-Id or Acct-Application-Id) advertises it in CER/CEA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppKind {
    /// Authentication/authorization: advertised in Auth-Application-Id, and its sessions carry
    /// Auth-Session-State.
    Auth,
    /// Accounting: advertised in Acct-Application-Id.
    Acct,
}

/// One Diameter application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppDef {
    /// Application-Id, as in the header and in CER/CEA.
    pub id: u32,
    /// Vendor for Vendor-Specific-Application-Id (0 for IETF applications).
    pub vendor: u32,
    /// Shown in logs and in `dmbridge dict`.
    pub name: Box<str>,
    /// Which CER/CEA AVP advertises it.
    pub kind: AppKind,
}

/// One command (a request/answer pair sharing a code within an application).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandDef {
    /// Command Code (24 bits in the header).
    pub code: u32,
    /// The application the ABNF belongs to (0 for base protocol commands).
    pub app_id: u32,
    /// Long name without the "-Request"/"-Answer" suffix, e.g. "Push-Profile".
    pub name: Box<str>,
    /// Abbreviations, e.g. "PPR" / "PPA": the script event is `E_DM_<request_abbr>`.
    pub request_abbr: Box<str>,
    /// Answer abbreviation, e.g. "PPA".
    pub answer_abbr: Box<str>,
    /// Whether the P bit is set on the request.
    pub proxiable: bool,
    /// The request's ABNF, used to validate incoming requests and script-built ones.
    pub request: Rules,
    /// The answer's ABNF, which also tells an error answer which of the request's AVPs to copy
    /// (DESIGN §9).
    pub answer: Rules,
}

/// A vendor (for names in dictionaries and JSON keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorDef {
    /// Vendor-Id (IANA enterprise number, e.g. 10415 for 3GPP).
    pub id: u32,
    /// The name dictionaries and JSON keys use for the vendor.
    pub name: Box<str>,
}
