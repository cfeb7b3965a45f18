//! Kamailio's originate path when something stops (issue 15's last closing note): the real
//! `kamailio` with `dmbridge.so`, the real `dmbridge run`, a Diameter peer that holds its
//! answers until the test says so ([`harness::held_peer`]) and SIP clients on UDP. The script
//! (`CFG` below) sends a test_app request per SIP MESSAGE, `dm_send_request_async` (tm
//! suspends the transaction; with `async_direct` 1, set here (the module's default), the SIP
//! worker sends the request itself naming a dmbridge worker as where the outcome goes, with 0
//! it hands the job over and the dmbridge worker sends it) for `async` and `dm_send_request`
//! (the SIP worker waits) for `sync`, and replies 200 for a 2xxx answer, else
//! `500 Diameter <rc> <error>`.
//! Every wait is bounded and polls a condition. The tests about jobs that wait on the
//! shared-memory lists of stopped dmbridge workers run the hand-over (`async_direct` 0): with
//! the direct path the request is on the wire before the job is on a list.
//!
//! - `sigterm_with_async_and_sync_calls_in_flight`: Kamailio stops (SIGTERM) while the peer
//!   holds 4 async and 2 sync requests. It exits 0 well within its exit_timeout, with no
//!   crash in its log; the bridge logs each attachment's departure with the 6 requests it
//!   abandons; then a new Kamailio attaches (in the same slots) and the peer answers the old
//!   requests: the bridge counts all 6 as dropped, none reaches the new workers, nothing
//!   stays pending in the node, and the new Kamailio's next call is answered. With the direct
//!   path only the 2 sync requests are logged as abandoned with their workers (a direct
//!   request is no attachment's own); `_handover` runs it with `async_direct` 0 (all 6).
//! - `killed_dmbridge_worker_takes_kamailio_down`: a dmbridge worker killed (SIGKILL) with 4
//!   jobs in flight. Kamailio's main process ends the whole server when a child dies
//!   ("terminating due to SIGCHLD"), so the suspended transactions end with it and the SIP
//!   clients get no reply (no tm timer runs after). The bridge reaps every attachment and
//!   the late answers end as in the first test.
//! - `bridge_restart_ends_waiting_calls_then_reattaches`: the bridge killed with 4 async and 2
//!   sync calls waiting at the peer: each gets -2 ("no answer": the bridge had taken it, the
//!   peer may have acted on it; not -3 "not sent", which invites a retry) at once, not at its
//!   8 s timeout, and the SIP client the script's 500; the bridge started again, the module's
//!   processes re-attach by themselves and the next async and sync calls are answered 200.
//! - `killed_bridge_ends_a_call_it_never_took_as_not_sent`: the bridge stopped (SIGSTOP: it
//!   takes nothing more) with a sync call at the peer, then a second sync call queued for it,
//!   then killed: the first gets -2, the second -3 ("not sent": the bridge never saw it).
//! - `sigterm_with_jobs_on_the_shared_list`: both dmbridge workers stopped (SIGSTOP), so the
//!   SIP workers' 6 jobs stay on the shared-memory lists; tm's fr_timer answers the clients
//!   408; then SIGTERM. The stopped workers cannot take it: Kamailio's main process kills them
//!   at exit_timeout and exits 0, with the jobs abandoned in shared memory, no crash, and no
//!   request ever sent.
//! - `graceful_bridge_stop_delivers_the_answers_in_flight`: the bridge stopped with SIGTERM
//!   while 2 async and 1 sync calls wait: it waits for their answers (RFC 6733 §5.4), which
//!   the peer then sends: every SIP client gets 200; DPR/DPA, the bridge exits 0; started
//!   again, the workers re-attach and the next call is answered.
//! - `stopped_dmbridge_workers_send_nothing_for_ended_transactions`: the same stopped workers,
//!   then SIGCONT after tm's 408s. The module finds each job's transaction ended and sends
//!   nothing for it (before, the 4 requests went to the peer and their answers then failed to
//!   resume anything): counted as async_abandoned, logged, and the next call is answered.
//! - `full_job_lists_refuse_only_when_every_list_is_full`: `async_queue` 2 and both dmbridge
//!   workers stopped: 4 calls fill both lists (a SIP worker whose chosen list is full hands
//!   its job to the other worker's), the 5th is refused at once (500 from the script, counted
//!   in not_sent, logged); the workers go on and the 4 queued calls are answered.
//! - `async_calls_that_suspend_nothing_are_counted`: a dm_send_request_async call refused
//!   (here: invalid JSON) is counted in sent_async and not_sent, as dm_send_request's are.
//! - `answer_after_tm_ended_the_transaction_is_counted`: fr_timer below request_timeout: tm
//!   answers 408 first; the peer's answers then resume nothing, and are counted
//!   (async_abandoned) and logged.
//!
//! The direct path (session 16; `async_direct` 1):
//! - `direct_requests_go_out_while_the_dmbridge_workers_are_stopped`: both dmbridge workers
//!   stopped (SIGSTOP), 3 async calls still reach the peer (so the SIP workers sent them:
//!   a stopped worker sends nothing), counted in async_direct; answered, then SIGCONT: the
//!   workers resume the 3 transactions, 200 each. The same with `async_direct` 0 reaches the
//!   peer only after SIGCONT and counts nothing in async_direct.
//! - `direct_request_timeout_resumes_once`: the peer never answers; the bridge's timeout
//!   outcome goes to the dmbridge worker, which resumes with -2 once.
//! - `direct_requests_into_a_dead_bridge_end_when_the_workers_see_it`: sent by a SIP worker
//!   whose library has not seen the bridge die: the dmbridge workers end each at once with
//!   -2 (they cannot see the SIP worker's queue, so whether the bridge took it is unknown).
//! - `direct_send_failure_is_the_scripts_not_sent`: the dmbridge workers stopped and the bridge
//!   killed: a SIP worker's send fails, the script gets the error return at once (500
//!   "Diameter not sent", not_sent), and when the workers go on they drop the job without
//!   resuming anything (no "cannot resume", async_abandoned 0).
//! - `bridge_restart_ends_waiting_calls_then_reattaches` runs both ways (`_handover`): each
//!   waiting call resumes once with -2, none waits for its timeout.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use harness::bridge::Bridge;
use harness::held_peer::{
    bridge_log, bridge_workers, call_answered, calls_at_the_peer, ctl_json, held_bridge_options,
    lines_with_any, terminates_cleanly, wait_all_gone, HeldPeer, SipBatch, CRASH_WORDS,
};
use harness::roles::RoleKamailio;
use harness::wait::poll_until;
use harness::{free_port, Sig, TestDir};
use serde_json::Value;

