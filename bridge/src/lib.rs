//! The dmbridge Diameter node: configuration, peers, routing, and the application seam.
//!
//! Everything except [`node`] and [`transport`] is sans-IO, in the manner of quinn-proto:
//! plain types whose methods take the current time as an argument and return what should
//! happen (actions, outputs) instead of doing it. The tokio driver owns sockets and the clock.
//!
//! - [`config`]: the TOML file, every error with its line.
//! - [`peer`]: capabilities exchange, the RFC 6733 §5.6 state machine with election, the
//!   RFC 3539 watchdog, the peer table (CER gate for accepted connections), wire encoding.
//! - [`router`]: Destination-Host / realm table / default route, round-robin, local errors.
//! - [`pending`]: requests we sent (by connection and hop-by-hop id) and the duplicate cache.
//! - [`outgoing`], [`answer`]: completing originated requests and building answers.
//! - [`app`]: the seam to the application (incoming requests, originated requests).
//! - [`core`]: all of the above as one state machine; [`node`] drives it with tokio.
//! - [`responders`]: built-in applications (3001 for everything; an echo for benchmarks).
//! - [`shm_app`]: the application over the shared-memory segment (SIP-server workers).
pub mod answer;
pub mod app;
pub mod config;
pub mod core;
pub mod node;
pub mod outgoing;
pub mod peer;
pub mod pending;
pub mod responders;
pub mod router;
pub mod shm_app;
pub mod transport;
