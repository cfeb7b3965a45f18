//! The application seam with channels: for applications that run beside the node loop (the
//! shared-memory application's task, in-process responders, tests), not inside it.
//!
//! The node ([`dmnode::endpoint::Endpoint`]) hands out incoming requests and takes outgoing
//! ones as polled values ([`dmnode::app`]); this module is the driver's side of that, so an
//! application can answer from any thread and submit from any task:
//!
//! **Incoming requests.** The driver calls [`Application::on_request`] with the decoded
//! request and a [`Responder`]. The application answers whenever it likes, from any thread,
//! by calling [`Responder::answer`] exactly once (the method consumes it, so twice is not
//! possible). **If the responder is dropped without an answer** — a handler bug, a worker
//! that died, a timeout in the shared-memory layer — the node still answers the peer, with
//! 5012 DIAMETER_UNABLE_TO_COMPLY: every request gets exactly one answer, and a forgotten
//! responder can never leave a peer waiting. The node applies its own reply timeout on top
//! (`[app] reply_timeout`), answering 5012 too if the application is too slow; an answer
//! given after that is discarded.
//!
//! **Outgoing requests.** An [`AppHandle`] (cheap to clone, `Send`) submits requests to the
//! driver; each submission resolves to exactly one outcome: the answer message, or a
//! [`RequestError`] (timeout, no route, too busy, node down). Submissions are bounded: when
//! the node's queue is full, [`AppHandle::submit`] fails at once with
//! [`RequestError::TooBusy`] instead of buffering without limit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dmproto::Message;
use tokio::sync::{mpsc, oneshot};

pub use dmnode::app::{
    AnswerBody, IncomingRequest, OutgoingRequest, PeerInfo, Reply, RequestError, RequestId,
};

/// Answers one incoming request, once. Dropping it unanswered makes the node answer 5012
/// DIAMETER_UNABLE_TO_COMPLY (see the module docs).
#[derive(Debug)]
pub struct Responder {
    sink: Option<Sink>,
}

/// Where a reply goes: its own channel, or the node's shared reply queue under a token.
#[derive(Debug)]
enum Sink {
    Oneshot(oneshot::Sender<Reply>),
    Queue { token: u64, tx: ReplyQueue },
}

/// The node's queue of replies, each tagged with the token of its request. Unbounded on
/// purpose: its length is bounded by the number of requests the node delivers at once, which
/// the node limits (beyond it, requests are answered 3004 DIAMETER_TOO_BUSY).
pub type ReplyQueue = mpsc::UnboundedSender<(u64, Reply)>;

impl Responder {
    /// A responder and the node's end of it.
    pub fn new() -> (Responder, ReplyReceiver) {
        let (tx, rx) = oneshot::channel();
        (
            Responder {
                sink: Some(Sink::Oneshot(tx)),
            },
            ReplyReceiver { rx },
        )
    }

    /// A responder whose reply (or [`Reply::Unanswered`] on drop) goes to the node's shared
    /// queue as `(token, reply)`: one channel for all requests, no task per request.
    pub fn queued(token: u64, tx: ReplyQueue) -> Responder {
        Responder {
            sink: Some(Sink::Queue { token, tx }),
        }
    }

    /// Sends the answer. Returns false if it is known not to be wanted any more (the node
    /// timed out or is gone); a node that timed out after this returns true still discards
    /// it — the peer got exactly one answer either way.
    pub fn answer(mut self, body: AnswerBody) -> bool {
        match self.sink.take() {
            Some(Sink::Oneshot(tx)) => tx.send(Reply::Answer(body)).is_ok(),
            Some(Sink::Queue { token, tx }) => tx.send((token, Reply::Answer(body))).is_ok(),
            None => false,
        }
    }

    /// The node's token for this request ([`Responder::queued`]), as
    /// [`Application::withdrawn`] names it; `None` for a responder of its own channel.
    pub fn token(&self) -> Option<u64> {
        match &self.sink {
            Some(Sink::Queue { token, .. }) => Some(*token),
            _ => None,
        }
    }

