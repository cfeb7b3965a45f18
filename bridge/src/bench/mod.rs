//! `dmbridge bench`: a Diameter load generator, in the manner of seagull or freeDiameter's
//! test_app benchmark mode.
//!
//! It connects to a peer as a Diameter client peer (CER/CEA, answers DWR and DPR, DPR at the
//! end), sends requests built from a message-JSON template (DESIGN §8) with per-request
//! substitutions, either with a fixed number in flight (closed loop) or at a fixed rate (open
//! loop, latency measured from the schedule so a slow server cannot hide behind a waiting
//! client), for a duration and/or a count, and reports throughput, outcomes by Result-Code
//! and latency percentiles.
//!
//! It shares the machine with the server it measures, so it is built to cost little: the
//! template is compiled once into a byte program ([`template`]), the pending table is a
//! window indexed by hop-by-hop id ([`pending`]), each connection is one task on (by default)
//! a single-threaded runtime ([`conn`]), and the per-connection logic is a sans-IO state
//! machine ([`client`]) tested without sockets.

pub mod capabilities;
pub mod client;
pub mod conn;
pub mod pacer;
pub mod pending;
pub mod stats;
pub mod template;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dmproto::dict::Dictionary;

use capabilities::{AppAdvert, LocalNode};
use client::{Client, Pace, Plan, Shared};
use stats::{Summary, Tally};
use template::{Identity, Template};

