//! Realistic sample messages, encoded with [`MessageWriter`], shared by the benches, the JSON
//! tests, the tshark oracle tests and the fuzzers (as seeds).
//!
//! Not part of the supported API (hidden from docs); the contents may change. Every sample
//! is a complete message (header included) and validates against the built-in dictionaries
//! once they define the commands involved.

use bytes::{Bytes, BytesMut};

use crate::avp::AvpFlags;
use crate::encode::MessageWriter;
use crate::header::{Flags, Header};

const M: u8 = AvpFlags::M;
/// 3GPP vendor id.
pub const V3GPP: u32 = 10415;

/// Credit-Control application (RFC 4006), used by Ro.
pub const APP_CC: u32 = 4;
/// 3GPP Cx/Dx application.
pub const APP_CX: u32 = 16_777_216;

fn header(code: u32, app: u32, request: bool, proxiable: bool, hbh: u32) -> Header {
    let mut bits = 0;
    if request {
        bits |= Flags::R;
    }
    if proxiable {
        bits |= Flags::P;
    }
    Header {
        version: 1,
        length: 0,
        flags: Flags(bits),
        code,
        app_id: app,
        hop_by_hop: hbh,
        end_to_end: hbh ^ 0x5A5A_0000,
    }
}

fn finish(w: MessageWriter) -> BytesMut {
    match w.finish_buf() {
        Ok(b) => b,
        // The samples are fixed data well inside every limit; failing here is a bug.
        Err(e) => unreachable!("sample message failed to encode: {e}"),
    }
}

/// Capabilities-Exchange-Request (RFC 6733 §5.3.1) advertising Cx and Credit-Control.
pub fn cer() -> Bytes {
    write_cer(BytesMut::new()).freeze()
}

/// Appends [`cer`] to `buf` (for benches that reuse a buffer).
pub fn write_cer(buf: BytesMut) -> BytesMut {
    let mut w = MessageWriter::with_buffer(buf, header(257, 0, true, false, 0x0000_0001));
    w.str(264, M, 0, "scscf.ims.example.net")
        .str(296, M, 0, "ims.example.net")
        .avp(257, M, 0, &[0, 1, 192, 0, 2, 10])
        .u32(266, M, 0, 0)
        .str(269, 0, 0, "dmbridge")
        .u32(278, M, 0, 1_700_000_000)
        .u32(265, M, 0, V3GPP)
        .u32(258, M, 0, APP_CC)
        .group(260, M, 0, |w| {
            w.u32(266, M, 0, V3GPP).u32(258, M, 0, APP_CX);
        })
        .u32(267, 0, 0, 1);
    finish(w)
}

/// Device-Watchdog-Request (RFC 6733 §5.5.1).
pub fn dwr() -> Bytes {
    write_dwr(BytesMut::new()).freeze()
}

/// Appends [`dwr`] to `buf` (for benches that reuse a buffer).
pub fn write_dwr(buf: BytesMut) -> BytesMut {
    let mut w = MessageWriter::with_buffer(buf, header(280, 0, true, false, 0x0000_0002));
    w.str(264, M, 0, "scscf.ims.example.net")
        .str(296, M, 0, "ims.example.net")
        .u32(278, M, 0, 1_700_000_000);
    finish(w)
}

/// A Ro Credit-Control-Request (INITIAL, 3GPP TS 32.299) of about 300 bytes with
/// Subscription-Id and one Multiple-Services-Credit-Control.
pub fn ro_ccr() -> Bytes {
    write_ro_ccr(BytesMut::new()).freeze()
}

