//! dmbridge's runtime: the tokio driver around the sans-IO node ([`dmnode`]), the TCP
//! transport, and the shared-memory application that serves the SIP server's workers.
//!
//! - [`driver`]: owns sockets and the clock, feeds [`dmnode::endpoint::Endpoint`] and carries
//!   out its outputs.
//! - [`transport`]: a reader and a writer task per connection.
//! - [`dictionary`]: the running dictionary and its reload.
//! - [`app`]: the application seam with channels (responders, a handle to submit requests).
//! - [`responders`]: built-in applications (3001 for everything; an echo for benchmarks).
//! - [`shm_app`]: the application over the shared-memory segment (SIP-server workers).

// `unsafe` lives in shm and cabi (DESIGN §6); the descriptors this crate hands to tokio are
// registered through `dmshm::reactor`.
#![forbid(unsafe_code)]
// Public items carry doc comments (issue 10 item 7); CI's clippy -D warnings makes it an error.
#![warn(missing_docs)]
pub mod admin;
mod alarm;
pub mod app;
pub mod config_file;
pub mod dictionary;
pub mod driver;
mod due;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod responders;
pub mod sd_notify;
pub mod shm_app;
pub mod tls;
pub mod transport;
