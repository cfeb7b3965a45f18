//! `dmbridge route --explain MESSAGE.json`: which routing rules match a request, the score of
//! every candidate peer and the peer chosen, from the configuration alone (no running node).
//!
//! Offline, nothing is known of the peers' capabilities exchange, so every configured peer is
//! taken as open, usable and advertising the request's application, with the realm the
//! realm table gives it (the first `[[routes]]` entry naming it) or else the domain of its
//! Diameter identity (what follows the first dot). The output says so.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dmnode::config::Config;
use dmnode::peer::{AppSet, PeerId};
use dmnode::router::Router;
use dmproto::Message;

#[derive(clap::Args, Debug)]
pub struct RouteArgs {
    /// The configuration file (its `[routing]` rules, peers, realm table, default route).
    #[arg(long, default_value = "/etc/dmbridge/dmbridge.toml")]
    pub config: PathBuf,
    /// A request as message JSON (as `dmbridge decode` prints it): a file, `-` for stdin, or
    /// the JSON text itself.
    #[arg(long, value_name = "MESSAGE_JSON")]
    pub explain: String,
}

/// The realm `route --explain` assumes for a peer (module docs).
fn assumed_realm(config: &Config, host: &str) -> String {
    config
        .routes
        .iter()
        .find(|r| r.peers.iter().any(|p| p.eq_ignore_ascii_case(host)))
        .map(|r| r.realm.clone())
        .unwrap_or_else(|| host.split_once('.').map_or(host, |(_, d)| d).to_string())
}

fn read_json(arg: &str) -> Result<String, String> {
    if arg.trim_start().starts_with('{') {
        return Ok(arg.to_string());
    }
    if arg == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("stdin: {e}"))?;
        return Ok(s);
    }
    std::fs::read_to_string(arg).map_err(|e| format!("{arg}: {e}"))
}

/// The explanation as printed, or the error; `Ok((text, routed))`.
pub fn explain(
    config: &Config,
    dict: &dmproto::dict::Dictionary,
    json: &str,
) -> Result<(String, bool), String> {
    let wire = dmproto::json::read_message(json, dict, dmproto::header::MAX_MESSAGE_LEN)
        .map_err(|e| format!("message JSON: {e}"))?;
    let msg = Message::decode(wire).map_err(|e| format!("message: {e}"))?;
    let ids = |h: &str| {
        config
            .peers
            .iter()
            .position(|p| p.host.eq_ignore_ascii_case(h))
            .map(PeerId)
    };
    let mut router = Router::new(config, ids);
    let app = msg.header.app_id;
    let mut out = String::new();
    out.push_str(&format!(
        "assuming every configured peer is open and advertises application {app}\n"
    ));
    for (i, p) in config.peers.iter().enumerate() {
        let realm = assumed_realm(config, &p.host);
        router.peer_up(PeerId(i), &p.host, &realm, AppSet::from_ids([app]));
        router.set_usable(PeerId(i), true);
        out.push_str(&format!("  peer {} (realm {realm})\n", p.host));
    }
    let info = dmnode::outgoing::route_info(&msg);
    let abbrev = dict.command(app, msg.header.code).map(|c| &*c.request_abbr);
    let (chosen, e) = router.explain(&info.request(app, abbrev));
    if config.routing.rules.is_empty() {
        out.push_str("no routing rules: RFC 6733 §6.1 order (Destination-Host, realm table, peers of the realm, default route)\n");
    } else {
        out.push_str(&format!(
            "rules matched ({} of {}):\n",
            e.matched.len(),
            config.routing.rules.rules().len()
        ));
        for (line, rule) in &e.matched {
            out.push_str(&format!("  line {line}: {rule}\n"));
        }
        out.push_str("scores:\n");
        let mut scores = e.scores.clone();
        scores.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (host, s) in &scores {
            let note = if *s < 0 { "  (excluded)" } else { "" };
            out.push_str(&format!("  {s:>5}  {host}{note}\n"));
        }
    }
    let routed = match chosen {
        Ok(id) => {
            out.push_str(&format!("chosen: {}\n", router.host(id).unwrap_or("?")));
            true
        }
        Err(e) => {
            out.push_str(&format!("no route: {e}\n"));
            false
        }
    };
    Ok((out, routed))
}

pub fn main(
    args: RouteArgs,
    load: impl Fn(&Path) -> Option<(Config, &'static dmproto::dict::Dictionary)>,
) -> ExitCode {
    let Some((config, dict)) = load(&args.config) else {
        return ExitCode::FAILURE;
    };
    let r = read_json(&args.explain).and_then(|j| explain(&config, dict, &j));
    match r {
        Ok((text, routed)) => {
            print!("{text}");
            if routed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("dmbridge route: {e}");
            ExitCode::FAILURE
        }
    }
}
