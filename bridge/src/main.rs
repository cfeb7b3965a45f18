//! `dmbridge`: the command line. Each subcommand is one variant of [`Command`] and one function;
//! add new ones (decode, encode, dict, bench, ...) the same way.
// As in the library: forbidden in what ships; in tests only denied, for the bench client's
// counting allocator (a `GlobalAlloc` cannot be written without `unsafe`).
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod explain;
mod tools;

#[derive(Parser)]
#[command(
    name = "dmbridge",
    version,
    about = "Diameter node for OpenSIPS/Kamailio scripts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print every error with its line.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Run the node.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Answer every request in process (2001, echoing the request's application AVPs)
        /// instead of 3001: for benchmarks and interop checks without a SIP server.
        #[arg(long)]
        echo: bool,
        /// Runtime threads (default 1). 1 runs everything on one thread (a current-thread
        /// runtime); N > 1 spreads the connections' readers and writers and the shared-memory
        /// driver over N workers (the node loop is one task), so each hand-over between them
        /// may be a cross-thread wake-up. One thread costs the least per request and has the
        /// shortest round trip (BENCHMARKS.md, "Cores" and "Session 9: the sync round trip");
        /// more threads only help a bridge whose one core is saturated.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
        threads: u16,
    },
    /// Load generator: connect as a Diameter peer and send requests from a JSON template.
    Bench(Box<bench::BenchArgs>),
    /// Decode Diameter messages (raw binary, or hex text with --hex) into one JSON document
    /// per line: {"cmd_code":..,"app_id":..,"flags":"RP","hop_by_hop":..,"end_to_end":..,"avps":[..]}.
    Decode(tools::DecodeArgs),
    /// Encode one message JSON document (as `decode` prints) into raw binary, or hex with --hex.
    Encode(tools::EncodeArgs),
    /// Print the dictionary definition of an AVP, command or application.
    Dict(tools::DictArgs),
    /// Show how a request would be routed: the routing rules that match it, every candidate
    /// peer's score and the peer chosen (`--explain MESSAGE_JSON`).
    Route(explain::RouteArgs),
    /// Talk to a running bridge over its admin socket (owner-only): show its state, reload
    /// its configuration, take a peer down or up, change the log filter.
    Ctl(CtlArgs),
}

#[derive(clap::Args)]
struct CtlArgs {
    /// The admin socket. Default: `[admin] socket` of --config, else `admin.sock` beside its
    /// `[app] control_socket`, else /run/dmbridge/admin.sock.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The running bridge's configuration file (only read to find the admin socket).
    #[arg(long, default_value = "/etc/dmbridge/dmbridge.toml")]
    config: PathBuf,
    /// Print the answer as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the answer (a reload waits for the node to apply it).
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Identity, uptime, counts of peers, pending requests and workers, the log filter.
    Status,
    /// The peer table: RFC 6733 state, watchdog, usable, disabled, pending, applications.
    Peers,
    /// The realm routing table and the default route.
    Routes,
    /// The SIP-server workers attached over shared memory.
    Workers,
    /// Re-read the configuration file and dictionaries (as SIGHUP does); a bad file is
    /// refused with its line numbers and the running configuration kept.
    Reload,
    /// Take a peer down (drain its pending requests, then DPR) until enabled, or bring it back.
    Peer {
        #[command(subcommand)]
        action: PeerAction,
    },
    /// Replace the log filter (RUST_LOG syntax: `debug`, `info,dmnode::peer=debug`, ...).
    LogLevel { filter: String },
}

#[derive(Subcommand)]
enum PeerAction {
    Disable { name: String },
    Enable { name: String },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Bench(args) => bench::main(*args),
        Command::Decode(args) => tools::decode(args),
        Command::Encode(args) => tools::encode(args),
        Command::Dict(args) => tools::dict(args),
        Command::Route(args) => explain::main(args, |f| {
            let c = load_config(f)?;
            let (dict, _) = load_dictionaries(&c, f)?;
            Some((c, dict))
        }),
        Command::Ctl(args) => ctl(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Run {
            config,
            echo,
            threads,
        } => run(&config, echo, threads),
    }
}