    /// Whether the node may still want this answer (false once it is known not to).
    pub fn is_wanted(&self) -> bool {
        match &self.sink {
            Some(Sink::Oneshot(tx)) => !tx.is_closed(),
            Some(Sink::Queue { tx, .. }) => !tx.is_closed(),
            None => false,
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // The node may be gone too; then nobody needs to know.
        match self.sink.take() {
            Some(Sink::Oneshot(tx)) => {
                let _ = tx.send(Reply::Unanswered);
            }
            Some(Sink::Queue { token, tx }) => {
                let _ = tx.send((token, Reply::Unanswered));
            }
            None => {}
        }
    }
}

/// The node's end of a [`Responder`]: a future of the [`Reply`]. Never fails: a vanished
/// responder reads as [`Reply::Unanswered`].
#[derive(Debug)]
pub struct ReplyReceiver {
    rx: oneshot::Receiver<Reply>,
}

impl Future for ReplyReceiver {
    type Output = Reply;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Reply::Unanswered))
    }
}

/// The application side of incoming traffic. Implementations must not block: hand the
/// request over (to a ring, a task, a thread) and return.
pub trait Application: Send + Sync + 'static {
    /// Takes one incoming request. Answer through `responder` (from any thread, later if need be);
    /// dropping it unanswered makes the node answer 5012, so the peer always gets exactly one
    /// answer.
    fn on_request(&self, request: IncomingRequest, responder: Responder);

    /// The node answered the requests of these responders' tokens ([`Responder::token`])
    /// itself: 5012 at the drain timeout, just before its DPR closed their connection
    /// (RFC 6733 §5.4, §7.1.5). Their answers, if the application still gives them, go
    /// nowhere; an application that counts its replies counts those as late. The default
    /// ignores it: the node discards such an answer either way.
    fn withdrawn(&self, tokens: Vec<u64>) {
        let _ = tokens;
    }
}

/// A submitter's queue of outcomes, each tagged with the tag it submitted under
/// ([`AppHandle::submit_queued`]): one channel for all of its requests, no task per request.
/// Unbounded on purpose: its length is bounded by the requests the submitter has in flight,
/// which the node bounds (`[limits] max_pending_requests`).
pub type OutcomeQueue = mpsc::UnboundedSender<QueuedOutcome>;

/// One outcome in a submitter's [`OutcomeQueue`].
#[derive(Debug, PartialEq)]
pub struct QueuedOutcome {
    /// The tag the request was submitted under.
    pub tag: u64,
    /// Its answer, or why there is none.
    pub result: Result<Message, RequestError>,
    /// For an answer: how long the node waited for it (the request's first write to a
    /// connection -> the answer read), so the submitter can tell the node's own share of its
    /// round trip, request by request (`dmbridge_script_request_bridge_seconds`).
    pub waited: Option<Duration>,
}

/// Where one outcome goes: its own channel, or the submitter's queue under a tag.
#[derive(Debug)]
enum OutcomeSink {
    Oneshot(oneshot::Sender<Result<Message, RequestError>>),
    Queue { tag: u64, tx: OutcomeQueue },
}

/// Sends one outcome, once. Dropped without one, a queued submitter reads
/// [`RequestError::NodeDown`] under its tag (a oneshot's receiver reads it by itself).
#[derive(Debug)]
struct OutcomeTx(Option<OutcomeSink>);

impl OutcomeTx {
    fn send(mut self, outcome: Result<Message, RequestError>, waited: Option<Duration>) {
        // The submitter may have given up waiting; that is its right.
        match self.0.take() {
            Some(OutcomeSink::Oneshot(tx)) => {
                let _ = tx.send(outcome);
            }
            Some(OutcomeSink::Queue { tag, tx }) => {
                let _ = tx.send(QueuedOutcome {
                    tag,
                    result: outcome,
                    waited,
                });
            }
            None => {}
        }
    }

    fn is_wanted(&self) -> bool {
        match &self.0 {
            Some(OutcomeSink::Oneshot(tx)) => !tx.is_closed(),
            Some(OutcomeSink::Queue { tx, .. }) => !tx.is_closed(),
            None => false,
        }
    }
}

