//! The bridge's status document, as workers read it with `dmb_status_json` (under
//! `"bridge"`) and the SIP servers show it (Kamailio RPC `dmbridge.status`, OpenSIPS MI
//! `dm_status`): the peers and their states, the workers, and counters.
//!
//! Built from plain values so its shape is tested here; the driver republishes it through
//! `Bridge::set_status_json` when peers or workers change, and at most once a second while
//! only counters move.

use serde_json::{json, Value};

use dmnode::endpoint::PeerStatus;
use dmshm::bridge::WorkerInfo;

/// What happened to requests, both ways, since the bridge started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Incoming requests handed to a worker.
    pub dispatched: u64,
    /// Answered 3001: no attached worker handles the command.
    pub unhandled: u64,
    /// Answered 3004: no worker attached, or every eligible ring full.
    pub busy: u64,
    /// Answered 5012: larger than the segment's maximum message.
    pub too_big: u64,
    /// Replies from workers turned into answers.
    pub replies: u64,
    /// Replies that could not be used (bad JSON, library-reported failure): 5012.
    pub bad_replies: u64,
    /// Requests given up on after the reply timeout: 5012.
    pub reply_timeouts: u64,
    /// Requests held by workers that died: 5012.
    pub worker_lost: u64,
    /// Requests a worker held when the node answered them 5012 itself, at the drain
    /// timeout before its DPR (RFC 6733 §5.4, §7.1.5): neither a reply nor a reply timeout.
    pub drained: u64,
    /// Replies that came after the request was answered without them (dropped): after the
    /// reply timeout, or after the node's 5012 at the drain (`drained`).
    pub late_replies: u64,
    /// Records a worker sent that were ignored: a reply to a token that is not its own
    /// (another worker's, already answered, never given), a duplicate request handle.
    pub records_ignored: u64,
    /// Outgoing requests from workers.
    pub requests_sent: u64,
    /// Outcomes of class 1: answered with a 2xxx Result-Code.
    pub outcome_success: u64,
    /// Outcomes of class -1: answered with another Result-Code or the E bit.
    pub outcome_error: u64,
    /// Outcomes of class -2: no answer before the request's timeout.
    pub outcome_timeout: u64,
    /// Outcomes of class -3: never sent (bad JSON, no route, ring full, stopping), and the
    /// notices of reply-to requests refused for their receiver's bound
    /// (`reply_to_refused_full`) that reached the receiver.
    pub outcome_not_sent: u64,
    /// Outcomes dropped because their worker was gone (for a reply-to request: the
    /// attachment it named left after the request was taken).
    pub outcomes_dropped: u64,
    /// Reply-to requests not sent: their address named no live attachment when taken.
    pub reply_to_refused: u64,
    /// Reply-to requests not sent: the attachment they named was owed `max_in_flight`
    /// outcomes already (`dmshm::bridge::Bridge::accept_reply_to`). Each is also counted
    /// once in `outcome_not_sent` (the receiver was told) or in
    /// `outcomes_dropped_receiver_full`.
    pub reply_to_refused_full: u64,
    /// The not-sent notices of `reply_to_refused_full` requests dropped: the receiver's
    /// queue was full too (it reads nothing).
    pub outcomes_dropped_receiver_full: u64,
    /// Worker attachments since start (a re-attach counts again).
    pub workers_attached: u64,
    /// Workers whose connection ended (exit, crash, detach, protocol fault).
    pub workers_gone: u64,
    /// Busy polls started for a peer's answer (`[app] busy_poll_us`).
    pub busy_polls: u64,
    /// Outcomes that arrived while the driver was polling (the poll paid).
    pub busy_poll_answers: u64,
    /// The local seam's own counters (refusals by cause, protocol drops, segment bytes): a
    /// plain struct kept by `dmshm::bridge::Bridge::counters`, copied here on publication.
    pub seam: dmshm::bridge::SeamCounters,
}

/// Identity and state of this bridge instance.
#[derive(Clone, Debug)]
pub struct Identity<'a> {
    /// Our Origin-Host.
    pub origin_host: &'a str,
    /// Our Origin-Realm.
    pub origin_realm: &'a str,
    /// The shared-memory bridge's generation: a new value means the bridge restarted.
    pub generation: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Shutting down: no new requests are taken; peers drain, then get DPR (RFC 6733 §5.4).
    pub stopping: bool,
}

fn peer(p: &PeerStatus) -> Value {
    json!({
        "host": p.host,
        "state": format!("{:?}", p.state),
        "watchdog": format!("{:?}", p.watchdog),
        "usable": p.usable,
        "apps": p.apps,
        "pending": p.pending,
        // Admitted through allow_unknown_peers, not configured.
        "unknown": p.unknown,
    })
}

fn worker(w: &WorkerInfo, last_error: Option<&String>) -> Value {
    json!({
        "slot": w.slot,
        "pid": w.pid,
        "name": w.name,
        "handles": w.handles,
        "outstanding": w.outstanding,
        "in_flight": w.in_flight,
        "queued_answers": w.queued_answers,
        // Outcomes of requests others sent naming it (reply-to), not in its ring yet; at most
        // the bridge's bound (requests_refused_reply_to_full counts those refused beyond).
        "reply_to_owed": w.reply_to_owed,
        "last_reply_error": last_error,
        // Depth in bytes (frames included) as of this publication, and ring-full events
        // since the worker attached (what `dmbridge_worker_ring_*` show).
        "rings": {
            "requests_bytes": w.ring_requests_bytes,
            "answers_bytes": w.ring_answers_bytes,
            "to_bridge_bytes": w.ring_to_bridge_bytes,
            "requests_full": w.requests_ring_full,
            "answers_full": w.answers_ring_full,
        },
    })
}

