//! Result-Code values: RFC 6733 §7.1 (base protocol, in the Result-Code AVP) and the 3GPP
//! TS 29.229 Cx/Dx values carried in Experimental-Result (vendor 10415).
//!
//! The class is the thousands digit: 1xxx informational, 2xxx success, 3xxx protocol errors
//! (answered with the E bit), 4xxx transient failures, 5xxx permanent failures.
//! Experimental codes reuse numbers of the base space with other meanings, which is why they
//! are named `EXPERIMENTAL_*` and looked up with [`experimental_name`].

// 1xxx informational
/// RFC 6733 §7.1.1: authentication needs another round trip; the answer carries state for the next
/// request (NASREQ, EAP), so it is neither success nor failure.
pub const DIAMETER_MULTI_ROUND_AUTH: u32 = 1001;
// 2xxx success
/// RFC 6733 §7.1.2: the request was processed; what a script or responder sends when it has nothing
/// to refuse.
pub const DIAMETER_SUCCESS: u32 = 2001;
/// RFC 6733 §7.1.2: processed, but more work is needed before service is granted (e.g. NASREQ
/// continuing in another round).
pub const DIAMETER_LIMITED_SUCCESS: u32 = 2002;
// 3xxx protocol errors
/// RFC 6733 §7.1.3: no application here handles this Command-Code; the bridge answers it when no
/// worker serves the command's event nor `E_DM_REQUEST` (DESIGN §3).
pub const DIAMETER_COMMAND_UNSUPPORTED: u32 = 3001;
/// RFC 6733 §7.1.3: Destination-Host names a node we cannot reach (no such peer, or it is down); a
/// relay or DRA may try another path (§6.1, DESIGN §9).
pub const DIAMETER_UNABLE_TO_DELIVER: u32 = 3002;
/// RFC 6733 §7.1.3: Destination-Realm is neither ours nor a realm we route for; the sender
/// should not retry here.
pub const DIAMETER_REALM_NOT_SERVED: u32 = 3003;
/// RFC 6733 §7.1.3: the request is ours but nobody can take it now (no SIP worker attached, rings
/// full); with the E bit, so a DRA re-routes it unless we were its Destination-Host (DESIGN §9).
pub const DIAMETER_TOO_BUSY: u32 = 3004;
/// RFC 6733 §7.1.3 / §6.1.3: our own identity is already in the request's Route-Record, so
/// forwarding it would loop.
pub const DIAMETER_LOOP_DETECTED: u32 = 3005;
/// RFC 6733 §7.1.3 / §6.1.8: a redirect agent's answer naming, in Redirect-Host, where to send the
/// request instead; dmbridge never acts as a redirect agent.
pub const DIAMETER_REDIRECT_INDICATION: u32 = 3006;
/// RFC 6733 §7.1.3: the Application-Id in the header is not one this node (or the chosen route)
/// supports.
pub const DIAMETER_APPLICATION_UNSUPPORTED: u32 = 3007;
/// RFC 6733 §7.1.3: header flags that contradict each other or the command (E bit on a request, P
/// bit on a non-proxiable command); answered with the E bit, since the message itself is at fault.
pub const DIAMETER_INVALID_HDR_BITS: u32 = 3008;
/// RFC 6733 §7.1.3: reserved AVP flag bits set, or a bit the dictionary says MUST NOT be set is
/// set; the validator reports every AVP flag fault with this code (`validate::reference`).
pub const DIAMETER_INVALID_AVP_BITS: u32 = 3009;
/// RFC 6733 §7.1.3 / §5.3: a CER from a host that is not a configured peer, or that does not prove
/// to be one (TLS name or source address, DESIGN §10); the connection is closed after the CEA.
pub const DIAMETER_UNKNOWN_PEER: u32 = 3010;
// 4xxx transient failures
/// RFC 6733 §7.1.4: the credentials were wrong; transient because the user may retry with others.
pub const DIAMETER_AUTHENTICATION_REJECTED: u32 = 4001;
/// RFC 6733 §7.1.4: an accounting server could not store the record now; the client should retry
/// (typically to another server).
pub const DIAMETER_OUT_OF_SPACE: u32 = 4002;
/// RFC 6733 §7.1.4 / §5.6.4: both sides connected at once; the peer that lost the election closes
/// this connection with this code, and the other connection carries on.
pub const ELECTION_LOST: u32 = 4003;
// 5xxx permanent failures
/// RFC 6733 §7.1.5: an AVP with the M bit that the receiver does not know; the answer carries the
/// AVP in Failed-AVP (§7.5) so the sender can see which.
pub const DIAMETER_AVP_UNSUPPORTED: u32 = 5001;
/// RFC 6733 §7.1.5: the Session-Id names no session the server knows (it ended or never existed).
pub const DIAMETER_UNKNOWN_SESSION_ID: u32 = 5002;
/// RFC 6733 §7.1.5: the user is known but not allowed the requested service.
pub const DIAMETER_AUTHORIZATION_REJECTED: u32 = 5003;
/// RFC 6733 §7.1.5: an AVP's value is out of its type's or enumeration's range, or a grouped AVP
/// does not decode; Failed-AVP carries the offending AVP.
pub const DIAMETER_INVALID_AVP_VALUE: u32 = 5004;
/// RFC 6733 §7.1.5: an AVP the command's ABNF requires is absent; Failed-AVP carries an example AVP
/// of the missing code with a zero-filled value (§7.5).
pub const DIAMETER_MISSING_AVP: u32 = 5005;
/// RFC 6733 §7.1.5: the server refuses the request because the user has used up an allowance (not a
/// transient overload: that is 3004).
pub const DIAMETER_RESOURCES_EXCEEDED: u32 = 5006;
/// RFC 6733 §7.1.5: two AVPs that may not appear together did; Failed-AVP carries them.
pub const DIAMETER_CONTRADICTING_AVPS: u32 = 5007;
/// RFC 6733 §7.1.5: an AVP the command's ABNF forbids (a `0*0` rule) is present.
pub const DIAMETER_AVP_NOT_ALLOWED: u32 = 5008;
/// RFC 6733 §7.1.5: an AVP appears more often than the ABNF allows; Failed-AVP carries the first
/// occurrence over the limit.
pub const DIAMETER_AVP_OCCURS_TOO_MANY_TIMES: u32 = 5009;
/// RFC 6733 §7.1.5 / §5.3: the CER advertises no application this node also supports (and no
/// relay), so the capabilities exchange fails and the connection closes.
pub const DIAMETER_NO_COMMON_APPLICATION: u32 = 5010;
/// RFC 6733 §7.1.5 / §3: the header's Version is not 1; nothing else in the message can be trusted.
pub const DIAMETER_UNSUPPORTED_VERSION: u32 = 5011;
/// RFC 6733 §7.1.5: the catch-all refusal; dmbridge answers it when a script's reply would make an
/// invalid answer, or a worker freed a request without replying (DESIGN §9).
pub const DIAMETER_UNABLE_TO_COMPLY: u32 = 5012;
/// RFC 6733 §7.1.5: a reserved header bit is set; unlike 3008 it is a permanent failure of the
/// request, not of the header's flag combination.
pub const DIAMETER_INVALID_BIT_IN_HEADER: u32 = 5013;
/// RFC 6733 §7.1.5: an AVP's length field disagrees with its type's size or runs past the message;
/// Failed-AVP carries the AVP header.
pub const DIAMETER_INVALID_AVP_LENGTH: u32 = 5014;
/// RFC 6733 §7.1.5 / §3: the header's Message Length is impossible (not a multiple of 4, shorter
/// than the header) or over our limit; the framer cannot find the next message, so the connection
/// is closed.
pub const DIAMETER_INVALID_MESSAGE_LENGTH: u32 = 5015;
/// RFC 6733 §7.1.5: an AVP carries a flag value its definition does not allow; named for peers that
/// send it, while dmbridge's validator reports flag faults as 3009.
pub const DIAMETER_INVALID_AVP_BIT_COMBO: u32 = 5016;
/// RFC 6733 §7.1.5 / §5.3: the peers share no security mechanism (e.g. we require TLS and the CER
/// offers none); the connection closes.
pub const DIAMETER_NO_COMMON_SECURITY: u32 = 5017;