impl Drop for OutcomeTx {
    fn drop(&mut self) {
        if let Some(OutcomeSink::Queue { tag, tx }) = self.0.take() {
            let _ = tx.send(QueuedOutcome {
                tag,
                result: Err(RequestError::NodeDown),
                waited: None,
            });
        }
    }
}

/// One submitted request, as the node receives it.
#[derive(Debug)]
pub struct Submission {
    /// The request to send, with its routing and timeout.
    pub request: OutgoingRequest,
    reply: OutcomeTx,
}

impl Submission {
    /// Delivers the outcome. Consumes the submission: one outcome per request.
    pub fn complete(self, outcome: Result<Message, RequestError>) {
        self.reply.send(outcome, None);
    }

    /// Whether the submitter still waits.
    pub fn is_wanted(&self) -> bool {
        self.reply.is_wanted()
    }

    /// Splits into the request and its outcome sender (kept by the driver, under the
    /// request's id, until the endpoint reports the outcome).
    pub fn into_parts(self) -> (OutgoingRequest, Completion) {
        (self.request, Completion { reply: self.reply })
    }
}

/// The outcome sender of a request in flight. Dropped without an outcome (shutdown), the
/// submitter reads [`RequestError::NodeDown`]: it never waits forever.
#[derive(Debug)]
pub struct Completion {
    reply: OutcomeTx,
}

impl Completion {
    /// Delivers the outcome, once.
    pub fn complete(self, outcome: Result<Message, RequestError>) {
        self.reply.send(outcome, None);
    }

    /// Delivers the outcome with how long the node waited for the answer (queued
    /// submitters read it in [`QueuedOutcome::waited`]).
    pub fn complete_after(self, outcome: Result<Message, RequestError>, waited: Option<Duration>) {
        self.reply.send(outcome, waited);
    }

    /// Whether the submitter still waits.
    pub fn is_wanted(&self) -> bool {
        self.reply.is_wanted()
    }
}

/// Submits requests to the node. Clone freely.
#[derive(Clone, Debug)]
pub struct AppHandle {
    tx: mpsc::Sender<Submission>,
}

/// The node's end: the stream of submissions.
#[derive(Debug)]
pub struct Submissions {
    rx: mpsc::Receiver<Submission>,
}

impl Submissions {
    /// The next submission; `None` once every [`AppHandle`] is dropped (or [`close`](Self::close)
    /// drained the queue), which is the node loop's sign that no application remains.
    pub async fn recv(&mut self) -> Option<Submission> {
        self.rx.recv().await
    }

    /// [`Submissions::recv`] as a poll, for a `select!` branch with a waker of its own
    /// (`crate::due`).
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Submission>> {
        self.rx.poll_recv(cx)
    }

    /// The next submission if one is queued now, without waiting: the node loop drains a burst in
    /// one turn.
    pub fn try_recv(&mut self) -> Option<Submission> {
        self.rx.try_recv().ok()
    }

    /// Stops accepting submissions; those already queued can still be received.
    pub fn close(&mut self) {
        self.rx.close();
    }
}

/// A handle and the node's receiving end, with room for `capacity` queued submissions.
pub fn channel(capacity: usize) -> (AppHandle, Submissions) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (AppHandle { tx }, Submissions { rx })
}

impl AppHandle {
    /// Submits a request; the returned future resolves to its one outcome. Fails at once
    /// when the queue is full ([`RequestError::TooBusy`]) or the node is gone.
    pub fn submit(&self, request: OutgoingRequest) -> Result<PendingAnswer, RequestError> {
        let (tx, rx) = oneshot::channel();
        self.send(request, OutcomeSink::Oneshot(tx))?;
        Ok(PendingAnswer { rx })
    }

    /// Submits a request whose one outcome arrives on `queue` as `(tag, outcome)` — for a
    /// submitter with many requests in flight that waits on one channel instead of a task
    /// per request (the shared-memory application). An `Err` here is the outcome: nothing
    /// is queued then.
    pub fn submit_queued(
        &self,
        request: OutgoingRequest,
        tag: u64,
        queue: &OutcomeQueue,
    ) -> Result<(), RequestError> {
        let tx = queue.clone();
        self.send(request, OutcomeSink::Queue { tag, tx })
    }