/// Why a bench could not run at all (a failure *during* the run is in [`Summary::failures`]
/// instead). The text is what `dmbridge bench` prints after its name, and what `--json` puts
/// in `"error"`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// `--rate` is not a positive finite number.
    #[error("--rate {0}: must be a positive number")]
    Rate(f64),
    /// `--duration` is not a positive finite number.
    #[error("--duration {0}: must be a positive number of seconds")]
    Duration(f64),
    /// Closed loop with fewer requests in flight than connections.
    #[error(
        "--concurrency {concurrency} is less than --connections {connections}: some connections would never send"
    )]
    ConcurrencyBelowConnections { concurrency: u32, connections: u32 },
    /// `--connect` did not resolve.
    #[error("--connect {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    /// `--connect` resolved to no address.
    #[error("--connect {addr}: no address")]
    NoAddress { addr: String },
    /// A `--dict` file did not load (the error names file and line).
    #[error("{0}")]
    Dictionary(#[from] dmproto::dict::DictError),
    /// A template file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A template file is not JSON.
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A template (`--template` or `--then`) does not compile to a request.
    #[error("{}: {source}", path.display())]
    Template {
        path: PathBuf,
        source: template::TemplateError,
    },
    /// `--print-request`: the compiled request does not decode.
    #[error("{0}")]
    Decode(#[from] dmproto::DecodeError),
    /// `--print-request`: the compiled request does not show as message JSON.
    #[error("{0}")]
    Show(#[from] dmproto::AvpError),
    /// The tokio runtime could not start.
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// A connection failed before the load (connect, CER/CEA, DWR/DWA); the text names the
    /// address and the step ([`conn::handshake`]).
    #[error("{0}")]
    Handshake(String),
}

impl BenchError {
    fn template(path: &std::path::Path, source: template::TemplateError) -> BenchError {
        BenchError::Template {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Default run length when neither `--duration` nor `--count` is given.
const DEFAULT_DURATION_S: f64 = 10.0;

/// `dmbridge bench` options.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The peer to load: HOST:PORT, [IPv6]:PORT, or HOST (port 3868).
    #[arg(long, value_name = "ADDR", required_unless_present = "print_request")]
    pub connect: Option<String>,
    /// Request template: a message JSON file (DESIGN §8). Placeholders in string values:
    /// {{counter}}, {{random}}, {{session}}, {{conn}}.
    #[arg(long, value_name = "FILE")]
    pub template: PathBuf,
    /// Session mode: follow-up request templates (repeat for several, e.g. a CCR-Update then
    /// a CCR-Terminate). Each request of --template opens a session; after each success
    /// answer the next follow-up is sent with the session's Session-Id and, as
    /// Destination-Host, the Origin-Host that answered the session's first request. The
    /// summary adds per-session counts (wrong_host: a follow-up answered by another host).
    #[arg(long = "then", value_name = "FILE")]
    pub then: Vec<PathBuf>,
    /// Extra dictionary files (aaa_diameter format), loaded over the built-ins.
    #[arg(long, value_name = "FILE")]
    pub dict: Vec<PathBuf>,
    /// Our Origin-Host.
    #[arg(long, default_value = "bench.test.local")]
    pub origin_host: String,
    /// Our Origin-Realm.
    #[arg(long, default_value = "test.local")]
    pub origin_realm: String,
    /// Destination-Realm filled into requests that lack one (default: the peer's realm).
    #[arg(long)]
    pub dest_realm: Option<String>,
    /// Destination-Host filled into requests that lack one.
    #[arg(long)]
    pub dest_host: Option<String>,
    /// Number of connections. Each is a Diameter peer of its own, so each needs its own
    /// Origin-Host: connection i > 0 inserts "-i" after the first label
    /// (bench.test.local, bench-1.test.local, ...).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,
    /// Closed loop: requests in flight, over all connections (default 100 without --rate).
    #[arg(long, conflicts_with = "rate", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub concurrency: Option<u32>,
    /// Open loop: requests per second, over all connections.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Rate mode: most requests in flight per connection before sends wait.
    #[arg(long, default_value_t = 100_000)]
    pub max_in_flight: usize,
    /// Rate mode: the pacer's tick in microseconds (0: no pacer, tokio's 1 ms timer, which
    /// sends in 1 ms bursts). Default: about 4 requests per connection per tick, within
    /// 100 µs-1 ms. Finer ticks cost the client CPU (a wake-up and a write per tick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub tick_us: Option<u64>,
    /// Stop sending after this many seconds (default 10 unless --count is given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after sending this many requests in total.
    #[arg(long)]
    pub count: Option<u64>,
    /// A request unanswered after this many milliseconds counts as a timeout (at most an
    /// hour).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub timeout_ms: u64,
    /// Connect + CER/CEA + first DWR/DWA time limit per connection, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub connect_timeout_ms: u64,
    /// Advertise the template's application as accounting (Acct-Application-Id).
    #[arg(long)]
    pub acct: bool,
    /// Advertise the application inside Vendor-Specific-Application-Id with this vendor.
    #[arg(long)]
    pub app_vendor: Option<u32>,
    /// Runtime threads; 1 (default) runs everything on the calling thread, leaving the other
    /// cores to the server under test.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Print the first request (`{{counter}}` 0) as message JSON and its hex on stdout, then
    /// exit without connecting: to check a template. The Destination-Realm is the
    /// --dest-realm, else shown as "<peer realm>".
    #[arg(long)]
    pub print_request: bool,
}

/// Runs the bench; the exit code is non-zero when a connection failed (connect, CEA, or lost
/// during the run) or the options/template are unusable.
pub fn main(args: BenchArgs) -> ExitCode {
    if args.print_request {
        return match print_request(&args) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dmbridge bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(summary) => {
            if args.json {
                println!("{}", summary.to_json());
            } else {
                print!("{}", summary.to_text());
            }
            if summary.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("dmbridge bench: {e}");
            if args.json {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
            }
            ExitCode::FAILURE
        }
    }
}

/// Resolves `--connect`: `HOST:PORT`, `[V6]:PORT`, a bare V6 address, or `HOST` (port 3868).
pub fn resolve(addr: &str) -> Result<SocketAddr, BenchError> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 3868));
    }
    let with_port = if addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:3868")
    };
    with_port
        .to_socket_addrs()
        .map_err(|source| BenchError::Resolve {
            addr: addr.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| BenchError::NoAddress {
            addr: addr.to_string(),
        })
}

fn load_dictionary(files: &[PathBuf]) -> Result<Dictionary, BenchError> {
    let mut d = Dictionary::new_with_builtin();
    for f in files {
        d.load_file(f)?;
    }
    Ok(d)
}

/// Loads the dictionary and the template file.
fn load(args: &BenchArgs) -> Result<(Dictionary, serde_json::Value), BenchError> {
    let dict = load_dictionary(&args.dict)?;
    Ok((dict, load_json(&args.template)?))
}

