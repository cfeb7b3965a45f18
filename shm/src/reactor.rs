//! Registering the bridge's descriptors with tokio's reactor, safely (feature `tokio`).
//!
//! `tokio::io::unix::AsyncFd::register` is `unsafe`: the descriptor must stay open and refer
//! to the same file description for as long as the `AsyncFd` lives. An [`OwnedFd`] moved
//! into the `AsyncFd` guarantees exactly that (it is closed only when the `AsyncFd` drops
//! it), so this is the one place that needs `unsafe` and the runtime crate can forbid it.
//! The bridge hands out owned duplicates for this: [`crate::bridge::Bridge::listener_fd_dup`]
//! and [`crate::bridge::Bridge::worker_fd_dup`].

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// `fd` registered with the current tokio runtime's reactor for read readiness only.
/// Must be called inside a tokio runtime (tokio panics otherwise).
///
/// Not write readiness (what `AsyncFd::register` asks for): the bridge only ever waits for
/// its sockets to become readable, and an edge-triggered EPOLLOUT interest on a worker's
/// `SOCK_SEQPACKET` connection fires each time the worker reads a doorbell (the read frees
/// send space on our side), waking the runtime's thread for nothing — one spurious wake-up
/// of the bridge per answer delivered (issue 15, the sync round trip).
pub fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns `fd`; an OwnedFd is open and refers to the same file
    // description until it is dropped, which only the AsyncFd can do (when it is dropped
    // itself, after deregistering), and its `as_raw_fd` always returns the same number.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}