/// The script: `MESSAGE sip:async@` / `sip:sync@` send a test_app request.
const CFG: &str = r#"#!KAMAILIO
debug=2
log_stderror=yes
children=4
port=SIP_PORT
listen=udp:127.0.0.1
disable_tcp=yes
auto_aliases=no
exit_timeout=EXIT_TIMEOUT
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "ctl.so"
loadmodule DMB_SO
modparam("dmbridge", "bridge_socket", DMB_SOCKET)
modparam("dmbridge", "workers", 2)
modparam("dmbridge", "request_timeout", REQUEST_TIMEOUT)
modparam("dmbridge", "async_queue", ASYNC_QUEUE)
modparam("dmbridge", "async_direct", ASYNC_DIRECT)
modparam("tm", "fr_timer", FR_TIMER)

request_route {
	if (!is_method("MESSAGE")) {
		sl_send_reply("405", "Method Not Allowed");
		exit;
	}
	$var(req) = '[{"Session-Id":"bridge.test.local;' + $ci + '"},{"Destination-Realm":"test.local"},'
		+ '{"345678:999999":{"hex":"0000002a"}}]';
	if ($rU == "sync") {
		dm_send_request("16777215", "16777214", "$var(req)");
		$var(rc) = $rc;
		if ($var(rc) == 1) {
			sl_send_reply("200", "OK");
		} else {
			sl_send_reply("500", "Diameter $var(rc) $dm(error)");
		}
		exit;
	}
	if ($rU == "badjson") {
		$var(req) = "[";
	}
	if ($rU == "big") {
		# valid JSON larger than the bridge's largest message (256 KiB): the send refuses it
		$var(x) = "aaaaaaaaaa";
		$var(i) = 0;
		while ($var(i) < 15) {
			$var(x) = $var(x) + $var(x);
			$var(i) = $var(i) + 1;
		}
		$var(req) = '[{"User-Name":"' + $var(x) + '"}]';
	}
	if (!t_newtran()) {
		sl_reply_error();
		exit;
	}
	dm_send_request_async("16777215", "16777214", "$var(req)", "ASYNC_DONE");
	t_reply("500", "Diameter not sent");
}

# t_reply's reason is a constant or one variable, not a format
route[ASYNC_DONE] {
	if ($dm(result) == 1) {
		t_reply("200", "OK");
	} else {
		$var(why) = "Diameter " + $dm(result) + " " + $dm(error);
		t_reply("500", "$var(why)");
	}
}
"#;

/// What a Kamailio log must never say: a crash, or a child the shutdown had to kill.
const CRASH: &[&str] = &[
    CRASH_WORDS[0],
    CRASH_WORDS[1],
    CRASH_WORDS[2],
    CRASH_WORDS[3],
    CRASH_WORDS[4],
    "exited by a signal",
];

struct Setup {
    dir: TestDir,
    cfg: PathBuf,
    bridge: Bridge,
    socket: PathBuf,
}

/// A bridge whose default route is the held peer (answer timeout 20 s: only the script's
/// request timeout ends a request), and the script written with `defines`' values;
/// `async_direct` 1 (the direct path; the module's default).
fn setup(name: &str, request_timeout_ms: u32, fr_timer_ms: u32, exit_timeout_s: u32) -> Setup {
    setup_queue(
        name,
        request_timeout_ms,
        fr_timer_ms,
        exit_timeout_s,
        8192,
        1,
    )
}

/// [`setup`] with `async_direct` 0: the dmbridge workers send the async requests.
fn setup_handover(
    name: &str,
    request_timeout_ms: u32,
    fr_timer_ms: u32,
    exit_timeout_s: u32,
) -> Setup {
    setup_queue(
        name,
        request_timeout_ms,
        fr_timer_ms,
        exit_timeout_s,
        8192,
        0,
    )
}

/// [`setup`] with the module's `async_queue` (jobs per dmbridge worker's list) and
/// `async_direct`.
fn setup_queue(
    name: &str,
    request_timeout_ms: u32,
    fr_timer_ms: u32,
    exit_timeout_s: u32,
    async_queue: u32,
    async_direct: u32,
) -> Setup {
    let dir = TestDir::new(name);
    let _ = harness::dmbridge::dmbridge_bin();
    let bport = free_port();
    let bridge = Bridge::start(dir.path(), &held_bridge_options(bport, ""));
    let socket = dir
        .path()
        .join(format!("bridge-{bport}"))
        .join("control.sock");
    let cfg = dir.path().join("stops.cfg");
    let text = CFG
        .replace("REQUEST_TIMEOUT", &request_timeout_ms.to_string())
        .replace("FR_TIMER", &fr_timer_ms.to_string())
        .replace("EXIT_TIMEOUT", &exit_timeout_s.to_string())
        .replace("ASYNC_QUEUE", &async_queue.to_string())
        .replace("ASYNC_DIRECT", &async_direct.to_string());
    std::fs::write(&cfg, text).unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
    Setup {
        dir,
        cfg,
        bridge,
        socket,
    }
}