/// The 3GPP vendor id, under which the `EXPERIMENTAL_*` codes are defined.
pub const VENDOR_3GPP: u32 = 10415;

// 3GPP TS 29.229 §6.2 (Cx/Dx), sent in Experimental-Result with Vendor-Id 10415.
/// TS 29.229 §6.2.1.1 (SAA): the user was not registered before; the S-CSCF will download the
/// profile.
pub const EXPERIMENTAL_DIAMETER_FIRST_REGISTRATION: u32 = 2001;
/// TS 29.229 §6.2.1.2 (UAA): the user is registered already; the I-CSCF routes to the S-CSCF named
/// in Server-Name.
pub const EXPERIMENTAL_DIAMETER_SUBSEQUENT_REGISTRATION: u32 = 2002;
/// TS 29.229 §6.2.1.3 (UAA/LIA): the user is not registered but has unregistered-state services;
/// the I-CSCF picks an S-CSCF for them.
pub const EXPERIMENTAL_DIAMETER_UNREGISTERED_SERVICE: u32 = 2003;
/// TS 29.229 §6.2.1.4 (SAA): success, but the HSS did not keep the S-CSCF name (e.g. an
/// unregistered user's profile download).
pub const EXPERIMENTAL_DIAMETER_SUCCESS_SERVER_NAME_NOT_STORED: u32 = 2004;
/// TS 29.229 §6.2.2.1: the HSS knows no such user; the CSCF rejects the registration (SIP 403/404).
pub const EXPERIMENTAL_DIAMETER_ERROR_USER_UNKNOWN: u32 = 5001;
/// TS 29.229 §6.2.2.2: the public identity does not belong to the private identity in the request.
pub const EXPERIMENTAL_DIAMETER_ERROR_IDENTITIES_DONT_MATCH: u32 = 5002;
/// TS 29.229 §6.2.2.3: a location query (LIR) for an identity that has no registration and no
/// unregistered services.
pub const EXPERIMENTAL_DIAMETER_ERROR_IDENTITY_NOT_REGISTERED: u32 = 5003;
/// TS 29.229 §6.2.2.4: the user may not register from the visited network in the request.
pub const EXPERIMENTAL_DIAMETER_ERROR_ROAMING_NOT_ALLOWED: u32 = 5004;
/// TS 29.229 §6.2.2.5: another S-CSCF already serves the identity; the requesting S-CSCF must not
/// take it over.
pub const EXPERIMENTAL_DIAMETER_ERROR_IDENTITY_ALREADY_REGISTERED: u32 = 5005;
/// TS 29.229 §6.2.2.6: the MAR asked for an authentication scheme the HSS does not support for this
/// user.
pub const EXPERIMENTAL_DIAMETER_ERROR_AUTH_SCHEME_NOT_SUPPORTED: u32 = 5006;
/// TS 29.229 §6.2.2.7: the SAR's Server-Assignment-Type does not fit the user's state (e.g.
/// de-registration by a non-serving S-CSCF).
pub const EXPERIMENTAL_DIAMETER_ERROR_IN_ASSIGNMENT_TYPE: u32 = 5007;
/// TS 29.229 §6.2.2.8: the S-CSCF received more user data than it can accept.
pub const EXPERIMENTAL_DIAMETER_ERROR_TOO_MUCH_DATA: u32 = 5008;
/// TS 29.229 §6.2.2.9: the S-CSCF does not understand the profile data the HSS pushed.
pub const EXPERIMENTAL_DIAMETER_ERROR_NOT_SUPPORTED_USER_DATA: u32 = 5009;
/// TS 29.229 §6.2.2.10: the request needs a Supported-Features feature the peer lacks (TS 29.229
/// §7.2.1).
pub const EXPERIMENTAL_DIAMETER_ERROR_FEATURE_UNSUPPORTED: u32 = 5011;
/// TS 29.229 §6.2.2.11: the serving node does not support a feature the user's subscription needs.
pub const EXPERIMENTAL_DIAMETER_ERROR_SERVING_NODE_FEATURE_UNSUPPORTED: u32 = 5012;

