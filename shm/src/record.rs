//! The records carried in the rings: binary, little-endian, versioned.
//!
//! ```text
//! byte 0      kind (1 IncomingRequest, 2 Reply, 3 OutgoingRequest, 4 Answer)
//! byte 1      record format version (RECORD_VERSION; an older one, down to
//!             MIN_RECORD_VERSION, is still read)
//! byte 2      flags: in an OutgoingRequest, bit 0 = the sender reads Answers of
//!             version 3 (`peer_ns`), bit 1 = reply-to (a u64 reply address and the
//!             u64 send stamp follow the fixed part); in an Answer, bit 0 = the
//!             outcome of another attachment's reply-to request (the sender's send
//!             stamp, u64, follows `peer_ns`); zero elsewhere
//! byte 3      reserved, zero
//! then        fixed-size fields, then strings as u32 length + bytes
//! ```
//!
//! Only the Answer changed from version 2 to 3, so a library and a bridge of different
//! builds still talk: every other record is written as version 2 (a version-2 reader takes
//! it, and skips byte 2 as it always did), and the bridge writes a worker's Answers as
//! version 3 only when that worker's OutgoingRequest said it reads them.
//!
//! Reply-to (an OutgoingRequest whose outcome goes to another attachment of the same
//! bridge) changed no version either: a library sets the flag only for a bridge that
//! offered the capability (the reply address in its slot header, [`crate::segment`]), and
//! an older library never sets it, so its records decode as before. The outcome goes to the
//! named attachment as a version-3 Answer with its own flag: only a library that knows
//! reply-to can learn its reply address, and every such library reads version 3.
//!
//! ```text
//! OutgoingRequest, reply-to (byte 2 bit 1):
//!   handle u64 (the receiver's token), app_id u32, cmd_code u32, timeout_ms u32,
//!   reply address u64, send stamp u64 (the sender's CLOCK_MONOTONIC, ns), AVPs u32 + bytes
//! Answer version 3, reply-to (byte 2 bit 0):
//!   handle u64, class u32, result_code u32, bridge_ns u64, peer_ns u64,
//!   send stamp u64 (echoed from the request), AVPs u32 + bytes, error u32 + bytes
//! ```
//!
//! The send stamp lets the receiving library count the worker's round trip of a request
//! another process sent ([`crate::times`]): neither the sender (which never sees the
//! outcome) nor the receiver (which never saw the send) has both ends otherwise. Records
//! without the flags are byte for byte those of before.
//!
//! Decoding borrows from the caller's buffer and checks every length, so a
//! damaged record is an [`Error::Protocol`], never a panic or an
//! out-of-bounds read. Strings are bytes on the wire; the decoders check
//! UTF-8 where the field is text.

use crate::error::{Error, Result};

/// Version of the record formats below.
/// Version 2: an [`Answer`] carries the bridge's round trip (`bridge_ns`).
/// Version 3: an [`Answer`] carries the bridge's wait for the peer (`peer_ns`); the other
/// records are as in version 2 and are still written as version 2 (see the module doc).
pub const RECORD_VERSION: u8 = 3;
/// The oldest record version still read: a version-2 Answer has no `peer_ns` (read as 0).
pub const MIN_RECORD_VERSION: u8 = 2;
/// The version the records that did not change since version 2 are written as.
const UNCHANGED_SINCE: u8 = 2;
/// Byte 2 of an OutgoingRequest: its sender reads version-3 Answers.
const READS_ANSWER_V3: u8 = 1;
/// Byte 2 of an OutgoingRequest: a reply address and a send stamp ([`ReplyTo`], two u64)
/// follow the fixed part.
const REPLY_TO: u8 = 2;
/// Byte 2 of an Answer: the outcome of a reply-to request another attachment sent; its
/// handle is that sender's token, not one of the receiver's own handles, and the sender's
/// send stamp (u64) follows `peer_ns`.
const ANSWER_REPLY_TO: u8 = 1;

