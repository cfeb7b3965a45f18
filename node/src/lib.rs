//! dmbridge's Diameter node, sans-IO: configuration, peers, routing, requests in flight, and
//! the application seam — the protocol half of the node, as quinn-proto is to quinn.
//!
//! Every type here is plain data and methods that take the current time as an argument and
//! return what should happen (actions, outputs) instead of doing it; nothing opens a socket
//! or reads a clock. The runtime crate (`dmbridge-bridge`: the tokio driver, the transport,
//! the shared-memory application, the command line) drives [`endpoint::Endpoint`].
//!
//! - [`config`]: the TOML file, every error with its line.
//! - [`peer`]: capabilities exchange, the RFC 6733 §5.6 state machine with election, the
//!   RFC 3539 watchdog, disconnection, the peer table (CER gate for accepted connections),
//!   wire encoding.
//! - [`conn`]: connection names ([`conn::ConnId`]).
//! - [`delivery`]: who a request is for (RFC 6733 §6.1), and what a relay does to it.
//! - [`router`]: Destination-Host / realm table / default route, round-robin, local errors.
//! - [`rules`]: rule-based peer selection in freeDiameter's `rt_default.conf` syntax.
//! - [`pending`]: requests we sent (by connection and hop-by-hop id).
//! - [`duplicates`]: requests peers sent us, by (Origin-Host, end-to-end id).
//! - [`outgoing`], [`answer`]: completing originated requests and building answers.
//! - [`arena`]: the chunks the node encodes its messages into (no allocation per message).
//! - [`app`]: the seam to the application (incoming requests, originated requests).
//! - [`endpoint`]: all of the above as one state machine.
//! - [`observe`]: what the endpoint reports per request (the runtime's metrics plug in).
//! - [`log_limit`]: flood control for log lines (refusals, faults): use it for any line an
//!   outsider can cause repeatedly.
#![forbid(unsafe_code)]
// Issue 10 item 7: every public item says what it is for (CI's `clippy -D warnings` makes
// this an error). Here rather than in `[workspace.lints]`, which the other crates share.
#![warn(missing_docs)]
pub mod answer;
pub mod app;
pub mod arena;
pub mod config;
pub mod conn;
pub mod delivery;
pub mod duplicates;
pub mod endpoint;
pub mod log_limit;
pub mod observe;
pub mod outgoing;
pub mod peer;
pub mod pending;
pub mod redirect;
pub mod router;
pub mod rules;
pub mod spans;
pub mod trust;
