//! The admin socket and its client, `dmbridge ctl`.
//!
//! A unix stream socket (`[admin] socket`, default `/run/dmbridge/admin.sock`), separate from
//! the workers' control socket: mode 0600 and, on every connection, the peer's credentials
//! (SO_PEERCRED) must be the bridge's own user or root. One request per connection, one JSON
//! line each way:
//!
//! ```text
//! -> {"cmd":"peers"}                      <- {"ok":true,"data":[{"host":..,"state":..}, ..]}
//! -> {"cmd":"peer-disable","name":"hss1"} <- {"ok":false,"error":"no peer named hss1"}
//! ```
//!
//! Commands: `status`, `peers`, `routes`, `workers`, `reload`, `peer-disable`/`peer-enable`
//! (`name`), `log-level` (`level`: a `RUST_LOG`-style filter). The server side only moves
//! [`Call`]s to whoever serves them (the node loop, the log control); the client renders the
//! answers as tables, or prints the JSON with `--json`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

/// The default admin socket (the systemd unit's RuntimeDirectory).
pub const DEFAULT_SOCKET: &str = "/run/dmbridge/admin.sock";

/// Longest request line accepted.
const MAX_LINE: usize = 4096;

/// Why a request line is not a command; the admin socket answers the text as `"error"`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No `"cmd"` string.
    #[error("missing \"cmd\"")]
    MissingCmd,
    /// A `"cmd"` this bridge does not know.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// The command needs this string field (`name`, `level`).
    #[error("missing string field {0:?}")]
    MissingField(&'static str),
}

/// Why `dmbridge ctl` got no answer's data; the text is what it prints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Nobody listens on the socket (or it is not ours to open).
    #[error("{}: {source} (is the bridge running? --socket)", socket.display())]
    Connect {
        /// The admin socket asked.
        socket: PathBuf,
        /// What the system or parser said.
        source: io::Error,
    },
    /// Sending the command or reading the answer failed (the timeout included).
    #[error("{}: {source}", socket.display())]
    Io {
        /// The admin socket asked.
        socket: PathBuf,
        /// What the system or parser said.
        source: io::Error,
    },
    /// The answer line is not JSON.
    #[error("bad answer from the bridge: {0}")]
    BadAnswer(#[source] serde_json::Error),
    /// The bridge refused the command: its `"error"` text.
    #[error("{0}")]
    Refused(String),
}

/// One admin command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `status`: identity, uptime and counts, for `dmbridge ctl status`.
    Status,
    /// `peers`: the peer table with each connection's state.
    Peers,
    /// `routes`: the realm table and the default route.
    Routes,
    /// `workers`: the attached SIP workers and their rings.
    Workers,
    /// `reload`: re-read the configuration file and its dictionaries (as SIGHUP does).
    Reload,
    /// `peer-disable NAME`: drain the peer, send DPR (RFC 6733 §5.4) and keep it down until
    /// enabled, for maintenance without a restart.
    PeerDisable(String),
    /// `peer-enable NAME`: let a disabled peer connect again.
    PeerEnable(String),
    /// `log-level FILTER`: replace the tracing filter (`info`, `dmbridge=debug`, ...) without a
    /// restart.
    LogLevel(String),
}

impl Command {
    /// The request line's JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Command::Status => json!({"cmd": "status"}),
            Command::Peers => json!({"cmd": "peers"}),
            Command::Routes => json!({"cmd": "routes"}),
            Command::Workers => json!({"cmd": "workers"}),
            Command::Reload => json!({"cmd": "reload"}),
            Command::PeerDisable(n) => json!({"cmd": "peer-disable", "name": n}),
            Command::PeerEnable(n) => json!({"cmd": "peer-enable", "name": n}),
            Command::LogLevel(l) => json!({"cmd": "log-level", "level": l}),
        }
    }

    /// Parses a request line's JSON; the error says what is wrong.
    pub fn from_json(v: &Value) -> Result<Command, CommandError> {
        let arg = |k: &'static str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or(CommandError::MissingField(k))
        };
        match v.get("cmd").and_then(Value::as_str) {
            Some("status") => Ok(Command::Status),
            Some("peers") => Ok(Command::Peers),
            Some("routes") => Ok(Command::Routes),
            Some("workers") => Ok(Command::Workers),
            Some("reload") => Ok(Command::Reload),
            Some("peer-disable") => Ok(Command::PeerDisable(arg("name")?)),
            Some("peer-enable") => Ok(Command::PeerEnable(arg("name")?)),
            Some("log-level") => Ok(Command::LogLevel(arg("level")?)),
            Some(other) => Err(CommandError::UnknownCommand(other.to_string())),
            None => Err(CommandError::MissingCmd),
        }
    }
}

