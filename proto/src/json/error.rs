//! Errors of JSON->AVP: what is wrong, where in the JSON text (byte offset) and where in the
//! AVP structure (the JSON path, e.g. `[2].Subscription-Id[1].Subscription-Id-Data`).
//!
//! The path is what a script author needs ("which AVP did I get wrong?"); the offset is what
//! a tool user needs for syntax errors. The path is built only when an error happens: each
//! nesting level adds its segment while the error travels up, so the success path carries no
//! path bookkeeping at all.

use std::fmt;

use crate::error::EncodeError;

/// One step of a JSON path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSegment {
    /// An element of an array: `[2]`.
    Index(usize),
    /// A member of an object: `.Subscription-Id` (or `avps` at the start of a path).
    Key(String),
}

/// Why JSON text could not be turned into AVPs (or a message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// The text is not JSON (or not the shape §4 describes): what was expected.
    Syntax(&'static str),
    /// A value of the wrong JSON type for the AVP: e.g. `expected string`.
    Expected(&'static str),
    /// A key that is neither a dictionary name nor `code` / `code:vendor`.
    UnknownAvp(String),
    /// An Enumerated given by a name the dictionary does not list.
    UnknownEnum(String),
    /// A number outside the AVP type's range (`out of range for Unsigned32`).
    Range(&'static str),
    /// A value that has the right JSON type but cannot be what it claims (bad IP address,
    /// bad hex, bad time...).
    Invalid(String),
    /// Grouped AVPs nested deeper than [`crate::avp::MAX_DEPTH`].
    TooDeep,
    /// The message writer refused (size limit, AVP too large).
    Encode(EncodeError),
}

impl fmt::Display for JsonErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonErrorKind::Syntax(what) => write!(f, "invalid JSON: {what}"),
            JsonErrorKind::Expected(what) => write!(f, "expected {what}"),
            JsonErrorKind::UnknownAvp(k) => write!(
                f,
                "unknown AVP {k:?} (not in the dictionary; use \"code\" or \"code:vendor\")"
            ),
            JsonErrorKind::UnknownEnum(v) => write!(f, "unknown enumeration value {v:?}"),
            JsonErrorKind::Range(ty) => write!(f, "number out of range for {ty}"),
            JsonErrorKind::Invalid(what) => f.write_str(what),
            JsonErrorKind::TooDeep => write!(
                f,
                "grouped AVPs nested deeper than {}",
                crate::avp::MAX_DEPTH
            ),
            JsonErrorKind::Encode(e) => write!(f, "cannot encode: {e}"),
        }
    }
}

/// A JSON->AVP error: `kind` at byte `offset` of the text, inside the AVP at `path`.
///
/// Displayed as `[2].Subscription-Id[1].Subscription-Id-Data: expected string at byte 57`
/// (without the `path: ` prefix when the fault is outside any AVP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// What was wrong (syntax, an unknown AVP name, a value of the wrong type, an encode failure).
    pub kind: JsonErrorKind,
    /// Byte offset in the JSON text where the fault was found.
    pub offset: usize,
    /// Innermost segment first (segments are pushed while the error travels outwards); use
    /// [`JsonError::path`] for the readable form.
    segments: Vec<PathSegment>,
}

impl JsonError {
    pub(crate) fn new(kind: JsonErrorKind, offset: usize) -> JsonError {
        JsonError {
            kind,
            offset,
            segments: Vec::new(),
        }
    }

    /// Adds the enclosing segment (called by each level as the error passes through it).
    pub(crate) fn within(mut self, seg: PathSegment) -> JsonError {
        self.segments.push(seg);
        self
    }

    /// The path segments, outermost first.
    pub fn segments(&self) -> impl Iterator<Item = &PathSegment> {
        self.segments.iter().rev()
    }

    /// The JSON path at fault, e.g. `[2].Subscription-Id[1].Subscription-Id-Data`; empty
    /// when the fault is at the top level.
    pub fn path(&self) -> String {
        let mut s = String::new();
        for seg in self.segments() {
            match seg {
                PathSegment::Index(i) => {
                    s.push('[');
                    s.push_str(itoa::Buffer::new().format(*i));
                    s.push(']');
                }
                PathSegment::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
            }
        }
        s
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path();
        if !path.is_empty() {
            write!(f, "{path}: ")?;
        }
        write!(f, "{} at byte {}", self.kind, self.offset)
    }
}

impl std::error::Error for JsonError {}
