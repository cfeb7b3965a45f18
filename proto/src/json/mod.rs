//! AVPs <-> JSON, the script-facing form of a message (DESIGN §4), and the tools' message
//! document (DESIGN §8).
//!
//! Both directions are on the hot path of every message, so neither builds a
//! `serde_json::Value` tree: [`write_avps`] writes text straight from the wire bytes, and
//! [`read_avps`] / [`JsonReader`] encode each AVP into a [`crate::MessageWriter`] as its value
//! is parsed.
//!
//! # The mapping
//!
//! A list of AVPs is an array of single-key objects in wire order:
//! `[{"Session-Id":"a;1"},{"Result-Code":2001},{"Subscription-Id":[{"Subscription-Id-Type":0},{"Subscription-Id-Data":"123"}]}]`.
//!
//! | AVP | JSON out | JSON accepted in |
//! |---|---|---|
//! | key | dictionary name, else `"code"` / `"code:vendor"` | name, `"263"`, `"701:10415"` |
//! | Integer32/64, Unsigned32/64 | number, exact to 64 bits | integer in the type's range; for 32-bit types with named values (Result-Code), also a name |
//! | Enumerated | number | integer, or a name from the dictionary |
//! | Float32/64 | number (shortest form that reads back to the same bits) | number |
//! | UTF8String, DiameterIdentity, DiameterURI, IPFilterRule, QoSFilterRule | string | string |
//! | OctetString | string if UTF-8 without control characters, else `{"hex":"..."}` | string, `{"hex"}`, `{"base64"}` |
//! | Address (IPv4/IPv6) | `"192.0.2.1"`, `"2001:db8::1"` | the same |
//! | Time | Unix seconds | Unix seconds, or an RFC 3339 string |
//! | Grouped | array of the same shape | the same |
//! | unknown to the dictionary | `{"hex":"..."}` | `{"hex"}`, `{"base64"}`, string (octets), array (grouped) |
//!
//! Choices (where §4 leaves room), each made so that AVPs -> JSON -> AVPs gives back the
//! same bytes for every message whose flags follow the dictionary:
//! - **`{"hex"}` means "exactly these payload bytes"**, for every type. The writer uses it for
//!   any payload that does not decode as its dictionary type (a 3-byte Unsigned32, an Address
//!   of a family other than IPv4/IPv6 — family number included —, a grouped payload that is
//!   not AVPs or nests too deep), so such AVPs are shown and relayed unchanged rather than
//!   refused. The reader accepts it (and `{"base64"}`) for every type without type checks:
//!   it is the script's explicit escape hatch.
//! - **Float NaN and infinities** have no JSON number; they are written as `{"hex"}` of their
//!   exact bits. Finite values use Rust's shortest round-trip form (`1.5`, `1e-7`).
//! - **"Control characters"** for OctetString are C0 except TAB, LF and CR, DEL, and C1
//!   (U+0080-U+009F). TAB/LF/CR are allowed so XML payloads (Sh/Cx User-Data) stay readable
//!   text; they are escaped as `\t`, `\n`, `\r`.
//! - **Flags** come from the dictionary (its "must" bits; V follows the vendor). An AVP the
//!   dictionary does not know gets no M bit: a receiver that does not know it either must
//!   then not reject the message.
//! - An object with several members is read as several AVPs in text order; `{}` as none.
//! - Time strings: RFC 3339 with `Z` or a numeric offset; fractions of a second are
//!   truncated. Times outside 1968-2104 (what the 32-bit NTP field carries) are refused.
//! - Grouped nesting is bounded by [`crate::avp::MAX_DEPTH`] both ways.
//!
//! Errors name the JSON path at fault: `[2].Subscription-Id[1].Subscription-Id-Data:
//! expected string at byte 57` (see [`JsonError`]).

mod bytes_text;
mod error;
mod read;
mod swar;
mod time;
mod write;

pub use error::{JsonError, JsonErrorKind, PathSegment};
pub use read::{read_avps, read_message, JsonReader};
pub use write::{avps_to_string, write_avps, write_message};

#[cfg(test)]
mod tests;
