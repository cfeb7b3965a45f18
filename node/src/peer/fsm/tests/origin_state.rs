//! Origin-State-Id (RFC 6733 §8.16): a peer whose value changes restarted, and its connection
//! is reset as freeDiameter's `p_dw.c` / `p_psm.c` do.

use super::*;
use crate::peer::watchdog::WatchdogState;

const OSI: u32 = 1_700_000_000;

fn caps_with(host: &str, osi: Option<u32>) -> Capabilities {
    Capabilities {
        origin_state_id: osi,
        ..remote_caps(host, &[4])
    }
}

/// An R-Conn-CER on `conn` with `osi`.
fn cer_on(conn: ConnId, osi: Option<u32>, hbh: u32) -> Event {
    Event::RConnCer {
        conn,
        cer: ReceivedCer {
            caps: caps_with(HIGHER, osi),
            ..cer(HIGHER, hbh)
        },
    }
}

/// I-Open with `osi` in the CEA.
fn i_open_with(osi: Option<u32>) -> (H, ConnId) {
    let mut h = H::new(HIGHER, true);
    let i = h.enter_wait_i_cea();
    h.ev(Event::RcvCea {
        conn: i,
        result_code: 2001,
        caps: caps_with(HIGHER, osi),
        on_tls: false,
    });
    h.actions();
    assert_eq!(h.state(), State::IOpen);
    (h, i)
}

/// The peer open on either side, with `osi` in its CER (R-Open) or CEA (I-Open).
fn open_both_with(osi: Option<u32>) -> Vec<(H, ConnId)> {
    let mut r_open = H::new(HIGHER, true);
    let r = r_open.accepted();
    r_open.ev(cer_on(r, osi, 1));
    r_open.actions();
    assert_eq!(r_open.state(), State::ROpen);
    vec![(r_open, r), i_open_with(osi)]
}

fn dwr(conn: ConnId) -> Event {
    Event::RcvDwr {
        conn,
        ids: MsgIds {
            hop_by_hop: 9,
            end_to_end: 9,
        },
    }
}

fn reset(conn: ConnId) -> Vec<Action> {
    vec![
        Action::Close {
            conn,
            reason: CloseReason::PeerRestarted,
        },
        Action::Down { conn },
    ]
}

#[test]
fn changed_value_in_dwr_or_dwa_resets_the_connection_and_reconnects_after_tc() {
    for dwa in [false, true] {
        for (mut h, c) in open_both_with(Some(OSI)) {
            h.ev(Event::RcvOriginStateId {
                conn: c,
                value: OSI + 1,
            });
            assert_eq!(
                h.actions(),
                reset(c),
                "no DPR: the state it would close is gone"
            );
            assert_eq!(h.state(), State::Closed);
            assert_eq!(h.fsm.send_target(), None);
            assert_eq!(h.fsm.next_timeout(), Some(h.now + TC), "reconnect after Tc");
            assert_eq!(h.fsm.watchdog().state(), WatchdogState::Initial);
            // The DWR/DWA that carried the new value comes next: it is not answered.
            if dwa {
                h.ev(Event::RcvDwa { conn: c });
            } else {
                h.ev(dwr(c));
            }
            assert_eq!(h.actions(), vec![]);
        }
    }
}

#[test]
fn a_lower_value_is_a_restart_too() {
    for (mut h, c) in open_both_with(Some(OSI)) {
        h.ev(Event::RcvOriginStateId {
            conn: c,
            value: OSI - 1,
        });
        assert_eq!(h.actions(), reset(c));
    }
}

#[test]
fn same_value_changes_nothing_and_the_dwr_is_answered() {
    for (mut h, c) in open_both_with(Some(OSI)) {
        let s = h.state();
        h.ev(Event::RcvOriginStateId {
            conn: c,
            value: OSI,
        });
        assert_eq!(h.actions(), vec![]);
        h.ev(dwr(c));
        assert!(matches!(
            h.actions().as_slice(),
            [Action::Send {
                msg: Outgoing::Dwa { .. },
                ..
            }]
        ));
        assert_eq!(h.state(), s);
        assert_eq!(h.fsm.send_target(), Some(c));
    }
}

