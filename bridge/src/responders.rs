//! Built-in [`Application`]s: what answers when no SIP server is attached.
//!
//! - [`Unsupported`]: every request gets 3001 DIAMETER_COMMAND_UNSUPPORTED — DESIGN §3, never
//!   leave a peer waiting. (`dmbridge run` itself serves the SIP server's workers through
//!   the runtime's shared-memory application, `dmrun::shm_app`, which answers 3001 per
//!   command no worker serves, and 3004 while no worker is attached.)
//! - [`Echo`] (`dmbridge run --echo`): an in-process responder for benchmarks and interop
//!   checks. It answers 2001 with the request's own AVPs, minus those the node sets itself
//!   (Session-Id, Origin-*, Destination-*, Route-Record, Proxy-Info), so test_app's Test-AVP
//!   and similar "echo me" AVPs come back as their servers expect.

use bytes::Bytes;
use dmnode::arena::Arena;
use dmproto::avp::AvpFlags;
use dmproto::MessageWriter;

use crate::app::{AnswerBody, Application, IncomingRequest, Responder};
use dmproto::avp_code as avp;

/// Answers 3001 DIAMETER_COMMAND_UNSUPPORTED with the E bit.
pub struct Unsupported;

impl Application for Unsupported {
    fn on_request(&self, _request: IncomingRequest, responder: Responder) {
        let mut w = MessageWriter::avps_only();
        w.u32(avp::RESULT_CODE, AvpFlags::M, 0, 3001);
        let avps = w.finish().unwrap_or_default();
        responder.answer(AnswerBody {
            avps,
            is_error: true,
        });
    }
}

/// Answers 2001, echoing the request's application AVPs.
pub struct Echo;

/// AVPs the node puts in every answer itself, or that belong to the request's path only.
const NOT_ECHOED: [u32; 7] = [
    263, // Session-Id
    avp::ORIGIN_HOST,
    avp::ORIGIN_REALM,
    avp::DESTINATION_HOST,
    avp::DESTINATION_REALM,
    avp::ROUTE_RECORD,
    284, // Proxy-Info
];

impl Application for Echo {
    fn on_request(&self, request: IncomingRequest, responder: Responder) {
        responder.answer(AnswerBody {
            avps: echo_avps(&request.message),
            is_error: false,
        });
    }
}

/// Bytes of the chunk echoed bodies are split off: ~100 bodies of test_app's size.
const ECHO_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The chunk this thread's echoed bodies are split off (no allocation per request, issue
    /// 15 item 2, so that `run --echo` counts the node's work, not the responder's). A body
    /// lives until the node has built its answer from it, so the chunk is free again when it
    /// runs out and is rewound in place ([`Arena::room`]). Bound: one chunk per thread that
    /// answers (or one body's size, when larger).
    static ECHO_ARENA: std::cell::RefCell<Arena> =
        std::cell::RefCell::new(Arena::with_chunk(ECHO_CHUNK));
}

/// The request's top-level AVPs minus those the node sets itself, each padded.
pub fn echo_avps(msg: &dmproto::Message) -> Bytes {
    ECHO_ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        let out = arena.room(msg.body.len());
        for a in msg.avp_refs().map_while(Result::ok) {
            if a.vendor == 0 && NOT_ECHOED.contains(&a.code) {
                continue;
            }
            out.extend_from_slice(a.raw);
            let len = out.len();
            out.resize(dmproto::avp::padded(len), 0);
        }
        out.split().freeze()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{PeerInfo, Reply};
    use dmproto::{Header, Message};

    fn request() -> IncomingRequest {
        let mut w = MessageWriter::new(Header::request(16777214, 16777215, 1, 2));
        w.str(263, AvpFlags::M, 0, "s;1");
        w.str(avp::ORIGIN_HOST, AvpFlags::M, 0, "c.test.local");
        w.str(avp::DESTINATION_REALM, AvpFlags::M, 0, "test.local");
        w.str(1, AvpFlags::M, 0, "odd"); // 3 bytes: padding matters
        w.i32(345678, 0, 999999, 7);
        IncomingRequest {
            peer: std::sync::Arc::new(PeerInfo {
                host: "c.test.local".into(),
                realm: "test.local".into(),
            }),
            message: Message::decode(w.finish().unwrap()).unwrap(),
        }
    }

    #[tokio::test]
    async fn echo_returns_application_avps_only() {
        let (r, rx) = Responder::new();
        Echo.on_request(request(), r);
        let Reply::Answer(body) = rx.await else {
            panic!("no answer")
        };
        assert!(!body.is_error);
        let codes: Vec<(u32, u32)> = dmproto::AvpRefs::new(&body.avps, 0)
            .map(|a| a.map(|a| (a.code, a.vendor)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(codes, vec![(1, 0), (345678, 999999)]);
    }

    #[test]
    fn echoed_bodies_share_a_chunk_rewound_once_dropped() {
        let req = request().message;
        let first = echo_avps(&req);
        let (start, len) = (first.as_ptr(), first.len());
        let second = echo_avps(&req);
        assert_eq!(second.as_ptr(), start.wrapping_add(len), "the same chunk");
        assert_eq!(second, first);
        drop((first, second));
        let rewound = (0..2 * ECHO_CHUNK / len).any(|_| echo_avps(&req).as_ptr() == start);
        assert!(rewound, "rewound in place once its bodies were dropped");
    }

    #[tokio::test]
    async fn unsupported_is_3001_with_e() {
        let (r, rx) = Responder::new();
        Unsupported.on_request(request(), r);
        let Reply::Answer(body) = rx.await else {
            panic!("no answer")
        };
        assert!(body.is_error);
        let a = dmproto::AvpRefs::new(&body.avps, 0)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.code, dmproto::value::decode_u32(a.data).unwrap()),
            (268, 3001)
        );
    }
}
