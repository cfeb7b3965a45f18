//! Sans-IO Diameter core: everything about Diameter messages that needs no socket and no clock.
//!
//! Receiving: [`framer::Framer`] splits a TCP stream into message buffers;
//! [`Message::decode`] reads the [`header`] and gives zero-copy AVP iterators ([`avp`]);
//! [`value`] decodes payloads by type; [`Validator`] (or [`validate()`]) checks a message
//! against the [`dict`]ionary with RFC 6733 §7.1 Result-Codes ([`result_code`]), and
//! [`answer`] builds the error answer. Sending: [`MessageWriter`] ([`encode`]).
#![forbid(unsafe_code)]
// Public items carry doc comments (issue 10 item 7); CI's clippy -D warnings makes it an error.
#![warn(missing_docs)]
pub mod avp_type;
pub use avp_type::AvpType;
pub mod answer;
pub mod avp;
pub mod avp_code;
pub mod dict;
pub mod encode;
pub mod error;
pub mod framer;
pub mod header;
pub mod json;
pub mod message;
pub mod result_code;
#[doc(hidden)]
pub mod samples;
pub mod validate;
/// The compiled validator under its former path: [`validate::compiled`].
pub use validate::compiled as validator;
pub mod value;
pub use avp::{Avp, AvpFlags, AvpIter, AvpRef, AvpRefs};
pub use encode::MessageWriter;
pub use error::{AvpError, AvpErrorKind, DecodeError, EncodeError, HeaderError, ValueError};
pub use framer::{FrameError, Framer};
pub use header::{Flags, Header};
pub use message::Message;
pub use validate::compiled::Validator;
pub use validate::{validate, validate_answer, validate_request, ProtocolError};
pub use value::{Address, Value};
