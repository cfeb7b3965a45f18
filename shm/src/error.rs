//! The one error type of the crate, with messages meant for an operator's
//! log line (the C library hands them out through `dmb_last_error()`).

use std::fmt;
use std::io;

/// Everything that can go wrong between a worker and the bridge.
#[derive(Debug)]
pub enum Error {
    /// A system call failed; `what` says which step.
    Io {
        /// The step that failed (e.g. "mmap segment"), for the operator's log line.
        what: String,
        /// The OS error behind it.
        source: io::Error,
    },
    /// The two sides speak different wire versions (layout, records or
    /// control messages). Never retried silently: someone must upgrade.
    Version {
        /// The version this build speaks ([`crate::segment::WIRE_VERSION`]).
        ours: u32,
        /// The version the other side's header or message declared.
        theirs: u32,
        /// Where the mismatch was seen (e.g. "segment header", "the bridge's Welcome").
        detail: &'static str,
    },
    /// The segment or a message from the other side is malformed.
    Protocol(String),
    /// The bridge refused the registration because the versions differ
    /// (its reason, which names both versions).
    Incompatible(String),
    /// The bridge refused the registration (no free slot, ...).
    Refused(String),
    /// Not attached to a bridge right now (it is down or restarting).
    Detached(String),
    /// A record is larger than the configured maximum.
    TooBig {
        /// The record's size in bytes.
        len: usize,
        /// The configured maximum message size in bytes.
        max: usize,
    },
    /// The ring towards the other side is full (backpressure).
    Full,
    /// A caller's argument is wrong (unknown token, bad JSON, ...).
    Invalid(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn last_os(what: impl Into<String>) -> Error {
        Error::io(what, io::Error::last_os_error())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Version {
                ours,
                theirs,
                detail,
            } => write!(
                f,
                "version mismatch: this side speaks dmbridge shm wire version {ours}, the other \
                 side {theirs} ({detail}); install a libdmbridge and a dmbridge of the same release"
            ),
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
            Error::Incompatible(m) => write!(f, "bridge refused the worker: {m}"),
            Error::Refused(m) => write!(f, "bridge refused the worker: {m}"),
            Error::Detached(m) => write!(f, "not attached to the bridge: {m}"),
            Error::TooBig { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the configured maximum of {max} bytes"
                )
            }
            Error::Full => {
                f.write_str("ring full: the other side is not keeping up (backpressure)")
            }
            Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<crate::ring::PushError> for Error {
    fn from(e: crate::ring::PushError) -> Error {
        match e {
            crate::ring::PushError::Full => Error::Full,
            crate::ring::PushError::TooBig { len, max } => Error::TooBig { len, max },
            crate::ring::PushError::Corrupt => Error::Protocol(e.to_string()),
        }
    }
}

impl From<crate::ring::RingError> for Error {
    fn from(e: crate::ring::RingError) -> Error {
        Error::Protocol(e.to_string())
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
