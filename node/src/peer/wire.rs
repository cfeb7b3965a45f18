//! The base-protocol messages of the peer layer on the wire: CER/CEA, DWR/DWA, DPR/DPA.
//!
//! The state machine speaks in typed values ([`Capabilities`], [`Outgoing`]); this module is
//! the only place that turns them into bytes with `dmproto`'s [`MessageWriter`] and reads
//! them back from a [`Message`]. AVP codes and flag rules are those of RFC 6733 §5 (fixed by
//! the RFC, so they are constants here rather than dictionary look-ups).

use std::net::IpAddr;

use bytes::Bytes;
use dmproto::avp::AvpFlags;
use dmproto::value::{self, Address};
use dmproto::{EncodeError, Flags, Header, Message, MessageWriter};

use super::capabilities::{Capabilities, VendorApp};
use super::fsm::{DisconnectCause, MsgIds, Outgoing, ReceivedCer};
use crate::config::AppKind;

/// Command codes of the base protocol (RFC 6733 §3.1).
pub mod cmd {
    /// CER/CEA (§5.3).
    pub const CAPABILITIES_EXCHANGE: u32 = 257;
    /// DWR/DWA (§5.5).
    pub const DEVICE_WATCHDOG: u32 = 280;
    /// DPR/DPA (§5.4).
    pub const DISCONNECT_PEER: u32 = 282;
}

/// The base protocol's AVP codes, from their one home.
pub use dmproto::avp_code as avp;

const M: u8 = AvpFlags::M;

/// What kind of base-protocol message a received message is, for the peer layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseKind {
    /// Capabilities-Exchange-Request: the first message of a connection the peer opened.
    Cer,
    /// Capabilities-Exchange-Answer: the answer to our CER.
    Cea,
    /// Device-Watchdog-Request: answered with a DWA on the spot.
    Dwr,
    /// Device-Watchdog-Answer: fed to the watchdog.
    Dwa,
    /// Disconnect-Peer-Request: answered, then the connection closes.
    Dpr,
    /// Disconnect-Peer-Answer: the answer to our DPR.
    Dpa,
    /// Anything else: application traffic (or base commands the peer layer does not own).
    Other,
}

/// Classifies a message by command code and R bit. Base messages are application 0.
pub fn classify(header: &Header) -> BaseKind {
    let req = header.flags.is_request();
    match (header.code, req) {
        (cmd::CAPABILITIES_EXCHANGE, true) => BaseKind::Cer,
        (cmd::CAPABILITIES_EXCHANGE, false) => BaseKind::Cea,
        (cmd::DEVICE_WATCHDOG, true) => BaseKind::Dwr,
        (cmd::DEVICE_WATCHDOG, false) => BaseKind::Dwa,
        (cmd::DISCONNECT_PEER, true) => BaseKind::Dpr,
        (cmd::DISCONNECT_PEER, false) => BaseKind::Dpa,
        _ => BaseKind::Other,
    }
}

/// A CER/CEA that cannot be used, with the Result-Code the CEA answering it should carry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    /// 5005 DIAMETER_MISSING_AVP, 5004 DIAMETER_INVALID_AVP_VALUE and the like (§7.1.5):
    /// what the CEA answering a bad CER says.
    pub result_code: u32,
    /// Error-Message and log text: which AVP, what was wrong.
    pub message: String,
    /// The offending AVP, ready for Failed-AVP, when one is to blame.
    pub failed_avp: Option<Bytes>,
}

impl WireError {
    fn missing(what: &str) -> WireError {
        WireError {
            result_code: dmproto::result_code::DIAMETER_MISSING_AVP,
            message: format!("missing {what}"),
            failed_avp: None,
        }
    }

    fn invalid(what: &str, raw: &[u8], result_code: u32) -> WireError {
        WireError {
            result_code,
            message: format!("invalid {what}"),
            failed_avp: Some(Bytes::copy_from_slice(raw)),
        }
    }
}

