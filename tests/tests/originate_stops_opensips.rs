//! OpenSIPS's originate path when something stops: the counterpart of `originate_stops.rs`
//! (Kamailio) for `async(dm_send_request(...), resume_route)`, which a SIP worker starts and
//! resumes itself on the library's descriptor (no dmbridge process, no job list), against
//! the real `opensips`, the real `dmbridge run`, the held peer of [`harness::held_peer`] and
//! SIP clients on UDP. The script (`CFG` below) sends a test_app request per SIP MESSAGE,
//! async for `async`, sync (`dm_send_request` in the worker) for `sync`, and replies 200 for
//! a 2xxx answer, else `500 Diameter <rc>`. Every wait is bounded and polls a condition.
//!
//! - `sigterm_with_async_and_sync_calls_in_flight`: OpenSIPS stops (SIGTERM) with 4 async and
//!   2 sync requests at the peer. It exits 0 with no crash in its log; the bridge logs each
//!   SIP worker as gone with the requests it abandons (6 in all); a new OpenSIPS attaches and
//!   the peer answers the old requests: the bridge counts the 6 as dropped (dm_status, from
//!   the new OpenSIPS), none reaches its workers, nothing stays pending, the next call is
//!   answered.
//! - `killed_sip_worker_takes_opensips_down`: a SIP worker killed (SIGKILL) with async
//!   requests in flight. OpenSIPS's attendant stops the whole server when a worker dies
//!   ("terminating due to SIGCHLD"), so no SIP client gets a reply; the bridge reaps every
//!   attachment and the late answers end as above.
//! - `bridge_restart_ends_waiting_calls_then_reattaches`: the bridge killed with 4 async and
//!   2 sync calls waiting at the peer: each gets -2 at once ("no answer": the bridge had
//!   taken it, the peer may have acted on it; not -3, "not sent"), the SIP client the
//!   script's 500; the bridge started again, the workers re-attach by themselves and the
//!   next async and sync calls are answered 200.
//!
//! Needs OPENSIPS_SRC: a built OpenSIPS tree with tm, sl, signaling, sipmsgops and mi_fifo;
//! the test builds the dmbridge module there. Without it each test says it is skipped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use harness::bridge::Bridge;
use harness::held_peer::{
    bridge_log, bridge_workers, call_answered, calls_at_the_peer, ctl_json, held_bridge_options,
    lines_with_any, terminates_cleanly, wait_all_gone, HeldPeer, CRASH_WORDS,
};
use harness::opensips::{mi_fifo, OpensipsTree, RoleOpensips};
use harness::wait::poll_until;
use harness::{free_port, Sig, TestDir};
use serde_json::Value;

const MODULES: &[&str] = &["tm", "sl", "signaling", "sipmsgops", "mi_fifo"];

/// UDP SIP workers of the script, each attached to the bridge at start.
const WORKERS: usize = 4;

/// The script: `MESSAGE sip:async@` / `sip:sync@` send a test_app request.
const CFG: &str = r#"
log_level=3
stderror_enabled=yes
syslog_enabled=no
udp_workers=4
socket=udp:127.0.0.1:5060
mpath="/usr/lib/opensips/modules/"

loadmodule "proto_udp.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "mi_fifo.so"
loadmodule "dmbridge.so"
modparam("mi_fifo", "fifo_name", "/run/opensips/opensips_fifo")
modparam("dmbridge", "bridge_socket", "/run/dmbridge/control.sock")
modparam("dmbridge", "request_timeout", 8000)
modparam("tm", "fr_timeout", 20)

route {
	if (!is_method("MESSAGE")) {
		sl_send_reply(405, "Method Not Allowed");
		exit;
	}
	$var(req) = "[{\"Session-Id\":\"bridge.test.local;" + $ci + "\"},{\"Destination-Realm\":\"test.local\"},{\"345678:999999\":{\"hex\":\"0000002a\"}}]";
	if ($rU == "sync") {
		$var(rc) = dm_send_request(16777215, 16777214, $var(req));
		if ($var(rc) == 1) {
			sl_send_reply(200, "OK");
		} else {
			sl_send_reply(500, "Diameter $var(rc)");
		}
		exit;
	}
	t_newtran();
	async(dm_send_request(16777215, 16777214, $var(req)), ASYNC_DONE);
	t_reply(500, "Diameter not sent");
}

