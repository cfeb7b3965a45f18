//! The process's log output: `tracing` events as text or JSON lines on stderr, with
//! timestamps, filtered by a `RUST_LOG`-style directive list that can be changed while the
//! node runs (`dmbridge ctl log-level`, a reload of `[log] level`).
//!
//! Under systemd stderr goes to the journal; JSON lines suit log shippers. The filter is
//! `tracing-subscriber`'s `EnvFilter` behind a reload handle: events below the filter cost a
//! relaxed atomic load at the call site (the callsite interest cache), so the per-request
//! `debug!`/`trace!` lines of the node are free at the default `info`.

use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

/// Line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-12-03T14:00:00.123456Z  INFO peer{host=..}: dmnode::peer: message key=value`
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields, spans.
    Json,
}

impl LogFormat {
    /// The format `[log] format` names (`text` or `json`; the config reader already refused
    /// other values, so the caller falls back to text on `None`).
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Changes the filter of the running process.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
    /// `RUST_LOG` was set at start: it wins over the configuration's `[log] level` on reload
    /// (an operator debugging with it does not want a reload to undo it); `ctl log-level`
    /// still changes it.
    from_env: bool,
}

/// Why the log filter was not installed or changed; the text is what `dmbridge run` prints and
/// what `dmbridge ctl log-level` shows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A directive list that `tracing-subscriber` does not parse (`dmnode=loud`).
    #[error("bad log filter {spec:?}: {source}")]
    Filter {
        /// The directive list as given.
        spec: String,
        /// What the system or parser said.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed (a second `init` in one process).
    #[error("cannot install the log subscriber: {0}")]
    Install(#[source] tracing_subscriber::util::TryInitError),
    /// The reload handle's subscriber is gone.
    #[error("cannot change the log filter: {0}")]
    Reload(#[source] tracing_subscriber::reload::Error),
}

/// Checks a directive list (`info`, `warn,dmnode::peer=debug`, ...) without applying it.
pub fn parse_filter(spec: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::builder()
        .parse(spec)
        .map_err(|source| LogError::Filter {
            spec: spec.to_string(),
            source,
        })
}

/// Installs the global subscriber: `RUST_LOG` if set, else `config_level`. Call once, first
/// thing in `run`; errors name the bad directive.
pub fn init(config_level: &str, format: LogFormat) -> Result<LogControl, LogError> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let spec = env.clone().unwrap_or_else(|| config_level.to_string());
    let filter = parse_filter(&spec)?;
    let (filter, handle) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .map_err(LogError::Install)?;
    Ok(LogControl {
        handle,
        current: Mutex::new(spec),
        from_env: env.is_some(),
    })
}

impl LogControl {
    /// Replaces the filter (`ctl log-level`). The old one stays on error.
    pub fn set(&self, spec: &str) -> Result<(), LogError> {
        let filter = parse_filter(spec)?;
        self.handle.reload(filter).map_err(LogError::Reload)?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = spec.to_string();
        tracing::info!(filter = spec, "log filter changed");
        Ok(())
    }

    /// On a configuration reload: applies `[log] level` unless `RUST_LOG` set the filter.
    pub fn reload_config(&self, spec: &str) -> Result<(), LogError> {
        if self.from_env || self.current() == spec {
            return Ok(());
        }
        self.set(spec)
    }

    /// The filter in force.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_or_name_the_fault() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("warn,dmnode::peer=debug").is_ok());
        let e = parse_filter("dmnode=loud").unwrap_err();
        assert!(
            matches!(&e, LogError::Filter { spec, .. } if spec == "dmnode=loud"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("bad log filter \"dmnode=loud\": "),
            "{e}"
        );
        assert_eq!(LogFormat::parse("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("xml"), None);
    }
}
