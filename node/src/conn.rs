//! Connection names: what the peer state machines, the pending table, the duplicate cache
//! and the driver's transport all use to say which transport connection they mean.

/// Names one transport connection for the lifetime of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Hands out [`ConnId`]s; one per node so that ids never repeat across peers.
#[derive(Debug, Default)]
pub struct ConnIds {
    next: u64,
}

impl ConnIds {
    /// A fresh id, never handed out before by this allocator (starts at 1).
    pub fn next_id(&mut self) -> ConnId {
        self.next += 1;
        ConnId(self.next)
    }
}
