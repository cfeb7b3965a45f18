//! Test harness for dmbridge's end-to-end tests with real programs.
//!
//! - [`ports::free_port`]: race-free ports for parallel tests.
//! - [`tempdir::TestDir`]: a directory per test, kept when the test fails.
//! - [`child::ChildGuard`]: a child process that is always stopped and reaped (also on panic),
//!   with its output in files whose tails are printed when the test fails.
//! - [`wait`]: bounded waits for ports and log lines.
//! - [`peers`]: freeDiameter, Erlang/OTP diameter and Kamailio launchers (configs as in
//!   `shared/peers/`).
//! - [`wire`]: a small independent Diameter encoder/parser and blocking TCP client.
//! - [`certs`]: a test CA and node certificates (good, expired, other CA, other name).
//! - [`capture`] and [`tshark`]: loopback capture and Wireshark's dissector as the oracle.
//! - [`roles`]: Kamailio with a role cfg of `cfg-examples/roles/`, and the scripted peers'
//!   control ports.
//! - [`oracle`]: `dmproto`'s decoding compared with tshark's, AVP by AVP.
//! - [`held_peer`]: a Diameter peer that holds its answers until told, a SIP client sending
//!   many requests at once, and the bridge's workers and counters, for the tests of stops.
//! - [`dmbridge`]: the product binary, built once per test process; [`bridge::Bridge`] runs
//!   it as a node with a per-test configuration.
//!
//! Helpers that set things up panic with a message saying what is missing and which setup
//! command provides it; tests never skip silently.

pub mod as_sh;
pub mod bridge;
pub mod capture;
pub mod certs;
pub mod child;
pub mod dmbridge;
pub mod echo_worker;
pub mod held_peer;
pub mod hss;
pub mod icscf;
pub mod ocs;
pub mod opensips;
pub mod oracle;
pub mod paths;
pub mod pcrf;
pub mod pcscf;
pub mod peers;
pub mod ports;
pub mod prometheus;
pub mod ro_client;
pub mod roles;
pub mod scscf;
pub mod sip;
pub mod sip_call;
pub mod sip_media;
pub mod sip_register;
pub mod tempdir;
pub mod tshark;
pub mod wait;
pub mod wire;

pub use child::{ChildGuard, Sig};
pub use ports::free_port;
pub use tempdir::TestDir;
pub use wait::{wait_for_log_line, wait_for_port, WaitError};