route[ASYNC_DONE] {
	$var(rc) = $rc;
	if ($var(rc) == 1) {
		t_reply(200, "OK");
	} else {
		t_reply(500, "Diameter $var(rc)");
	}
}
"#;

struct Setup {
    tree: OpensipsTree,
    dir: TestDir,
    bridge: Bridge,
}

fn setup(test: &str) -> Option<Setup> {
    let tree = OpensipsTree::for_test(test, MODULES)?;
    let dir = TestDir::new(test);
    tree.build_dmbridge(dir.path());
    let _ = harness::dmbridge::dmbridge_bin();
    let bport = free_port();
    let bridge = Bridge::start(dir.path(), &held_bridge_options(bport, ""));
    std::fs::write(dir.path().join("stops.cfg"), CFG).unwrap_or_else(|e| panic!("cfg: {e}"));
    Some(Setup { tree, dir, bridge })
}

/// OpenSIPS with the script, its MI FIFO at `<dir>/<name>.fifo`; returns once its SIP
/// workers are attached.
fn opensips(s: &Setup, name: &str) -> (RoleOpensips, PathBuf) {
    let fifo = s.dir.path().join(format!("{name}.fifo"));
    let o = RoleOpensips::start(
        &s.tree,
        s.dir.path(),
        name,
        &s.dir.path().join("stops.cfg"),
        &s.bridge,
        &[("/run/opensips/opensips_fifo", fifo.display().to_string())],
        WORKERS,
    );
    (o, fifo)
}

/// `dm_status` over MI: the module's result object.
fn dm_status(fifo: &std::path::Path) -> Value {
    let out = mi_fifo(fifo, "dm_status", &serde_json::json!({}));
    serde_json::from_str::<Value>(out.trim())
        .map(|v| v["result"].clone())
        .unwrap_or(Value::Null)
}

/// As in `originate_stops.rs`: a new OpenSIPS attaches, the peer answers the `n` requests of
/// the one that went away; the bridge drops and counts them, the new workers get none,
/// nothing stays pending, and the new OpenSIPS's next call is answered.
fn answers_after_the_workers_left_are_dropped(s: &Setup, peer: &mut HeldPeer, n: u64) {
    let (o, fifo) = opensips(s, "opensips-b");
    assert_eq!(peer.answer_all() as u64, n);
    let r = poll_until(
        "the late answers counted as dropped",
        Duration::from_secs(10),
        || {
            let st = dm_status(&fifo);
            let d = st["bridge"]["bridge"]["counters"]["outcomes"]["dropped_worker_gone"].as_u64();
            (d == Some(n)).then_some(st)
        },
    );
    let st = r.unwrap_or_else(|e| panic!("{e}: {}", dm_status(&fifo)));
    // every departure the bridge logged, it counted; the dropped answers are logged too
    let log = bridge_log(s.dir.path(), s.bridge.port());
    let gone = log.matches(") gone: ").count() as u64;
    assert_eq!(
        st["bridge"]["bridge"]["counters"]["workers_gone"].as_u64(),
        Some(gone)
    );
    assert!(log.contains("dropped: that worker is gone"));
    assert_eq!(
        ctl_json(s.bridge.config_path(), "status")["pending"].as_u64(),
        Some(0),
        "the node still holds requests"
    );
    for c in ["answers_ok", "answers_error", "timeouts", "not_sent"] {
        assert_eq!(
            st["counters"][c], 0,
            "{c}: an old answer reached the new workers"
        );
    }
    assert!(o.log_lines("unknown async handle").is_empty());
    call_answered(peer, &o.guard, o.sip_port, "async");
}

#[test]
fn sigterm_with_async_and_sync_calls_in_flight() {
    let Some(mut s) = setup("originate_stops_opensips_sigterm") else {
        return;
    };
    let mut peer = HeldPeer::connect(s.bridge.port());
    let (mut o, _fifo) = opensips(&s, "opensips-a");
    let (_a, _y) = calls_at_the_peer(&mut peer, &o.guard, o.sip_port, 4, 2);

    let log = terminates_cleanly(&mut o.guard, Duration::from_secs(20), CRASH_WORDS);
    assert!(
        log.contains("Thank you for running opensips"),
        "{}",
        o.guard.tail(30)
    );

    assert_eq!(wait_all_gone(&mut s.bridge, 6), 6);
    answers_after_the_workers_left_are_dropped(&s, &mut peer, 6);
}

