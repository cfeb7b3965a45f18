//! One test per row of the RFC 6733 §5.6 table (and the rows we added), plus the election won
//! and lost, reconnection, and the watchdog as seen through the state machine.

use super::*;
use crate::config::AppKind;
use crate::peer::capabilities::VendorApp;

const LOCAL: &str = "m.example.net";
/// Sorts above LOCAL: we lose elections against it.
const HIGHER: &str = "z.example.net";
/// Sorts below LOCAL: we win elections against it.
const LOWER: &str = "a.example.net";
const TC: Duration = Duration::from_secs(30);
const CER_TIMEOUT: Duration = Duration::from_secs(10);

fn local_caps() -> Capabilities {
    Capabilities {
        origin_host: LOCAL.into(),
        origin_realm: "example.net".into(),
        auth_app_ids: vec![4],
        vendor_specific_apps: vec![VendorApp {
            vendor_id: 10415,
            kind: AppKind::Auth,
            app_id: 16777216,
        }],
        ..Capabilities::default()
    }
}

fn remote_caps(host: &str, apps: &[u32]) -> Capabilities {
    Capabilities {
        origin_host: host.into(),
        origin_realm: "example.net".into(),
        auth_app_ids: apps.to_vec(),
        ..Capabilities::default()
    }
}

fn cer(host: &str, hbh: u32) -> ReceivedCer {
    ReceivedCer {
        ids: MsgIds {
            hop_by_hop: hbh,
            end_to_end: hbh + 1000,
        },
        caps: remote_caps(host, &[4]),
        on_tls: false,
    }
}

struct H {
    fsm: PeerFsm,
    ids: ConnIds,
    now: Instant,
}

impl H {
    fn new(host: &str, connect: bool) -> H {
        let timers = Timers {
            tc: TC,
            tw: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(5),
            cer_timeout: CER_TIMEOUT,
            dpa_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
        };
        let settings = PeerSettings {
            host: host.into(),
            connect_to: connect
                .then(|| crate::config::Endpoint::Addr("192.0.2.1:3868".parse().unwrap())),
            timers,
            seed: 7,
        };
        H {
            fsm: PeerFsm::new(settings, Arc::new(local_caps())),
            ids: ConnIds::default(),
            now: Instant::now(),
        }
    }

    fn ev(&mut self, e: Event) -> bool {
        self.fsm.handle(e, self.now, &mut self.ids)
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.fsm.poll_action()).collect()
    }

    /// Advances to the next timeout and fires it.
    fn fire(&mut self) {
        self.now = self.fsm.next_timeout().expect("a timer is armed");
        self.fsm.handle_timeout(self.now, &mut self.ids);
    }

    fn state(&self) -> State {
        self.fsm.state()
    }

    /// Start -> Wait-Conn-Ack; returns the initiator connection.
    fn enter_wait_conn_ack(&mut self) -> ConnId {
        self.ev(Event::Start);
        match self.actions().as_slice() {
            [Action::Connect { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        }
    }

    fn enter_wait_i_cea(&mut self) -> ConnId {
        let i = self.enter_wait_conn_ack();
        self.ev(Event::RcvConnAck { conn: i });
        assert_eq!(
            self.actions(),
            vec![Action::Send {
                conn: i,
                msg: Outgoing::Cer
            }]
        );
        assert_eq!(self.state(), State::WaitICea);
        i
    }

    fn accepted(&mut self) -> ConnId {
        self.ids.next_id()
    }

    fn enter_i_open(&mut self) -> ConnId {
        let i = self.enter_wait_i_cea();
        self.ev(Event::RcvCea {
            conn: i,
            result_code: 2001,
            caps: remote_caps(self.fsm.host().to_string().as_str(), &[4]),
            on_tls: false,
        });
        self.actions();
        assert_eq!(self.state(), State::IOpen);
        i
    }
}

fn up(conn: ConnId, host: &str) -> Action {
    Action::Up {
        conn,
        remote: Box::new(remote_caps(host, &[4])),
        apps: AppSet::from_ids([4]),
    }
}

fn cea_ok(conn: ConnId, hbh: u32) -> Action {
    Action::Send {
        conn,
        msg: Outgoing::Cea {
            ids: MsgIds {
                hop_by_hop: hbh,
                end_to_end: hbh + 1000,
            },
            result_code: 2001,
            error_message: None,
        },
    }
}

// ---- Closed ----

#[test]
fn closed_start_sends_conn_req() {
    let mut h = H::new(HIGHER, true);
    let i = h.enter_wait_conn_ack();
    assert_eq!(h.state(), State::WaitConnAck);
    assert!(h.fsm.owns(i));
    assert_eq!(h.fsm.next_timeout(), Some(h.now + CER_TIMEOUT));
}

#[test]
fn closed_start_of_accept_only_peer_waits() {
    let mut h = H::new(HIGHER, false);
    h.ev(Event::Start);
    assert_eq!(h.actions(), vec![]);
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.fsm.next_timeout(), None);
}