    fn send(&self, request: OutgoingRequest, sink: OutcomeSink) -> Result<(), RequestError> {
        let sub = Submission {
            request,
            reply: OutcomeTx(Some(sink)),
        };
        match self.tx.try_send(sub) {
            Ok(()) => Ok(()),
            // Disarmed: the error returned is this request's one outcome.
            Err(mpsc::error::TrySendError::Full(mut s)) => {
                s.reply.0 = None;
                Err(RequestError::TooBusy)
            }
            Err(mpsc::error::TrySendError::Closed(mut s)) => {
                s.reply.0 = None;
                Err(RequestError::NodeDown)
            }
        }
    }

    /// `submit` and wait: the answer, or why there is none.
    pub async fn send_request(
        &self,
        app_id: u32,
        cmd_code: u32,
        avps: Bytes,
    ) -> Result<Message, RequestError> {
        self.submit(OutgoingRequest {
            app_id,
            cmd_code,
            avps,
            timeout: None,
        })?
        .await
    }
}

/// The outcome of a submitted request, to await (or poll from a non-async event loop).
#[derive(Debug)]
pub struct PendingAnswer {
    rx: oneshot::Receiver<Result<Message, RequestError>>,
}

impl PendingAnswer {
    /// Non-blocking check, for callers that poll from their own loop (e.g. a worker's
    /// doorbell): `None` while still pending.
    pub fn try_take(&mut self) -> Option<Result<Message, RequestError>> {
        match self.rx.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(RequestError::NodeDown)),
        }
    }
}

impl Future for PendingAnswer {
    type Output = Result<Message, RequestError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(RequestError::NodeDown)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::{Header, MessageWriter};
    use std::sync::Mutex;

    fn request() -> IncomingRequest {
        let mut w = MessageWriter::new(Header::request(309, 16777217, 1, 2));
        w.str(263, 0x40, 0, "s;1");
        IncomingRequest {
            peer: std::sync::Arc::new(PeerInfo {
                host: "hss.example.net".into(),
                realm: "example.net".into(),
            }),
            message: Message::decode(w.finish().unwrap()).unwrap(),
        }
    }

    /// Answers on another thread, as a real application would.
    struct ThreadedEcho;
    impl Application for ThreadedEcho {
        fn on_request(&self, request: IncomingRequest, responder: Responder) {
            std::thread::spawn(move || {
                let avps = Bytes::copy_from_slice(&request.message.body);
                responder.answer(AnswerBody {
                    avps,
                    is_error: false,
                });
            });
        }
    }

    /// Keeps the responders, answering none (a buggy application).
    struct Forgetful(Mutex<Vec<Responder>>);
    impl Application for Forgetful {
        fn on_request(&self, _: IncomingRequest, responder: Responder) {
            if let Ok(mut v) = self.0.lock() {
                v.push(responder);
            }
        }
    }

    /// Drops the responder at once.
    struct Dropper;
    impl Application for Dropper {
        fn on_request(&self, _: IncomingRequest, _: Responder) {}
    }

    #[tokio::test]
    async fn answer_comes_back_from_another_thread() {
        let app: Box<dyn Application> = Box::new(ThreadedEcho);
        let req = request();
        let body = req.message.body.clone();
        let (responder, reply) = Responder::new();
        app.on_request(req, responder);
        assert_eq!(
            reply.await,
            Reply::Answer(AnswerBody {
                avps: body,
                is_error: false
            })
        );
    }

    #[tokio::test]
    async fn dropped_responder_reads_as_unanswered() {
        let (responder, reply) = Responder::new();
        Dropper.on_request(request(), responder);
        assert_eq!(reply.await, Reply::Unanswered);
    }

    #[tokio::test]
    async fn responder_kept_but_forgotten_is_unanswered_once_released() {
        let app = Forgetful(Mutex::new(Vec::new()));
        let (responder, mut reply) = Responder::new();
        app.on_request(request(), responder);
        assert!(
            futures_poll_once(&mut reply).is_none(),
            "still pending while held"
        );
        app.0.lock().unwrap().clear();
        assert_eq!(reply.await, Reply::Unanswered);
    }