fn kamailio(s: &Setup, name: &str) -> RoleKamailio {
    RoleKamailio::start(s.dir.path(), name, &s.cfg, &s.socket, &[], 2)
}

/// The bridge's own status document, as the module shows it (`dmbridge.status`'s `bridge`).
fn bridge_doc(k: &RoleKamailio) -> Value {
    let st = k.kamcmd(&["dmbridge.status"]);
    st.lines()
        .find_map(|l| l.trim().strip_prefix("bridge: "))
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .map(|v| v.get("bridge").cloned().unwrap_or(v))
        .unwrap_or(Value::Null)
}

/// One counter of `dmbridge.status` (the module's own).
fn module_counter(k: &RoleKamailio, name: &str) -> Option<u64> {
    let st = k.kamcmd(&["dmbridge.status"]);
    st.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
}

/// The node's pending requests (`dmbridge ctl status`).
fn pending(bridge: &Bridge) -> Option<u64> {
    ctl_json(bridge.config_path(), "status")["pending"].as_u64()
}

fn signal_pid(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid}");
}

fn dm_worker_pids(bridge: &Bridge) -> Vec<u32> {
    bridge_workers(bridge.config_path())
        .into_iter()
        .filter(|(_, n)| n.starts_with("kamailio-dm-"))
        .map(|(p, _)| p)
        .collect()
}

fn wait_exit(k: &mut RoleKamailio, within: Duration) -> std::process::ExitStatus {
    k.guard.wait_exit(within).unwrap_or_else(|| {
        panic!(
            "kamailio did not exit within {within:?}\n{}",
            k.guard.tail(40)
        )
    })
}

/// Kills the bridge (SIGKILL) and drops the peer's connection to it.
fn kill_bridge(s: &mut Setup, peer: HeldPeer) {
    s.bridge
        .guard()
        .signal(Sig::Kill)
        .unwrap_or_else(|e| panic!("SIGKILL: {e}"));
    s.bridge.guard().wait_exit(Duration::from_secs(5));
    drop(peer);
}

/// Starts the same bridge again and waits until both dmbridge workers of `k` re-attached by
/// themselves; returns the peer connected to it.
fn restart_bridge(s: &mut Setup, k: &RoleKamailio) -> HeldPeer {
    let opts = held_bridge_options(s.bridge.port(), "");
    s.bridge = Bridge::start(s.dir.path(), &opts);
    let peer = HeldPeer::connect(s.bridge.port());
    let r = poll_until(
        "the dmbridge workers re-attached",
        Duration::from_secs(10),
        || (dm_worker_pids(&s.bridge).len() == 2).then_some(()),
    );
    r.unwrap_or_else(|e| panic!("{e}\n{}", k.guard.tail(20)));
    peer
}

/// After a Kamailio went away with `n` requests at the peer: a new Kamailio attaches (in the
/// slots the old workers had), then the peer answers the old requests. The bridge counts each
/// answer as dropped (its worker is gone) and delivers none to the new workers; nothing stays
/// pending; and the new Kamailio's next call is answered.
fn answers_after_the_workers_left_are_dropped(s: &Setup, peer: &mut HeldPeer, n: u64) {
    let k = kamailio(s, "kamailio-b");
    assert_eq!(peer.answer_all() as u64, n);
    let r = poll_until(
        "the late answers counted as dropped",
        Duration::from_secs(10),
        || {
            let d = bridge_doc(&k)["counters"]["outcomes"]["dropped_worker_gone"].as_u64();
            (d == Some(n)).then_some(())
        },
    );
    r.unwrap_or_else(|e| panic!("{e}: {}", bridge_doc(&k)));
    // every departure the bridge logged, it counted
    let gone = bridge_log(s.dir.path(), s.bridge.port())
        .matches(") gone: ")
        .count() as u64;
    assert_eq!(
        bridge_doc(&k)["counters"]["workers_gone"].as_u64(),
        Some(gone)
    );
    // and the dropped answers are logged (rate-limited: at least one line)
    assert!(
        bridge_log(s.dir.path(), s.bridge.port()).contains("dropped: that worker is gone"),
        "no log line for the dropped answers"
    );
    assert_eq!(pending(&s.bridge), Some(0), "the node still holds requests");
    for c in ["answers_ok", "answers_error", "timeouts", "not_sent"] {
        assert_eq!(
            module_counter(&k, c),
            Some(0),
            "{c}: an old answer reached the new workers"
        );
    }
    assert!(
        k.log_lines("unknown async handle").is_empty(),
        "{}",
        k.guard.tail(20)
    );
    call_answered(peer, &k.guard, k.sip_port, "async");
}

#[test]
fn sigterm_with_async_and_sync_calls_in_flight() {
    sigterm_with_calls_in_flight(setup("originate-stops-sigterm", 8000, 20000, 10), true);
}

#[test]
fn sigterm_with_async_and_sync_calls_in_flight_handover() {
    let s = setup_handover("originate-stops-sigterm-h", 8000, 20000, 10);
    sigterm_with_calls_in_flight(s, false);
}

