//! A P-CSCF in Kamailio (`cfg-examples/roles/kamailio-pcscf.cfg`) asking a PCRF on Erlang/OTP
//! diameter (`tests/peers/rx_pcrf.escript`) over Rx through the real `dmbridge run`, with a
//! caller and a callee (`harness::sip_media`) on loopback. The scenario and what it asserts
//! (the AAR's Media-Component-Descriptions from the SDP, 183/200 relayed on AAA 2001, 503 and
//! CANCEL on 5063/5065/no answer, BYEs after a refused 200, RAR, STR on BYE, ASR -> BYEs and
//! STR; the phones, both logs and the wire) are in `tests/src/pcscf.rs`, shared with the
//! OpenSIPS P-CSCF (`roles_pcscf_opensips.rs`).

use harness::pcrf::{PCRF, RX_APP};
use harness::pcscf::{run_pcscf_scenario, PCSCF};
use harness::roles::PeerClientRole;
use harness::TestDir;

#[test]
fn pcscf_in_kamailio_asks_the_pcrf() {
    let dir = TestDir::new("roles-pcscf");
    let _ = harness::dmbridge::dmbridge_bin();
    run_pcscf_scenario(dir.path(), &|pcrf, bob_port| {
        Box::new(PeerClientRole::start(
            dir.path(),
            "pcscf",
            PCSCF,
            RX_APP,
            pcrf,
            &[],
            &[
                format!("PCRF_REALM=\"{PCRF}\""),
                format!("SCSCF_URI=\"sip:127.0.0.1:{bob_port}\""),
            ],
        ))
    });
}