    #[tokio::test]
    async fn queued_responders_report_under_their_token() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let a = Responder::queued(7, tx.clone());
        let b = Responder::queued(8, tx.clone());
        let body = AnswerBody {
            avps: Bytes::from_static(b"x"),
            is_error: false,
        };
        assert!(a.is_wanted());
        drop(b);
        assert!(a.answer(body.clone()));
        assert_eq!(rx.recv().await, Some((8, Reply::Unanswered)));
        assert_eq!(rx.recv().await, Some((7, Reply::Answer(body))));
        drop(rx);
        let c = Responder::queued(9, tx);
        assert!(!c.is_wanted(), "node gone");
    }

    #[tokio::test]
    async fn late_answer_after_node_gave_up_is_refused() {
        let (responder, reply) = Responder::new();
        assert!(responder.is_wanted());
        drop(reply);
        assert!(!responder.is_wanted());
        assert!(!responder.answer(AnswerBody::default()));
    }

    fn futures_poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        match Pin::new(f).poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn submitted_request_gets_its_one_outcome() {
        let (handle, mut subs) = channel(4);
        let h2 = handle.clone();
        let task = tokio::spawn(async move { h2.send_request(16777216, 300, Bytes::new()).await });
        let sub = subs.recv().await.unwrap();
        assert_eq!((sub.request.app_id, sub.request.cmd_code), (16777216, 300));
        let answer = request().message;
        sub.complete(Ok(answer.clone()));
        assert_eq!(task.await.unwrap(), Ok(answer));

        let mut pending = handle.submit(OutgoingRequest::default()).unwrap();
        assert_eq!(pending.try_take(), None);
        let (_, completion) = subs.recv().await.unwrap().into_parts();
        completion.complete(Err(RequestError::Timeout));
        assert_eq!(pending.try_take(), Some(Err(RequestError::Timeout)));
    }

    #[tokio::test]
    async fn queued_submissions_report_under_their_tag_exactly_once() {
        let (handle, mut subs) = channel(2);
        let (tx, mut rx) = mpsc::unbounded_channel();
        handle
            .submit_queued(OutgoingRequest::default(), 1, &tx)
            .unwrap();
        handle
            .submit_queued(OutgoingRequest::default(), 2, &tx)
            .unwrap();
        // Refused at once: the error is the outcome, nothing arrives on the queue for it.
        assert_eq!(
            handle.submit_queued(OutgoingRequest::default(), 3, &tx),
            Err(RequestError::TooBusy)
        );
        let (_, first) = subs.recv().await.unwrap().into_parts();
        let second = subs.recv().await.unwrap();
        first.complete_after(Err(RequestError::Timeout), Some(Duration::from_millis(3)));
        // Dropped by the node without an outcome: NodeDown, under its own tag.
        drop(second);
        let outcome = |tag, result, waited| QueuedOutcome {
            tag,
            result,
            waited,
        };
        assert_eq!(
            rx.recv().await,
            Some(outcome(
                1,
                Err(RequestError::Timeout),
                Some(Duration::from_millis(3))
            ))
        );
        assert_eq!(
            rx.recv().await,
            Some(outcome(2, Err(RequestError::NodeDown), None))
        );
        assert!(
            rx.try_recv().is_err(),
            "one outcome each, none for the refused one"
        );
    }

    #[tokio::test]
    async fn full_queue_is_too_busy_and_closed_node_is_down() {
        let (handle, mut subs) = channel(1);
        let _first = handle.submit(OutgoingRequest::default()).unwrap();
        assert_eq!(
            handle.submit(OutgoingRequest::default()).unwrap_err(),
            RequestError::TooBusy
        );
        // A submission dropped by the node without an outcome reads as NodeDown.
        let sub = subs.recv().await.unwrap();
        drop(sub);
        assert_eq!(_first.await, Err(RequestError::NodeDown));
        drop(subs);
        assert_eq!(
            handle.submit(OutgoingRequest::default()).unwrap_err(),
            RequestError::NodeDown
        );
    }
}