#[test]
fn closed_r_conn_cer_accepts_and_opens() {
    let mut h = H::new(HIGHER, false);
    let r = h.accepted();
    h.ev(Event::RConnCer {
        conn: r,
        cer: cer(HIGHER, 1),
    });
    assert_eq!(
        h.actions(),
        vec![
            Action::Accept { conn: r },
            cea_ok(r, 1),
            up(r, HIGHER),
            Action::Usable {
                conn: r,
                usable: true
            },
        ]
    );
    assert_eq!(h.state(), State::ROpen);
    assert_eq!(h.fsm.send_target(), Some(r));
    assert_eq!(h.fsm.remote().map(|c| c.origin_host.as_str()), Some(HIGHER));
}

#[test]
fn closed_r_conn_cer_without_common_application_is_5010() {
    let mut h = H::new(HIGHER, false);
    let r = h.accepted();
    let mut c = cer(HIGHER, 1);
    c.caps.auth_app_ids = vec![16777238];
    h.ev(Event::RConnCer { conn: r, cer: c });
    let actions = h.actions();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert_eq!(actions[0], Action::Accept { conn: r });
    assert!(matches!(
        &actions[1],
        Action::Send { conn, msg: Outgoing::Cea { result_code: 5010, error_message: Some(_), .. } } if *conn == r
    ));
    assert_eq!(
        actions[2],
        Action::Close {
            conn: r,
            reason: CloseReason::Capabilities
        }
    );
    assert_eq!(h.state(), State::Closed);
}

// ---- Wait-Conn-Ack ----

#[test]
fn wait_conn_ack_conn_ack_sends_cer() {
    let mut h = H::new(HIGHER, true);
    h.enter_wait_i_cea();
    assert_eq!(h.fsm.next_timeout(), Some(h.now + CER_TIMEOUT));
}

#[test]
fn wait_conn_ack_nack_cleans_up_and_schedules_reconnect() {
    let mut h = H::new(HIGHER, true);
    let i = h.enter_wait_conn_ack();
    h.ev(Event::RcvConnNack { conn: i });
    assert_eq!(h.actions(), vec![]);
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.fsm.next_timeout(), Some(h.now + TC));
    h.fire();
    assert_eq!(h.state(), State::WaitConnAck);
    assert!(matches!(h.actions().as_slice(), [Action::Connect { .. }]));
}

#[test]
fn wait_conn_ack_r_conn_cer_goes_to_elect_state() {
    let mut h = H::new(HIGHER, true);
    h.enter_wait_conn_ack();
    let r = h.accepted();
    h.ev(Event::RConnCer {
        conn: r,
        cer: cer(HIGHER, 1),
    });
    assert_eq!(h.actions(), vec![Action::Accept { conn: r }]);
    assert_eq!(h.state(), State::WaitConnAckElect);
}

#[test]
fn wait_conn_ack_timeout_is_error() {
    let mut h = H::new(HIGHER, true);
    let i = h.enter_wait_conn_ack();
    h.fire();
    assert_eq!(
        h.actions(),
        vec![Action::Close {
            conn: i,
            reason: CloseReason::Timeout
        }]
    );
    assert_eq!(h.state(), State::Closed);
    // A connect result arriving after we gave up closes that socket.
    h.ev(Event::RcvConnAck { conn: i });
    assert_eq!(
        h.actions(),
        vec![Action::Close {
            conn: i,
            reason: CloseReason::Timeout
        }]
    );
    assert_eq!(h.state(), State::Closed);
}

// ---- Wait-I-CEA ----

#[test]
fn wait_i_cea_cea_opens() {
    let mut h = H::new(HIGHER, true);
    let i = h.enter_wait_i_cea();
    h.ev(Event::RcvCea {
        conn: i,
        result_code: 2001,
        caps: remote_caps(HIGHER, &[4, 5]),
        on_tls: false,
    });
    assert_eq!(
        h.actions(),
        vec![
            Action::Up {
                conn: i,
                remote: Box::new(remote_caps(HIGHER, &[4, 5])),
                apps: AppSet::from_ids([4])
            },
            Action::Usable {
                conn: i,
                usable: true
            },
        ]
    );
    assert_eq!(h.state(), State::IOpen);
    assert_eq!(h.fsm.open_conn(), Some(i));
}

#[test]
fn wait_i_cea_error_cea_closes() {
    for (code, apps) in [(3010, &[4][..]), (5010, &[4][..]), (2001, &[99][..])] {
        let mut h = H::new(HIGHER, true);
        let i = h.enter_wait_i_cea();
        h.ev(Event::RcvCea {
            conn: i,
            result_code: code,
            caps: remote_caps(HIGHER, apps),
            on_tls: false,
        });
        assert_eq!(
            h.actions(),
            vec![Action::Close {
                conn: i,
                reason: CloseReason::Capabilities
            }]
        );
        assert_eq!(h.state(), State::Closed);
        assert!(h.fsm.next_timeout().is_some(), "reconnect is scheduled");
    }
}