/// A command on its way to whoever serves it, with where the answer goes.
pub struct Call {
    /// What was asked.
    pub command: Command,
    /// Where the JSON answer (or why the command failed: its text is shown to the operator)
    /// goes.
    pub reply: oneshot::Sender<Result<Value, CallError>>,
}

/// Why a command failed, as the admin socket carries it: whoever serves the command (the
/// `ops` module, with its typed `OpsError`) decides the error; this socket only shows its
/// text, so it takes any error and does not depend on the module above it.
pub type CallError = Box<dyn std::error::Error + Send + Sync>;

/// Binds the admin socket: a stale socket file (nobody listening) is replaced, a live one is
/// an error (another bridge runs with this configuration). Mode 0600.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "admin socket {}: another bridge answers on it",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("admin socket {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves the admin socket until the process ends: each connection's command goes to `tx`.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Call>) {
    // The socket file's owner is the bridge's user: the uid a client must have (or root).
    let own_uid = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let allowed = match (stream.peer_cred(), own_uid) {
            (Ok(c), Some(uid)) => c.uid() == uid || c.uid() == 0,
            _ => false,
        };
        if !allowed {
            tracing::warn!(
                uid = stream.peer_cred().ok().map(|c| c.uid()),
                "admin connection refused: not the bridge's user or root"
            );
            continue;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(30), connection(stream, tx)).await;
        });
    }
}

async fn connection(stream: tokio::net::UnixStream, tx: mpsc::Sender<Call>) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(r).take(MAX_LINE as u64);
    r.read_line(&mut line).await?;
    // The texts below are the answer's "error" on the wire.
    let stopping = || "the bridge is stopping".to_string();
    let answer = match serde_json::from_str::<Value>(&line)
        .map_err(|e| format!("bad request JSON: {e}"))
        .and_then(|v| Command::from_json(&v).map_err(|e| e.to_string()))
    {
        Err(e) => Err(e),
        Ok(command) => {
            let (reply, rx) = oneshot::channel();
            if tx.send(Call { command, reply }).await.is_err() {
                Err(stopping())
            } else {
                match rx.await {
                    Ok(answer) => answer.map_err(|e| e.to_string()),
                    Err(_) => Err(stopping()),
                }
            }
        }
    };
    let out = match answer {
        Ok(data) => json!({"ok": true, "data": data}),
        Err(error) => json!({"ok": false, "error": error}),
    };
    let mut text = out.to_string();
    text.push('\n');
    w.write_all(text.as_bytes()).await?;
    w.shutdown().await
}

/// Client side: sends `command`, returns the answer's data or its error.
pub fn request(socket: &Path, command: &Command, timeout: Duration) -> Result<Value, RequestError> {
    let io = |source| RequestError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|source| {
        RequestError::Connect {
            socket: socket.to_path_buf(),
            source,
        }
    })?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let mut line = command.to_json().to_string();
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(io)?;
    let v: Value = serde_json::from_str(&answer).map_err(RequestError::BadAnswer)?;
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(v.get("data").cloned().unwrap_or(Value::Null))
    } else {
        Err(RequestError::Refused(
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_string(),
        ))
    }
}

/// The admin socket a configuration uses, without checking the rest of it (so `ctl` works
/// with a file the running bridge refused): `[admin] socket`, else `admin.sock` beside
/// `[app] control_socket`, else [`DEFAULT_SOCKET`]. `None` for unparsable TOML.
pub fn socket_from_config(text: &str) -> Option<PathBuf> {
    let doc: toml_edit::DocumentMut = text.parse().ok()?;
    if let Some(s) = doc
        .get("admin")
        .and_then(|a| a.get("socket"))
        .and_then(|s| s.as_str())
    {
        return Some(PathBuf::from(s));
    }
    let control = doc
        .get("app")
        .and_then(|a| a.get("control_socket"))
        .and_then(|s| s.as_str());
    Some(default_socket(control.map(Path::new)))
}

/// The admin socket when `[admin] socket` is not set: beside the control socket (both in the
/// service's runtime directory), else [`DEFAULT_SOCKET`].
pub fn default_socket(control_socket: Option<&Path>) -> PathBuf {
    control_socket
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), |d| d.join("admin.sock"))
}

