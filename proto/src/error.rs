//! Errors of the codec: what went wrong decoding a header, an AVP, a value, or encoding.
//!
//! Every decode error knows the RFC 6733 §7.1 Result-Code a peer should get for it
//! ([`result_code`](DecodeError::result_code)), so the layer that answers does not have to
//! re-derive protocol semantics from error strings.

use crate::result_code as rc;

/// Why a 20-byte Diameter header (or the message length it declares) is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than 20 bytes were available.
    #[error("message truncated: {len} bytes, a header needs 20")]
    Truncated {
        /// How many bytes there were: less than 20 means the caller framed too early.
        len: usize,
    },
    /// The version octet is not 1 (DIAMETER_UNSUPPORTED_VERSION, 5011).
    #[error("unsupported Diameter version {0}")]
    Version(u8),
    /// The declared length is below 20 or not a multiple of 4
    /// (DIAMETER_INVALID_MESSAGE_LENGTH, 5015).
    #[error("invalid message length {0}: must be >= 20 and a multiple of 4")]
    BadLength(u32),
    /// The declared length does not match the bytes given (5015).
    #[error("message length {declared} does not match the {actual} bytes received")]
    LengthMismatch {
        /// The header's Message Length.
        declared: u32,
        /// The bytes the caller handed over as one message.
        actual: usize,
    },
}

impl HeaderError {
    /// The Result-Code an answer to such a message carries.
    pub fn result_code(&self) -> u32 {
        match self {
            HeaderError::Version(_) => rc::DIAMETER_UNSUPPORTED_VERSION,
            _ => rc::DIAMETER_INVALID_MESSAGE_LENGTH,
        }
    }
}

/// What is structurally wrong with an AVP (its header or its place in the buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvpErrorKind {
    /// Fewer bytes remain than an AVP header needs (8, or 12 with the V bit).
    TruncatedHeader,
    /// The AVP Length is smaller than the header it describes.
    LengthTooShort,
    /// The AVP Length (or its padding) runs past the end of the enclosing message or group.
    LengthOverrun,
    /// Grouped AVPs nested deeper than [`crate::avp::MAX_DEPTH`].
    TooDeep,
}

/// A structural AVP error, with as much of the offending AVP's header as could be read so a
/// Failed-AVP can be built (RFC 6733 §7.1.5, DIAMETER_INVALID_AVP_LENGTH).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} at offset {offset} (AVP code {code}, vendor {vendor})", kind_text(*kind))]
pub struct AvpError {
    /// Which structural rule the AVP broke; decides 5014 or 5004.
    pub kind: AvpErrorKind,
    /// Offset of the offending AVP within the message (0 when no message context).
    pub offset: usize,
    /// The AVP code, when at least 4 bytes of the header were present (else 0).
    pub code: u32,
    /// The AVP flags octet as received (0 if not present).
    pub flags: u8,
    /// The Vendor-ID if the V bit was set and the field was present (else 0).
    pub vendor: u32,
}

fn kind_text(k: AvpErrorKind) -> &'static str {
    match k {
        AvpErrorKind::TruncatedHeader => "truncated AVP header",
        AvpErrorKind::LengthTooShort => "AVP length shorter than its header",
        AvpErrorKind::LengthOverrun => "AVP length runs past the end of its container",
        AvpErrorKind::TooDeep => "grouped AVPs nested too deep",
    }
}

impl AvpError {
    /// The Result-Code an answer carries for this error.
    pub fn result_code(&self) -> u32 {
        match self.kind {
            AvpErrorKind::TooDeep => rc::DIAMETER_INVALID_AVP_VALUE,
            _ => rc::DIAMETER_INVALID_AVP_LENGTH,
        }
    }
}

/// Why an AVP payload is not a valid value of its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A fixed-size type with the wrong payload length, or an Address whose length does not
    /// fit its family (DIAMETER_INVALID_AVP_LENGTH, 5014).
    #[error("invalid length {actual} for {ty}")]
    Length {
        /// The format the dictionary gives the AVP.
        ty: crate::AvpType,
        /// The payload length received, in bytes (without padding).
        actual: usize,
    },
    /// Text types that are not UTF-8 (DIAMETER_INVALID_AVP_VALUE, 5004).
    #[error("{ty} is not valid UTF-8")]
    Utf8 {
        /// The text format the dictionary gives the AVP.
        ty: crate::AvpType,
    },
    /// A Unix time outside the range the 32-bit NTP format can carry (1968..2104).
    #[error("time {0} is outside the NTP era range (1968-2104)")]
    TimeRange(i64),
    /// The value given for encoding does not belong to the AVP type it is encoded as.
    #[error("a {value} value cannot be encoded as {ty}")]
    TypeMismatch {
        /// The format the AVP is defined with.
        ty: crate::AvpType,
        /// The format of the value that was handed over.
        value: crate::AvpType,
    },
}

impl ValueError {
    /// The Result-Code an answer carries for this error.
    pub fn result_code(&self) -> u32 {
        match self {
            ValueError::Length { .. } => rc::DIAMETER_INVALID_AVP_LENGTH,
            _ => rc::DIAMETER_INVALID_AVP_VALUE,
        }
    }
}

/// Why a buffer is not a Diameter message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header is unusable (5011 or 5015): nothing after it can be trusted.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// An AVP's framing is broken (5014, or 5004 when nested too deep); the header is fine,
    /// so the message can still be answered.
    #[error(transparent)]
    Avp(#[from] AvpError),
}

impl DecodeError {
    /// The Result-Code an answer carries for this error.
    pub fn result_code(&self) -> u32 {
        match self {
            DecodeError::Header(e) => e.result_code(),
            DecodeError::Avp(e) => e.result_code(),
        }
    }
}

/// Why a message could not be encoded. The encoder stops writing at the first error, so a
/// failed encode never grows its buffer past the configured limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would exceed the writer's size limit (at most 2^24 - 1, the 24-bit
    /// Message Length).
    #[error("message exceeds the maximum size of {max} bytes")]
    TooLarge {
        /// The writer's limit in bytes.
        max: usize,
    },
    /// One AVP exceeds 2^24 - 1 bytes (the 24-bit AVP Length).
    #[error("AVP {code} exceeds the 24-bit AVP length")]
    AvpTooLarge {
        /// The AVP code, to tell the caller which value was too big.
        code: u32,
    },
    /// Grouped AVPs nested deeper than [`crate::avp::MAX_DEPTH`].
    #[error("grouped AVPs nested deeper than {0}")]
    TooDeep(usize),
    /// `end_group` without a matching `begin_group`.
    #[error("end_group without begin_group")]
    UnbalancedGroup,
    /// [`MessageWriter::raw`](crate::encode::MessageWriter::raw) given bytes whose AVP Length
    /// does not match their size.
    #[error("raw AVP bytes do not match their AVP Length")]
    BadRawAvp,
    /// `finish` while groups are still open.
    #[error("{0} grouped AVP(s) still open at finish")]
    OpenGroups(usize),
    /// A typed value could not be encoded.
    #[error(transparent)]
    Value(#[from] ValueError),
}
