//! Launchers for real third-party Diameter peers, configured as in `shared/peers/` (see its
//! README for the facts these configs encode). Every launcher binds 127.0.0.1 only and returns
//! a value whose drop stops the peer.

pub mod dra;
pub mod erlang;
pub mod freediameter;
pub mod kamailio;

pub use dra::{Dra, DraOptions};
pub use erlang::{ErlClientOptions, ErlResult, ErlangPeer};
pub use freediameter::{Benchmark, FdOptions, FdTls, FdTlsConnect, FreeDiameter};
pub use kamailio::KamailioIms;

/// The realm every peer launched here lives in (freeDiameter's `acl_wl` admits `*.test.local`).
pub const REALM: &str = "test.local";