/// Issue 12: a peer not set to in-band TLS answers our plain CER (NO_INBAND_SECURITY) with a
/// CEA that says TLS only: it is about to start a handshake, so we must not open in clear
/// text (RFC 6733 §6.10, §7.1.5). NO_INBAND_SECURITY among the values, or a connection that
/// is TLS already, is fine.
#[test]
fn wait_i_cea_tls_only_cea_to_a_plain_peer_closes() {
    use crate::peer::capabilities::inband::{NO_INBAND_SECURITY as NONE, TLS};
    for (isi, on_tls, opens) in [
        (&[TLS][..], false, false),
        (&[7][..], false, false),
        (&[TLS][..], true, true),
        (&[NONE, TLS][..], false, true),
        (&[][..], false, true),
    ] {
        let mut h = H::new(HIGHER, true);
        let i = h.enter_wait_i_cea();
        h.ev(Event::RcvCea {
            conn: i,
            result_code: 2001,
            caps: Capabilities {
                inband_security_ids: isi.to_vec(),
                ..remote_caps(HIGHER, &[4])
            },
            on_tls,
        });
        let actions = h.actions();
        if opens {
            assert_eq!(h.state(), State::IOpen, "{isi:?} on_tls={on_tls}");
            assert!(
                !actions.iter().any(|a| matches!(a, Action::StartTls { .. })),
                "no handshake on {isi:?} on_tls={on_tls}: {actions:?}"
            );
        } else {
            assert_eq!(
                actions,
                vec![Action::Close {
                    conn: i,
                    reason: CloseReason::NoCommonSecurity
                }],
                "{isi:?}"
            );
            assert_eq!(h.state(), State::Closed);
            assert!(h.fsm.next_timeout().is_some(), "reconnect is scheduled");
        }
    }
}

#[test]
fn wait_i_cea_r_conn_cer_election_won() {
    let mut h = H::new(LOWER, true);
    let i = h.enter_wait_i_cea();
    let r = h.accepted();
    h.ev(Event::RConnCer {
        conn: r,
        cer: cer(LOWER, 9),
    });
    assert_eq!(
        h.actions(),
        vec![
            Action::Accept { conn: r },
            Action::Close {
                conn: i,
                reason: CloseReason::Election
            },
            cea_ok(r, 9),
            up(r, LOWER),
            Action::Usable {
                conn: r,
                usable: true
            },
        ]
    );
    assert_eq!(h.state(), State::ROpen);
}

#[test]
fn wait_i_cea_r_conn_cer_election_lost() {
    let mut h = H::new(HIGHER, true);
    h.enter_wait_i_cea();
    let r = h.accepted();
    h.ev(Event::RConnCer {
        conn: r,
        cer: cer(HIGHER, 9),
    });
    assert_eq!(h.actions(), vec![Action::Accept { conn: r }]);
    assert_eq!(h.state(), State::WaitReturns);
}

#[test]
fn wait_i_cea_peer_disc_closes() {
    let mut h = H::new(HIGHER, true);
    let i = h.enter_wait_i_cea();
    h.ev(Event::PeerDisc { conn: i });
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.actions(), vec![]);
}

#[test]
fn wait_i_cea_non_cea_is_error() {
    let mut h = H::new(HIGHER, true);
    let i = h.enter_wait_i_cea();
    assert!(!h.ev(Event::RcvNonCea { conn: i }));
    assert_eq!(
        h.actions(),
        vec![Action::Close {
            conn: i,
            reason: CloseReason::ProtocolError
        }]
    );
    assert_eq!(h.state(), State::Closed);
}

#[test]
fn wait_i_cea_timeout_is_error() {
    let mut h = H::new(HIGHER, true);
    let i = h.enter_wait_i_cea();
    h.fire();
    assert_eq!(
        h.actions(),
        vec![Action::Close {
            conn: i,
            reason: CloseReason::Timeout
        }]
    );
    assert_eq!(h.state(), State::Closed);
}

// ---- Wait-Conn-Ack/Elect ----

fn to_elect(host: &str) -> (H, ConnId, ConnId) {
    let mut h = H::new(host, true);
    let i = h.enter_wait_conn_ack();
    let r = h.accepted();
    h.ev(Event::RConnCer {
        conn: r,
        cer: cer(host, 5),
    });
    h.actions();
    assert_eq!(h.state(), State::WaitConnAckElect);
    (h, i, r)
}

#[test]
fn elect_conn_ack_election_won() {
    let (mut h, i, r) = to_elect(LOWER);
    h.ev(Event::RcvConnAck { conn: i });
    assert_eq!(
        h.actions(),
        vec![
            Action::Send {
                conn: i,
                msg: Outgoing::Cer
            },
            Action::Close {
                conn: i,
                reason: CloseReason::Election
            },
            cea_ok(r, 5),
            up(r, LOWER),
            Action::Usable {
                conn: r,
                usable: true
            },
        ]
    );
    assert_eq!(h.state(), State::ROpen);
}

#[test]
fn elect_conn_ack_election_lost() {
    let (mut h, i, _) = to_elect(HIGHER);
    h.ev(Event::RcvConnAck { conn: i });
    assert_eq!(
        h.actions(),
        vec![Action::Send {
            conn: i,
            msg: Outgoing::Cer
        }]
    );
    assert_eq!(h.state(), State::WaitReturns);
}

#[test]
fn elect_conn_nack_answers_the_responder() {
    let (mut h, i, r) = to_elect(HIGHER);
    h.ev(Event::RcvConnNack { conn: i });
    assert_eq!(
        h.actions(),
        vec![
            cea_ok(r, 5),
            up(r, HIGHER),
            Action::Usable {
                conn: r,
                usable: true
            }
        ]
    );
    assert_eq!(h.state(), State::ROpen);
}

