//! The data formats of RFC 6733 §4.2 (basic) and §4.3 (derived) that an AVP's payload can have.
//!
//! Shared by the codec (how to decode a payload), the dictionary (what each AVP is) and the
//! JSON mapping (how a value is shown to scripts).

use std::fmt;
use std::str::FromStr;

/// An AVP data format. Derived formats keep their own variant because the JSON mapping and
/// validation differ (an `Address` is shown as an IP string, an `Enumerated` may be named).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AvpType {
    /// §4.2: arbitrary bytes (passwords, tokens, SIP bodies); shown to scripts as a JSON string
    /// when UTF-8, else as `{"hex": ...}`, since scripts mostly put text in them.
    OctetString,
    /// §4.2: signed 32-bit, big-endian; the payload must be exactly 4 bytes or it is 5014.
    Integer32,
    /// §4.2: signed 64-bit, big-endian; exactly 8 bytes.
    Integer64,
    /// §4.2: unsigned 32-bit, big-endian; exactly 4 bytes (Result-Code, Vendor-Id,
    /// Application-Ids).
    Unsigned32,
    /// §4.2: unsigned 64-bit, big-endian; exactly 8 bytes (octet counters in accounting).
    Unsigned64,
    /// §4.2: IEEE 754 single, big-endian; a non-finite value has no JSON number, so it is shown as
    /// hex.
    Float32,
    /// §4.2: IEEE 754 double, big-endian; non-finite values are shown as hex, as for Float32.
    Float64,
    /// §4.4: a sequence of AVPs as payload; validated against its own ABNF, shown as a nested AVP
    /// list.
    Grouped,
    /// §4.3.1: a 2-byte IANA address family then the address; IPv4 and IPv6 are shown as address
    /// strings, other families as hex.
    Address,
    /// §4.3.1: 32-bit NTP seconds; shown as Unix seconds, with the 2036 era rule of
    /// [`crate::value::ntp_to_unix`].
    Time,
    /// §4.3.1: an OctetString that must be valid UTF-8 (5004 otherwise), so it is shown as a plain
    /// string.
    UTF8String,
    /// §4.3.1: a host's FQDN or realm (Origin-Host, Destination-Realm): ASCII text the router
    /// compares, so it gets its own format.
    DiameterIdentity,
    /// §4.3.1: an `aaa://` or `aaas://` URI naming a Diameter node (Redirect-Host); text.
    DiameterURI,
    /// §4.3.1: an Integer32 whose values the dictionary names; scripts may send the name or the
    /// number.
    Enumerated,
    /// §4.3.1: a packet-filter rule in text (NASREQ, Gx); carried as a string and not parsed here.
    IPFilterRule,
    /// RFC 4005/7155 QoSFilterRule: an OctetString with a textual rule, shown as a string.
    QoSFilterRule,
}

impl AvpType {
    /// Every format, in declaration order (the discriminant order tables indexed by type
    /// rely on).
    pub const ALL: [AvpType; 16] = [
        AvpType::OctetString,
        AvpType::Integer32,
        AvpType::Integer64,
        AvpType::Unsigned32,
        AvpType::Unsigned64,
        AvpType::Float32,
        AvpType::Float64,
        AvpType::Grouped,
        AvpType::Address,
        AvpType::Time,
        AvpType::UTF8String,
        AvpType::DiameterIdentity,
        AvpType::DiameterURI,
        AvpType::Enumerated,
        AvpType::IPFilterRule,
        AvpType::QoSFilterRule,
    ];

    /// The canonical name, as written in dictionaries.
    pub fn name(self) -> &'static str {
        match self {
            AvpType::OctetString => "OctetString",
            AvpType::Integer32 => "Integer32",
            AvpType::Integer64 => "Integer64",
            AvpType::Unsigned32 => "Unsigned32",
            AvpType::Unsigned64 => "Unsigned64",
            AvpType::Float32 => "Float32",
            AvpType::Float64 => "Float64",
            AvpType::Grouped => "Grouped",
            AvpType::Address => "Address",
            AvpType::Time => "Time",
            AvpType::UTF8String => "UTF8String",
            AvpType::DiameterIdentity => "DiameterIdentity",
            AvpType::DiameterURI => "DiameterURI",
            AvpType::Enumerated => "Enumerated",
            AvpType::IPFilterRule => "IPFilterRule",
            AvpType::QoSFilterRule => "QoSFilterRule",
        }
    }

    /// The exact payload length a fixed-size format requires, for DIAMETER_INVALID_AVP_LENGTH
    /// (5014) checks; `None` for variable-length formats.
    pub fn fixed_len(self) -> Option<usize> {
        match self {
            AvpType::Integer32
            | AvpType::Unsigned32
            | AvpType::Float32
            | AvpType::Enumerated
            | AvpType::Time => Some(4),
            AvpType::Integer64 | AvpType::Unsigned64 | AvpType::Float64 => Some(8),
            _ => None,
        }
    }
}

impl fmt::Display for AvpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AvpType {
    type Err = ();

    /// Accepts the RFC names and the spellings used by OpenSIPS `aaa_diameter` and
    /// freeDiameter dictionaries (case-insensitive; `UTF8String`/`Utf8String`, `Unsigned32`, ...).
    fn from_str(s: &str) -> Result<Self, ()> {
        let t = match s.to_ascii_lowercase().as_str() {
            "octetstring" | "string" => AvpType::OctetString,
            "integer32" | "integer" => AvpType::Integer32,
            "integer64" => AvpType::Integer64,
            "unsigned32" => AvpType::Unsigned32,
            "unsigned64" => AvpType::Unsigned64,
            "float32" => AvpType::Float32,
            "float64" => AvpType::Float64,
            "grouped" => AvpType::Grouped,
            "address" | "ipaddress" => AvpType::Address,
            "time" => AvpType::Time,
            "utf8string" | "utf8" | "utf-8string" => AvpType::UTF8String,
            "diameteridentity" => AvpType::DiameterIdentity,
            "diameteruri" => AvpType::DiameterURI,
            "enumerated" => AvpType::Enumerated,
            "ipfilterrule" => AvpType::IPFilterRule,
            "qosfilterrule" => AvpType::QoSFilterRule,
            _ => return Err(()),
        };
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_format_in_discriminant_order() {
        for (i, ty) in AvpType::ALL.into_iter().enumerate() {
            assert_eq!(ty as usize, i, "{ty}");
            assert_eq!(ty.name().parse::<AvpType>(), Ok(ty));
        }
    }
}