#[test]
fn killed_sip_worker_takes_opensips_down() {
    let Some(mut s) = setup("originate_stops_opensips_kill") else {
        return;
    };
    let mut peer = HeldPeer::connect(s.bridge.port());
    let (mut o, _fifo) = opensips(&s, "opensips-a");
    let (a, _) = calls_at_the_peer(&mut peer, &o.guard, o.sip_port, 6, 0);
    // any SIP worker: OpenSIPS's attendant treats the death of each the same way
    let victim = bridge_workers(s.bridge.config_path())
        .into_iter()
        .map(|(pid, _)| pid)
        .next()
        .unwrap_or_else(|| panic!("no worker attached"));
    let killed = Command::new("kill")
        .arg("-KILL")
        .arg(victim.to_string())
        .status()
        .map(|st| st.success())
        .unwrap_or(false);
    assert!(killed, "kill -KILL {victim}");

    let st = o
        .guard
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("opensips did not exit\n{}", o.guard.tail(30)));
    assert!(!st.success(), "{st:?}");
    let log = o.guard.output();
    assert!(
        log.contains(&format!("child process {victim} exited by a signal 9"))
            && log.contains("terminating due to SIGCHLD"),
        "{}",
        o.guard.tail(30)
    );
    assert_eq!(lines_with_any(&log, CRASH_WORDS), Vec::<String>::new());
    assert_eq!(a.finals(Duration::from_millis(500)), []);

    assert_eq!(wait_all_gone(&mut s.bridge, 6), 6);
    answers_after_the_workers_left_are_dropped(&s, &mut peer, 6);
}

#[test]
fn bridge_restart_ends_waiting_calls_then_reattaches() {
    let Some(mut s) = setup("originate_stops_opensips_restart") else {
        return;
    };
    let mut peer = HeldPeer::connect(s.bridge.port());
    let (mut o, fifo) = opensips(&s, "opensips-a");
    let (a, y) = calls_at_the_peer(&mut peer, &o.guard, o.sip_port, 4, 2);

    s.bridge
        .guard()
        .signal(Sig::Kill)
        .unwrap_or_else(|e| panic!("SIGKILL: {e}"));
    s.bridge.guard().wait_exit(Duration::from_secs(5));
    drop(peer);
    // every waiting call ends with -2 well before its 8 s timeout: each request was at the
    // peer, which may have acted on it ("no answer"; -3, "not sent", only for a request the
    // bridge never took from the worker's queue)
    for (what, b, n) in [("async", &a, 4), ("sync", &y, 2)] {
        let f = b.finals(Duration::from_secs(6));
        assert_eq!(f.len(), n, "{what}: {f:?}\n{}", o.guard.tail(20));
        for (_, line) in &f {
            assert_eq!(line, "SIP/2.0 500 Diameter -2", "{what}");
        }
    }
    let went = o.log_lines("no answer: the bridge went away after taking the request");
    assert_eq!(went.len(), 6, "{went:#?}");
    assert_eq!(dm_status(&fifo)["counters"]["timeouts"], 6);
    assert_eq!(dm_status(&fifo)["counters"]["not_sent"], 0);
    assert!(o.guard.is_running());

    let opts = held_bridge_options(s.bridge.port(), "");
    s.bridge = Bridge::start(s.dir.path(), &opts);
    let mut peer = HeldPeer::connect(s.bridge.port());
    let r = poll_until(
        "the SIP workers re-attached",
        Duration::from_secs(10),
        || (bridge_workers(s.bridge.config_path()).len() >= WORKERS).then_some(()),
    );
    r.unwrap_or_else(|e| panic!("{e}\n{}", o.guard.tail(20)));
    for user in ["async", "sync"] {
        call_answered(&mut peer, &o.guard, o.sip_port, user);
    }
    assert_eq!(dm_status(&fifo)["counters"]["answers_ok"], 2);
}