#[test]
fn elect_r_peer_disc_back_to_wait_conn_ack() {
    let (mut h, i, r) = to_elect(HIGHER);
    h.ev(Event::PeerDisc { conn: r });
    assert_eq!(h.state(), State::WaitConnAck);
    assert!(h.fsm.owns(i) && !h.fsm.owns(r));
}

#[test]
fn elect_second_r_conn_cer_is_rejected() {
    let (mut h, _, _) = to_elect(HIGHER);
    let r2 = h.accepted();
    h.ev(Event::RConnCer {
        conn: r2,
        cer: cer(HIGHER, 6),
    });
    assert_eq!(
        h.actions(),
        vec![Action::Close {
            conn: r2,
            reason: CloseReason::Rejected
        }]
    );
    assert_eq!(h.state(), State::WaitConnAckElect);
}

#[test]
fn elect_connect_timeout_counts_as_nack_and_opens_the_responder_side() {
    let (mut h, i, r) = to_elect(HIGHER);
    h.fire();
    assert_eq!(
        h.actions(),
        vec![
            Action::Close {
                conn: i,
                reason: CloseReason::Timeout
            },
            cea_ok(r, 5),
            up(r, HIGHER),
            Action::Usable {
                conn: r,
                usable: true
            },
        ]
    );
    assert_eq!(h.state(), State::ROpen);
}

// ---- Wait-Returns (election lost) ----

fn to_wait_returns() -> (H, ConnId, ConnId) {
    let (mut h, i, r) = to_elect(HIGHER);
    h.ev(Event::RcvConnAck { conn: i });
    h.actions();
    assert_eq!(h.state(), State::WaitReturns);
    (h, i, r)
}

#[test]
fn wait_returns_i_rcv_cea_drops_responder() {
    let (mut h, i, r) = to_wait_returns();
    h.ev(Event::RcvCea {
        conn: i,
        result_code: 2001,
        caps: remote_caps(HIGHER, &[4]),
        on_tls: false,
    });
    assert_eq!(
        h.actions(),
        vec![
            Action::Close {
                conn: r,
                reason: CloseReason::Election
            },
            up(i, HIGHER),
            Action::Usable {
                conn: i,
                usable: true
            },
        ]
    );
    assert_eq!(h.state(), State::IOpen);
}

#[test]
fn wait_returns_i_peer_disc_uses_responder() {
    let (mut h, i, r) = to_wait_returns();
    h.ev(Event::PeerDisc { conn: i });
    assert_eq!(
        h.actions(),
        vec![
            cea_ok(r, 5),
            up(r, HIGHER),
            Action::Usable {
                conn: r,
                usable: true
            }
        ]
    );
    assert_eq!(h.state(), State::ROpen);
}

#[test]
fn wait_returns_error_cea_falls_back_to_responder() {
    let (mut h, i, r) = to_wait_returns();
    h.ev(Event::RcvCea {
        conn: i,
        result_code: 5012,
        caps: remote_caps(HIGHER, &[4]),
        on_tls: false,
    });
    assert_eq!(
        h.actions(),
        vec![
            Action::Close {
                conn: i,
                reason: CloseReason::Capabilities
            },
            cea_ok(r, 5),
            up(r, HIGHER),
            Action::Usable {
                conn: r,
                usable: true
            },
        ]
    );
    assert_eq!(h.state(), State::ROpen);
}

#[test]
fn wait_returns_r_peer_disc_waits_for_cea() {
    let (mut h, i, r) = to_wait_returns();
    h.ev(Event::PeerDisc { conn: r });
    assert_eq!(h.actions(), vec![]);
    assert_eq!(h.state(), State::WaitICea);
    h.ev(Event::RcvCea {
        conn: i,
        result_code: 2001,
        caps: remote_caps(HIGHER, &[4]),
        on_tls: false,
    });
    assert_eq!(h.state(), State::IOpen);
}

#[test]
fn wait_returns_r_conn_cer_is_rejected() {
    let (mut h, _, _) = to_wait_returns();
    let r2 = h.accepted();
    h.ev(Event::RConnCer {
        conn: r2,
        cer: cer(HIGHER, 6),
    });
    assert_eq!(
        h.actions(),
        vec![Action::Close {
            conn: r2,
            reason: CloseReason::Rejected
        }]
    );
    assert_eq!(h.state(), State::WaitReturns);
}

#[test]
fn wait_returns_timeout_is_error() {
    let (mut h, i, r) = to_wait_returns();
    h.fire();
    assert_eq!(
        h.actions(),
        vec![
            Action::Close {
                conn: i,
                reason: CloseReason::Timeout
            },
            Action::Close {
                conn: r,
                reason: CloseReason::Timeout
            },
        ]
    );
    assert_eq!(h.state(), State::Closed);
}

#[test]
fn wait_returns_non_cea_keeps_responder() {
    let (mut h, i, r) = to_wait_returns();
    h.ev(Event::RcvNonCea { conn: i });
    let a = h.actions();
    assert_eq!(
        a[0],
        Action::Close {
            conn: i,
            reason: CloseReason::ProtocolError
        }
    );
    assert_eq!(a[1], cea_ok(r, 5));
    assert_eq!(h.state(), State::ROpen);
}