fn load_json(path: &std::path::Path) -> Result<serde_json::Value, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| BenchError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// `--print-request`: the first request as §8 JSON, then its bytes in hex.
fn print_request(args: &BenchArgs) -> Result<String, BenchError> {
    let (dict, json) = load(args)?;
    let id = Identity {
        origin_host: args.origin_host.clone(),
        origin_realm: args.origin_realm.clone(),
        destination_realm: args
            .dest_realm
            .clone()
            .unwrap_or_else(|| "<peer realm>".into()),
        destination_host: args.dest_host.clone(),
        session_high: 0,
    };
    let t = Template::compile(&json, &id, &dict)
        .map_err(|e| BenchError::template(&args.template, e))?;
    let mut buf = bytes::BytesMut::new();
    t.write(&mut buf, 1, 1, &template::Subst::default());
    let bytes = buf.freeze();
    let m = dmproto::Message::decode(bytes.clone())?;
    let mut out = String::new();
    dmproto::json::write_message(&mut out, &m, &dict)?;
    out.push('\n');
    for b in bytes.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// Runs a whole bench and returns its summary; `Err` only when nothing could run.
pub fn run(args: &BenchArgs) -> Result<Summary, BenchError> {
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(BenchError::Rate(r));
        }
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            return Err(BenchError::Duration(d));
        }
    }
    if args.rate.is_none() && args.concurrency.unwrap_or(100) < args.connections {
        return Err(BenchError::ConcurrencyBelowConnections {
            concurrency: args.concurrency.unwrap_or(100),
            connections: args.connections,
        });
    }
    let addr = resolve(args.connect.as_deref().unwrap_or_default())?;
    let (dict, json) = load(args)?;
    let then_json = args
        .then
        .iter()
        .map(|p| load_json(p).map(|j| (p, j)))
        .collect::<Result<Vec<_>, _>>()?;
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut id = Identity {
        origin_host: args.origin_host.clone(),
        origin_realm: args.origin_realm.clone(),
        destination_realm: args.dest_realm.clone().unwrap_or_default(),
        destination_host: args.dest_host.clone(),
        session_high: now_unix as u32,
    };
    // Compile once up front so a bad template fails before any connection; recompiled
    // below when the Destination-Realm comes from the peer's CEA.
    let probe = Template::compile(&json, &id, &dict)
        .map_err(|e| BenchError::template(&args.template, e))?;
    let mut app = AppAdvert::for_template(&probe, &dict);
    app.acct |= args.acct;
    if let Some(v) = args.app_vendor {
        app.vendor = v;
    }
    let nodes: Vec<Arc<LocalNode>> = (0..args.connections)
        .map(|i| {
            Arc::new(LocalNode {
                origin_host: connection_host(&args.origin_host, i),
                origin_realm: args.origin_realm.clone(),
                origin_state_id: now_unix as u32,
            })
        })
        .collect();

    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads as usize)
            .enable_all()
            .build()
    }
    .map_err(BenchError::Runtime)?;

    runtime.block_on(async move {
        let n = args.connections;
        let mut seed = seed_from(now_unix);
        let mut handshakes = Vec::with_capacity(n as usize);
        let connect_timeout = Duration::from_millis(args.connect_timeout_ms);
        for node in &nodes {
            let ids = (next_u32(&mut seed), e2e_base(now_unix, next_u32(&mut seed)));
            handshakes.push(
                conn::handshake(addr, node, &[app], ids, connect_timeout)
                    .await
                    .map_err(BenchError::Handshake)?,
            );
        }
        if args.dest_realm.is_none() {
            id.destination_realm = handshakes
                .first()
                .map(|h| h.peer.origin_realm.clone())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| args.origin_realm.clone());
        }
        // One compiled template per connection: the Origin-Host (and so the Session-Id)
        // differs between them.
        let mut templates = Vec::with_capacity(nodes.len());
        for node in &nodes {
            id.origin_host = node.origin_host.clone();
            let t = Template::compile(&json, &id, &dict)
                .map_err(|e| BenchError::template(&args.template, e))?;
            templates.push(Arc::new(t));
        }
        let mut followups = Vec::with_capacity(then_json.len());
        for (path, j) in &then_json {
            let t = Template::compile(j, &id, &dict).map_err(|e| BenchError::template(path, e))?;
            followups.push(t);
        }
        let followups = Arc::new(followups);
        let is_static = templates.first().is_some_and(|t| t.is_static());
        if !args.quiet {
            let p = &handshakes
                .first()
                .map(|h| h.peer.clone())
                .unwrap_or_default();
            eprintln!(
                "dmbridge bench: {n} connection(s) to {addr} ({} {}, realm {}); application {}{}",
                p.origin_host,
                p.product_name,
                p.origin_realm,
                app.id,
                if is_static { ", static template" } else { "" }
            );
        }

        let (count, duration) = match (args.count, args.duration) {
            (None, None) => (u64::MAX, Some(DEFAULT_DURATION_S)),
            (c, d) => (c.unwrap_or(u64::MAX), d),
        };
        let shared = Arc::new(Shared::new(count));
        let start = Instant::now();
        // "No duration" still needs a bound for the schedule's arithmetic: a century.
        let stop_at = start
            + duration
                .and_then(|d| Duration::try_from_secs_f64(d).ok())
                .unwrap_or(Duration::from_secs(100 * 365 * 86_400));
        let concurrency = args.concurrency.unwrap_or(100) as usize;
        let mut tasks = Vec::with_capacity(n as usize);
        // Rate mode: a finer clock than tokio's 1 ms timer (see `pacer`), one wake-up per
        // connection per tick. Without the thread the run still works, in 1 ms bursts.
        let period = match (args.rate, args.tick_us) {
            (None, _) | (_, Some(0)) => None,
            (Some(_), Some(us)) => Some(Duration::from_micros(us)),
            (Some(r), None) => pacer::period(r, n),
        };
        let ticks: Vec<_> = (0..n)
            .map(|_| period.map(|_| Arc::new(tokio::sync::Notify::new())))
            .collect();
        let mut pacer = period.and_then(|p| {
            let targets = ticks.iter().flatten().cloned().collect();
            pacer::Pacer::start(p, targets)
                .inspect_err(|e| eprintln!("dmbridge bench: no pacer thread ({e}): 1 ms bursts"))
                .ok()
        });
        let per_conn = handshakes.into_iter().zip(templates).zip(&nodes);
        for (i, ((est, template), node)) in per_conn.enumerate() {
            let i = i as u32;
            let pace = match args.rate {
                Some(per_sec) => Pace::Rate {
                    per_sec,
                    stride: u64::from(n),
                    offset: u64::from(i),
                },
                None => {
                    let base = concurrency / n as usize;
                    let extra = usize::from((i as usize) < concurrency % n as usize);
                    Pace::Concurrency(base + extra)
                }
            };
            let plan = Plan {
                conn: i,
                pace,
                timeout: Duration::from_millis(args.timeout_ms),
                start,
                stop_at,
                max_in_flight: args.max_in_flight.max(1),
                first_hop_by_hop: next_u32(&mut seed),
                first_end_to_end: e2e_base(now_unix, next_u32(&mut seed)),
                seed: next_u64(&mut seed),
            };
            let mut client = Client::new(plan, template, node.clone(), shared.clone())
                .with_followups(followups.clone());
            client.tally.dwr_answered = est.dwr_answered;
            let tick = ticks[i as usize].clone();
            tasks.push(tokio::spawn(conn::drive(
                est.stream, est.framer, client, tick,
            )));
        }
        let progress = (!args.quiet).then(|| tokio::spawn(progress(shared.clone(), start)));
        let ctrl_c = {
            let shared = shared.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("dmbridge bench: interrupted; draining");
                    shared
                        .stop
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        let mut total = Tally::default();
        let mut failures = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await {
                Ok(c) => {
                    total.merge(&c.tally);
                    if let Some(f) = c.failure {
                        failures.push(format!("connection {i}: {f}"));
                    }
                }
                Err(e) => failures.push(format!("connection {i}: task failed: {e}")),
            }
        }
        let elapsed = start.elapsed();
        if let Some(p) = pacer.as_mut() {
            p.stop();
        }
        if let Some(p) = progress {
            p.abort();
        }
        ctrl_c.abort();
        let active = total
            .last_answer
            .map_or(elapsed, |t| t.saturating_duration_since(start));
        Ok(Summary {
            tally: total,
            connections: n as usize,
            active,
            elapsed,
            failures,
        })
    })
}

