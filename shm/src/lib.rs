//! The shared-memory data plane between the bridge and SIP-server workers.