// ---- R-Open / I-Open ----

fn open_both() -> Vec<(H, ConnId)> {
    let mut r_open = H::new(HIGHER, true);
    let r = r_open.accepted();
    r_open.ev(Event::RConnCer {
        conn: r,
        cer: cer(HIGHER, 1),
    });
    r_open.actions();
    assert_eq!(r_open.state(), State::ROpen);
    let mut i_open = H::new(HIGHER, true);
    let i = i_open.enter_i_open();
    vec![(r_open, r), (i_open, i)]
}

#[test]
fn open_send_and_receive_messages() {
    for (mut h, c) in open_both() {
        assert_eq!(h.fsm.send_target(), Some(c));
        assert!(h.ev(Event::RcvMessage { conn: c }), "Process");
        assert!(
            !h.ev(Event::RcvMessage { conn: ConnId(999) }),
            "not our connection"
        );
        assert_eq!(h.actions(), vec![]);
    }
}

#[test]
fn open_dwr_is_answered() {
    for (mut h, c) in open_both() {
        let ids = MsgIds {
            hop_by_hop: 77,
            end_to_end: 78,
        };
        let s = h.state();
        h.ev(Event::RcvDwr { conn: c, ids });
        assert_eq!(
            h.actions(),
            vec![Action::Send {
                conn: c,
                msg: Outgoing::Dwa { ids }
            }]
        );
        assert_eq!(h.state(), s);
    }
}

#[test]
fn open_watchdog_sends_dwr_and_dwa_clears_it() {
    for (mut h, c) in open_both() {
        h.fire();
        assert_eq!(
            h.actions(),
            vec![Action::Send {
                conn: c,
                msg: Outgoing::Dwr
            }]
        );
        h.ev(Event::RcvDwa { conn: c });
        h.fire();
        assert_eq!(
            h.actions(),
            vec![Action::Send {
                conn: c,
                msg: Outgoing::Dwr
            }],
            "answered DWR: no failover"
        );
    }
}

#[test]
fn open_r_conn_cer_is_rejected() {
    for (mut h, c) in open_both() {
        let r2 = h.accepted();
        let s = h.state();
        h.ev(Event::RConnCer {
            conn: r2,
            cer: cer(HIGHER, 3),
        });
        assert_eq!(
            h.actions(),
            vec![Action::Close {
                conn: r2,
                reason: CloseReason::Rejected
            }]
        );
        assert_eq!(h.state(), s);
        assert_eq!(h.fsm.open_conn(), Some(c));
    }
}

/// RFC 6733 §5.6.1: R-Open, R-Rcv-CER: R-Snd-CEA -> R-Open (I-Open, I-Rcv-CER: I-Snd-CEA ->
/// I-Open). The CEA is negative (5012, as freeDiameter's `fd_p_ce_msgrcv`) and the
/// connection stays open. (Until session 19 this closed the connection without a CEA.)
#[test]
fn open_cer_on_open_connection_is_answered_and_the_connection_stays() {
    for (mut h, c) in open_both() {
        let state = h.state();
        h.ev(Event::RcvCer {
            conn: c,
            cer: cer(HIGHER, 3),
        });
        assert_eq!(
            h.actions(),
            vec![Action::Send {
                conn: c,
                msg: Outgoing::Cea {
                    ids: MsgIds {
                        hop_by_hop: 3,
                        end_to_end: 1003
                    },
                    result_code: 5012,
                    error_message: Some("no CER allowed on an open connection".into()),
                }
            }]
        );
        assert_eq!(h.state(), state);
        assert_eq!(h.fsm.open_conn(), Some(c));
    }
}

#[test]
fn open_stop_drains_then_sends_dpr() {
    for (mut h, c) in open_both() {
        h.ev(Event::Stop {
            cause: DisconnectCause::Rebooting,
        });
        assert_eq!(
            h.actions(),
            vec![Action::Usable {
                conn: c,
                usable: false
            }]
        );
        assert_eq!(h.fsm.send_target(), None, "no new requests while draining");
        assert!(
            h.ev(Event::RcvMessage { conn: c }),
            "answers still processed"
        );
        h.ev(Event::Drained);
        assert_eq!(
            h.actions(),
            vec![Action::Send {
                conn: c,
                msg: Outgoing::Dpr {
                    cause: DisconnectCause::Rebooting
                }
            }]
        );
        assert_eq!(h.state(), State::Closing);
    }
}

#[test]
fn open_stop_sends_dpr_when_drain_times_out() {
    for (mut h, c) in open_both() {
        let stopped_at = h.now;
        h.ev(Event::Stop {
            cause: DisconnectCause::Busy,
        });
        h.actions();
        // The watchdog (Tw ~30 s) fires after the drain timeout (10 s).
        h.fire();
        assert_eq!(h.now, stopped_at + Duration::from_secs(10));
        assert_eq!(
            h.actions(),
            vec![Action::Send {
                conn: c,
                msg: Outgoing::Dpr {
                    cause: DisconnectCause::Busy
                }
            }]
        );
        assert_eq!(h.state(), State::Closing);
    }
}