/// Appends [`ro_ccr`] to `buf` (for benches that reuse a buffer).
pub fn write_ro_ccr(buf: BytesMut) -> BytesMut {
    let mut w = MessageWriter::with_buffer(buf, header(272, APP_CC, true, true, 0x1234_0001));
    w.str(263, M, 0, "scscf.ims.example.net;1700000000;42")
        .str(264, M, 0, "scscf.ims.example.net")
        .str(296, M, 0, "ims.example.net")
        .str(283, M, 0, "ocs.example.net")
        .u32(258, M, 0, APP_CC)
        .str(461, M, 0, "32260@3gpp.org")
        .u32(416, M, 0, 1) // INITIAL_REQUEST
        .u32(415, M, 0, 0)
        .u32(55, M, 0, 3_908_988_800)
        .group(443, M, 0, |w| {
            w.u32(450, M, 0, 0) // END_USER_E164
                .str(444, M, 0, "491701234567");
        })
        .u32(455, M, 0, 1) // MULTIPLE_SERVICES_SUPPORTED
        .group(456, M, 0, |w| {
            w.group(437, M, 0, |w| {
                w.u32(420, M, 0, 0);
            })
            .u32(432, M, 0, 100);
        });
    finish(w)
}

/// The XML body of the Cx User-Data sample: an IMS subscription profile of about 4 kB.
pub fn cx_user_data() -> String {
    let mut x = String::with_capacity(4200);
    x.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><IMSSubscription>\
         <PrivateID>alice@ims.example.net</PrivateID><ServiceProfile>",
    );
    x.push_str(
        "<PublicIdentity><Identity>sip:alice@ims.example.net</Identity>\
         <Extension><IdentityType>0</IdentityType></Extension></PublicIdentity>",
    );
    x.push_str("<PublicIdentity><Identity>tel:+491701234567</Identity></PublicIdentity>");
    let mut i = 0;
    while x.len() < 3900 {
        x.push_str(&format!(
            "<InitialFilterCriteria><Priority>{i}</Priority><TriggerPoint>\
             <ConditionTypeCNF>0</ConditionTypeCNF><SPT><ConditionNegated>0</ConditionNegated>\
             <Group>0</Group><Method>INVITE</Method></SPT></TriggerPoint>\
             <ApplicationServer><ServerName>sip:as{i}.ims.example.net</ServerName>\
             <DefaultHandling>0</DefaultHandling></ApplicationServer></InitialFilterCriteria>"
        ));
        i += 1;
    }
    x.push_str("</ServiceProfile></IMSSubscription>");
    x
}

/// A Cx Server-Assignment-Answer (3GPP TS 29.229) carrying a ~4 kB User-Data.
pub fn cx_saa() -> Bytes {
    write_cx_saa(BytesMut::new(), &cx_user_data()).freeze()
}

/// Appends [`cx_saa`] with the given User-Data to `buf`.
pub fn write_cx_saa(buf: BytesMut, user_data: &str) -> BytesMut {
    let mut w = MessageWriter::with_buffer(buf, header(301, APP_CX, false, true, 0x1234_0002));
    w.str(263, M, 0, "scscf.ims.example.net;1700000000;43")
        .group(260, M, 0, |w| {
            w.u32(266, M, 0, V3GPP).u32(258, M, 0, APP_CX);
        })
        .u32(268, M, 0, 2001)
        .u32(277, M, 0, 1) // NO_STATE_MAINTAINED
        .str(264, M, 0, "hss.ims.example.net")
        .str(296, M, 0, "ims.example.net")
        .str(1, M, 0, "alice@ims.example.net")
        .str(606, M, V3GPP, user_data)
        .group(618, M, V3GPP, |w| {
            w.str(
                619,
                M,
                V3GPP,
                "aaa://ocs.ims.example.net:3868;transport=tcp",
            )
            .str(
                621,
                M,
                V3GPP,
                "aaa://cdf.ims.example.net:3868;transport=tcp",
            );
        });
    finish(w)
}

/// A Credit-Control-Request (UPDATE) with 40 AVPs, most of them inside grouped AVPs:
/// three Multiple-Services-Credit-Control with Requested/Used-Service-Unit and IMS
/// Service-Information with Event-Type and Time-Stamps.
pub fn grouped_heavy() -> Bytes {
    write_grouped_heavy(BytesMut::new()).freeze()
}

