//! The [`Application`] over the shared-memory segment: how `dmbridge run` serves the SIP
//! server's workers (DESIGN §2, §3, §5).
//!
//! ```text
//!  node loop --on_request--> [channel] --> shm driver task --dispatch--> worker rings
//!  node loop <--Responder--- shm driver <--service(slot)--- worker rings / control sockets
//!  node loop <--AppHandle--- shm driver <--OutgoingRequest records-- workers
//! ```
//!
//! [`ShmApp::on_request`] only moves the request into a channel; everything else happens in
//! one tokio task (the *shm driver*, [`driver`]) that owns `dmshm::bridge::Bridge`, so the
//! JSON work runs beside the node loop (on the other core) instead of inside it. The driver
//! waits on `AsyncFd`s — the control listener and a duplicate of each worker's connection —
//! and on its channels and one timer; it never polls in a loop: with nothing to do it sleeps
//! until a worker rings (the rings' doorbells ring only when the bridge said it sleeps), a
//! request arrives, an outgoing request completes, or a deadline passes.
//!
//! Exactly one answer per incoming request:
//! - dispatched to a worker: the worker's reply, converted from JSON ([`convert`]); a reply the
//!   bridge cannot use (bad JSON, the library's `Failed`) is logged and answered 5012;
//! - no attached worker serves the command (neither its `E_DM_<ABBR>` name nor
//!   `E_DM_REQUEST`): 3001 with the E bit, at once — unless a worker attached less than 2 s
//!   ago has not declared its commands yet: then 3004 (not ready, transient), so a bridge or
//!   SIP-server restart does not answer a permanent error for a command about to be served;
//! - no worker attached, or every eligible ring full: 3004 DIAMETER_TOO_BUSY (backpressure
//!   instead of an unbounded queue); larger than the segment's maximum message: 5012 with an
//!   Error-Message saying so;
//! - no reply within `[app] reply_timeout`, or the worker died holding it: the held
//!   [`Responder`] is dropped, which the node answers 5012 (and the node's own reply timer
//!   does the same, whichever is first — the node answers once). A reply that arrives later
//!   finds no responder and is dropped with a log line;
//! - still held when the node drains a connection before its DPR (a stop, `peer disable`, a
//!   reload removing the peer): the node answers 5012 itself and withdraws it
//!   ([`Application::withdrawn`]); the worker's reply, if it comes, is late: dropped, logged
//!   and counted as such (`late_replies_dropped`), never as a reply.
//!
//! Outgoing requests from workers go through the node's [`AppHandle`]; each ends in exactly
//! one outcome record back to the very worker (slot *and* attachment epoch: a worker that
//! re-attached to the same slot never receives its predecessor's answers).
//!
//! Life cycle: workers re-attach by themselves when the bridge restarts (dmshm's worker
//! side); a worker whose connection ends (exit, crash, `kill -9`) is noticed at once by EOF
//! on its control socket, its held requests are answered 5012 and its slot is free again.
//! When the node stops, outgoing requests still coming in fail fast (-3, node down); when this
//! service stops, the segment and socket are removed and the workers see EOF.
//!
//! Capabilities: the applications of the commands workers declare they serve (`PPR` -> Cx)
//! are published by [`ShmService::advertised`]; `dmbridge run` hands them to the node
//! (`Node::advertise_also`), which advertises them beside the configured `[[applications]]`
//! in every capabilities exchange from then on — new connections and reconnections; an open
//! connection keeps what it negotiated (RFC 6733 cannot renegotiate in place). The set only
//! grows while the bridge runs, so a SIP server restarting does not make it flap. Configure
//! the applications in `[[applications]]` too when peers must see them from the first CER.
//!
//! Status: a JSON document ([`status`]) with the peers' states (from the node), the workers
//! and counters, published to workers through `Bridge::set_status_json`, so `dmb_status_json`
//! (Kamailio `dmbridge.status`, OpenSIPS `dm_status`) shows it.

pub mod convert;
pub mod driver;
pub mod held;
pub mod policy;
pub mod refusals;
pub mod settings;
pub mod status;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::app::{AppHandle, Application, IncomingRequest, Responder};
use crate::dictionary::CurrentDictionary;
use dmnode::config::{AppAdvert, Config};
use dmnode::endpoint::PeerStatus;

pub use settings::{SettingsError, ShmOptions};

