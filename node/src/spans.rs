//! Tracing spans of the node's contexts: a peer, and a connection (inside its peer's when it
//! has one). Whatever is logged while the node acts for a peer — state changes with their
//! causes, watchdog transitions, failover — carries `peer{host}` and `conn{id}`, so a log
//! search by peer or connection finds every line of it (the JSON lines list them under
//! `spans`, the text lines prefix them as `peer{host=..}:conn{id=..}:`).
//!
//! Spans are made where the node acts on a peer's or a connection's state, never per request:
//! no span is created or entered on the request path. A disabled span (filtered out) costs a
//! check of the filter's interest, cached per call site.

use tracing::Span;

use crate::conn::ConnId;

/// The context of a peer, by its Diameter identity.
pub fn peer(host: &str) -> Span {
    tracing::info_span!("peer", host)
}

/// The context of a connection; a child of the span entered when it is made (its peer's).
pub fn conn(id: ConnId) -> Span {
    tracing::info_span!("conn", id = id.0)
}

/// The context of a connection with its remote address (the transport's tasks).
pub fn conn_from(id: ConnId, remote: &dyn std::fmt::Display) -> Span {
    tracing::info_span!("conn", id = id.0, remote = %remote)
}