/// Appends [`grouped_heavy`] to `buf` (for benches that reuse a buffer).
pub fn write_grouped_heavy(buf: BytesMut) -> BytesMut {
    let mut w = MessageWriter::with_buffer(buf, header(272, APP_CC, true, true, 0x1234_0003));
    w.str(263, M, 0, "scscf.ims.example.net;1700000000;44") // 1
        .str(264, M, 0, "scscf.ims.example.net")
        .str(296, M, 0, "ims.example.net")
        .str(283, M, 0, "ocs.example.net")
        .u32(258, M, 0, APP_CC) // 5
        .str(461, M, 0, "32260@3gpp.org")
        .u32(416, M, 0, 2) // UPDATE_REQUEST
        .u32(415, M, 0, 1)
        .group(443, M, 0, |w| {
            w.u32(450, M, 0, 0).str(444, M, 0, "491701234567");
        }); // 11
    for rg in [100u32, 200, 300] {
        // 7 AVPs each: MSCC, RSU, CC-Time, USU, CC-Time, CC-Total-Octets, Rating-Group.
        w.group(456, M, 0, |w| {
            w.group(437, M, 0, |w| {
                w.u32(420, M, 0, 60);
            })
            .group(446, M, 0, |w| {
                w.u32(420, M, 0, 42).u64(421, M, 0, 123_456_789_012);
            })
            .u32(432, M, 0, rg);
        });
    } // 32
    w.group(873, M, V3GPP, |w| {
        w.group(876, M, V3GPP, |w| {
            w.group(823, M, V3GPP, |w| {
                w.str(824, M, V3GPP, "INVITE");
            })
            .u32(829, M, V3GPP, 0)
            .u32(862, M, V3GPP, 0)
            .group(833, M, V3GPP, |w| {
                w.u32(834, M, V3GPP, 3_908_988_800);
            });
        });
    }); // 40
    finish(w)
}

/// 3GPP Rx application (TS 29.214).
pub const APP_RX: u32 = 16_777_236;
/// 3GPP S6a/S6d application (TS 29.272).
pub const APP_S6A: u32 = 16_777_251;

fn cx_app_id(w: &mut MessageWriter) {
    w.group(260, M, 0, |w| {
        w.u32(266, M, 0, V3GPP).u32(258, M, 0, APP_CX);
    });
}

/// A Cx request's common head, in ABNF order: Session-Id, Vendor-Specific-Application-Id,
/// Auth-Session-State (NO_STATE_MAINTAINED), Origin-Host, Origin-Realm, [Destination-Host],
/// Destination-Realm, User-Name (alice's private identity).
fn cx_request(
    code: u32,
    hbh: u32,
    session: &str,
    origin: &str,
    dest_host: Option<&str>,
) -> MessageWriter {
    let mut w = MessageWriter::new(header(code, APP_CX, true, true, hbh));
    w.str(263, M, 0, session);
    cx_app_id(&mut w);
    w.u32(277, M, 0, 1)
        .str(264, M, 0, origin)
        .str(296, M, 0, "ims.example.net");
    if let Some(h) = dest_host {
        w.str(293, M, 0, h);
    }
    w.str(283, M, 0, "ims.example.net")
        .str(1, M, 0, "alice@ims.example.net");
    w
}

/// Capabilities-Exchange-Answer (RFC 6733 §5.3.2) to [`cer`].
pub fn cea() -> Bytes {
    let mut w = MessageWriter::new(header(257, 0, false, false, 0x0000_0001));
    w.u32(268, M, 0, 2001)
        .str(264, M, 0, "hss.ims.example.net")
        .str(296, M, 0, "ims.example.net")
        .avp(
            257,
            M,
            0,
            &[
                0, 2, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            ],
        )
        .u32(266, M, 0, V3GPP)
        .str(269, 0, 0, "hss")
        .u32(265, M, 0, V3GPP);
    cx_app_id(&mut w);
    finish(w).freeze()
}

/// Cx User-Authorization-Request (3GPP TS 29.229 §6.1.1).
pub fn cx_uar() -> Bytes {
    let mut w = cx_request(
        300,
        0x1234_0010,
        "icscf.ims.example.net;1700000000;50",
        "icscf.ims.example.net",
        None,
    );
    w.str(601, M, V3GPP, "sip:alice@ims.example.net")
        .avp(600, M, V3GPP, b"ims.example.net")
        .u32(623, M, V3GPP, 0); // REGISTRATION
    finish(w).freeze()
}

