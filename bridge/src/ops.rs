//! Operating the running node: the admin socket's commands, reloads (admin `reload` and
//! SIGHUP), and systemd's watchdog.
//!
//! Commands about the protocol state (peers, routes, reload, peer disable/enable) go to the
//! node loop as [`NodeCall`]s and are answered there, between two inputs, so they see and
//! change the state the loop owns without locks. The log filter and the workers' table are
//! answered here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmnode::config::Config;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::admin::{Call, Command};
use crate::config_file::LoadError;
use crate::dictionary::{CurrentDictionary, DictionaryError, Reloaded, Sources};
use crate::logging::{LogControl, LogError};
use crate::metrics::Metrics;
use crate::sd_notify;

/// Why an admin command or a reload failed; the admin socket answers the text as `"error"`
/// and a refused reload logs it ("reload refused, ...: {text}").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The node loop is gone or going (the bridge is stopping).
    #[error("the node is stopping")]
    NodeStopping,
    /// `log-level` when logging was set up without a reload handle (tests).
    #[error("logging is not under the bridge's control")]
    NoLogControl,
    /// A bad filter (`log-level`, or `[log] level` on reload).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The configuration or its rules file was refused: every problem, one line each.
    #[error(transparent)]
    Config(#[from] LoadError),
    /// A dictionary file was not read or does not load.
    #[error(transparent)]
    Dictionary(#[from] DictionaryError),
    /// `peer-disable`/`peer-enable` refused by the node.
    #[error(transparent)]
    Peer(#[from] dmnode::endpoint::PeerAdminError),
    /// Issue 12: the certificate, key or CA bundles did not load; the whole reload is
    /// refused, so the running certificate and configuration stay together.
    #[error("TLS material not reloaded, the running certificate stays: {0}")]
    Tls(#[source] crate::tls::TlsError),
}

/// What the node loop is asked.
pub enum NodeRequest {
    /// Identity and counts (JSON object).
    Status,
    /// The peer table (JSON array).
    Peers,
    /// The realm table and the default route.
    Routes,
    /// Apply a new configuration, and the new dictionary when a dictionary file changed;
    /// answers what changed.
    Reload(Box<Config>, Option<&'static dmproto::dict::Dictionary>),
    /// Drain the named peer, send DPR and keep it down (RFC 6733 §5.4).
    PeerDisable(String),
    /// Let the named peer connect again.
    PeerEnable(String),
    /// Answered at once: the loop turns (systemd watchdog).
    Ping,
}

/// A [`NodeRequest`] with where its answer goes.
pub struct NodeCall {
    /// What the node loop is asked.
    pub request: NodeRequest,
    /// Where the JSON answer (or why the request failed) goes.
    pub reply: oneshot::Sender<Result<Value, OpsError>>,
}

/// The workers' table, from the shared-memory application (JSON array).
pub type WorkerTable = Arc<dyn Fn() -> Value + Send + Sync>;

/// Everything the admin commands and reloads need.
pub struct Ops {
    /// The configuration file `run` was started with (re-read on reload).
    pub config_path: PathBuf,
    /// Changes the log filter at run time; `None` when logging was set up without a reload handle
    /// (tests).
    pub log: Option<Arc<LogControl>>,
    /// The node loop's mailbox: peers, routes and reloads are its state, so the admin side asks
    /// rather than touches.
    pub node: mpsc::Sender<NodeCall>,
    /// The workers' table, when the shared-memory application runs.
    pub workers: Option<WorkerTable>,
    /// The metrics registry, for counters shown in `status`.
    pub metrics: Option<Arc<Metrics>>,
    /// When the bridge started, for `status`'s uptime.
    pub started: Instant,
    /// The running dictionary, replaced by a reload that changed a dictionary file.
    pub dictionary: CurrentDictionary,
}

impl Ops {
    async fn ask(&self, request: NodeRequest) -> Result<Value, OpsError> {
        let (reply, rx) = oneshot::channel();
        self.node
            .send(NodeCall { request, reply })
            .await
            .map_err(|_| OpsError::NodeStopping)?;
        rx.await.unwrap_or(Err(OpsError::NodeStopping))
    }

    /// One admin command.
    pub async fn command(&self, command: Command) -> Result<Value, OpsError> {
        match command {
            Command::Status => {
                let mut v = self.ask(NodeRequest::Status).await?;
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "uptime_secs".into(),
                        json!(self.started.elapsed().as_secs()),
                    );
                    o.insert(
                        "config".into(),
                        json!(self.config_path.display().to_string()),
                    );
                    o.insert(
                        "log_filter".into(),
                        json!(self.log.as_ref().map(|l| l.current())),
                    );
                    o.insert(
                        "workers".into(),
                        json!(self
                            .workers
                            .as_ref()
                            .map(|w| w().as_array().map_or(0, Vec::len))),
                    );
                    o.insert("pid".into(), json!(std::process::id()));
                }
                Ok(v)
            }
            Command::Peers => self.ask(NodeRequest::Peers).await,
            Command::Routes => self.ask(NodeRequest::Routes).await,
            Command::Workers => Ok(self.workers.as_ref().map_or(json!([]), |w| w())),
            Command::Reload => self.reload().await,
            Command::PeerDisable(name) => self.ask(NodeRequest::PeerDisable(name)).await,
            Command::PeerEnable(name) => self.ask(NodeRequest::PeerEnable(name)).await,
            Command::LogLevel(filter) => match &self.log {
                Some(l) => Ok(l
                    .set(&filter)
                    .map(|()| json!(format!("log filter: {filter}")))?),
                None => Err(OpsError::NoLogControl),
            },
        }
    }

    /// Re-reads the configuration file and its dictionaries; a bad file is refused (every
    /// error with file:line:column) and the running configuration stays.
    pub async fn reload(&self) -> Result<Value, OpsError> {
        sd_notify::notify("RELOADING=1");
        let result = self.reload_inner().await;
        sd_notify::notify("READY=1");
        if let Some(m) = &self.metrics {
            m.reload(result.is_ok());
        }
        match &result {
            Ok(v) => {
                tracing::info!(file = %self.config_path.display(), changes = %v, "configuration reloaded")
            }
            Err(e) => {
                tracing::error!(file = %self.config_path.display(), "reload refused, the running configuration stays: {e}")
            }
        }
        result
    }

    async fn reload_inner(&self) -> Result<Value, OpsError> {
        let file = &self.config_path;
        // The rules file too: a bad rule refuses the reload like a bad key.
        let config = crate::config_file::load(file)?;
        // The dictionaries it names must load (their errors name file and line); rebuilt
        // only when a file changed.
        let sources = Sources::read(&config, file)?;
        let dict = self.dictionary.prepare(&sources)?;
        if let Some(l) = &self.log {
            l.reload_config(&config.ops.log_level)?;
        }
        let new = match dict {
            Reloaded::Replaced(d) => Some(d),
            Reloaded::Unchanged => None,
        };
        let mut v = self.ask(NodeRequest::Reload(Box::new(config), new)).await?;
        // The node validates with the new dictionary from now on; the shared-memory driver
        // takes it at its next turn.
        if let Some(d) = new {
            self.dictionary.install(d, sources);
        }
        v["dictionaries"] = json!(if new.is_some() {
            "reloaded"
        } else {
            "unchanged"
        });
        Ok(v)
    }
}

/// Serves admin calls and SIGHUP until the admin channel closes.
pub async fn serve(ops: Ops, mut calls: mpsc::Receiver<Call>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(Call { command, reply }) = call else { return };
                let _ = reply.send(ops.command(command).await.map_err(Into::into));
            }
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = ops.reload().await;
            }
        }
    }
}