/// The RFC 6733 name of a Result-Code, e.g. `name(5005) == Some("DIAMETER_MISSING_AVP")`.
pub fn name(code: u32) -> Option<&'static str> {
    Some(match code {
        DIAMETER_MULTI_ROUND_AUTH => "DIAMETER_MULTI_ROUND_AUTH",
        DIAMETER_SUCCESS => "DIAMETER_SUCCESS",
        DIAMETER_LIMITED_SUCCESS => "DIAMETER_LIMITED_SUCCESS",
        DIAMETER_COMMAND_UNSUPPORTED => "DIAMETER_COMMAND_UNSUPPORTED",
        DIAMETER_UNABLE_TO_DELIVER => "DIAMETER_UNABLE_TO_DELIVER",
        DIAMETER_REALM_NOT_SERVED => "DIAMETER_REALM_NOT_SERVED",
        DIAMETER_TOO_BUSY => "DIAMETER_TOO_BUSY",
        DIAMETER_LOOP_DETECTED => "DIAMETER_LOOP_DETECTED",
        DIAMETER_REDIRECT_INDICATION => "DIAMETER_REDIRECT_INDICATION",
        DIAMETER_APPLICATION_UNSUPPORTED => "DIAMETER_APPLICATION_UNSUPPORTED",
        DIAMETER_INVALID_HDR_BITS => "DIAMETER_INVALID_HDR_BITS",
        DIAMETER_INVALID_AVP_BITS => "DIAMETER_INVALID_AVP_BITS",
        DIAMETER_UNKNOWN_PEER => "DIAMETER_UNKNOWN_PEER",
        DIAMETER_AUTHENTICATION_REJECTED => "DIAMETER_AUTHENTICATION_REJECTED",
        DIAMETER_OUT_OF_SPACE => "DIAMETER_OUT_OF_SPACE",
        ELECTION_LOST => "ELECTION_LOST",
        DIAMETER_AVP_UNSUPPORTED => "DIAMETER_AVP_UNSUPPORTED",
        DIAMETER_UNKNOWN_SESSION_ID => "DIAMETER_UNKNOWN_SESSION_ID",
        DIAMETER_AUTHORIZATION_REJECTED => "DIAMETER_AUTHORIZATION_REJECTED",
        DIAMETER_INVALID_AVP_VALUE => "DIAMETER_INVALID_AVP_VALUE",
        DIAMETER_MISSING_AVP => "DIAMETER_MISSING_AVP",
        DIAMETER_RESOURCES_EXCEEDED => "DIAMETER_RESOURCES_EXCEEDED",
        DIAMETER_CONTRADICTING_AVPS => "DIAMETER_CONTRADICTING_AVPS",
        DIAMETER_AVP_NOT_ALLOWED => "DIAMETER_AVP_NOT_ALLOWED",
        DIAMETER_AVP_OCCURS_TOO_MANY_TIMES => "DIAMETER_AVP_OCCURS_TOO_MANY_TIMES",
        DIAMETER_NO_COMMON_APPLICATION => "DIAMETER_NO_COMMON_APPLICATION",
        DIAMETER_UNSUPPORTED_VERSION => "DIAMETER_UNSUPPORTED_VERSION",
        DIAMETER_UNABLE_TO_COMPLY => "DIAMETER_UNABLE_TO_COMPLY",
        DIAMETER_INVALID_BIT_IN_HEADER => "DIAMETER_INVALID_BIT_IN_HEADER",
        DIAMETER_INVALID_AVP_LENGTH => "DIAMETER_INVALID_AVP_LENGTH",
        DIAMETER_INVALID_MESSAGE_LENGTH => "DIAMETER_INVALID_MESSAGE_LENGTH",
        DIAMETER_INVALID_AVP_BIT_COMBO => "DIAMETER_INVALID_AVP_BIT_COMBO",
        DIAMETER_NO_COMMON_SECURITY => "DIAMETER_NO_COMMON_SECURITY",
        _ => return None,
    })
}

