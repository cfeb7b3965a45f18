//! The shared-memory data plane between the dmbridge sidecar and SIP-server
//! workers (DESIGN §5).
//!
//! * [`ring`]: the lock-free single-producer/single-consumer byte ring, its
//!   Release/Acquire publication and its Dekker-style sleep/wake flags;
//! * [`segment`]: the `/dev/shm` file holding a versioned header and, per
//!   worker slot, three rings;
//! * [`record`]: the binary records carried by the rings;
//! * [`control`]: the unix control socket (register, doorbell, liveness);
//! * [`bridge`]: the bridge's side, non-blocking and fd-driven so a tokio
//!   layer can run it with `AsyncFd`;
//! * [`worker`]: the worker's side, wrapped by the C library;
//! * [`times`]: the script's side of each request it sends (per-worker histograms in the
//!   segment, summed by the bridge);
//! * [`sched`]: the scheduling (EEVDF slice, nice, `SCHED_FIFO`) of the threads on a
//!   request's path, applied with `sched_setattr(2)`;
//! * `reactor` (feature `tokio`): the bridge's descriptors registered with tokio's reactor
//!   without `unsafe` in the caller;
//! * [`reference`](mod@reference): a small synchronous bridge that answers everything, for
//!   tests and for trying the C library without the real bridge.
//!
//! Model checking: `cargo test -p dmbridge-shm --lib --profile release-tests
//! --features loom -- loom` runs the ring protocol under
//! loom (publication across wrap-around, no lost wake-up in either
//! direction); it takes well under a minute.

#![cfg_attr(feature = "loom", allow(dead_code, unused_imports))]
// Public items carry doc comments (issue 10 item 7); CI's clippy -D warnings makes it an error.
#![warn(missing_docs)]

mod sync;

pub mod error;
pub mod ring;

#[cfg(not(feature = "loom"))]
pub mod bridge;
#[cfg(not(feature = "loom"))]
pub mod control;
#[cfg(all(feature = "tokio", not(feature = "loom")))]
pub mod reactor;
#[cfg(not(feature = "loom"))]
pub mod recent;
#[cfg(not(feature = "loom"))]
pub mod record;
#[cfg(not(feature = "loom"))]
pub mod reference;
#[cfg(not(feature = "loom"))]
pub mod sched;
#[cfg(not(feature = "loom"))]
pub mod segment;
#[cfg(not(feature = "loom"))]
pub mod times;
#[cfg(not(feature = "loom"))]
pub mod times_board;
#[cfg(not(feature = "loom"))]
pub mod worker;

pub use error::{Error, Result};