/// Kamailio stopped (SIGTERM) while the peer holds 4 async and 2 sync requests; `direct`:
/// the SIP workers sent the async ones (async_direct 1).
fn sigterm_with_calls_in_flight(mut s: Setup, direct: bool) {
    let mut peer = HeldPeer::connect(s.bridge.port());
    let mut k = kamailio(&s, "kamailio-a");
    let (_a, _y) = calls_at_the_peer(&mut peer, &k.guard, k.sip_port, 4, 2);

    // exit_timeout is 10 s: a shutdown that needed Kamailio's SIGKILL would take that long,
    // and say "shutdown timeout" or leave a child killed by a signal
    let log = terminates_cleanly(&mut k.guard, Duration::from_secs(15), CRASH);
    assert!(
        log.contains("Thank you for flying kamailio"),
        "{}",
        k.guard.tail(30)
    );

    // each dmbridge worker and SIP worker that had a request out is logged as gone with it;
    // a direct request is nobody's own (its sender keeps nothing, the dmbridge worker it names
    // only gets its outcome): the bridge drops its outcome when it comes
    let own = if direct { 2 } else { 6 };
    assert_eq!(wait_all_gone(&mut s.bridge, own), own);
    answers_after_the_workers_left_are_dropped(&s, &mut peer, 6);
}

#[test]
fn killed_dmbridge_worker_takes_kamailio_down() {
    let mut s = setup("originate-stops-kill", 8000, 20000, 10);
    let mut peer = HeldPeer::connect(s.bridge.port());
    let mut k = kamailio(&s, "kamailio-a");
    let (a, _) = calls_at_the_peer(&mut peer, &k.guard, k.sip_port, 4, 0);
    let pids = dm_worker_pids(&s.bridge);
    assert_eq!(
        pids.len(),
        2,
        "{:?}",
        bridge_workers(s.bridge.config_path())
    );

    signal_pid(pids[0], "KILL");
    // Kamailio's main process ends the whole server when a child dies: the suspended
    // transactions go with it (no tm timer runs after), and the SIP clients get nothing
    let st = wait_exit(&mut k, Duration::from_secs(15));
    assert!(!st.success(), "{st:?}");
    let log = k.guard.output();
    assert!(
        log.contains(&format!("child process {} exited by a signal 9", pids[0]))
            && log.contains("terminating due to SIGCHLD"),
        "{}",
        k.guard.tail(30)
    );
    let crashes: Vec<String> = lines_with_any(&log, CRASH)
        .into_iter()
        .filter(|l| !l.contains(&format!("child process {} exited by a signal 9", pids[0])))
        .collect();
    assert_eq!(crashes, Vec::<String>::new());
    assert_eq!(a.finals(Duration::from_millis(500)), []);

    // the 4 async requests are direct (the SIP workers sent them): no attachment owns them,
    // and their outcomes are dropped when they come
    assert_eq!(wait_all_gone(&mut s.bridge, 0), 0);
    answers_after_the_workers_left_are_dropped(&s, &mut peer, 4);
}

#[test]
fn bridge_restart_ends_waiting_calls_then_reattaches() {
    bridge_restart(setup("originate-stops-restart", 8000, 20000, 10), 4);
}

#[test]
fn bridge_restart_ends_waiting_calls_then_reattaches_handover() {
    bridge_restart(
        setup_handover("originate-stops-restart-h", 8000, 20000, 10),
        0,
    );
}

/// The bridge killed while 4 async and 2 sync calls wait at the peer; `direct`: how many of the
/// async requests the SIP workers sent themselves (async_direct).
fn bridge_restart(mut s: Setup, direct: u64) {
    let mut peer = HeldPeer::connect(s.bridge.port());
    let mut k = kamailio(&s, "kamailio-a");
    let (a, y) = calls_at_the_peer(&mut peer, &k.guard, k.sip_port, 4, 2);

    kill_bridge(&mut s, peer);
    // every waiting call ends with -2 well before its 8 s timeout, and the script answers the
    // SIP client: each request was at the peer, which may have acted on it, so "no answer",
    // not "not sent" (-3, DESIGN §3's bridge down: only for a request the bridge never took)
    let went = "-2 no answer: the bridge went away";
    for (what, b, n) in [("async", &a, 4), ("sync", &y, 2)] {
        let f = b.finals(Duration::from_secs(6));
        assert_eq!(f.len(), n, "{what}: {f:?}\n{}", k.guard.tail(20));
        for (_, line) in &f {
            assert!(
                line.starts_with(&format!("SIP/2.0 500 Diameter {went}")),
                "{what}: {line}"
            );
        }
    }
    assert_eq!(module_counter(&k, "timeouts"), Some(6));
    assert_eq!(module_counter(&k, "not_sent"), Some(0));
    assert_eq!(module_counter(&k, "async_direct"), Some(direct));
    // each resumed once: no second resume attempt failed, no safety net
    assert_eq!(k.log_lines("cannot resume transaction").len(), 0);
    assert_eq!(k.log_lines("module safety net").len(), 0);
    assert!(k.guard.is_running());

    // the same bridge again: the module's processes re-attach by themselves
    let mut peer = restart_bridge(&mut s, &k);
    for user in ["async", "sync"] {
        call_answered(&mut peer, &k.guard, k.sip_port, user);
    }
    assert_eq!(module_counter(&k, "answers_ok"), Some(2));
    // after the restart the SIP workers send again when the path is direct
    assert_eq!(
        module_counter(&k, "async_direct"),
        Some(if direct > 0 { direct + 1 } else { 0 })
    );
}

