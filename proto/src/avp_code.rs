//! The base protocol's AVP codes (RFC 6733 §4.5), the one home for them: every crate of the
//! project names these instead of writing the numbers again. Application AVPs (Cx, Ro, ...)
//! are the dictionary's business ([`crate::dict`]); the codes here are the ones the node
//! itself reads or writes (capabilities exchange, watchdog, disconnect, routing, answers).

/// User-Name (RFC 6733 §8.14), UTF8String (routing rules' `un=`).
pub const USER_NAME: u32 = 1;
/// Host-IP-Address (RFC 6733 §5.3.5), Address.
pub const HOST_IP_ADDRESS: u32 = 257;
/// Auth-Application-Id (RFC 6733 §6.8), Unsigned32.
pub const AUTH_APPLICATION_ID: u32 = 258;
/// Acct-Application-Id (RFC 6733 §6.9), Unsigned32.
pub const ACCT_APPLICATION_ID: u32 = 259;
/// Vendor-Specific-Application-Id (RFC 6733 §6.11), Grouped.
pub const VENDOR_SPECIFIC_APPLICATION_ID: u32 = 260;
/// Redirect-Host-Usage (RFC 6733 §6.13), Enumerated: what a 3006 answer's Redirect-Host
/// is to be used for after the redirected request.
pub const REDIRECT_HOST_USAGE: u32 = 261;
/// Redirect-Max-Cache-Time (RFC 6733 §6.14), Unsigned32: how many seconds at most.
pub const REDIRECT_MAX_CACHE_TIME: u32 = 262;
/// Session-Id (RFC 6733 §8.8), UTF8String.
pub const SESSION_ID: u32 = 263;
/// Origin-Host (RFC 6733 §6.3), DiameterIdentity.
pub const ORIGIN_HOST: u32 = 264;
/// Supported-Vendor-Id (RFC 6733 §5.3.6), Unsigned32.
pub const SUPPORTED_VENDOR_ID: u32 = 265;
/// Vendor-Id (RFC 6733 §5.3.3), Unsigned32.
pub const VENDOR_ID: u32 = 266;
/// Firmware-Revision (RFC 6733 §5.3.4), Unsigned32.
pub const FIRMWARE_REVISION: u32 = 267;
/// Result-Code (RFC 6733 §7.1), Unsigned32; the values are in [`crate::result_code`].
pub const RESULT_CODE: u32 = 268;
/// Product-Name (RFC 6733 §5.3.7), UTF8String.
pub const PRODUCT_NAME: u32 = 269;
/// Disconnect-Cause (RFC 6733 §5.4.3), Enumerated.
pub const DISCONNECT_CAUSE: u32 = 273;
/// Auth-Session-State (RFC 6733 §8.11), Enumerated.
pub const AUTH_SESSION_STATE: u32 = 277;
/// Origin-State-Id (RFC 6733 §8.16), Unsigned32.
pub const ORIGIN_STATE_ID: u32 = 278;
/// Failed-AVP (RFC 6733 §7.5), Grouped.
pub const FAILED_AVP: u32 = 279;
/// Error-Message (RFC 6733 §7.3), UTF8String.
pub const ERROR_MESSAGE: u32 = 281;
/// Route-Record (RFC 6733 §6.7.1), DiameterIdentity.
pub const ROUTE_RECORD: u32 = 282;
/// Destination-Realm (RFC 6733 §6.6), DiameterIdentity.
pub const DESTINATION_REALM: u32 = 283;
/// Proxy-Info (RFC 6733 §6.7.2), Grouped.
pub const PROXY_INFO: u32 = 284;
/// Redirect-Host (RFC 6733 §6.12), DiameterURI: where a 3006 answer sends the request.
pub const REDIRECT_HOST: u32 = 292;
/// Destination-Host (RFC 6733 §6.5), DiameterIdentity.
pub const DESTINATION_HOST: u32 = 293;
/// Origin-Realm (RFC 6733 §6.4), DiameterIdentity.
pub const ORIGIN_REALM: u32 = 296;
/// Experimental-Result (RFC 6733 §7.6), Grouped.
pub const EXPERIMENTAL_RESULT: u32 = 297;
/// Experimental-Result-Code (RFC 6733 §7.7), Unsigned32.
pub const EXPERIMENTAL_RESULT_CODE: u32 = 298;
/// Inband-Security-Id (RFC 6733 §6.10), Unsigned32.
pub const INBAND_SECURITY_ID: u32 = 299;