/// `dmbridge run`: the node, until SIGINT or SIGTERM, then a graceful stop (drain, DPR).
fn run(file: &std::path::Path, echo: bool, threads: u16) -> ExitCode {
    let (config, scheduling) = match dmrun::config_file::load_with_scheduling(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some((dict, sources)) = load_dictionaries(&config, file) else {
        return ExitCode::FAILURE;
    };
    let dictionary = dmrun::dictionary::CurrentDictionary::new(dict, sources);
    // The configuration decides the log format and filter (RUST_LOG wins over its level).
    let format = dmrun::logging::LogFormat::parse(&config.ops.log_format).unwrap_or_default();
    let log = match dmrun::logging::init(&config.ops.log_level, format) {
        Ok(l) => Some(std::sync::Arc::new(l)),
        Err(e) => {
            eprintln!("dmbridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        file = %file.display(),
        origin_host = %config.node.origin_host,
        peers = config.peers.len(),
        routes = config.routes.len(),
        "configuration loaded"
    );
    // [scheduling], on this thread before the runtime starts any other: the runtime's threads
    // (and the logger's) inherit it. A refusal is logged and the bridge runs as it was
    // (BENCHMARKS.md "Session 11: latency under load").
    if !scheduling.is_default() {
        match scheduling.apply() {
            Ok(now) => tracing::info!("scheduling: {now} for the runtime thread(s)"),
            Err(e) => tracing::warn!("{e}; the runtime thread(s) keep the kernel's defaults"),
        }
    }
    // One thread (the default): a current-thread runtime, so the node loop, the shm driver
    // and the connections never hand work to another thread. A sync request then wakes the
    // bridge twice (the worker's doorbell, the peer's answer); with the multi-thread runtime
    // it woke tokio's other workers 4.4 times more per request, and took 15.9 system calls
    // instead of 9 (BENCHMARKS.md, "Session 9: the sync round trip"). More threads: that
    // many workers, which run every task, the node loop among them (the thread that calls
    // `block_on` only waits for it).
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let started = std::time::Instant::now();
        // The SIP server's workers over shared memory, unless --echo answers in process. Their
        // control socket opens first, before the Diameter listeners bind and before any peer
        // is dialled (issue 11 item 8): once a peer can reach this bridge, a worker can too,
        // so after a restart a script request that comes after the bridge is up does not
        // meet a missing socket (-3). Requests workers submit meanwhile wait in `submissions`
        // until the node loop runs.
        let status = tokio::sync::watch::channel(Vec::new()).0;
        let (handle, submissions) = dmrun::app::channel(4096);
        // The shm driver observes it from the start; the exporter, if any, shows it.
        let script_request_latency = dmrun::metrics::ScriptRequestLatency::default();
        let (app, shm): (std::sync::Arc<dyn dmrun::app::Application>, _) = if echo {
            (std::sync::Arc::new(dmrun::responders::Echo), None)
        } else {
            match dmrun::shm_app::ShmService::start(
                &config,
                &dictionary,
                handle.clone(),
                status.subscribe(),
                script_request_latency.clone(),
            ) {
                Ok((app, service)) => (app, Some(service)),
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        };
        let bound = dmrun::driver::Node::bind_with_status(config.clone(), dict, status).await;
        let mut node = match bound {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("{e}");
                // The segment and socket go with the service: workers see EOF, not a
                // stale socket.
                if let Some(service) = shm {
                    service.stop().await;
                }
                return ExitCode::FAILURE;
            }
        };
        if let Some(service) = &shm {
            // CER/CEA: the configured applications plus those of the commands the attached
            // workers serve.
            node.advertise_also(service.advertised());
        }
        for addr in node.local_addrs() {
            tracing::info!(%addr, "listening on {addr}");
        }
        // Metrics: the recorder goes into the node loop; the exporter serves the registry.
        let metrics = match config.ops.metrics_listen {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    let m =
                        std::sync::Arc::new(dmrun::metrics::Metrics::with_script_request_latency(
                            script_request_latency,
                        ));
                    let status = node.status();
                    m.set_peer_source(move || dmrun::ops::peer_gauges(&status.borrow()));
                    node.set_observer(Box::new(dmrun::metrics::Recorder::new(
                        m.clone(),
                        Box::new(DictNames(dictionary.clone())),
                    )));
                    // Refusals the driver, its connections and the peer table count (TLS,
                    // timeouts, caps, identity) reach `dmbridge_refusals_total` from there.
                    let sink = m.clone();
                    node.refusals()
                        .set_sink(move |cause| sink.refusal(cause.name()));
                    tracing::info!(%addr, "metrics at http://{addr}/metrics");
                    tokio::spawn(dmrun::metrics::serve(l, m.clone()));
                    Some(m)
                }
                Err(e) => {
                    tracing::error!(%addr, "metrics listener: {e}");
                    if let Some(service) = shm {
                        service.stop().await;
                    }
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let workers: Option<dmrun::ops::WorkerTable> = shm.as_ref().map(|s| {
            let doc = s.status_doc();
            let f: dmrun::ops::WorkerTable = std::sync::Arc::new(move || {
                serde_json::from_str::<serde_json::Value>(&doc.borrow())
                    .ok()
                    .map_or(serde_json::json!([]), |v| v["workers"].clone())
            });
            f
        });
        if let (Some(m), Some(w)) = (&metrics, &workers) {
            let w = w.clone();
            m.set_worker_source(move || dmrun::ops::worker_gauges(&w()));
        }
        // The admin socket (owner-only) and its commands; SIGHUP reloads.
        let node_calls = node.admin();
        let admin_path = config
            .ops
            .admin_socket
            .clone()
            .unwrap_or_else(|| dmrun::admin::default_socket(Some(&config.app.control_socket)));
        match dmrun::admin::bind(&admin_path) {
            Ok(listener) => {
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                tokio::spawn(dmrun::admin::serve(listener, tx));
                let ops = dmrun::ops::Ops {
                    config_path: file.to_path_buf(),
                    log: log.clone(),
                    node: node_calls.clone(),
                    workers,
                    metrics: metrics.clone(),
                    started,
                    dictionary,
                };
                tokio::spawn(dmrun::ops::serve(ops, rx));
                tracing::info!(socket = %admin_path.display(), "admin socket ready (dmbridge ctl)");
            }
            // The node serves without it (e.g. no /run/dmbridge outside the service): say so.
            Err(e) => {
                tracing::error!("no admin socket, dmbridge ctl will not reach this bridge: {e}")
            }
        }
        if let Some(interval) = dmrun::sd_notify::watchdog_interval() {
            tokio::spawn(dmrun::ops::watchdog(node_calls, interval));
        }
        dmrun::sd_notify::notify("READY=1\nSTATUS=serving");
        // The node loop runs as a spawned task, not as `block_on`'s own future: with the
        // current-thread runtime, a task waking the `block_on` future makes the scheduler poll
        // the I/O driver once (an `epoll_wait` with a zero timeout) before it polls that
        // future, on every hand-over between the node loop and the connections or the shm
        // driver; between spawned tasks a wake-up is a push on the local run queue.
        // (BENCHMARKS.md "Session 11: the sync round trip": two system calls fewer per sync
        // request.)
        // SIGINT and SIGTERM are awaited in a task of their own, and reach the node loop
        // through a oneshot. A future in the node loop's `select!` is polled on every wake-up
        // of the loop, whichever branch's waker fired: the signal futures themselves (two
        // signal receivers re-arming their watch channels) cost about 1k instructions per
        // poll there, a oneshot receiver a few dozen (BENCHMARKS.md "Session 18: the cost of
        // a bridge wake-up").
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            stop_signal().await;
            let _ = stop_tx.send(());
        });
        // The sender lives as long as the runtime: an error here is the runtime going away.
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        let result = match tokio::spawn(node.run(app, submissions, shutdown)).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(format!(
                "the node loop ended abnormally: {e}"
            ))),
        };
        // After the node's graceful stop (which waited for the workers' replies): the
        // segment goes, workers see EOF and re-attach to the next bridge by themselves.
        if let Some(service) = shm {
            service.stop().await;
        }
        let _ = std::fs::remove_file(&admin_path);
        drop(handle);
        match result {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Metric labels for commands: the dictionary's abbreviation (CCR/CCA, ...) or the code.
/// Asked once per label combination (the recorder keeps the counters), so the lock of the
/// running dictionary is off the per-request path.
struct DictNames(dmrun::dictionary::CurrentDictionary);

impl dmrun::metrics::Names for DictNames {
    fn command(&self, app: u32, cmd: u32, request: bool) -> String {
        match self.0.get().command(app, cmd) {
            Some(c) if request && !c.request_abbr.is_empty() => c.request_abbr.to_string(),
            Some(c) if !request && !c.answer_abbr.is_empty() => c.answer_abbr.to_string(),
            _ => cmd.to_string(),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `dmbridge ctl`: one command over the admin socket, the answer as a table or JSON.
fn ctl(args: CtlArgs) -> ExitCode {
    use dmrun::admin::{self, Command as C};
    let command = match args.command {
        CtlCommand::Status => C::Status,
        CtlCommand::Peers => C::Peers,
        CtlCommand::Routes => C::Routes,
        CtlCommand::Workers => C::Workers,
        CtlCommand::Reload => C::Reload,
        CtlCommand::Peer {
            action: PeerAction::Disable { name },
        } => C::PeerDisable(name),
        CtlCommand::Peer {
            action: PeerAction::Enable { name },
        } => C::PeerEnable(name),
        CtlCommand::LogLevel { filter } => C::LogLevel(filter),
    };
    let socket = args.socket.unwrap_or_else(|| {
        std::fs::read_to_string(&args.config)
            .ok()
            .and_then(|t| admin::socket_from_config(&t))
            .unwrap_or_else(|| PathBuf::from(admin::DEFAULT_SOCKET))
    });
    let timeout = std::time::Duration::from_secs(args.timeout.max(1));
    match admin::request(&socket, &command, timeout) {
        Ok(data) => {
            if args.json {
                println!("{data}");
            } else {
                print!("{}", admin::render(&command, &data));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if args.json {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
            }
            eprintln!("dmbridge ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration and its rules file, or every error printed with its file and line.
fn load_config(file: &std::path::Path) -> Option<dmnode::config::Config> {
    match dmrun::config_file::load(file) {
        Ok(c) => Some(c),
        Err(e) => {
            // One line per problem, each with its file and line.
            eprintln!("{e}");
            None
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let Some(config) = load_config(file) else {
        return ExitCode::FAILURE;
    };
    // The dictionaries it names must load too, and the shared-memory settings must hold.
    if load_dictionaries(&config, file).is_none() {
        return ExitCode::FAILURE;
    }
    if let Err(e) = dmrun::shm_app::ShmOptions::from_settings(&config.app) {
        eprintln!("{}: {e}", file.display());
        return ExitCode::FAILURE;
    }
    // Valid but risky on a port strangers can reach (DESIGN §10): said, not refused.
    for w in dmnode::config::warnings(&config) {
        eprintln!("{}: warning: {w}", file.display());
    }
    println!("{}: ok", file.display());
    ExitCode::SUCCESS
}

/// The built-in dictionary, extended with the configuration's dictionary files (relative to
/// the configuration file), and those files as read (a reload compares them). Errors are
/// printed with their file and line.
fn load_dictionaries(
    config: &dmnode::config::Config,
    config_file: &std::path::Path,
) -> Option<(
    &'static dmproto::dict::Dictionary,
    dmrun::dictionary::Sources,
)> {
    let built = dmrun::dictionary::Sources::read(config, config_file)
        .and_then(|s| Ok((s.build_static()?, s)));
    match built {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}