/// Reads the capabilities of a CER or CEA. Origin-Host and Origin-Realm are required; the
/// other AVPs are optional and repeated ones are all kept. Unknown AVPs are ignored here
/// (the validator judges M-bit AVPs before this is called).
pub fn decode_capabilities(msg: &Message) -> Result<Capabilities, WireError> {
    let mut caps = Capabilities::default();
    let mut host = None;
    let mut realm = None;
    for a in msg.avp_refs() {
        let a = a.map_err(|e| WireError {
            result_code: e.result_code(),
            message: e.to_string(),
            failed_avp: None,
        })?;
        if a.vendor != 0 {
            continue;
        }
        let u32_of = |what| {
            value::decode_u32(a.data).map_err(|_| {
                WireError::invalid(
                    what,
                    a.raw,
                    dmproto::result_code::DIAMETER_INVALID_AVP_LENGTH,
                )
            })
        };
        let str_of = |what| {
            value::decode_str(a.data).map(str::to_string).map_err(|_| {
                WireError::invalid(
                    what,
                    a.raw,
                    dmproto::result_code::DIAMETER_INVALID_AVP_VALUE,
                )
            })
        };
        match a.code {
            avp::ORIGIN_HOST => host = Some(str_of("Origin-Host")?),
            avp::ORIGIN_REALM => realm = Some(str_of("Origin-Realm")?),
            avp::HOST_IP_ADDRESS => match value::decode_address(a.data) {
                Ok(Address::V4(ip)) => caps.host_ip_addresses.push(IpAddr::V4(ip)),
                Ok(Address::V6(ip)) => caps.host_ip_addresses.push(IpAddr::V6(ip)),
                // Other families (E.164...) are legal Address values, not IP addresses.
                Ok(Address::Other { .. }) => {}
                Err(_) => {
                    return Err(WireError::invalid(
                        "Host-IP-Address",
                        a.raw,
                        dmproto::result_code::DIAMETER_INVALID_AVP_VALUE,
                    ))
                }
            },
            avp::VENDOR_ID => caps.vendor_id = u32_of("Vendor-Id")?,
            avp::PRODUCT_NAME => caps.product_name = str_of("Product-Name")?,
            avp::ORIGIN_STATE_ID => caps.origin_state_id = Some(u32_of("Origin-State-Id")?),
            avp::SUPPORTED_VENDOR_ID => caps
                .supported_vendor_ids
                .push(u32_of("Supported-Vendor-Id")?),
            avp::AUTH_APPLICATION_ID => caps.auth_app_ids.push(u32_of("Auth-Application-Id")?),
            avp::ACCT_APPLICATION_ID => caps.acct_app_ids.push(u32_of("Acct-Application-Id")?),
            avp::INBAND_SECURITY_ID => caps.inband_security_ids.push(u32_of("Inband-Security-Id")?),
            avp::FIRMWARE_REVISION => caps.firmware_revision = Some(u32_of("Firmware-Revision")?),
            avp::VENDOR_SPECIFIC_APPLICATION_ID => {
                caps.vendor_specific_apps.push(decode_vsa(&a)?);
            }
            _ => {}
        }
    }
    caps.origin_host = host.ok_or_else(|| WireError::missing("Origin-Host"))?;
    caps.origin_realm = realm.ok_or_else(|| WireError::missing("Origin-Realm"))?;
    Ok(caps)
}

fn decode_vsa(group: &dmproto::AvpRef<'_>) -> Result<VendorApp, WireError> {
    let bad = || {
        WireError::invalid(
            "Vendor-Specific-Application-Id",
            group.raw,
            dmproto::result_code::DIAMETER_INVALID_AVP_VALUE,
        )
    };
    let mut vendor = None;
    let mut app = None;
    for a in group.group() {
        let a = a.map_err(|_| bad())?;
        if a.vendor != 0 {
            continue;
        }
        let v = || value::decode_u32(a.data).map_err(|_| bad());
        match a.code {
            avp::VENDOR_ID => vendor = Some(v()?),
            avp::AUTH_APPLICATION_ID => app = Some((AppKind::Auth, v()?)),
            avp::ACCT_APPLICATION_ID => app = Some((AppKind::Acct, v()?)),
            _ => {}
        }
    }
    match (vendor, app) {
        (Some(vendor_id), Some((kind, app_id))) => Ok(VendorApp {
            vendor_id,
            kind,
            app_id,
        }),
        _ => Err(bad()),
    }
}

/// The Result-Code of an answer, if present and well-formed.
pub fn result_code(msg: &Message) -> Option<u32> {
    msg.find_u32(avp::RESULT_CODE, 0)
}

/// The Disconnect-Cause of a DPR (BUSY when absent or unknown: back off, do not give up).
pub fn disconnect_cause(msg: &Message) -> DisconnectCause {
    DisconnectCause::from_code(msg.find_u32(avp::DISCONNECT_CAUSE, 0).unwrap_or(1))
}

/// Reads a CER into the state machine's event payload.
pub fn decode_cer(msg: &Message) -> Result<ReceivedCer, WireError> {
    Ok(ReceivedCer {
        ids: ids_of(&msg.header),
        caps: decode_capabilities(msg)?,
        // The peer table knows; it sets this from the connection's certificate.
        on_tls: false,
    })
}

