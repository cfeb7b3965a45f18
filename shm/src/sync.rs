//! Atomics used by the ring protocol, switched to loom's model-checked
//! versions under feature `loom` so the very same ring code is what loom explores.

#[cfg(feature = "loom")]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};

/// The SeqCst fence of the Dekker-style sleep/wake handshake (see
/// [`crate::ring`]). Under `--cfg dmshm_mutant_no_fence` (with feature `loom`)
/// it is removed on purpose, to show that the loom models catch the lost
/// wake-up that follows.
#[inline]
pub(crate) fn dekker_fence() {
    #[cfg(not(dmshm_mutant_no_fence))]
    fence(std::sync::atomic::Ordering::SeqCst);
}