/// Whether the process `pid` (a stopped bridge) has bytes waiting on one of its connected
/// control sockets (`ss`, from the kernel's socket diagnostics): a doorbell, which a worker's
/// library rings only after it put a record in its ring for a bridge that said it sleeps.
fn doorbell_waiting(pid: u32) -> bool {
    let out = Command::new("ss")
        .args(["-x", "-p", "-n"])
        .output()
        .unwrap_or_else(|e| panic!("ss: {e}"));
    let owner = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        let mut f = l.split_whitespace();
        l.contains(&owner)
            && matches!(
                (f.next(), f.next(), f.next()),
                (Some("u_seq"), Some("ESTAB"), Some(q)) if q != "0"
            )
    })
}

/// The bridge stopped (SIGSTOP: it takes nothing more from the rings) while the peer holds an
/// async and a sync call, then an async call queued for it (the dmbridge worker put it in its
/// ring: the doorbell waits on the stopped bridge's socket), then killed: the two it had taken
/// end as "no answer" (-2: at the peer, which may have acted on them), the queued one as "not
/// sent" (-3: the bridge never saw it; DESIGN §3's bridge down, safe to retry). At once, each
/// once. `async_direct` 0: the dmbridge worker sends the async requests through its own
/// attachment, whose ring the library reads (a direct request's ring is the SIP worker's).
#[test]
fn killed_bridge_ends_a_call_it_never_took_as_not_sent() {
    let mut s = setup_handover("originate-stops-not-taken", 8000, 20000, 10);
    let mut peer = HeldPeer::connect(s.bridge.port());
    let k = kamailio(&s, "kamailio-a");
    let (a, y) = calls_at_the_peer(&mut peer, &k.guard, k.sip_port, 1, 1);
    let pid = s.bridge.guard().pid();
    signal_pid(pid, "STOP");
    let q = SipBatch::send(k.sip_port, "async", "queued", 1);
    let r = poll_until(
        "the queued request's doorbell at the stopped bridge",
        Duration::from_secs(10),
        || doorbell_waiting(pid).then_some(()),
    );
    r.unwrap_or_else(|e| panic!("{e}\n{}", k.guard.tail(20)));
    kill_bridge(&mut s, peer);
    for (what, b, want) in [
        (
            "async",
            &a,
            "-2 no answer: the bridge went away after taking the request",
        ),
        (
            "sync",
            &y,
            "-2 no answer: the bridge went away after taking the request",
        ),
        (
            "queued",
            &q,
            "-3 bridge went away before taking the request (not sent)",
        ),
    ] {
        let f = b.finals(Duration::from_secs(6));
        assert_eq!(f.len(), 1, "{what}: {f:?}\n{}", k.guard.tail(20));
        assert!(
            f[0].1.starts_with(&format!("SIP/2.0 500 Diameter {want}")),
            "{what}: {f:?}"
        );
    }
    assert_eq!(module_counter(&k, "timeouts"), Some(2));
    assert_eq!(module_counter(&k, "not_sent"), Some(1));
    assert_eq!(k.log_lines("cannot resume transaction").len(), 0);
    assert_eq!(k.log_lines("module safety net").len(), 0);
    no_crash_no_double_free(&k);
}

/// Stops (SIGSTOP) both dmbridge workers of `k`, then sends `n` async calls: the SIP workers
/// hand them over (sent_async counts them) onto the stopped workers' lists, and tm's
/// fr_timer answers each SIP client 408. Returns the workers' pids.
fn stop_workers_until_tm_ends_calls(s: &Setup, k: &RoleKamailio, n: usize) -> Vec<u32> {
    let pids = dm_worker_pids(&s.bridge);
    assert_eq!(pids.len(), 2);
    for p in &pids {
        signal_pid(*p, "STOP");
    }
    let a = SipBatch::send(k.sip_port, "async", "a", n);
    let r = poll_until("the jobs handed over", Duration::from_secs(10), || {
        (module_counter(k, "sent_async") == Some(n as u64)).then_some(())
    });
    r.unwrap_or_else(|e| panic!("{e}\n{}", k.guard.tail(20)));
    let f = a.finals(Duration::from_secs(10));
    assert_eq!(f.len(), n, "{f:?}");
    assert!(
        f.iter().all(|(_, l)| l == "SIP/2.0 408 Request Timeout"),
        "{f:?}"
    );
    pids
}

#[test]
fn sigterm_with_jobs_on_the_shared_list() {
    // fr_timer 3 s: tm ends the suspended transactions while the dmbridge workers are stopped
    let mut s = setup_handover("originate-stops-list", 8000, 3000, 4);
    let mut peer = HeldPeer::connect(s.bridge.port());
    let mut k = kamailio(&s, "kamailio-a");
    // the jobs stay on the workers' lists in shared memory: nobody takes them
    stop_workers_until_tm_ends_calls(&s, &k, 6);

    // the stopped workers cannot take their SIGTERM: after exit_timeout (4 s) Kamailio's
    // main process kills them, then frees shared memory with the jobs still on the lists
    terminates_cleanly(&mut k.guard, Duration::from_secs(15), CRASH);
    assert_eq!(wait_all_gone(&mut s.bridge, 0), 0);
    peer.idle(Duration::from_millis(300));
    assert_eq!(peer.held(), 0, "a job of the stopped workers was sent");
    assert_eq!(pending(&s.bridge), Some(0));
}