const KIND_INCOMING: u8 = 1;
const KIND_REPLY: u8 = 2;
const KIND_OUTGOING: u8 = 3;
const KIND_ANSWER: u8 = 4;

/// A Diameter request from a peer, handed to one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest<'a> {
    /// The bridge's id for this request; the worker's reply carries it back.
    pub token: u64,
    /// Application-Id from the header.
    pub app_id: u32,
    /// Command-Code.
    pub cmd_code: u32,
    /// Event to raise: `E_DM_<ABBR>`, `E_DM_<code>` or `E_DM_REQUEST`.
    pub event: &'a str,
    /// Session-Id (empty if the request has none).
    pub sess_id: &'a str,
    /// Command name from the dictionary (empty if unknown).
    pub cmd_name: &'a str,
    /// Origin-Host of the request.
    pub origin_host: &'a str,
    /// Origin-Realm of the request.
    pub origin_realm: &'a str,
    /// The AVPs as JSON (DESIGN §4).
    pub avps_json: &'a str,
}

/// How the worker answered an incoming request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// The script's answer (Result-Code 2001 unless it gave one).
    Ok = 0,
    /// The script asked for an error answer (E bit / its Result-Code).
    Error = 1,
    /// The script's reply could not be used (e.g. invalid JSON); the bridge
    /// answers 5012 at once and logs `error` instead of waiting for the
    /// timeout.
    Failed = 2,
}

/// What a [`Reply`]'s AVP bytes are.
///
/// A library that has the bridge's dictionary (sent over the control socket, see
/// [`crate::control::Ctl::Dictionary`]) converts the script's JSON itself: the script gets an
/// error return for a reply that does not fit the dictionary (DESIGN §9), and the JSON is
/// parsed once on the whole reply path instead of once in the library and again in the
/// bridge. Without the dictionary (not received yet) it sends the JSON as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// DESIGN §4 JSON; the bridge converts it.
    Json,
    /// Encoded Diameter AVPs (RFC 6733 §4.1, message-body form); the bridge checks their
    /// framing and uses them as they are.
    Avps,
}

/// On the wire, the Reply's status word carries the payload form in this bit.
const REPLY_AVPS: u32 = 0x100;

/// A worker's reply to an [`IncomingRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The token of the [`IncomingRequest`] it answers. The bridge answers that Diameter
    /// request once; a reply whose token it no longer holds (late, or a second reply) is
    /// dropped.
    pub token: u64,
    /// Answer, error answer, or unusable (then the bridge answers 5012 at once).
    pub status: ReplyStatus,
    /// Whether `avps` is JSON for the bridge to convert or AVPs the library already encoded
    /// with the bridge's dictionary.
    pub form: Payload,
    /// The answer's AVPs, as JSON or encoded per `form` (empty when `Failed`).
    pub avps: &'a [u8],
    /// Why the reply is unusable, when `status` is `Failed`, for the bridge's log.
    pub error: &'a str,
}

/// A request a worker wants sent to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRequest<'a> {
    /// The worker's id for it; the answer carries it back.
    pub handle: u64,
    /// Application-Id of the request to build: the header's, and what routing matches on.
    pub app_id: u32,
    /// Command Code; with `app_id`, the ABNF the AVPs are checked against.
    pub cmd_code: u32,
    /// How long the bridge waits for the peer's answer (0: its default).
    pub timeout_ms: u32,
    /// The AVPs as JSON; validated by the bridge against the dictionary.
    pub avps_json: &'a [u8],
    /// Whether the sender reads [`Answer`]s of record version 3 (with `peer_ns`): true from
    /// libraries of version 3, false (byte 2 zero) from older ones, which the bridge then
    /// answers with version-2 records ([`Answer::encode_v2`]).
    pub reads_answer_v3: bool,
    /// Where the outcome goes instead of the sender, and when the sender sent it
    /// ([`ReplyTo`]); `handle` is then the receiver's token, echoed in the outcome, and the
    /// sender keeps nothing in flight for it. `None`: the outcome comes back to the sender
    /// (every older library).
    pub reply_to: Option<ReplyTo>,
}