/// The ids an answer to `header`'s request must repeat (RFC 6733 §3).
pub fn ids_of(header: &Header) -> MsgIds {
    MsgIds {
        hop_by_hop: header.hop_by_hop,
        end_to_end: header.end_to_end,
    }
}

/// Writes the capability AVPs (after Origin-Host/Realm, which every base message carries).
fn write_capabilities(w: &mut MessageWriter, caps: &Capabilities) {
    for ip in &caps.host_ip_addresses {
        w.value(
            avp::HOST_IP_ADDRESS,
            M,
            0,
            &value::Value::Address(Address::from(*ip)),
        );
    }
    w.u32(avp::VENDOR_ID, M, 0, caps.vendor_id);
    // Product-Name and Firmware-Revision must not carry the M bit (RFC 6733 §5.3.1).
    w.str(avp::PRODUCT_NAME, 0, 0, &caps.product_name);
    if let Some(s) = caps.origin_state_id {
        w.u32(avp::ORIGIN_STATE_ID, M, 0, s);
    }
    for v in &caps.supported_vendor_ids {
        w.u32(avp::SUPPORTED_VENDOR_ID, M, 0, *v);
    }
    for id in &caps.auth_app_ids {
        w.u32(avp::AUTH_APPLICATION_ID, M, 0, *id);
    }
    for v in &caps.inband_security_ids {
        w.u32(avp::INBAND_SECURITY_ID, M, 0, *v);
    }
    for id in &caps.acct_app_ids {
        w.u32(avp::ACCT_APPLICATION_ID, M, 0, *id);
    }
    for vsa in &caps.vendor_specific_apps {
        w.group(avp::VENDOR_SPECIFIC_APPLICATION_ID, M, 0, |w| {
            w.u32(avp::VENDOR_ID, M, 0, vsa.vendor_id);
            let code = match vsa.kind {
                AppKind::Auth => avp::AUTH_APPLICATION_ID,
                AppKind::Acct => avp::ACCT_APPLICATION_ID,
            };
            w.u32(code, M, 0, vsa.app_id);
        });
    }
    if let Some(f) = caps.firmware_revision {
        w.u32(avp::FIRMWARE_REVISION, 0, 0, f);
    }
}

fn origin(w: &mut MessageWriter, local: &Capabilities) {
    w.str(avp::ORIGIN_HOST, M, 0, &local.origin_host);
    w.str(avp::ORIGIN_REALM, M, 0, &local.origin_realm);
}

/// The header of an answer we generate to a base request (never proxiable). Protocol errors
/// (3xxx) carry the E bit (RFC 6733 §7.1.3).
fn answer_header(code: u32, ids: MsgIds, result_code: u32) -> Header {
    let mut h = Header::request(code, 0, ids.hop_by_hop, ids.end_to_end);
    h.flags = if (3000..4000).contains(&result_code) {
        Flags(Flags::E)
    } else {
        Flags(0)
    };
    h
}

/// Encodes one peer-layer message. `hop_by_hop`/`end_to_end` are used for requests (CER,
/// DWR, DPR); answers reuse the ids of the request they answer. `local` supplies
/// Origin-Host/Realm and, for CER/CEA, the capabilities (with the Host-IP-Address values
/// chosen for this connection).
pub fn encode(
    msg: &Outgoing,
    local: &Capabilities,
    hop_by_hop: u32,
    end_to_end: u32,
) -> Result<Bytes, EncodeError> {
    let request = |code| Header::request(code, 0, hop_by_hop, end_to_end);
    let mut w;
    match msg {
        Outgoing::Cer => {
            w = MessageWriter::new(request(cmd::CAPABILITIES_EXCHANGE));
            origin(&mut w, local);
            write_capabilities(&mut w, local);
        }
        Outgoing::Cea {
            ids,
            result_code,
            error_message,
        } => {
            w = MessageWriter::new(answer_header(
                cmd::CAPABILITIES_EXCHANGE,
                *ids,
                *result_code,
            ));
            w.u32(avp::RESULT_CODE, M, 0, *result_code);
            origin(&mut w, local);
            if let Some(text) = error_message {
                w.str(avp::ERROR_MESSAGE, 0, 0, text);
            }
            write_capabilities(&mut w, local);
        }
        Outgoing::Dwr => {
            w = MessageWriter::new(request(cmd::DEVICE_WATCHDOG));
            origin(&mut w, local);
            if let Some(s) = local.origin_state_id {
                w.u32(avp::ORIGIN_STATE_ID, M, 0, s);
            }
        }
        Outgoing::Dwa { ids } => {
            w = MessageWriter::new(answer_header(cmd::DEVICE_WATCHDOG, *ids, 2001));
            w.u32(
                avp::RESULT_CODE,
                M,
                0,
                dmproto::result_code::DIAMETER_SUCCESS,
            );
            origin(&mut w, local);
            if let Some(s) = local.origin_state_id {
                w.u32(avp::ORIGIN_STATE_ID, M, 0, s);
            }
        }
        Outgoing::Dpr { cause } => {
            w = MessageWriter::new(request(cmd::DISCONNECT_PEER));
            origin(&mut w, local);
            w.u32(avp::DISCONNECT_CAUSE, M, 0, cause.code());
        }
        Outgoing::Dpa { ids } => {
            w = MessageWriter::new(answer_header(cmd::DISCONNECT_PEER, *ids, 2001));
            w.u32(
                avp::RESULT_CODE,
                M,
                0,
                dmproto::result_code::DIAMETER_SUCCESS,
            );
            origin(&mut w, local);
        }
    }
    w.finish()
}