/// Each Disconnect-Cause and the reconnect delay it sets (§5.4.3).
fn causes() -> [(DisconnectCause, Option<Duration>); 3] {
    [
        (DisconnectCause::Rebooting, Some(TC)),
        (DisconnectCause::Busy, Some(TC * 4)),
        (DisconnectCause::DoNotWantToTalkToYou, None),
    ]
}

/// Closed, with the reconnect timer the peer's `cause` asked for.
fn closed_then_reconnects(h: &H, cause: DisconnectCause, reconnect: Option<Duration>) {
    assert_eq!(h.state(), State::Closed);
    assert_eq!(
        h.fsm.next_timeout().map(|t| t - h.now),
        reconnect,
        "{cause:?}"
    );
}

#[test]
fn open_rcv_dpr_answers_and_honours_the_cause() {
    for (cause, reconnect) in causes() {
        for (mut h, c) in open_both() {
            let ids = MsgIds {
                hop_by_hop: 5,
                end_to_end: 6,
            };
            h.ev(Event::RcvDpr {
                conn: c,
                ids,
                cause,
            });
            // RFC 6733 §5.6.1: R-/I-Rcv-DPR, R-/I-Snd-DPA -> Closing; the DPR's sender
            // closes (§5.4), not us.
            assert_eq!(
                h.actions(),
                vec![
                    Action::Send {
                        conn: c,
                        msg: Outgoing::Dpa { ids }
                    },
                    Action::Usable {
                        conn: c,
                        usable: false
                    },
                ]
            );
            assert_eq!(h.state(), State::Closing);
            assert_eq!(h.fsm.send_target(), None);
            assert_eq!(h.fsm.next_timeout(), Some(h.now + Duration::from_secs(5)));
            // Closing, R-/I-Peer-Disc: Disc -> Closed, then the cause's reconnect timer.
            h.ev(Event::PeerDisc { conn: c });
            assert_eq!(h.actions(), vec![Action::Down { conn: c }]);
            closed_then_reconnects(&h, cause, reconnect);
        }
    }
}

#[test]
fn do_not_want_to_talk_still_accepts_the_peer_and_start_reconnects() {
    let mut h = H::new(HIGHER, true);
    let c = h.enter_i_open();
    h.ev(Event::RcvDpr {
        conn: c,
        ids: MsgIds {
            hop_by_hop: 1,
            end_to_end: 1,
        },
        cause: DisconnectCause::DoNotWantToTalkToYou,
    });
    h.ev(Event::PeerDisc { conn: c });
    h.actions();
    assert_eq!(h.fsm.next_timeout(), None);
    h.ev(Event::Start);
    assert!(matches!(h.actions().as_slice(), [Action::Connect { .. }]));
}

#[test]
fn open_peer_disc_goes_down_and_reconnects_after_tc() {
    for (mut h, c) in open_both() {
        h.ev(Event::PeerDisc { conn: c });
        assert_eq!(h.actions(), vec![Action::Down { conn: c }]);
        assert_eq!(h.state(), State::Closed);
        assert_eq!(h.fsm.next_timeout(), Some(h.now + TC));
        assert_eq!(
            h.fsm.watchdog().state(),
            crate::peer::watchdog::WatchdogState::Down
        );
    }
}