/// What a reply-to [`OutgoingRequest`] carries after its fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// The reply address of the attachment of the same bridge the outcome goes to
    /// ([`crate::worker::Worker::reply_address`]).
    pub address: u64,
    /// When the sender's call entered the library, on CLOCK_MONOTONIC in nanoseconds
    /// ([`crate::times::monotonic_ns`]). The bridge echoes it in the outcome
    /// ([`Answer::reply_to`]) untouched and never reads a clock against it; the receiver,
    /// a process of the same host reading the same clock, counts its round trip from it.
    pub sent_ns: u64,
}

/// Outcome classes of an outgoing request (DESIGN §3 return codes).
pub mod class {
    /// A 2xxx answer: the script goes on with its AVPs.
    pub const SUCCESS: i32 = 1;
    /// An answer with another Result-Code (or the E bit).
    pub const ERROR_ANSWER: i32 = -1;
    /// No answer within the request's timeout; an answer that comes later is dropped.
    pub const TIMEOUT: i32 = -2;
    /// Not sent: bad JSON, no route, bridge down, ring full, too big.
    pub const NOT_SENT: i32 = -3;
}

/// The outcome of an [`OutgoingRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<'a> {
    /// The request's handle.
    pub handle: u64,
    /// One of [`class`].
    pub class: i32,
    /// Result-Code (or Experimental-Result-Code) of the answer, 0 if none.
    pub result_code: u32,
    /// The bridge's round trip for this request in nanoseconds: its taking of the request
    /// record -> this record about to be published (the push and doorbell are not in it).
    /// The worker subtracts it from its own round trip ([`crate::times`]).
    pub bridge_ns: u64,
    /// How long the bridge waited for the Diameter peer for this request, in nanoseconds:
    /// the request first written to a connection -> its answer read (failover resends
    /// included; what `dmbridge_answer_latency_seconds` counts). 0 when no peer answered
    /// (timeouts, requests not sent, local error answers) and in a version-2 record. The
    /// bridge's and library's own part of the script's round trip is that less this.
    pub peer_ns: u64,
    /// The answer's AVPs as JSON (empty if there is no answer).
    pub avps_json: &'a str,
    /// Human-readable reason for classes -2/-3 or protocol errors.
    pub error: &'a str,
    /// `Some(the sender's send stamp, [`ReplyTo::sent_ns`], echoed)`: the outcome of
    /// another attachment's reply-to request ([`OutgoingRequest::reply_to`]): `handle` is
    /// the token that sender chose, so the receiver neither looks it up among its own
    /// requests nor drops it as unknown, and counts the round trip from the stamp. Written
    /// only in version 3 (byte 2, bit 0, the stamp after `peer_ns`).
    pub reply_to: Option<u64>,
}