/// A human table of `rows` (objects) with these columns: (header, key).
pub fn table(rows: &[Value], columns: &[(&str, &str)]) -> String {
    let cell = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, k)| cell(r.get(*k))).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, items: Vec<&str>| {
        let mut l = String::new();
        for (i, (item, w)) in items.iter().zip(&widths).enumerate() {
            if i + 1 == items.len() {
                l.push_str(item);
            } else {
                l.push_str(&format!("{item:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, columns.iter().map(|(h, _)| *h).collect());
    for row in &cells {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

/// The human rendering of a command's answer.
pub fn render(command: &Command, data: &Value) -> String {
    let rows = |v: &Value| v.as_array().cloned().unwrap_or_default();
    match command {
        Command::Peers => table(
            &rows(data),
            &[
                ("PEER", "host"),
                ("STATE", "state"),
                ("WATCHDOG", "watchdog"),
                ("USABLE", "usable"),
                ("DISABLED", "disabled"),
                ("PENDING", "pending"),
                ("APPS", "apps"),
            ],
        ),
        Command::Routes => {
            let mut out = table(
                &rows(&data["routes"]),
                &[
                    ("REALM", "realm"),
                    ("APP", "app_id"),
                    ("PRIORITY", "priority"),
                    ("PEERS", "peers"),
                ],
            );
            out.push_str(&format!(
                "default route: {}\n",
                match &data["default_route"] {
                    Value::Array(a) if !a.is_empty() => a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                    _ => "(none)".to_string(),
                }
            ));
            out
        }
        Command::Workers => table(
            &rows(data),
            &[
                ("SLOT", "slot"),
                ("PID", "pid"),
                ("NAME", "name"),
                ("IN_FLIGHT", "in_flight"),
                ("HANDLES", "handles"),
            ],
        ),
        Command::Status => match data.as_object() {
            Some(o) => {
                let mut out = String::new();
                let w = o.keys().map(String::len).max().unwrap_or(0);
                for (k, v) in o {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.push_str(&format!("{k:<w$}  {v}\n"));
                }
                out
            }
            None => format!("{data}\n"),
        },
        Command::Reload
        | Command::PeerDisable(_)
        | Command::PeerEnable(_)
        | Command::LogLevel(_) => match data {
            Value::String(s) => format!("{s}\n"),
            other => format!("{other}\n"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_bad_ones_are_named() {
        for c in [
            Command::Status,
            Command::Peers,
            Command::Routes,
            Command::Workers,
            Command::Reload,
            Command::PeerDisable("hss1".into()),
            Command::PeerEnable("hss1".into()),
            Command::LogLevel("debug,dmnode::peer=trace".into()),
        ] {
            assert_eq!(Command::from_json(&c.to_json()), Ok(c));
        }
        let e = Command::from_json(&json!({"cmd":"explode"})).unwrap_err();
        assert_eq!(e, CommandError::UnknownCommand("explode".into()));
        assert_eq!(e.to_string(), "unknown command \"explode\"");
        let e = Command::from_json(&json!({"cmd":"peer-disable"})).unwrap_err();
        assert_eq!(e, CommandError::MissingField("name"));
        assert_eq!(e.to_string(), "missing string field \"name\"");
        assert_eq!(
            Command::from_json(&json!({"cmd":"log-level", "level": 3})),
            Err(CommandError::MissingField("level"))
        );
        assert_eq!(
            Command::from_json(&json!({"name":"x"})),
            Err(CommandError::MissingCmd)
        );
    }

    #[test]
    fn a_client_without_a_bridge_gets_connect_with_the_socket() {
        let socket =
            std::env::temp_dir().join(format!("dmb-admin-none-{}.sock", std::process::id()));
        let e = request(&socket, &Command::Status, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(&e, RequestError::Connect { socket: s, .. } if s == &socket),
            "{e:?}"
        );
        assert!(
            e.to_string().ends_with("(is the bridge running? --socket)"),
            "{e}"
        );
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &[
                json!({"host":"hss1.example.net","state":"I-Open","apps":[4,16777216]}),
                json!({"host":"ocs","state":"Closed","apps":[]}),
            ],
            &[("PEER", "host"), ("STATE", "state"), ("APPS", "apps")],
        );
        assert_eq!(
            t,
            "PEER              STATE   APPS\n\
             hss1.example.net  I-Open  4,16777216\n\
             ocs               Closed\n"
        );
    }

    #[test]
    fn socket_path_from_a_config() {
        assert_eq!(socket_from_config("[admin]\nbroken = "), None);
        assert_eq!(
            socket_from_config("[app]\ncontrol_socket = \"/run/x/control.sock\"\n"),
            Some(PathBuf::from("/run/x/admin.sock"))
        );
        assert_eq!(
            socket_from_config("[node]\n"),
            Some(PathBuf::from(DEFAULT_SOCKET))
        );
        assert_eq!(
            socket_from_config("[node]\nx=1\n[admin]\nsocket = \"/tmp/a.sock\"\n"),
            Some(PathBuf::from("/tmp/a.sock"))
        );
    }
}