/// A CEA refusing a CER that could not be handed to any peer state machine: unknown
/// Origin-Host (3010) or an unreadable CER (5005 and friends). Sent before closing.
pub fn encode_cea_error(
    request: &Header,
    local: &Capabilities,
    error: &WireError,
) -> Result<Bytes, EncodeError> {
    let ids = ids_of(request);
    let mut w = MessageWriter::new(answer_header(
        cmd::CAPABILITIES_EXCHANGE,
        ids,
        error.result_code,
    ));
    w.u32(avp::RESULT_CODE, M, 0, error.result_code);
    origin(&mut w, local);
    w.str(avp::ERROR_MESSAGE, 0, 0, &error.message);
    if let Some(raw) = &error.failed_avp {
        w.group(avp::FAILED_AVP, M, 0, |w| {
            w.raw(raw);
        });
    }
    write_capabilities(&mut w, local);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::capabilities::result;

    fn local() -> Capabilities {
        Capabilities {
            origin_host: "bridge.example.net".into(),
            origin_realm: "example.net".into(),
            host_ip_addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            vendor_id: 10415,
            product_name: "dmbridge".into(),
            origin_state_id: Some(1_700_000_000),
            supported_vendor_ids: vec![10415],
            auth_app_ids: vec![4],
            acct_app_ids: vec![3],
            vendor_specific_apps: vec![
                VendorApp {
                    vendor_id: 10415,
                    kind: AppKind::Auth,
                    app_id: 16777216,
                },
                VendorApp {
                    vendor_id: 10415,
                    kind: AppKind::Acct,
                    app_id: 16777218,
                },
            ],
            inband_security_ids: vec![0],
            firmware_revision: Some(3),
        }
    }

    #[test]
    fn cer_round_trips_every_capability() {
        let bytes = encode(&Outgoing::Cer, &local(), 11, 22).unwrap();
        let msg = Message::decode(bytes).unwrap();
        assert_eq!(classify(&msg.header), BaseKind::Cer);
        assert_eq!(msg.header.app_id, 0);
        assert_eq!((msg.header.hop_by_hop, msg.header.end_to_end), (11, 22));
        assert!(!msg.header.flags.is_proxiable());
        let cer = decode_cer(&msg).unwrap();
        assert_eq!(cer.caps, local());
        assert_eq!(
            cer.ids,
            MsgIds {
                hop_by_hop: 11,
                end_to_end: 22
            }
        );
        // Product-Name and Firmware-Revision without M, the others with it.
        for a in msg.avp_refs() {
            let a = a.unwrap();
            let m = a.flags.is_mandatory();
            match a.code {
                avp::PRODUCT_NAME | avp::FIRMWARE_REVISION => assert!(!m, "{}", a.code),
                _ => assert!(m, "{}", a.code),
            }
        }
    }

    #[test]
    fn cea_carries_result_and_request_ids() {
        let ids = MsgIds {
            hop_by_hop: 5,
            end_to_end: 6,
        };
        let out = Outgoing::Cea {
            ids,
            result_code: 5010,
            error_message: Some("no app".into()),
        };
        let msg = Message::decode(encode(&out, &local(), 0, 0).unwrap()).unwrap();
        assert_eq!(classify(&msg.header), BaseKind::Cea);
        assert_eq!(result_code(&msg), Some(5010));
        assert_eq!(ids_of(&msg.header), ids);
        assert!(!msg.header.flags.is_error(), "5xxx is not a protocol error");
        assert_eq!(
            decode_capabilities(&msg).unwrap().origin_host,
            "bridge.example.net"
        );
    }

    #[test]
    fn dwr_dwa_dpr_dpa() {
        let l = local();
        let dwr = Message::decode(encode(&Outgoing::Dwr, &l, 1, 2).unwrap()).unwrap();
        assert_eq!(classify(&dwr.header), BaseKind::Dwr);
        let ids = ids_of(&dwr.header);
        let dwa = Message::decode(encode(&Outgoing::Dwa { ids }, &l, 0, 0).unwrap()).unwrap();
        assert_eq!(classify(&dwa.header), BaseKind::Dwa);
        assert_eq!(result_code(&dwa), Some(2001));
        assert_eq!(dwa.header.hop_by_hop, 1);
        for cause in [
            DisconnectCause::Rebooting,
            DisconnectCause::Busy,
            DisconnectCause::DoNotWantToTalkToYou,
        ] {
            let dpr = Message::decode(encode(&Outgoing::Dpr { cause }, &l, 3, 4).unwrap()).unwrap();
            assert_eq!(classify(&dpr.header), BaseKind::Dpr);
            assert_eq!(disconnect_cause(&dpr), cause);
        }
        let dpa = Message::decode(
            encode(
                &Outgoing::Dpa {
                    ids: MsgIds {
                        hop_by_hop: 3,
                        end_to_end: 4,
                    },
                },
                &l,
                0,
                0,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(classify(&dpa.header), BaseKind::Dpa);
        assert_eq!(result_code(&dpa), Some(2001));
    }

    #[test]
    fn cer_without_origin_host_is_5005() {
        let mut w = MessageWriter::new(Header::request(257, 0, 1, 1));
        w.str(avp::ORIGIN_REALM, M, 0, "example.net");
        let msg = Message::decode(w.finish().unwrap()).unwrap();
        let err = decode_cer(&msg).unwrap_err();
        assert_eq!(err.result_code, dmproto::result_code::DIAMETER_MISSING_AVP);
        assert!(err.message.contains("Origin-Host"));
    }

    #[test]
    fn malformed_capability_avp_is_reported_with_failed_avp() {
        let mut w = MessageWriter::new(Header::request(257, 0, 1, 1));
        w.str(avp::ORIGIN_HOST, M, 0, "p.example.net");
        w.str(avp::ORIGIN_REALM, M, 0, "example.net");
        w.avp(avp::AUTH_APPLICATION_ID, M, 0, &[1, 2]); // 2 bytes: not an Unsigned32
        let msg = Message::decode(w.finish().unwrap()).unwrap();
        let err = decode_cer(&msg).unwrap_err();
        assert_eq!(
            err.result_code,
            dmproto::result_code::DIAMETER_INVALID_AVP_LENGTH
        );
        let failed = err.failed_avp.clone().unwrap();
        let req = msg.header;
        let cea = Message::decode(encode_cea_error(&req, &local(), &err).unwrap()).unwrap();
        assert_eq!(result_code(&cea), Some(5014));
        let fa = cea.find(avp::FAILED_AVP, 0).unwrap();
        let inner = fa.group().next().unwrap().unwrap();
        assert_eq!(&inner.raw[..], &failed[..]);
    }

    #[test]
    fn unknown_peer_cea_has_e_bit() {
        let req = Header::request(257, 0, 9, 10);
        let err = WireError {
            result_code: result::UNKNOWN_PEER,
            message: "unknown peer x".into(),
            failed_avp: None,
        };
        let cea = Message::decode(encode_cea_error(&req, &local(), &err).unwrap()).unwrap();
        assert!(cea.header.flags.is_error());
        assert!(!cea.header.flags.is_request());
        assert_eq!(result_code(&cea), Some(3010));
        assert_eq!((cea.header.hop_by_hop, cea.header.end_to_end), (9, 10));
    }

    #[test]
    fn hostile_cer_bodies_do_not_panic() {
        // A header claiming a CER followed by arbitrary bytes: decode must fail cleanly.
        for body in [
            &[0u8; 4][..],
            &[0, 0, 1, 8, 0x40, 0, 0, 200, 0, 0, 0, 0],
            &[0xff; 16],
        ] {
            let mut buf = bytes::BytesMut::new();
            let mut h = Header::request(257, 0, 1, 1);
            h.length = (20 + body.len()) as u32;
            h.encode(&mut buf);
            buf.extend_from_slice(body);
            if let Ok(msg) = Message::decode(buf.freeze()) {
                assert!(decode_cer(&msg).is_err());
            }
        }
    }
}