/// Any record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// Bridge -> worker, requests ring.
    Incoming(IncomingRequest<'a>),
    /// Worker -> bridge.
    Reply(Reply<'a>),
    /// Worker -> bridge.
    Outgoing(OutgoingRequest<'a>),
    /// Bridge -> worker, answers ring.
    Answer(Answer<'a>),
}

fn head(out: &mut Vec<u8>, kind: u8, version: u8, flags: u8) {
    out.clear();
    out.extend_from_slice(&[kind, version, flags, 0]);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Records are bounded by max_msg (<= 512 MiB), so lengths fit u32;
    // an absurd length is clamped and then rejected by the ring as too big.
    put_u32(out, u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b);
}

impl Record<'_> {
    /// Serialises into `out` (cleared first); the result is one ring record.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Incoming(r) => {
                head(out, KIND_INCOMING, UNCHANGED_SINCE, 0);
                put_u64(out, r.token);
                put_u32(out, r.app_id);
                put_u32(out, r.cmd_code);
                for s in [
                    r.event,
                    r.sess_id,
                    r.cmd_name,
                    r.origin_host,
                    r.origin_realm,
                    r.avps_json,
                ] {
                    put_bytes(out, s.as_bytes());
                }
            }
            Record::Reply(r) => {
                head(out, KIND_REPLY, UNCHANGED_SINCE, 0);
                put_u64(out, r.token);
                let form = match r.form {
                    Payload::Json => 0,
                    Payload::Avps => REPLY_AVPS,
                };
                put_u32(out, r.status as u32 | form);
                put_bytes(out, r.avps);
                put_bytes(out, r.error.as_bytes());
            }
            Record::Outgoing(r) => {
                let mut flags = if r.reads_answer_v3 {
                    READS_ANSWER_V3
                } else {
                    0
                };
                if r.reply_to.is_some() {
                    flags |= REPLY_TO;
                }
                head(out, KIND_OUTGOING, UNCHANGED_SINCE, flags);
                put_u64(out, r.handle);
                put_u32(out, r.app_id);
                put_u32(out, r.cmd_code);
                put_u32(out, r.timeout_ms);
                if let Some(to) = r.reply_to {
                    put_u64(out, to.address);
                    put_u64(out, to.sent_ns);
                }
                put_bytes(out, r.avps_json);
            }
            Record::Answer(r) => r.encode_as(out, RECORD_VERSION),
        }
    }

    /// Parses one record, borrowing its strings from `buf`.
    pub fn decode(buf: &[u8]) -> Result<Record<'_>> {
        let mut r = Reader {
            buf,
            what: "record",
        };
        let kind = r.u8()?;
        let version = r.u8()?;
        if !(MIN_RECORD_VERSION..=RECORD_VERSION).contains(&version) {
            return Err(Error::Version {
                ours: u32::from(RECORD_VERSION),
                theirs: u32::from(version),
                detail: "ring record format",
            });
        }
        let flags = r.u8()?;
        r.take(1)?;
        let rec = match kind {
            KIND_INCOMING => {
                r.what = "IncomingRequest";
                Record::Incoming(IncomingRequest {
                    token: r.u64()?,
                    app_id: r.u32()?,
                    cmd_code: r.u32()?,
                    event: r.str()?,
                    sess_id: r.str()?,
                    cmd_name: r.str()?,
                    origin_host: r.str()?,
                    origin_realm: r.str()?,
                    avps_json: r.str()?,
                })
            }
            KIND_REPLY => {
                r.what = "Reply";
                let token = r.u64()?;
                let word = r.u32()?;
                let form = if word & REPLY_AVPS != 0 {
                    Payload::Avps
                } else {
                    Payload::Json
                };
                let status = match word & !REPLY_AVPS {
                    0 => ReplyStatus::Ok,
                    1 => ReplyStatus::Error,
                    2 => ReplyStatus::Failed,
                    other => {
                        return Err(Error::Protocol(format!(
                            "Reply with unknown status {other}"
                        )))
                    }
                };
                Record::Reply(Reply {
                    token,
                    status,
                    form,
                    avps: r.bytes()?,
                    error: r.str()?,
                })
            }
            KIND_OUTGOING => {
                r.what = "OutgoingRequest";
                let (handle, app_id, cmd_code, timeout_ms) =
                    (r.u64()?, r.u32()?, r.u32()?, r.u32()?);
                let reply_to = if flags & REPLY_TO != 0 {
                    Some(ReplyTo {
                        address: r.u64()?,
                        sent_ns: r.u64()?,
                    })
                } else {
                    None
                };
                Record::Outgoing(OutgoingRequest {
                    handle,
                    app_id,
                    cmd_code,
                    timeout_ms,
                    avps_json: r.bytes()?,
                    reads_answer_v3: flags & READS_ANSWER_V3 != 0,
                    reply_to,
                })
            }
            KIND_ANSWER => {
                r.what = "Answer";
                let handle = r.u64()?;
                let class = r.u32()? as i32;
                if ![
                    class::SUCCESS,
                    class::ERROR_ANSWER,
                    class::TIMEOUT,
                    class::NOT_SENT,
                ]
                .contains(&class)
                {
                    return Err(Error::Protocol(format!(
                        "Answer with unknown class {class}"
                    )));
                }
                let result_code = r.u32()?;
                let bridge_ns = r.u64()?;
                let peer_ns = if version >= 3 { r.u64()? } else { 0 };
                let reply_to = if version >= 3 && flags & ANSWER_REPLY_TO != 0 {
                    Some(r.u64()?)
                } else {
                    None
                };
                Record::Answer(Answer {
                    handle,
                    class,
                    result_code,
                    bridge_ns,
                    peer_ns,
                    avps_json: r.str()?,
                    error: r.str()?,
                    reply_to,
                })
            }
            other => return Err(Error::Protocol(format!("unknown record kind {other}"))),
        };
        if !r.buf.is_empty() {
            return Err(Error::Protocol(format!(
                "{} bytes of garbage after {}",
                r.buf.len(),
                r.what
            )));
        }
        Ok(rec)
    }
}

