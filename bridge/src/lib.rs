//! The dmbridge Diameter node: configuration, peers, routing, and the application seam.
//!
//! Everything here except the (future) tokio driver is sans-IO, in the manner of quinn-proto:
//! plain types whose methods take the current time as an argument and return what should
//! happen (actions, events) instead of doing it. The driver owns the sockets and the clock.
pub mod answer;
pub mod app;
pub mod config;
pub mod core;
pub mod node;
pub mod outgoing;
pub mod peer;
pub mod pending;
pub mod router;
pub mod transport;