/// The name of an Experimental-Result-Code for a vendor (only 3GPP Cx/Dx codes are known),
/// e.g. `experimental_name(10415, 2001) == Some("DIAMETER_FIRST_REGISTRATION")`.
pub fn experimental_name(vendor: u32, code: u32) -> Option<&'static str> {
    if vendor != VENDOR_3GPP {
        return None;
    }
    Some(match code {
        EXPERIMENTAL_DIAMETER_FIRST_REGISTRATION => "DIAMETER_FIRST_REGISTRATION",
        EXPERIMENTAL_DIAMETER_SUBSEQUENT_REGISTRATION => "DIAMETER_SUBSEQUENT_REGISTRATION",
        EXPERIMENTAL_DIAMETER_UNREGISTERED_SERVICE => "DIAMETER_UNREGISTERED_SERVICE",
        EXPERIMENTAL_DIAMETER_SUCCESS_SERVER_NAME_NOT_STORED => {
            "DIAMETER_SUCCESS_SERVER_NAME_NOT_STORED"
        }
        EXPERIMENTAL_DIAMETER_ERROR_USER_UNKNOWN => "DIAMETER_ERROR_USER_UNKNOWN",
        EXPERIMENTAL_DIAMETER_ERROR_IDENTITIES_DONT_MATCH => "DIAMETER_ERROR_IDENTITIES_DONT_MATCH",
        EXPERIMENTAL_DIAMETER_ERROR_IDENTITY_NOT_REGISTERED => {
            "DIAMETER_ERROR_IDENTITY_NOT_REGISTERED"
        }
        EXPERIMENTAL_DIAMETER_ERROR_ROAMING_NOT_ALLOWED => "DIAMETER_ERROR_ROAMING_NOT_ALLOWED",
        EXPERIMENTAL_DIAMETER_ERROR_IDENTITY_ALREADY_REGISTERED => {
            "DIAMETER_ERROR_IDENTITY_ALREADY_REGISTERED"
        }
        EXPERIMENTAL_DIAMETER_ERROR_AUTH_SCHEME_NOT_SUPPORTED => {
            "DIAMETER_ERROR_AUTH_SCHEME_NOT_SUPPORTED"
        }
        EXPERIMENTAL_DIAMETER_ERROR_IN_ASSIGNMENT_TYPE => "DIAMETER_ERROR_IN_ASSIGNMENT_TYPE",
        EXPERIMENTAL_DIAMETER_ERROR_TOO_MUCH_DATA => "DIAMETER_ERROR_TOO_MUCH_DATA",
        EXPERIMENTAL_DIAMETER_ERROR_NOT_SUPPORTED_USER_DATA => {
            "DIAMETER_ERROR_NOT_SUPPORTED_USER_DATA"
        }
        EXPERIMENTAL_DIAMETER_ERROR_FEATURE_UNSUPPORTED => "DIAMETER_ERROR_FEATURE_UNSUPPORTED",
        EXPERIMENTAL_DIAMETER_ERROR_SERVING_NODE_FEATURE_UNSUPPORTED => {
            "DIAMETER_ERROR_SERVING_NODE_FEATURE_UNSUPPORTED"
        }
        _ => return None,
    })
}