/// Cx Server-Assignment-Request (3GPP TS 29.229 §6.1.3), the request [`cx_saa`] answers.
pub fn cx_sar() -> Bytes {
    let mut w = cx_request(
        301,
        0x1234_0002,
        "scscf.ims.example.net;1700000000;43",
        "scscf.ims.example.net",
        None,
    );
    w.str(601, M, V3GPP, "sip:alice@ims.example.net")
        .str(602, M, V3GPP, "sip:scscf.ims.example.net:5060")
        .u32(614, M, V3GPP, 1) // REGISTRATION
        .u32(624, M, V3GPP, 0); // USER_DATA_NOT_AVAILABLE
    finish(w).freeze()
}

/// Cx Push-Profile-Request (3GPP TS 29.229 §6.1.7) from the HSS with a new User-Data and
/// Charging-Information.
pub fn cx_ppr() -> Bytes {
    let mut w = cx_request(
        305,
        0x1234_0011,
        "hss.ims.example.net;1700000000;51",
        "hss.ims.example.net",
        Some("scscf.ims.example.net"),
    );
    w.str(
        606,
        M,
        V3GPP,
        "<?xml version=\"1.0\"?><IMSSubscription><PrivateID>alice@ims.example.net\
             </PrivateID></IMSSubscription>",
    )
    .group(618, M, V3GPP, |w| {
        w.str(619, M, V3GPP, "aaa://ocs.ims.example.net:3868");
    });
    finish(w).freeze()
}

/// Cx Registration-Termination-Request (3GPP TS 29.229 §6.1.9) with grouped vendor AVPs:
/// Deregistration-Reason and Associated-Identities.
pub fn cx_rtr() -> Bytes {
    let mut w = cx_request(
        304,
        0x1234_0012,
        "hss.ims.example.net;1700000000;52",
        "hss.ims.example.net",
        Some("scscf.ims.example.net"),
    );
    w.group(632, 0, V3GPP, |w| {
        w.str(1, M, 0, "alice-2@ims.example.net");
    })
    .str(601, M, V3GPP, "sip:alice@ims.example.net")
    .group(615, M, V3GPP, |w| {
        w.u32(616, M, V3GPP, 0) // PERMANENT_TERMINATION
            .str(617, M, V3GPP, "subscription removed");
    });
    finish(w).freeze()
}

/// Rx AA-Request (3GPP TS 29.214 §5.6.1) with one Media-Component-Description holding a
/// Media-Sub-Component with two Flow-Descriptions.
pub fn rx_aar() -> Bytes {
    let mut w = MessageWriter::new(header(265, APP_RX, true, true, 0x1234_0013));
    w.str(263, M, 0, "pcscf.ims.example.net;1700000000;53")
        .u32(258, M, 0, APP_RX)
        .str(264, M, 0, "pcscf.ims.example.net")
        .str(296, M, 0, "ims.example.net")
        .str(283, M, 0, "pcrf.example.net")
        .avp(504, M, V3GPP, b"IMS Services")
        .group(517, M, V3GPP, |w| {
            w.u32(518, M, V3GPP, 1)
                .group(519, M, V3GPP, |w| {
                    w.u32(509, M, V3GPP, 1)
                        .str(
                            507,
                            M,
                            V3GPP,
                            "permit out 17 from 192.0.2.10 49152 to 198.51.100.20 50000",
                        )
                        .str(
                            507,
                            M,
                            V3GPP,
                            "permit in 17 from 198.51.100.20 50000 to 192.0.2.10 49152",
                        )
                        .u32(512, M, V3GPP, 0); // NO_INFORMATION
                })
                .u32(520, M, V3GPP, 0) // AUDIO
                .u32(516, M, V3GPP, 64_000)
                .u32(515, M, V3GPP, 64_000)
                .u32(511, M, V3GPP, 2); // ENABLED
        })
        .avp(505, M, V3GPP, b"icid-0001");
    finish(w).freeze()
}