#[test]
fn zero_proves_nothing_on_either_side() {
    // RFC 6733 §8.16: 0 means "do not infer anything from me".
    for (mut h, c) in open_both_with(Some(OSI)) {
        h.ev(Event::RcvOriginStateId { conn: c, value: 0 });
        assert_eq!(h.actions(), vec![]);
        assert_eq!(h.fsm.send_target(), Some(c));
    }
    for (mut h, c) in open_both_with(Some(0)) {
        h.ev(Event::RcvOriginStateId { conn: c, value: 7 });
        assert_eq!(h.actions(), vec![], "first non-zero value is remembered");
        h.ev(Event::RcvOriginStateId { conn: c, value: 8 });
        assert_eq!(h.actions(), reset(c));
    }
}

#[test]
fn absent_from_cer_cea_the_first_dw_value_is_remembered() {
    for (mut h, c) in open_both_with(None) {
        h.ev(Event::RcvOriginStateId { conn: c, value: 5 });
        assert_eq!(h.actions(), vec![]);
        assert_eq!(h.fsm.remote().unwrap().origin_state_id, Some(5));
        h.ev(Event::RcvOriginStateId { conn: c, value: 5 });
        assert_eq!(h.actions(), vec![]);
        h.ev(Event::RcvOriginStateId { conn: c, value: 6 });
        assert_eq!(h.actions(), reset(c));
    }
}

#[test]
fn a_value_on_another_connection_is_ignored() {
    for (mut h, c) in open_both_with(Some(OSI)) {
        h.ev(Event::RcvOriginStateId {
            conn: ConnId(999),
            value: OSI + 1,
        });
        assert_eq!(h.actions(), vec![]);
        assert_eq!(h.fsm.open_conn(), Some(c));
    }
}

#[test]
fn closing_is_left_to_finish() {
    for (mut h, c) in open_both_with(Some(OSI)) {
        h.ev(Event::Stop {
            cause: DisconnectCause::Rebooting,
        });
        h.ev(Event::Drained);
        h.actions();
        assert_eq!(h.state(), State::Closing);
        h.ev(Event::RcvOriginStateId {
            conn: c,
            value: OSI + 1,
        });
        assert_eq!(h.actions(), vec![]);
        assert_eq!(h.state(), State::Closing);
    }
}

#[test]
fn cer_with_a_new_value_while_open_replaces_the_half_open_connection() {
    for (mut h, c) in open_both_with(Some(OSI)) {
        let r2 = h.accepted();
        h.ev(cer_on(r2, Some(OSI + 10), 3));
        let mut want = reset(c);
        want.extend([
            Action::Accept { conn: r2 },
            cea_ok(r2, 3),
            Action::Up {
                conn: r2,
                remote: Box::new(caps_with(HIGHER, Some(OSI + 10))),
                apps: AppSet::from_ids([4]),
            },
            Action::Usable {
                conn: r2,
                usable: true,
            },
        ]);
        assert_eq!(h.actions(), want);
        assert_eq!(h.state(), State::ROpen);
        assert_eq!(h.fsm.send_target(), Some(r2), "trusted at once, no REOPEN");
        assert_eq!(h.fsm.remote().unwrap().origin_state_id, Some(OSI + 10));
        assert!(h.fsm.next_timeout().is_some(), "watchdog armed");
    }
}

#[test]
fn cer_with_the_same_or_no_value_while_open_is_still_rejected() {
    for osi in [Some(OSI), None, Some(0)] {
        for (mut h, c) in open_both_with(Some(OSI)) {
            let r2 = h.accepted();
            h.ev(cer_on(r2, osi, 3));
            assert_eq!(
                h.actions(),
                vec![Action::Close {
                    conn: r2,
                    reason: CloseReason::Rejected
                }],
                "{osi:?}"
            );
            assert_eq!(h.fsm.open_conn(), Some(c));
        }
    }
}

#[test]
fn reconnection_after_a_restart_is_trusted_at_once() {
    let (mut h, i) = i_open_with(Some(OSI));
    h.ev(Event::RcvOriginStateId {
        conn: i,
        value: OSI + 1,
    });
    h.actions();
    h.fire();
    let i2 = match h.actions().as_slice() {
        [Action::Connect { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    h.ev(Event::RcvConnAck { conn: i2 });
    h.actions();
    h.ev(Event::RcvCea {
        conn: i2,
        result_code: 2001,
        caps: caps_with(HIGHER, Some(OSI + 1)),
        on_tls: false,
    });
    let actions = h.actions();
    assert!(
        actions.contains(&Action::Usable {
            conn: i2,
            usable: true
        }),
        "{actions:?}"
    );
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Outgoing::Dwr,
                ..
            }
        )),
        "no REOPEN probing: {actions:?}"
    );
    assert_eq!(h.fsm.send_target(), Some(i2));
}