/// Whether a Result-Code is a protocol error (3xxx), which RFC 6733 §7.1.3 sends with the E
/// bit set in the answer header.
pub const fn is_protocol_error(code: u32) -> bool {
    code >= 3000 && code < 4000
}

/// Whether a Result-Code reports success (2xxx).
pub const fn is_success(code: u32) -> bool {
    code >= 2000 && code < 3000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_all_rfc_codes() {
        let known: Vec<u32> = (1000..6000).filter(|c| name(*c).is_some()).collect();
        let expect: Vec<u32> = [1001, 2001, 2002]
            .into_iter()
            .chain(3001..=3010)
            .chain(4001..=4003)
            .chain(5001..=5017)
            .collect();
        assert_eq!(known, expect);
        assert_eq!(name(5008), Some("DIAMETER_AVP_NOT_ALLOWED"));
        assert_eq!(name(5009), Some("DIAMETER_AVP_OCCURS_TOO_MANY_TIMES"));
        assert_eq!(name(3008), Some("DIAMETER_INVALID_HDR_BITS"));
        assert_eq!(name(4003), Some("ELECTION_LOST"));
        assert_eq!(name(6000), None);
    }

    #[test]
    fn experimental_names() {
        assert_eq!(
            experimental_name(VENDOR_3GPP, 2001),
            Some("DIAMETER_FIRST_REGISTRATION")
        );
        assert_eq!(
            experimental_name(VENDOR_3GPP, 5001),
            Some("DIAMETER_ERROR_USER_UNKNOWN")
        );
        assert_eq!(experimental_name(VENDOR_3GPP, 5010), None);
        assert_eq!(experimental_name(0, 2001), None);
    }

    #[test]
    fn classes() {
        assert!(is_protocol_error(3001) && !is_protocol_error(5001) && !is_protocol_error(2999));
        assert!(is_success(2001) && !is_success(1001) && !is_success(3000));
    }
}