/// Why the shared-memory application did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The `[app]` settings are wrong.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The segment or the control socket could not be made.
    #[error(
        "cannot create the shared-memory segment {segment} / control socket {socket}: {source}"
    )]
    Create {
        /// `[app] segment`: names the per-worker segments.
        segment: std::path::PathBuf,
        /// `[app] control_socket`: where workers connect.
        socket: std::path::PathBuf,
        /// What failed (the socket directory's checks, or the bind).
        source: dmshm::Error,
    },
    /// The control socket could not be registered with the runtime.
    #[error("registering the control socket: {0}")]
    Register(std::io::Error),
}

/// What the node loop hands the shm driver, in the node's order (a withdrawal after the
/// request it names).
#[derive(Debug)]
pub enum FromNode {
    /// An incoming request and what answers it.
    Request(IncomingRequest, Responder),
    /// The node answered these (its tokens) itself: [`Application::withdrawn`].
    Withdrawn(Vec<u64>),
}

/// The node's side of the seam: hands each request to the shm driver. Never blocks.
pub struct ShmApp {
    tx: mpsc::UnboundedSender<FromNode>,
}

impl Application for ShmApp {
    fn on_request(&self, request: IncomingRequest, responder: Responder) {
        // If the driver is gone the pair is dropped here, and the dropped responder makes the
        // node answer 5012: the peer is never left waiting. The channel is unbounded because
        // the node bounds how many requests are delivered and unanswered at once
        // (`[limits] max_pending_requests`, beyond which it answers 3004 itself).
        let _ = self.tx.send(FromNode::Request(request, responder));
    }

    fn withdrawn(&self, tokens: Vec<u64>) {
        // Through the same channel, so it is read after the requests it names.
        let _ = self.tx.send(FromNode::Withdrawn(tokens));
    }
}

/// The running shm driver. [`ShmService::stop`] (or dropping it) ends it.
pub struct ShmService {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    generation: u64,
    advertised: watch::Receiver<Vec<AppAdvert>>,
    status_doc: watch::Receiver<String>,
}

impl ShmService {
    /// Creates the segment and control socket and starts the driver on the current tokio
    /// runtime. `handle` submits the workers' requests to the node; `peers` is the node's
    /// status (for the status document); `script_request_latency` gets the round trip of
    /// each request a worker sends, and the bridge's own part of it (give it to
    /// [`crate::metrics::Metrics::with_script_request_latency`]).
    pub fn start(
        config: &Config,
        dict: &CurrentDictionary,
        handle: AppHandle,
        peers: watch::Receiver<Vec<PeerStatus>>,
        script_request_latency: crate::metrics::ScriptRequestLatency,
    ) -> Result<(Arc<ShmApp>, ShmService), StartError> {
        let options = ShmOptions::from_settings(&config.app)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let d = driver::Driver::new(
            &options,
            driver::NodeView {
                origin_host: config.node.origin_host.clone(),
                origin_realm: config.node.origin_realm.clone(),
                max_message_size: config.limits.max_message_size as usize,
            },
            dict.clone(),
            handle,
            peers,
            outcomes_tx,
            script_request_latency,
        )?;
        let generation = d.generation();
        let advertised = d.advertised();
        let status_doc = d.status_doc();
        let task = tokio::spawn(d.run(rx, outcomes_rx, stop_rx));
        Ok((
            Arc::new(ShmApp { tx }),
            ShmService {
                stop: Some(stop_tx),
                task: Some(task),
                generation,
                advertised,
                status_doc,
            },
        ))
    }

    /// The segment's generation (changes on every start).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The applications of the commands attached workers serve, updated as workers declare
    /// their events or leave ([`convert::handled_applications`]). The node advertises these
    /// in CER/CEA beside the configured `[[applications]]`.
    pub fn advertised(&self) -> watch::Receiver<Vec<AppAdvert>> {
        self.advertised.clone()
    }

    /// The status document as last published to the workers (JSON: peers, workers,
    /// counters), for `dmbridge ctl workers` and the worker metrics.
    pub fn status_doc(&self) -> watch::Receiver<String> {
        self.status_doc.clone()
    }

    /// Stops the driver and waits for it: held requests are released (answered 5012 by the
    /// node if it still runs), the segment and socket are removed, workers see EOF.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ShmService {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