impl<'a> Answer<'a> {
    /// The outcome of a request the bridge did not send (class [`class::NOT_SENT`]), saying
    /// why: no result code, no AVPs, no time at a peer.
    pub fn not_sent(handle: u64, error: &'a str) -> Answer<'a> {
        Answer {
            handle,
            class: class::NOT_SENT,
            result_code: 0,
            bridge_ns: 0,
            peer_ns: 0,
            avps_json: "",
            error,
            reply_to: None,
        }
    }

    /// Serialises into `out` (cleared first) as record version 2, without `peer_ns`: for a
    /// library that did not say it reads version 3 ([`OutgoingRequest::reads_answer_v3`]).
    pub fn encode_v2(&self, out: &mut Vec<u8>) {
        self.encode_as(out, 2);
    }

    fn encode_as(&self, out: &mut Vec<u8>, version: u8) {
        let stamp = self.reply_to.filter(|_| version >= 3);
        let flags = if stamp.is_some() { ANSWER_REPLY_TO } else { 0 };
        head(out, KIND_ANSWER, version, flags);
        put_u64(out, self.handle);
        put_u32(out, self.class as u32);
        put_u32(out, self.result_code);
        put_u64(out, self.bridge_ns);
        if version >= 3 {
            put_u64(out, self.peer_ns);
        }
        if let Some(sent_ns) = stamp {
            put_u64(out, sent_ns);
        }
        put_bytes(out, self.avps_json.as_bytes());
        put_bytes(out, self.error.as_bytes());
    }
}

/// A bounds-checked cursor.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(Error::Protocol(format!("truncated {}", self.what)));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(crate) fn str(&mut self) -> Result<&'a str> {
        let what = self.what;
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| Error::Protocol(format!("{what} has a string that is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record<'static>> {
        vec![
            Record::Incoming(IncomingRequest {
                token: u64::MAX - 3,
                app_id: 16777216,
                cmd_code: 305,
                event: "E_DM_PPR",
                sess_id: "hss;1;2",
                cmd_name: "Push-Profile-Request",
                origin_host: "hss.example",
                origin_realm: "example",
                avps_json: r#"[{"Session-Id":"hss;1;2"}]"#,
            }),
            Record::Reply(Reply {
                token: 9,
                status: ReplyStatus::Error,
                form: Payload::Json,
                avps: b"[]",
                error: "",
            }),
            Record::Reply(Reply {
                token: 10,
                status: ReplyStatus::Ok,
                form: Payload::Avps,
                avps: b"\x00\x00\x01\x0c\x40\x00\x00\x0c\x00\x00\x07\xd1",
                error: "",
            }),
            Record::Reply(Reply {
                token: 9,
                status: ReplyStatus::Failed,
                form: Payload::Json,
                avps: b"",
                error: "bad json",
            }),
            Record::Outgoing(OutgoingRequest {
                handle: 1,
                app_id: 4,
                cmd_code: 272,
                timeout_ms: 1500,
                avps_json: b"[]",
                reads_answer_v3: true,
                reply_to: None,
            }),
            Record::Outgoing(OutgoingRequest {
                handle: 2,
                app_id: 4,
                cmd_code: 272,
                timeout_ms: 0,
                avps_json: b"[]",
                reads_answer_v3: false,
                reply_to: None,
            }),
            Record::Answer(Answer {
                handle: 1,
                class: class::TIMEOUT,
                result_code: 0,
                bridge_ns: 1_500_000_123,
                peer_ns: 0,
                avps_json: "",
                error: "timeout after 1500 ms",
                reply_to: None,
            }),
            Record::Answer(Answer {
                handle: 2,
                class: class::SUCCESS,
                result_code: 2001,
                bridge_ns: 812_345,
                peer_ns: 790_001,
                avps_json: "[]",
                error: "",
                reply_to: None,
            }),
            Record::Outgoing(OutgoingRequest {
                handle: (1 << 63) | 5,
                app_id: 4,
                cmd_code: 272,
                timeout_ms: 2000,
                avps_json: b"[]",
                reads_answer_v3: true,
                reply_to: Some(ReplyTo {
                    address: 0x00AB_CDEF_0000_0103,
                    sent_ns: 7_000_123_456,
                }),
            }),
            Record::Answer(Answer {
                handle: (1 << 63) | 5,
                class: class::SUCCESS,
                result_code: 2001,
                bridge_ns: 812_345,
                peer_ns: 790_001,
                avps_json: "[]",
                error: "",
                reply_to: Some(7_000_123_456),
            }),
        ]
    }

    #[test]
    fn roundtrip() {
        let mut buf = Vec::new();
        for rec in samples() {
            rec.encode(&mut buf);
            assert_eq!(Record::decode(&buf).unwrap(), rec);
        }
    }

    /// Every truncation and every single-byte corruption of every sample is
    /// either decoded or rejected with an error, never a panic.
    #[test]
    fn truncations_and_corruptions_never_panic() {
        let mut buf = Vec::new();
        for rec in samples() {
            rec.encode(&mut buf);
            for n in 0..buf.len() {
                assert!(
                    Record::decode(&buf[..n]).is_err(),
                    "truncated to {n} accepted"
                );
            }
            for i in 0..buf.len() {
                for v in [0u8, 1, 0x7f, 0xff] {
                    let mut b = buf.clone();
                    b[i] = v;
                    let _ = Record::decode(&b);
                }
            }
            let mut long = buf.clone();
            long.push(0);
            assert!(Record::decode(&long).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), kind in 1u8..=4)| {
            // Half the cases get a valid head so the field decoders are reached.
            if bytes.len() >= 4 && kind % 2 == 0 {
                bytes[0] = kind;
                bytes[1] = RECORD_VERSION;
            }
            let _ = Record::decode(&bytes);
            let _ = crate::control::Ctl::decode(&bytes);
        });
    }

