//! Peers, one file per mechanism: the capabilities exchange ([`capabilities`], RFC 6733
//! §5.3), the §5.6 state machine with election ([`fsm`]), the RFC 3539 watchdog
//! ([`watchdog`]), disconnection ([`disconnect`], §5.4), the peer table ([`table`]) and the
//! encoding of base messages ([`wire`]) — all sans-IO.
pub mod capabilities;
pub mod disconnect;
pub mod fsm;
pub mod table;
pub mod watchdog;
pub mod wire;

pub use crate::conn::{ConnId, ConnIds};
pub use capabilities::{AppSet, Capabilities};
pub use disconnect::DisconnectCause;
pub use fsm::{Action, Event, PeerFsm, State};
pub use table::{NodeAction, PeerId, Peers, Received};