#[test]
fn stopped_dmbridge_workers_send_nothing_for_ended_transactions() {
    let s = setup_handover("originate-stops-stuck", 8000, 3000, 10);
    let mut peer = HeldPeer::connect(s.bridge.port());
    let k = kamailio(&s, "kamailio-a");
    let pids = stop_workers_until_tm_ends_calls(&s, &k, 4);

    // the workers go on: the jobs of the ended transactions are dropped, counted and logged,
    // and no Diameter request goes out for them
    for p in &pids {
        signal_pid(*p, "CONT");
    }
    let r = poll_until(
        "the jobs counted as abandoned",
        Duration::from_secs(10),
        || (module_counter(&k, "async_abandoned") == Some(4)).then_some(()),
    );
    r.unwrap_or_else(|e| panic!("{e}\n{}", k.guard.tail(20)));
    assert_eq!(bridge_doc(&k)["counters"]["requests_sent"], 0);
    let logged: u64 = k
        .log_lines("async requests not sent: their transactions ended")
        .iter()
        .filter_map(|l| {
            l.split(" of ")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(logged, 4, "{}", k.guard.tail(20));
    assert_eq!(module_counter(&k, "answers_ok"), Some(0));

    call_answered(&mut peer, &k.guard, k.sip_port, "async");
    assert_eq!(peer.held(), 0);
}

#[test]
fn graceful_bridge_stop_delivers_the_answers_in_flight() {
    let mut s = setup("originate-stops-graceful", 8000, 20000, 10);
    let mut peer = HeldPeer::connect(s.bridge.port());
    let mut k = kamailio(&s, "kamailio-a");
    let (a, y) = calls_at_the_peer(&mut peer, &k.guard, k.sip_port, 2, 1);

    // SIGTERM: the bridge takes no new request but waits for the answers of those at the
    // peer before it says goodbye (RFC 6733 §5.4)
    s.bridge
        .guard()
        .signal(Sig::Term)
        .unwrap_or_else(|e| panic!("SIGTERM: {e}"));
    let r = poll_until("the bridge stopping", Duration::from_secs(10), || {
        s.bridge
            .guard()
            .output()
            .contains("usable=false")
            .then_some(())
    });
    r.unwrap_or_else(|e| panic!("{e}\n{}", s.bridge.guard().tail(20)));
    assert_eq!(peer.answer_all(), 3);
    for (what, b, n) in [("async", &a, 2), ("sync", &y, 1)] {
        let f = b.finals(Duration::from_secs(6));
        assert_eq!(f.len(), n, "{what}: {f:?}\n{}", k.guard.tail(20));
        assert!(
            f.iter().all(|(_, l)| l == "SIP/2.0 200 OK"),
            "{what}: {f:?}"
        );
    }
    // then the DPR, answered by the peer, and the bridge exits
    peer.idle(Duration::from_secs(3));
    let st = s.bridge.guard().wait_exit(Duration::from_secs(10));
    assert!(
        st.is_some_and(|st| st.success()),
        "{st:?}\n{}",
        s.bridge.guard().tail(20)
    );
    assert_eq!(module_counter(&k, "answers_ok"), Some(3));
    assert!(k.guard.is_running());

    let mut peer = restart_bridge(&mut s, &k);
    call_answered(&mut peer, &k.guard, k.sip_port, "async");
}

#[test]
fn answer_after_tm_ended_the_transaction_is_counted() {
    // fr_timer 2 s below request_timeout 8 s (a misconfiguration the docs warn about)
    let s = setup("originate-stops-late", 8000, 2000, 10);
    let mut peer = HeldPeer::connect(s.bridge.port());
    let k = kamailio(&s, "kamailio-a");
    let (a, _) = calls_at_the_peer(&mut peer, &k.guard, k.sip_port, 2, 0);
    let f = a.finals(Duration::from_secs(10));
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(
        f.iter().all(|(_, l)| l == "SIP/2.0 408 Request Timeout"),
        "{f:?}"
    );
    // the answers come after tm's 408: they cannot resume anything, counted and logged
    assert_eq!(peer.answer_all(), 2);
    let r = poll_until(
        "the outcomes counted as abandoned",
        Duration::from_secs(10),
        || (module_counter(&k, "async_abandoned") == Some(2)).then_some(()),
    );
    r.unwrap_or_else(|e| panic!("{e}\n{}", k.guard.tail(20)));
    assert_eq!(k.log_lines("cannot resume transaction").len(), 2);
    call_answered(&mut peer, &k.guard, k.sip_port, "async");
}

#[test]
fn async_calls_that_suspend_nothing_are_counted() {
    let s = setup("originate-stops-refused", 8000, 20000, 10);
    let k = kamailio(&s, "kamailio-a");
    let b = SipBatch::send(k.sip_port, "badjson", "bad", 2);
    let f = b.finals(Duration::from_secs(10));
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(
        f.iter().all(|(_, l)| l == "SIP/2.0 500 Diameter not sent"),
        "{f:?}"
    );
    // as dm_send_request counts its refusals: each call in sent_async, each refusal in
    // not_sent (and logged)
    assert_eq!(module_counter(&k, "sent_async"), Some(2));
    assert_eq!(module_counter(&k, "not_sent"), Some(2));
    assert_eq!(k.log_lines("invalid AVP JSON at offset").len(), 2);
}

#[test]
fn full_job_lists_refuse_only_when_every_list_is_full() {
    let s = setup_queue("originate-stops-full", 8000, 20000, 10, 2, 0);
    let mut peer = HeldPeer::connect(s.bridge.port());
    let k = kamailio(&s, "kamailio-a");
    let pids = dm_worker_pids(&s.bridge);
    assert_eq!(pids.len(), 2);
    for p in &pids {
        signal_pid(*p, "STOP");
    }
    // 4 jobs, 2 per list: the first SIP worker's pick is the worker it woke, which stays
    // "awake" (it cannot run), so without the fall-over to the next list the third job would
    // be refused with a list free
    let a = SipBatch::send(k.sip_port, "async", "a", 4);
    let r = poll_until("4 jobs handed over", Duration::from_secs(10), || {
        (module_counter(&k, "sent_async") == Some(4)).then_some(())
    });
    r.unwrap_or_else(|e| panic!("{e}\n{}", k.guard.tail(20)));
    assert_eq!(
        module_counter(&k, "not_sent"),
        Some(0),
        "{}",
        k.guard.tail(20)
    );

    // every list full: the 5th call suspends nothing and the script answers at once
    let b = SipBatch::send(k.sip_port, "async", "b", 1);
    assert_eq!(
        b.finals(Duration::from_secs(10)),
        [(0, "SIP/2.0 500 Diameter not sent".to_string())],
        "{}",
        k.guard.tail(20)
    );
    assert_eq!(module_counter(&k, "sent_async"), Some(5));
    assert_eq!(module_counter(&k, "not_sent"), Some(1));
    assert_eq!(
        k.log_lines("cannot hand the job over: each of the 2 dmbridge workers has 2 jobs")
            .len(),
        1,
        "{}",
        k.guard.tail(20)
    );

    // the workers go on: the 4 queued jobs are sent (their transactions are alive) and answered
    for p in &pids {
        signal_pid(*p, "CONT");
    }
    assert_eq!(
        peer.hold(4, Duration::from_secs(10)),
        4,
        "{}",
        k.guard.tail(20)
    );
    assert_eq!(peer.answer_all(), 4);
    let f = a.finals(Duration::from_secs(10));
    assert_eq!(f.len(), 4, "{f:?}\n{}", k.guard.tail(20));
    assert!(f.iter().all(|(_, l)| l == "SIP/2.0 200 OK"), "{f:?}");
    assert_eq!(module_counter(&k, "async_abandoned"), Some(0));
    call_answered(&mut peer, &k.guard, k.sip_port, "async");
}

/// No crash, no allocator complaint (Kamailio's shm allocator logs "BUG: ... freeing already
/// freed pointer" for a double free) and no job resumed twice in `k`'s log so far.
fn no_crash_no_double_free(k: &RoleKamailio) {
    let log = k.guard.output();
    assert_eq!(lines_with_any(&log, CRASH), Vec::<String>::new());
    assert_eq!(
        lines_with_any(&log, &["cannot resume transaction"]),
        Vec::<String>::new()
    );
}

/// Stops both dmbridge workers, sends 3 async calls, and returns (the workers' pids, the
/// batch, how many requests reached the peer while the workers were stopped: waiting up to
/// `wait` for the 3).
fn async_calls_with_stopped_workers(
    s: &Setup,
    k: &RoleKamailio,
    peer: &mut HeldPeer,
    wait: Duration,
) -> (Vec<u32>, SipBatch, usize) {
    let pids = dm_worker_pids(&s.bridge);
    assert_eq!(pids.len(), 2);
    for p in &pids {
        signal_pid(*p, "STOP");
    }
    let a = SipBatch::send(k.sip_port, "async", "a", 3);
    let r = poll_until("3 async calls made", Duration::from_secs(10), || {
        (module_counter(k, "sent_async") == Some(3)).then_some(())
    });
    r.unwrap_or_else(|e| panic!("{e}\n{}", k.guard.tail(20)));
    let at_peer = peer.hold(3, wait);
    (pids, a, at_peer)
}

#[test]
fn direct_requests_go_out_while_the_dmbridge_workers_are_stopped() {
    for direct in [1u32, 0] {
        let name = format!("originate-stops-direct-{direct}");
        let s = setup_queue(&name, 8000, 20000, 10, 8192, direct);
        let mut peer = HeldPeer::connect(s.bridge.port());
        let k = kamailio(&s, "kamailio-a");
        // direct: the 3 requests arrive (bounded wait); hand-over: none may, 2 s to show it
        let wait = Duration::from_secs(if direct == 1 { 10 } else { 2 });
        let (pids, a, at_peer) = async_calls_with_stopped_workers(&s, &k, &mut peer, wait);
        if direct == 1 {
            // a stopped worker sends nothing: the SIP workers did
            assert_eq!(at_peer, 3, "direct: {}", k.guard.tail(20));
            assert_eq!(module_counter(&k, "async_direct"), Some(3));
        } else {
            assert_eq!(at_peer, 0, "hand-over: sent by a stopped worker?");
            assert_eq!(module_counter(&k, "async_direct"), Some(0));
        }
        for p in &pids {
            signal_pid(*p, "CONT");
        }
        assert_eq!(peer.hold(3, Duration::from_secs(10)), 3);
        assert_eq!(peer.answer_all(), 3);
        let f = a.finals(Duration::from_secs(10));
        assert_eq!(f.len(), 3, "{f:?}\n{}", k.guard.tail(20));
        assert!(f.iter().all(|(_, l)| l == "SIP/2.0 200 OK"), "{f:?}");
        assert_eq!(module_counter(&k, "answers_ok"), Some(3));
        assert_eq!(module_counter(&k, "async_abandoned"), Some(0));
        assert!(
            k.log_lines("unknown async handle").is_empty(),
            "{}",
            k.guard.tail(20)
        );
        no_crash_no_double_free(&k);
    }
}

#[test]
fn direct_request_timeout_resumes_once() {
    // request_timeout 1 s: the bridge ends the request and sends its timeout to the worker
    let s = setup("originate-stops-direct-timeout", 1000, 20000, 10);
    let mut peer = HeldPeer::connect(s.bridge.port());
    let k = kamailio(&s, "kamailio-a");
    let (a, _) = calls_at_the_peer(&mut peer, &k.guard, k.sip_port, 2, 0);
    let f = a.finals(Duration::from_secs(10));
    assert_eq!(f.len(), 2, "{f:?}\n{}", k.guard.tail(20));
    assert!(
        f.iter()
            .all(|(_, l)| l.starts_with("SIP/2.0 500 Diameter -2")),
        "{f:?}"
    );
    assert_eq!(module_counter(&k, "async_direct"), Some(2));
    assert_eq!(module_counter(&k, "timeouts"), Some(2));
    assert_eq!(k.log_lines("module safety net").len(), 0);
    // the late answers reach nobody's transaction
    assert_eq!(peer.answer_all(), 2);
    peer.idle(Duration::from_millis(300));
    assert_eq!(module_counter(&k, "answers_ok"), Some(0));
    assert_eq!(k.log_lines("cannot resume transaction").len(), 0);
    call_answered(&mut peer, &k.guard, k.sip_port, "async");
    no_crash_no_double_free(&k);
}

#[test]
fn direct_send_failure_is_the_scripts_not_sent() {
    let s = setup("originate-stops-direct-fail", 8000, 20000, 10);
    let mut peer = HeldPeer::connect(s.bridge.port());
    let k = kamailio(&s, "kamailio-a");
    // a request the SIP worker's send refuses (too big for the bridge): the script gets the
    // error return at once, and the dmbridge worker that has the job drops it unresumed
    let b = SipBatch::send(k.sip_port, "big", "big", 2);
    let f = b.finals(Duration::from_secs(10));
    assert_eq!(f.len(), 2, "{f:?}\n{}", k.guard.tail(20));
    assert!(
        f.iter().all(|(_, l)| l == "SIP/2.0 500 Diameter not sent"),
        "{f:?}"
    );
    assert_eq!(module_counter(&k, "sent_async"), Some(2));
    assert_eq!(module_counter(&k, "not_sent"), Some(2));
    assert_eq!(module_counter(&k, "async_direct"), Some(0));
    assert_eq!(
        k.log_lines("dm_send_request_async(16777215, 16777214): ")
            .len(),
        2,
        "{}",
        k.guard.tail(20)
    );
    call_answered(&mut peer, &k.guard, k.sip_port, "async");
    assert_eq!(peer.held(), 0);
    assert_eq!(module_counter(&k, "async_direct"), Some(1));
    assert_eq!(module_counter(&k, "answers_ok"), Some(1));
    assert_eq!(module_counter(&k, "async_abandoned"), Some(0));
    assert_eq!(k.log_lines("cannot resume transaction").len(), 0);
    no_crash_no_double_free(&k);
}

#[test]
fn direct_requests_into_a_dead_bridge_end_when_the_workers_see_it() {
    let mut s = setup("originate-stops-direct-dead", 8000, 20000, 10);
    // one SIP worker, attached by the first call
    let text = std::fs::read_to_string(&s.cfg).expect("cfg");
    std::fs::write(&s.cfg, text.replace("children=4", "children=1")).expect("cfg");
    let mut peer = HeldPeer::connect(s.bridge.port());
    let k = kamailio(&s, "kamailio-a");
    // (not call_answered: its Call-ID again within tm's wait timer would be a retransmission)
    let (a, _) = calls_at_the_peer(&mut peer, &k.guard, k.sip_port, 1, 0);
    assert_eq!(peer.answer_all(), 1);
    assert_eq!(
        a.finals(Duration::from_secs(10)),
        [(0, "SIP/2.0 200 OK".to_string())]
    );
    let pids = dm_worker_pids(&s.bridge);
    assert_eq!(pids.len(), 2);
    // the dmbridge workers stopped, the bridge killed: the SIP worker's library has not seen
    // the EOF (it waits on nothing), so its sends go into the dead bridge's ring
    for p in &pids {
        signal_pid(*p, "STOP");
    }
    kill_bridge(&mut s, peer);
    let b = SipBatch::send(k.sip_port, "async", "dead", 3);
    let r = poll_until("3 async calls made", Duration::from_secs(10), || {
        (module_counter(&k, "sent_async") == Some(4)).then_some(())
    });
    r.unwrap_or_else(|e| panic!("{e}\n{}", k.guard.tail(20)));
    // the workers go on, see the bridge gone, and end each call at once (not at its 8 s
    // timeout, not by the safety net), once: as "no answer" (-2), because the dmbridge worker
    // cannot see the SIP worker's queue to the bridge, so it cannot tell these (never taken)
    // from direct requests the bridge took and sent (a -3 for those would invite a retry)
    for p in &pids {
        signal_pid(*p, "CONT");
    }
    let f = b.finals(Duration::from_secs(6));
    assert_eq!(f.len(), 3, "{f:?}\n{}", k.guard.tail(20));
    assert!(
        f.iter().all(|(_, l)| l.starts_with(
            "SIP/2.0 500 Diameter -2 no answer: the bridge went away before answering; the request may have reached the peer"
        )),
        "{f:?}"
    );
    assert_eq!(module_counter(&k, "timeouts"), Some(3));
    assert_eq!(module_counter(&k, "not_sent"), Some(0));
    assert_eq!(k.log_lines("module safety net").len(), 0);
    assert_eq!(k.log_lines("cannot resume transaction").len(), 0);
    // the bridge back: the SIP worker's library sees its old connection's EOF first (the
    // workers' new addresses tell it), re-attaches, and sends directly again
    let mut peer = restart_bridge(&mut s, &k);
    call_answered(&mut peer, &k.guard, k.sip_port, "async");
    assert_eq!(module_counter(&k, "async_direct"), Some(5));
    assert_eq!(module_counter(&k, "answers_ok"), Some(2));
    no_crash_no_double_free(&k);
}