/// Pets systemd's watchdog (WATCHDOG=1) every `interval`, but only after the node loop
/// answered a ping: a loop that no longer turns gets the process restarted.
pub async fn watchdog(node: mpsc::Sender<NodeCall>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let (reply, rx) = oneshot::channel();
        if node
            .send(NodeCall {
                request: NodeRequest::Ping,
                reply,
            })
            .await
            .is_err()
        {
            return;
        }
        if let Ok(Ok(Ok(_))) = tokio::time::timeout(interval, rx).await {
            sd_notify::notify("WATCHDOG=1");
        } else {
            tracing::error!("the node loop did not answer the watchdog ping in {interval:?}");
        }
    }
}

/// The peer table as `ctl peers` shows it.
pub fn peers_json(peers: &[dmnode::endpoint::PeerStatus]) -> Value {
    Value::Array(
        peers
            .iter()
            .map(|p| {
                json!({
                    "host": p.host,
                    "state": p.state.name(),
                    "watchdog": format!("{:?}", p.watchdog),
                    "usable": p.usable,
                    "disabled": p.disabled,
                    "pending": p.pending,
                    "apps": p.apps,
                })
            })
            .collect(),
    )
}

/// The realm table and default route as `ctl routes` shows them.
pub fn routes_json(config: &Config) -> Value {
    json!({
        "routes": config.routes.iter().map(|r| json!({
            "realm": r.realm,
            "app_id": r.app_id,
            "priority": r.priority,
            "peers": r.peers,
        })).collect::<Vec<_>>(),
        "default_route": config.default_route,
    })
}

/// `ctl status`'s part from the node loop.
pub fn status_json(
    config: &Config,
    peers: &[dmnode::endpoint::PeerStatus],
    stopping: bool,
) -> Value {
    json!({
        "origin_host": config.node.origin_host,
        "origin_realm": config.node.origin_realm,
        "listen": config.node.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "peers": peers.len(),
        "peers_usable": peers.iter().filter(|p| p.usable).count(),
        "pending": peers.iter().map(|p| p.pending).sum::<usize>(),
        "stopping": stopping,
    })
}

/// The peer gauges of the metrics, from the node's published status.
pub fn peer_gauges(peers: &[dmnode::endpoint::PeerStatus]) -> Vec<crate::metrics::PeerGauge> {
    peers
        .iter()
        .map(|p| crate::metrics::PeerGauge {
            host: p.host.clone(),
            state: p.state.name().to_string(),
            watchdog: format!("{:?}", p.watchdog),
            usable: p.usable,
            pending: p.pending as u64,
            disabled: p.disabled,
        })
        .collect()
}

/// The worker gauges of the metrics, from the workers' table (`ctl workers`' JSON).
pub fn worker_gauges(workers: &Value) -> Vec<crate::metrics::WorkerGauge> {
    workers
        .as_array()
        .map(|a| {
            a.iter()
                .map(|w| crate::metrics::WorkerGauge {
                    slot: w["slot"].as_u64().unwrap_or(0) as u32,
                    pid: w["pid"].as_u64().unwrap_or(0) as u32,
                    name: w["name"].as_str().unwrap_or("").to_string(),
                    in_flight: w["outstanding"].as_u64().unwrap_or(0),
                    reply_to_owed: w["reply_to_owed"].as_u64().unwrap_or(0),
                    ring_requests_bytes: w["rings"]["requests_bytes"].as_u64().unwrap_or(0),
                    ring_answers_bytes: w["rings"]["answers_bytes"].as_u64().unwrap_or(0),
                    ring_to_bridge_bytes: w["rings"]["to_bridge_bytes"].as_u64().unwrap_or(0),
                    requests_ring_full: w["rings"]["requests_full"].as_u64().unwrap_or(0),
                    answers_ring_full: w["rings"]["answers_full"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}