fn seam(s: &dmshm::bridge::SeamCounters) -> Value {
    json!({
        "connections_admitted": s.connections_admitted,
        "refused": {
            "not_allowed": s.refused_not_allowed,
            "version": s.refused_version,
            "no_slot": s.refused_no_slot,
            "bad_hello": s.refused_bad_hello,
            "handshake_timeout": s.refused_handshake_timeout,
            "pending_full": s.refused_pending_full,
            "internal": s.refused_internal,
        },
        "handshakes_abandoned": s.handshakes_abandoned,
        "workers_dropped_protocol": s.workers_dropped,
        "segment_bytes": s.segment_bytes,
    })
}

/// The status document.
pub fn render(
    id: &Identity<'_>,
    peers: &[PeerStatus],
    workers: &[WorkerInfo],
    last_errors: &std::collections::HashMap<u32, String>,
    handled: &[String],
    c: &Counters,
) -> String {
    let doc = json!({
        "origin_host": id.origin_host,
        "origin_realm": id.origin_realm,
        "generation": id.generation,
        "uptime_s": id.uptime_secs,
        "state": if id.stopping { "stopping" } else { "running" },
        "peers": peers.iter().map(peer).collect::<Vec<_>>(),
        "peers_open": peers.iter().filter(|p| p.usable).count(),
        "workers": workers
            .iter()
            .map(|w| worker(w, last_errors.get(&w.slot)))
            .collect::<Vec<_>>(),
        "handled": handled,
        "counters": {
            "dispatched": c.dispatched,
            "answered_3001_unhandled": c.unhandled,
            "answered_3004_busy": c.busy,
            "answered_5012_too_big": c.too_big,
            "replies": c.replies,
            "answered_5012_bad_reply": c.bad_replies,
            "answered_5012_reply_timeout": c.reply_timeouts,
            "answered_5012_worker_lost": c.worker_lost,
            "answered_5012_drain": c.drained,
            "late_replies_dropped": c.late_replies,
            "worker_records_ignored": c.records_ignored,
            "requests_sent": c.requests_sent,
            "requests_refused_reply_to_gone": c.reply_to_refused,
            "requests_refused_reply_to_full": c.reply_to_refused_full,
            "outcomes": {
                "success": c.outcome_success,
                "error_answer": c.outcome_error,
                "timeout": c.outcome_timeout,
                "not_sent": c.outcome_not_sent,
                "dropped_worker_gone": c.outcomes_dropped,
                "dropped_receiver_full": c.outcomes_dropped_receiver_full,
            },
            "workers_attached": c.workers_attached,
            "workers_gone": c.workers_gone,
            "busy_poll": { "polls": c.busy_polls, "answered_while_polling": c.busy_poll_answers },
            "seam": seam(&c.seam),
        },
    });
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmnode::peer::watchdog::WatchdogState;
    use dmnode::peer::State;

    #[test]
    fn document_names_peers_workers_and_counters() {
        let peers = vec![PeerStatus {
            host: "hss.test.local".into(),
            state: State::ROpen,
            watchdog: WatchdogState::Okay,
            usable: true,
            apps: vec![16777216],
            pending: 2,
            disabled: false,
            unknown: false,
        }];
        let workers = vec![WorkerInfo {
            slot: 3,
            pid: 42,
            name: "kamailio 1".into(),
            handles: vec!["PPR".into()],
            outstanding: 1,
            in_flight: 0,
            queued_answers: 0,
            reply_to_owed: 4,
            ring_requests_bytes: 96,
            ring_answers_bytes: 0,
            ring_to_bridge_bytes: 8,
            requests_ring_full: 5,
            answers_ring_full: 1,
        }];
        let c = Counters {
            dispatched: 7,
            busy: 1,
            reply_to_refused_full: 3,
            outcomes_dropped_receiver_full: 2,
            ..Counters::default()
        };
        let id = Identity {
            origin_host: "b.test.local",
            origin_realm: "test.local",
            generation: 9,
            uptime_secs: 1,
            stopping: false,
        };
        let errors = std::collections::HashMap::from([(3, "invalid reply JSON".to_string())]);
        let text = render(&id, &peers, &workers, &errors, &["PPR".into()], &c);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["peers"][0]["host"], "hss.test.local");
        assert_eq!(v["peers"][0]["state"], "ROpen");
        assert_eq!(v["peers_open"], 1);
        assert_eq!(v["workers"][0]["pid"], 42);
        assert_eq!(v["workers"][0]["last_reply_error"], "invalid reply JSON");
        assert_eq!(v["workers"][0]["rings"]["requests_bytes"], 96);
        assert_eq!(v["workers"][0]["rings"]["to_bridge_bytes"], 8);
        assert_eq!(v["workers"][0]["rings"]["requests_full"], 5);
        assert_eq!(v["workers"][0]["rings"]["answers_full"], 1);
        assert_eq!(v["counters"]["dispatched"], 7);
        assert_eq!(v["counters"]["answered_3004_busy"], 1);
        assert_eq!(v["workers"][0]["reply_to_owed"], 4);
        assert_eq!(v["counters"]["requests_refused_reply_to_full"], 3);
        assert_eq!(v["counters"]["outcomes"]["dropped_receiver_full"], 2);
        assert_eq!(v["counters"]["seam"]["refused"]["not_allowed"], 0);
        assert_eq!(v["state"], "running");
    }
}