    #[test]
    fn version_mismatch_is_named() {
        let mut buf = Vec::new();
        samples()[0].encode(&mut buf);
        buf[1] = RECORD_VERSION + 1;
        let e = Record::decode(&buf).unwrap_err();
        assert!(e.to_string().contains("version mismatch"), "{e}");
    }

    /// An Answer of record version 1 (before `bridge_ns`), as a library or bridge of wire
    /// version 3 wrote it, is refused by its version, not misread as a shorter record.
    #[test]
    fn version_1_answer_refused() {
        let mut v1 = vec![4u8, 1, 0, 0];
        v1.extend_from_slice(&7u64.to_le_bytes());
        v1.extend_from_slice(&(class::SUCCESS as u32).to_le_bytes());
        v1.extend_from_slice(&2001u32.to_le_bytes());
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.extend_from_slice(b"[]");
        v1.extend_from_slice(&0u32.to_le_bytes());
        match Record::decode(&v1) {
            Err(Error::Version {
                ours: 3, theirs: 1, ..
            }) => {}
            other => panic!("version 1 answer: {other:?}"),
        }
    }

    /// Record versions 2 and 3 interwork (a library and a bridge of different builds):
    /// a version-2 Answer, as an older bridge writes it, is read with `peer_ns` 0, and
    /// [`Answer::encode_v2`] writes exactly those bytes for an older library; the records
    /// that did not change are written as version 2, the Outgoing's flag in byte 2 (which a
    /// version-2 reader skips), and an older library's Outgoing reads as not reading v3.
    #[test]
    fn version_2_and_3_interwork() {
        let mut v2 = vec![4u8, 2, 0, 0];
        v2.extend_from_slice(&7u64.to_le_bytes());
        v2.extend_from_slice(&(class::SUCCESS as u32).to_le_bytes());
        v2.extend_from_slice(&2001u32.to_le_bytes());
        v2.extend_from_slice(&55_000u64.to_le_bytes());
        v2.extend_from_slice(&2u32.to_le_bytes());
        v2.extend_from_slice(b"[]");
        v2.extend_from_slice(&0u32.to_le_bytes());
        let answer = Answer {
            handle: 7,
            class: class::SUCCESS,
            result_code: 2001,
            bridge_ns: 55_000,
            peer_ns: 0,
            avps_json: "[]",
            error: "",
            reply_to: None,
        };
        assert_eq!(Record::decode(&v2).unwrap(), Record::Answer(answer.clone()));
        let mut buf = Vec::new();
        Answer {
            peer_ns: 41_000,
            ..answer.clone()
        }
        .encode_v2(&mut buf);
        assert_eq!(buf, v2, "a version-2 answer for an older library");
        Record::Answer(Answer {
            peer_ns: 41_000,
            ..answer
        })
        .encode(&mut buf);
        assert_eq!(buf[1], 3);
        assert_eq!(buf.len(), v2.len() + 8);
        match Record::decode(&buf).unwrap() {
            Record::Answer(a) => assert_eq!(a.peer_ns, 41_000),
            other => panic!("{other:?}"),
        }

        for rec in samples() {
            rec.encode(&mut buf);
            if let Record::Answer(_) = rec {
                continue;
            }
            assert_eq!(buf[1], 2, "{rec:?} is written as version 2");
            assert_eq!(buf[3], 0);
            let want = match &rec {
                Record::Outgoing(o) => {
                    u8::from(o.reads_answer_v3) * READS_ANSWER_V3
                        + u8::from(o.reply_to.is_some()) * REPLY_TO
                }
                _ => 0,
            };
            assert_eq!(buf[2], want, "{rec:?}");
        }
        let mut old = Vec::new();
        Record::Outgoing(OutgoingRequest {
            handle: 9,
            app_id: 4,
            cmd_code: 272,
            timeout_ms: 0,
            avps_json: b"[]",
            reads_answer_v3: true,
            reply_to: None,
        })
        .encode(&mut old);
        old[2] = 0;
        match Record::decode(&old).unwrap() {
            Record::Outgoing(o) => assert!(!o.reads_answer_v3),
            other => panic!("{other:?}"),
        }
    }

