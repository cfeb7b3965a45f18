//! Peers: the capabilities exchange, the RFC 6733 §5.6 state machine, and the RFC 3539
//! watchdog — all sans-IO.
pub mod capabilities;
pub mod fsm;
pub mod table;
pub mod watchdog;
pub mod wire;

pub use capabilities::{AppSet, Capabilities};
pub use fsm::{Action, ConnId, ConnIds, Event, PeerFsm, State};
pub use table::{NodeAction, PeerId, Peers, Received};