/// The Origin-Host of connection `i`: `host` for the first, then the first label suffixed
/// with `-i` (two connections from one Origin-Host are one peer connecting twice, which a
/// server refuses or treats as an election).
pub fn connection_host(host: &str, i: u32) -> String {
    if i == 0 {
        return host.to_string();
    }
    match host.split_once('.') {
        Some((first, rest)) => format!("{first}-{i}.{rest}"),
        None => format!("{host}-{i}"),
    }
}

/// Prints a progress line to stderr every second.
async fn progress(shared: Arc<Shared>, start: Instant) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(start) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_answered = 0;
    let mut last_t = start;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let l = &shared.live;
        let (sent, answered) = (l.sent.load(Relaxed), l.answered.load(Relaxed));
        let dt = now
            .saturating_duration_since(last_t)
            .as_secs_f64()
            .max(1e-9);
        eprintln!(
            "[{:>5.1}s] sent {sent}  answered {answered}  {:.0}/s  in flight {}  errors {}  timeouts {}",
            now.saturating_duration_since(start).as_secs_f64(),
            (answered - last_answered) as f64 / dt,
            sent.saturating_sub(answered + l.timeouts.load(Relaxed)),
            l.errors.load(Relaxed),
            l.timeouts.load(Relaxed),
        );
        last_answered = answered;
        last_t = now;
    }
}