    /// Reply-to: the flag in byte 2, then the address and the send stamp after the fixed
    /// part; an OutgoingRequest without it is byte for byte what a library before reply-to
    /// writes (handle, app, command, timeout, AVPs), so an older library's records decode as
    /// before (`reply_to: None`). A reply-to Answer is marked in byte 2 with the stamp right
    /// after `peer_ns`; a version-3 Answer without the mark is byte for byte that of session
    /// 15, and the mark (and stamp) is not written in (nor read from) a version-2 Answer.
    #[test]
    fn reply_to_layout_and_old_records() {
        // As a library of session 15 writes it.
        let mut old = vec![3u8, 2, READS_ANSWER_V3, 0];
        old.extend_from_slice(&9u64.to_le_bytes());
        old.extend_from_slice(&4u32.to_le_bytes());
        old.extend_from_slice(&272u32.to_le_bytes());
        old.extend_from_slice(&1500u32.to_le_bytes());
        old.extend_from_slice(&2u32.to_le_bytes());
        old.extend_from_slice(b"[]");
        let plain = OutgoingRequest {
            handle: 9,
            app_id: 4,
            cmd_code: 272,
            timeout_ms: 1500,
            avps_json: b"[]",
            reads_answer_v3: true,
            reply_to: None,
        };
        assert_eq!(
            Record::decode(&old).unwrap(),
            Record::Outgoing(plain.clone())
        );
        let mut buf = Vec::new();
        Record::Outgoing(plain.clone()).encode(&mut buf);
        assert_eq!(buf, old, "no reply-to: the old bytes");
        let to = ReplyTo {
            address: 0x1122_3344_5566_7788,
            sent_ns: 0x0102_0304_0506_0708,
        };
        Record::Outgoing(OutgoingRequest {
            reply_to: Some(to),
            ..plain.clone()
        })
        .encode(&mut buf);
        let mut want = old[..24].to_vec();
        want[2] = READS_ANSWER_V3 | REPLY_TO;
        want.extend_from_slice(&to.address.to_le_bytes());
        want.extend_from_slice(&to.sent_ns.to_le_bytes());
        want.extend_from_slice(&old[24..]);
        assert_eq!(
            buf, want,
            "address then stamp between the fixed part and the AVPs"
        );
        // A reply-to flag without the address and stamp is truncated, never misread.
        let mut cut = old.clone();
        cut[2] |= REPLY_TO;
        assert!(Record::decode(&cut).is_err());

        // A version-3 Answer as the bridge of session 15 writes it.
        let mut v3 = vec![4u8, 3, 0, 0];
        v3.extend_from_slice(&(1u64 << 63).to_le_bytes());
        v3.extend_from_slice(&(class::TIMEOUT as u32).to_le_bytes());
        v3.extend_from_slice(&0u32.to_le_bytes());
        v3.extend_from_slice(&5u64.to_le_bytes());
        v3.extend_from_slice(&6u64.to_le_bytes());
        v3.extend_from_slice(&0u32.to_le_bytes());
        v3.extend_from_slice(&7u32.to_le_bytes());
        v3.extend_from_slice(b"timeout");
        let a = Answer {
            handle: 1 << 63,
            class: class::TIMEOUT,
            result_code: 0,
            bridge_ns: 5,
            peer_ns: 6,
            avps_json: "",
            error: "timeout",
            reply_to: None,
        };
        Record::Answer(a.clone()).encode(&mut buf);
        assert_eq!(buf, v3, "no reply-to: the old bytes");
        assert_eq!(Record::decode(&v3).unwrap(), Record::Answer(a.clone()));
        let a = Answer {
            reply_to: Some(to.sent_ns),
            ..a
        };
        Record::Answer(a.clone()).encode(&mut buf);
        let mut want = v3[..36].to_vec();
        want[2] = ANSWER_REPLY_TO;
        want.extend_from_slice(&to.sent_ns.to_le_bytes());
        want.extend_from_slice(&v3[36..]);
        assert_eq!(buf, want, "the stamp right after peer_ns");
        assert_eq!(Record::decode(&buf).unwrap(), Record::Answer(a.clone()));
        // The mark without the stamp is truncated, never misread.
        let mut cut = v3.clone();
        cut[2] = ANSWER_REPLY_TO;
        assert!(Record::decode(&cut).is_err());
        a.encode_v2(&mut buf);
        assert_eq!(buf[2], 0, "version 2 has no reply-to mark");
        match Record::decode(&buf).unwrap() {
            Record::Answer(v2) => assert_eq!(v2.reply_to, None),
            other => panic!("{other:?}"),
        }
    }
}
