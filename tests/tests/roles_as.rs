//! An IMS Application Server in Kamailio (`cfg-examples/roles/kamailio-as.cfg`) reading its
//! call-forwarding data over Sh from an HSS on Erlang/OTP diameter
//! (`tests/peers/sh_hss.escript`) through the real `dmbridge run`: UDR on INVITE (repository
//! data, IMSUserState for conditional forwarding), SNR after the first read and
//! unsubscription on de-registration, third-party REGISTER, PNR served (2001 / 5107 / 5100),
//! UDA 5001 -> 404, 5100 -> 403, no answer -> 504, a subscription bounded by the SNA's
//! Expiry-Time renewed after it ends, PUR on the user's MESSAGE (2001, 5105). The scenario and what it asserts (SIP
//! outcomes, the HSS's log, the wire) are in `tests/src/as_sh.rs`, shared with the OpenSIPS
//! AS (`roles_as_opensips.rs`).
//!
//! Run twice: with the bridge's default names (User-Data is `Sh-User-Data`) and under
//! `cfg-examples/freediameter-names.dict` (`User-Data-29.329`, aaa_diameter's name, whose dot a
//! Kamailio jansson path cannot hold: the script must find it all the same).

use harness::as_sh::{run_as_scenario, AsSetup, ShNames, AS, HSS, SH_BRIDGE_APP};
use harness::roles::{PeerClientRole, ServerPeer, SipServerUnderTest};

/// The Kamailio AS: bridge as `as.test.local` connected to the HSS, `kamailio-as.cfg` with the
/// realm and the next hop as defines.
fn kamailio_as(setup: &AsSetup<'_>) -> Box<dyn SipServerUnderTest> {
    Box::new(PeerClientRole::start(
        setup.dir,
        "as",
        AS,
        SH_BRIDGE_APP,
        ServerPeer { ..setup.hss },
        setup.dictionaries,
        &[
            format!("HSS_REALM=\"{HSS}\""),
            format!("NEXT_HOP=\"{}\"", setup.next_hop),
        ],
    ))
}

#[test]
fn application_server_in_kamailio_reads_sh_data() {
    run_as_scenario("roles-as", ShNames::builtin(), &kamailio_as);
}

/// The same with the bridge writing freeDiameter's names (`NAMES freediameter`), as a script
/// written for OpenSIPS aaa_diameter expects them: User-Data is `User-Data-29.329`.
#[test]
fn application_server_reads_sh_data_under_freediameter_names() {
    run_as_scenario("roles-as-fdnames", ShNames::freediameter(), &kamailio_as);
}