/// S6a Update-Location-Request (3GPP TS 29.272 §7.2.3) from an MME.
pub fn s6a_ulr() -> Bytes {
    let mut w = MessageWriter::new(header(316, APP_S6A, true, true, 0x1234_0014));
    w.str(263, M, 0, "mme.epc.example.net;1700000000;54")
        .u32(277, M, 0, 1)
        .str(264, M, 0, "mme.epc.example.net")
        .str(296, M, 0, "epc.example.net")
        .str(283, M, 0, "epc.example.net")
        .str(1, M, 0, "001010123456789")
        .group(1401, M, V3GPP, |w| {
            w.str(1402, M, V3GPP, "35395803121326")
                .str(1403, M, V3GPP, "01");
        })
        .u32(1032, 0, V3GPP, 1004) // EUTRAN
        .u32(1405, M, V3GPP, 0x22)
        .avp(1407, M, V3GPP, &[0x00, 0xF1, 0x10]);
    finish(w).freeze()
}

/// Every sample with a short name, for table-driven tests and fuzz seeds. All their values
/// are text or numbers (the JSON tests use that); samples with binary OctetStrings, like
/// [`s6a_ulr`], are listed by [`all_with_binary`].
pub fn all() -> Vec<(&'static str, Bytes)> {
    vec![
        ("cer", cer()),
        ("cea", cea()),
        ("dwr", dwr()),
        ("ro_ccr", ro_ccr()),
        ("cx_uar", cx_uar()),
        ("cx_sar", cx_sar()),
        ("cx_saa", cx_saa()),
        ("cx_ppr", cx_ppr()),
        ("cx_rtr", cx_rtr()),
        ("rx_aar", rx_aar()),
        ("grouped_heavy", grouped_heavy()),
    ]
}

/// [`all`] plus the samples carrying binary OctetStrings (S6a Visited-PLMN-Id).
pub fn all_with_binary() -> Vec<(&'static str, Bytes)> {
    let mut v = all();
    v.push(("s6a_ulr", s6a_ulr()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avp::AvpRef;
    use crate::dict::Dictionary;
    use crate::message::Message;

    /// Counts AVPs at every level, treating as grouped the codes these samples group.
    fn count(avps: crate::avp::AvpRefs<'_>) -> usize {
        const GROUPED: [u32; 17] = [
            260, 443, 456, 437, 446, 873, 876, 823, 833, 618, 431, 458, 632, 615, 517, 519, 1401,
        ];
        avps.map(|a| {
            let a: AvpRef = a.unwrap();
            1 + if GROUPED.contains(&a.code) {
                count(a.group())
            } else {
                0
            }
        })
        .sum()
    }

    #[test]
    fn samples_are_well_formed_and_sized_as_documented() {
        for (name, b) in all_with_binary() {
            let m = Message::decode(b.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(count(m.avp_refs()) > 0, "{name}");
            assert_eq!(m.to_bytes(), b, "{name}");
        }
        let ccr = ro_ccr();
        assert!(
            (280..=340).contains(&ccr.len()),
            "CCR is {} bytes",
            ccr.len()
        );
        let saa = Message::decode(cx_saa()).unwrap();
        let ud = saa.find(606, V3GPP).unwrap();
        assert!(
            (3900..=4300).contains(&ud.data.len()),
            "User-Data {}",
            ud.data.len()
        );
        let heavy = Message::decode(grouped_heavy()).unwrap();
        assert_eq!(count(heavy.avp_refs()), 40);
    }

    /// Whether the dictionary defines every AVP of the message (at every level).
    fn all_known(d: &Dictionary, avps: crate::avp::AvpRefs<'_>) -> bool {
        avps.map_while(Result::ok)
            .all(|a| match d.avp(a.code, a.vendor) {
                Some(def) if def.ty == crate::AvpType::Grouped => all_known(d, a.group()),
                Some(_) => true,
                None => false,
            })
    }

    #[test]
    fn samples_validate_against_the_builtin_dictionary() {
        let d = Dictionary::builtin();
        for (name, b) in all_with_binary() {
            let m = Message::decode(b).unwrap();
            // The built-in dictionaries are being filled in application by application; a
            // sample is checked as soon as its command and all its AVPs are defined.
            if d.command(m.header.app_id, m.header.code).is_none() || !all_known(d, m.avp_refs()) {
                eprintln!("{name}: not yet covered by the built-in dictionary, skipped");
                continue;
            }
            assert_eq!(crate::validate::validate(&m, d), Ok(()), "{name}");
        }
    }
}
