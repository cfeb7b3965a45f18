//! Atomics used by the ring protocol, switched to loom's model-checked
//! versions under `--cfg loom` so the very same ring code is what loom explores.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};
