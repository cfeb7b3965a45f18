//! Disconnection (RFC 6733 §5.4): the Disconnect-Cause a DPR carries, and what it means for
//! reconnecting to that peer. The DPR/DPA exchange itself is a set of transitions of the
//! state machine ([`super::fsm`]: Snd-DPR -> Closing, Rcv-DPR: Snd-DPA -> Closing until the
//! peer closes the connection, RFC 6733 §5.4 and §5.6.1); its
//! encoding is in [`super::wire`].

use std::time::Duration;

/// Disconnect-Cause values (RFC 6733 §5.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectCause {
    /// REBOOTING (0): the sender is restarting; reconnect after Tc. What we send when the
    /// node stops.
    Rebooting,
    /// BUSY (1): the sender is overloaded; reconnect, but with backoff from 4×Tc. What
    /// `ctl peer disable` sends.
    Busy,
    /// DO_NOT_WANT_TO_TALK_TO_YOU (2): do not reconnect until the peer is started again by
    /// an operator ([`super::Event::Start`]); it may still connect to us. What a reload that
    /// removes the peer sends.
    DoNotWantToTalkToYou,
}

impl DisconnectCause {
    /// The Disconnect-Cause AVP value.
    pub fn code(self) -> u32 {
        match self {
            DisconnectCause::Rebooting => 0,
            DisconnectCause::Busy => 1,
            DisconnectCause::DoNotWantToTalkToYou => 2,
        }
    }

    /// Unknown values are read as BUSY: back off, but do not give up on the peer.
    pub fn from_code(code: u32) -> DisconnectCause {
        match code {
            0 => DisconnectCause::Rebooting,
            2 => DisconnectCause::DoNotWantToTalkToYou,
            _ => DisconnectCause::Busy,
        }
    }
}

/// How reconnection is limited by the last thing the peer told us (RFC 6733 §5.4.3: a
/// peer saying BUSY should not be retried at once; one saying DO_NOT_WANT_TO_TALK_TO_YOU not
/// until an operator says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reconnect {
    Normal,
    Busy,
    Never,
}

/// The largest backoff factor: 16 × Tc.
const MAX_BACKOFF_SHIFT: u32 = 4;

impl Reconnect {
    /// The policy after a DPR with `cause`: REBOOTING reconnects after Tc, BUSY backs off
    /// starting at 4×Tc, DO_NOT_WANT_TO_TALK_TO_YOU stops reconnecting.
    pub(crate) fn after(cause: DisconnectCause) -> Reconnect {
        match cause {
            DisconnectCause::Rebooting => Reconnect::Normal,
            DisconnectCause::Busy => Reconnect::Busy,
            DisconnectCause::DoNotWantToTalkToYou => Reconnect::Never,
        }
    }

    /// Tc after a clean close, doubling per consecutive failure up to 16×Tc; BUSY starts at
    /// 4×Tc; DO_NOT_WANT_TO_TALK_TO_YOU never.
    pub(crate) fn delay(self, tc: Duration, failures: u32) -> Option<Duration> {
        let shift = match self {
            Reconnect::Never => return None,
            Reconnect::Normal => failures.saturating_sub(1),
            Reconnect::Busy => failures.saturating_add(2),
        };
        Some(tc.saturating_mul(1 << shift.min(MAX_BACKOFF_SHIFT)))
    }
}