#[test]
fn reconnect_after_failure_reopens_through_three_dwas() {
    let mut h = H::new(HIGHER, true);
    let c = h.enter_i_open();
    h.ev(Event::PeerDisc { conn: c });
    h.actions();
    h.fire(); // reconnect
    let i = match h.actions().as_slice() {
        [Action::Connect { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    h.ev(Event::RcvConnAck { conn: i });
    h.ev(Event::RcvCea {
        conn: i,
        result_code: 2001,
        caps: remote_caps(HIGHER, &[4]),
        on_tls: false,
    });
    let a = h.actions();
    assert_eq!(
        a[0],
        Action::Send {
            conn: i,
            msg: Outgoing::Cer
        }
    );
    assert_eq!(a[1], up(i, HIGHER));
    assert_eq!(
        a[2],
        Action::Send {
            conn: i,
            msg: Outgoing::Dwr
        }
    );
    assert_eq!(a.len(), 3, "not usable before three DWAs: {a:?}");
    assert_eq!(h.fsm.send_target(), None);
    for n in 0..3 {
        if n > 0 {
            h.fire();
            assert_eq!(
                h.actions(),
                vec![Action::Send {
                    conn: i,
                    msg: Outgoing::Dwr
                }]
            );
        }
        h.ev(Event::RcvDwa { conn: i });
    }
    assert_eq!(
        h.actions(),
        vec![Action::Usable {
            conn: i,
            usable: true
        }]
    );
    assert_eq!(h.fsm.send_target(), Some(i));
}

#[test]
fn watchdog_failover_failback_and_close() {
    for (mut h, c) in open_both() {
        h.fire();
        assert_eq!(
            h.actions(),
            vec![Action::Send {
                conn: c,
                msg: Outgoing::Dwr
            }]
        );
        h.fire();
        assert_eq!(
            h.actions(),
            vec![
                Action::Usable {
                    conn: c,
                    usable: false
                },
                Action::Failover { conn: c }
            ]
        );
        assert_eq!(h.fsm.send_target(), None);
        assert!(h.ev(Event::RcvMessage { conn: c }));
        assert_eq!(
            h.actions(),
            vec![Action::Usable {
                conn: c,
                usable: true
            }]
        );
        // The DWR is still unanswered (RFC 3539 keeps `pending` on failback by other
        // traffic), so the next silent Tw suspects again, and the one after closes.
        h.fire();
        assert_eq!(
            h.actions(),
            vec![
                Action::Usable {
                    conn: c,
                    usable: false
                },
                Action::Failover { conn: c }
            ]
        );
        h.fire();
        assert_eq!(
            h.actions(),
            vec![
                Action::Close {
                    conn: c,
                    reason: CloseReason::Watchdog
                },
                Action::Down { conn: c }
            ]
        );
        assert_eq!(h.state(), State::Closed);
    }
}

// ---- Closing ----

/// We close the open connection `c` (DPA received, or Closing timed out) and it goes down.
fn disconnected(c: ConnId) -> Vec<Action> {
    vec![
        Action::Close {
            conn: c,
            reason: CloseReason::Disconnect,
        },
        Action::Down { conn: c },
    ]
}

fn to_closing() -> Vec<(H, ConnId)> {
    open_both()
        .into_iter()
        .map(|(mut h, c)| {
            h.ev(Event::Stop {
                cause: DisconnectCause::Rebooting,
            });
            h.ev(Event::Drained);
            h.actions();
            assert_eq!(h.state(), State::Closing);
            (h, c)
        })
        .collect()
}

#[test]
fn closing_still_processes_messages() {
    for (mut h, c) in to_closing() {
        assert!(h.ev(Event::RcvMessage { conn: c }));
        assert_eq!(h.state(), State::Closing);
    }
}

#[test]
fn closing_dpa_disconnects_without_reconnect() {
    for (mut h, c) in to_closing() {
        h.ev(Event::RcvDpa { conn: c });
        assert_eq!(h.actions(), disconnected(c));
        assert_eq!(h.state(), State::Closed);
        assert_eq!(h.fsm.next_timeout(), None, "we stopped: no reconnect");
    }
}

#[test]
fn closing_timeout_disconnects() {
    for (mut h, c) in to_closing() {
        h.fire();
        assert_eq!(h.actions(), disconnected(c));
        assert_eq!(h.state(), State::Closed);
    }
}

#[test]
fn closing_peer_disc() {
    for (mut h, c) in to_closing() {
        h.ev(Event::PeerDisc { conn: c });
        assert_eq!(h.actions(), vec![Action::Down { conn: c }]);
        assert_eq!(h.state(), State::Closed);
    }
}

#[test]
fn closing_crossing_dpr_is_answered() {
    for (mut h, c) in to_closing() {
        let ids = MsgIds {
            hop_by_hop: 1,
            end_to_end: 2,
        };
        h.ev(Event::RcvDpr {
            conn: c,
            ids,
            cause: DisconnectCause::Rebooting,
        });
        let deadline = h.fsm.next_timeout();
        assert_eq!(
            h.actions(),
            vec![Action::Send {
                conn: c,
                msg: Outgoing::Dpa { ids }
            }]
        );
        // Both sides sent a DPR: each disconnects on the DPA it receives (§5.4).
        assert_eq!(h.state(), State::Closing);
        assert_eq!(
            h.fsm.next_timeout(),
            deadline,
            "the DPA timeout still bounds it"
        );
        h.ev(Event::RcvDpa { conn: c });
        assert_eq!(h.actions(), disconnected(c));
        assert_eq!(h.state(), State::Closed);
        assert_eq!(h.fsm.next_timeout(), None, "we stopped: no reconnect");
    }
}

// ---- Closing after our DPA (RFC 6733 §5.4, §5.6.1) ----

fn dpr_ids() -> MsgIds {
    MsgIds {
        hop_by_hop: 9,
        end_to_end: 10,
    }
}

/// Open, then the peer's DPR with `cause` answered: Closing, waiting for the peer to close.
fn to_closing_after_dpa(cause: DisconnectCause) -> Vec<(H, ConnId)> {
    open_both()
        .into_iter()
        .map(|(mut h, c)| {
            h.ev(Event::RcvDpr {
                conn: c,
                ids: dpr_ids(),
                cause,
            });
            h.actions();
            assert_eq!(h.state(), State::Closing);
            (h, c)
        })
        .collect()
}

#[test]
fn closing_after_dpa_waits_for_the_peer_to_close() {
    for (mut h, c) in to_closing_after_dpa(DisconnectCause::Rebooting) {
        // Answers to our requests (and the peer's requests) are still processed.
        assert!(h.ev(Event::RcvMessage { conn: c }));
        // A DPA for a DPR we never sent changes nothing.
        h.ev(Event::RcvDpa { conn: c });
        assert_eq!(h.actions(), vec![]);
        assert_eq!(h.state(), State::Closing);
        assert!(
            h.fsm.owns(c),
            "the connection stays open until the peer closes it"
        );
    }
}

#[test]
fn closing_after_dpa_timeout_closes_and_reconnects_per_cause() {
    for (cause, reconnect) in causes() {
        for (mut h, c) in to_closing_after_dpa(cause) {
            let dpa_sent = h.now;
            h.fire();
            assert_eq!(h.now - dpa_sent, Duration::from_secs(5), "the DPA timeout");
            // Closing, Timeout: Error -> Closed
            assert_eq!(h.actions(), disconnected(c));
            closed_then_reconnects(&h, cause, reconnect);
        }
    }
}

#[test]
fn closing_after_dpa_repeated_dpr_is_answered_again() {
    for (mut h, c) in to_closing_after_dpa(DisconnectCause::Rebooting) {
        let deadline = h.fsm.next_timeout();
        h.ev(Event::RcvDpr {
            conn: c,
            ids: dpr_ids(),
            cause: DisconnectCause::Busy,
        });
        assert_eq!(
            h.actions(),
            vec![Action::Send {
                conn: c,
                msg: Outgoing::Dpa { ids: dpr_ids() }
            }]
        );
        assert_eq!(h.fsm.next_timeout(), deadline);
        h.ev(Event::PeerDisc { conn: c });
        h.actions();
        assert_eq!(
            h.fsm.next_timeout(),
            Some(h.now + TC * 4),
            "the last cause counts"
        );
    }
}

#[test]
fn stop_in_closing_after_dpa_ends_by_the_dpa_timeout_without_reconnect() {
    for (mut h, c) in to_closing_after_dpa(DisconnectCause::Rebooting) {
        let deadline = h.fsm.next_timeout();
        h.ev(Event::Stop {
            cause: DisconnectCause::Rebooting,
        });
        assert_eq!(
            h.actions(),
            vec![],
            "nothing more to send: the DPA went out"
        );
        assert_eq!(h.fsm.next_timeout(), deadline, "not extended by the stop");
        h.fire();
        assert_eq!(h.actions(), disconnected(c));
        assert_eq!(h.state(), State::Closed);
        assert_eq!(h.fsm.next_timeout(), None, "stopped: no reconnect");
    }
}

#[test]
fn dpr_while_draining_is_answered_and_ends_by_the_dpa_timeout() {
    for (mut h, c) in open_both() {
        h.ev(Event::Stop {
            cause: DisconnectCause::Rebooting,
        });
        h.actions();
        h.ev(Event::RcvDpr {
            conn: c,
            ids: dpr_ids(),
            cause: DisconnectCause::Rebooting,
        });
        assert_eq!(
            h.actions(),
            vec![Action::Send {
                conn: c,
                msg: Outgoing::Dpa { ids: dpr_ids() }
            }]
        );
        assert_eq!(h.state(), State::Closing);
        h.ev(Event::Drained);
        assert_eq!(h.actions(), vec![], "no DPR after the peer's");
        h.ev(Event::PeerDisc { conn: c });
        assert_eq!(h.actions(), vec![Action::Down { conn: c }]);
        assert_eq!(h.fsm.next_timeout(), None, "stopped: no reconnect");
    }
}

// ---- Stop outside open states, backoff ----

#[test]
fn stop_while_connecting_cleans_up_and_stays_closed() {
    let mut h = H::new(HIGHER, true);
    let i = h.enter_wait_i_cea();
    h.ev(Event::Stop {
        cause: DisconnectCause::Rebooting,
    });
    assert_eq!(
        h.actions(),
        vec![Action::Close {
            conn: i,
            reason: CloseReason::Stopped
        }]
    );
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.fsm.next_timeout(), None);
}

#[test]
fn reconnect_backoff_doubles_up_to_sixteen_tc() {
    let mut h = H::new(HIGHER, true);
    let mut delays = Vec::new();
    let i = h.enter_wait_conn_ack();
    h.ev(Event::RcvConnNack { conn: i });
    for _ in 0..6 {
        let at = h.now;
        h.fire();
        delays.push((h.now - at).as_secs() / TC.as_secs());
        let i = match h.actions().as_slice() {
            [Action::Connect { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        };
        h.ev(Event::RcvConnNack { conn: i });
    }
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 16]);
    // Success resets the backoff.
    h.fire();
    let i = match h.actions().as_slice() {
        [Action::Connect { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    h.ev(Event::RcvConnAck { conn: i });
    h.ev(Event::RcvCea {
        conn: i,
        result_code: 2001,
        caps: remote_caps(HIGHER, &[4]),
        on_tls: false,
    });
    h.ev(Event::PeerDisc { conn: i });
    assert_eq!(h.fsm.next_timeout(), Some(h.now + TC));
}

#[test]
fn start_while_draining_cancels_the_stop() {
    for (mut h, c) in open_both() {
        h.ev(Event::Stop {
            cause: DisconnectCause::Rebooting,
        });
        h.actions();
        h.ev(Event::Start);
        assert_eq!(
            h.actions(),
            vec![Action::Usable {
                conn: c,
                usable: true
            }]
        );
        assert_eq!(h.fsm.send_target(), Some(c));
        h.ev(Event::Drained);
        assert_eq!(h.actions(), vec![], "no DPR: not stopping any more");
    }
}

mod origin_state;