/// splitmix64 seeded from the clock and the process id: distinct ids for parallel benches.
fn seed_from(now_unix: u64) -> u64 {
    now_unix ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15
}

fn next_u64(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn next_u32(s: &mut u64) -> u32 {
    (next_u64(s) >> 32) as u32
}

/// RFC 6733 §3: the end-to-end id's high 12 bits from the clock, low 20 bits random.
fn e2e_base(now_unix: u64, random: u32) -> u32 {
    ((now_unix as u32 & 0xFFF) << 20) | (random & 0xF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_hosts_are_distinct() {
        assert_eq!(connection_host("bench.test.local", 0), "bench.test.local");
        assert_eq!(connection_host("bench.test.local", 3), "bench-3.test.local");
        assert_eq!(connection_host("bench", 1), "bench-1");
    }

    #[test]
    fn connect_addresses() {
        assert_eq!(resolve("127.0.0.1:3869").unwrap().port(), 3869);
        assert_eq!(resolve("[::1]:3870").unwrap().to_string(), "[::1]:3870");
        assert_eq!(resolve("::1").unwrap().to_string(), "[::1]:3868");
        assert_eq!(resolve("localhost").unwrap().port(), 3868);
        assert!(matches!(
            resolve("no such host name"),
            Err(BenchError::Resolve { ref addr, .. }) if addr == "no such host name"
        ));
    }

    fn args(extra: &[&str]) -> BenchArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let mut argv = vec!["bench", "--connect", "127.0.0.1:1"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).bench
    }

    #[test]
    fn unusable_options_say_which() {
        let e = run(&args(&["--template", "t.json", "--rate", "0"])).unwrap_err();
        assert!(matches!(e, BenchError::Rate(r) if r == 0.0), "{e:?}");
        assert_eq!(e.to_string(), "--rate 0: must be a positive number");
        let e = run(&args(&["--template", "t.json", "--duration=-1"])).unwrap_err();
        assert!(matches!(e, BenchError::Duration(_)), "{e:?}");
        let e = run(&args(&[
            "--template",
            "t.json",
            "--connections",
            "3",
            "--concurrency",
            "2",
        ]))
        .unwrap_err();
        assert!(
            matches!(
                e,
                BenchError::ConcurrencyBelowConnections {
                    concurrency: 2,
                    connections: 3
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_missing_template_is_a_read_error_with_its_path() {
        let e = run(&args(&["--template", "/nonexistent/t.json"])).unwrap_err();
        match &e {
            BenchError::Read { path, source } => {
                assert_eq!(path, std::path::Path::new("/nonexistent/t.json"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().starts_with("/nonexistent/t.json: "), "{e}");
    }
}
