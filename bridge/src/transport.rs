//! Moving bytes: one reader and one writer task per connection, over any async stream.
//!
//! The tasks know nothing of Diameter beyond framing. The reader feeds the [`Framer`] and
//! sends every complete frame to the node as a [`ConnEvent`]; the writer drains a bounded
//! queue of encoded messages. Both are generic over `AsyncRead + AsyncWrite`, which is the
//! seam for TLS (a `tokio-rustls` stream) and SCTP later: only the code that *opens* a
//! stream needs to know what it is.
//!
//! What a peer can make the reader hold is bounded three ways (DESIGN §10): the maximum
//! message size, small until the capabilities exchange identified the peer and raised by
//! [`ConnHandle::open`]; [`ReadLimits::message_timeout`], the time a message may take to
//! arrive once its first bytes did (a peer trickling one byte at a time is cut off, not
//! kept until the watchdog gives up); and a [`Budget`] of bytes buffered by all connections
//! together, past which the connection whose read overflows it is closed. Each such close is
//! counted and logged through [`Refusals`].
//!
//! Closing: [`ConnHandle::close`] makes the writer flush what was queued before (so a CEA or
//! DPA reaches the peer), shut the stream down, and stop the reader. Whatever ends a
//! connection — our close, the peer's, an I/O error, a framing error — the reader reports
//! [`ConnEvent::Closed`] exactly once, unless the connection was handed back.
//!
//! In-band TLS (RFC 3588 §2.1): a plain connection that may turn to TLS after CER/CEA is
//! started with [`spawn_upgradable`]. Until [`ConnHandle::open`], its reader reads no
//! further than one message at a time and waits after each (freeDiameter's receiver does
//! the same before TLS, `cc_loop = 0` in cnxctx.c), so the peer's ClientHello is never read
//! as Diameter. [`ConnHandle::release`] then makes the writer flush what was queued (our
//! CEA) and both tasks give their halves back through [`Upgrade::wait`], without a Closed
//! event, together with any bytes read past the last message; [`Rewound`] replays those
//! to the TLS layer first.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use dmproto::{FrameError, Framer};
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf, ReadHalf, WriteHalf,
};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use dmnode::peer::ConnId;
use dmnode::trust::{Refusal, Refusals};

/// Messages a connection may have queued for writing before it is considered stuck (a peer
/// that stops reading) and closed, rather than buffering without bound.
pub const WRITE_QUEUE: usize = 8192;

/// Bytes read from the socket per call, once the connection is open; before, at most the
/// pre-CER message size.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes buffered by every connection's reader together; see the module docs.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes shared by every reader it is cloned into (through an `Arc`): what
    /// all strangers together can make us buffer.
    pub fn new(limit: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes buffered now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Moves one reader's share from `old` to `new` bytes; false if that exceeds the limit
    /// (the share is then released: the reader is about to close).
    fn account(&self, old: usize, new: usize) -> bool {
        if new > old {
            let before = self.used.fetch_add(new - old, Ordering::Relaxed);
            if before + (new - old) > self.limit {
                self.used.fetch_sub(new, Ordering::Relaxed);
                return false;
            }
        } else {
            self.used.fetch_sub(old - new, Ordering::Relaxed);
        }
        true
    }
}

/// How much a connection's reader may hold, and for how long.
#[derive(Clone, Debug)]
pub struct ReadLimits {
    /// Maximum message size until [`ConnHandle::open`] (a CER/CEA fits in a few kB).
    pub before_open: usize,
    /// A message whose first bytes arrived must be complete within this time.
    pub message_timeout: Duration,
    /// The byte budget this reader shares with every other connection's.
    pub budget: Arc<Budget>,
    /// Where closes for a limit are counted and logged (rate-limited per source).
    pub refusals: Arc<Refusals>,
    /// The remote address, for the refusal log.
    pub source: Option<IpAddr>,
    /// The TCP socket under the stream (a duplicate of its descriptor), to acknowledge what
    /// each read took at once: see [`quick_ack`].
    pub ack: Option<Arc<socket2::Socket>>,
}

/// A handle on `tcp` for [`ReadLimits::ack`] (`None` if the descriptor cannot be duplicated:
/// the connection then works with the kernel's delayed acknowledgements).
///
/// Why: a peer that leaves Nagle's algorithm on (Erlang/OTP's `gen_tcp` default; freeDiameter
/// 1.2.1 as measured) holds each answer written while an earlier one is unacknowledged, and
/// Linux delays our acknowledgement of what we read (RFC 1122 §4.2.3.2 allows up to 500 ms;
/// Linux waits for data to piggyback it on, or its delayed-ACK timer). Between our requests
/// the peer's answers then wait for our next request to carry the ACK: on loopback at a
/// steady 4-5k requests/s the answers arrived in bursts every ~3-4 ms (p50 3 ms, against
/// 130 µs one at a time; BENCHMARKS "Session 12: answers held by the peer's Nagle"). An
/// immediate ACK (`TCP_QUICKACK`, which the kernel clears again by itself, so it is set after
/// each read) releases them. RFC 1122 §4.2.3.2 makes delaying ACKs a SHOULD-level option, so
/// acknowledging at once is always allowed.
///
/// The price: each immediate ACK is a packet of its own where a delayed one would ride on
/// our next request. In a closed loop (requests written continuously) that cost the bridge
/// ~2-3 µs of CPU per originated call (0.116 -> 0.18 core at 22-25k calls/s, 5-10% fewer
/// async calls/s in a closed loop), mostly because the peer's answers no longer pile up
/// behind its Nagle: more, smaller segments, more reads. Neither one ACK per 200 µs per
/// connection nor none after reads of 4 KiB or more kept that CPU (and the first gave back
/// half the gain in p99), so every read asks for it; the incoming path did not move
/// (`bench-threads.sh`, echo and Kamailio).
pub fn quick_ack(tcp: &tokio::net::TcpStream) -> Option<Arc<socket2::Socket>> {
    socket2::SockRef::from(tcp).try_clone().ok().map(Arc::new)
}

/// What a connection tells the node.
#[derive(Debug)]
pub enum ConnEvent {
    /// One complete Diameter message (framing checked; decode it).
    Frame {
        /// The connection it came from.
        conn: ConnId,
        /// Exactly one message, header included, sliced from the read buffer without a copy.
        frame: Bytes,
    },
    /// The stream cannot be framed any more; the connection is being closed. The error may
    /// carry the offending header, to answer it (5011/5015).
    FrameError {
        /// The connection being closed.
        conn: ConnId,
        /// What broke the framing, with the header when one was read.
        error: FrameError,
    },
    /// The connection is gone (sent once, last).
    Closed {
        /// The connection, whose id the node may now forget.
        conn: ConnId,
        /// Why, when it was not an orderly close (I/O error, limit, timeout), for the log.
        error: Option<String>,
    },
}

enum Command {
    Send(Bytes),
    Close,
    /// Flush, then give the stream back (in-band TLS) instead of closing it.
    Release,
}

/// How the writer ends the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Close,
    /// Give the read half back (and send no Closed event).
    Release,
}

/// The node's handle on a connection's writer.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    tx: mpsc::Sender<Command>,
    /// The reader's maximum message size; raised by [`ConnHandle::open`].
    max_len: Arc<AtomicUsize>,
    /// Wakes a reader holding after a message (see [`spawn_upgradable`]).
    opened: Arc<Notify>,
    /// Set to abort both tasks at once, when a graceful close cannot even be queued.
    abort: std::sync::Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Send(b) => write!(f, "Send({} bytes)", b.len()),
            Command::Close => f.write_str("Close"),
            Command::Release => f.write_str("Release"),
        }
    }
}

impl ConnHandle {
    /// Queues a message. False when the queue is full or the connection is gone: the caller
    /// should close it (a full queue means the peer does not read).
    pub fn send(&self, bytes: Bytes) -> bool {
        self.tx.try_send(Command::Send(bytes)).is_ok()
    }

    /// Flush what is queued, then close. If the queue is full (the peer stopped reading),
    /// the connection is aborted instead.
    pub fn close(&self) {
        if self.tx.try_send(Command::Close).is_err() {
            self.abort();
        }
    }

    /// The capabilities exchange identified the peer: accept messages up to `max_len`.
    pub fn open(&self, max_len: usize) {
        self.max_len.store(max_len, Ordering::Relaxed);
        self.opened.notify_one();
    }

    /// In-band TLS: write what is queued (the CEA), then hand the stream back through the
    /// [`Upgrade`] of [`spawn_upgradable`] (on a connection started with [`spawn`], this
    /// closes it). False if that cannot even be queued (the connection is then aborted).
    pub fn release(&self) -> bool {
        if self.tx.try_send(Command::Release).is_err() {
            self.abort();
            return false;
        }
        true
    }

    /// Close now, dropping whatever is queued.
    pub fn abort(&self) {
        let _ = self.abort.send(true);
    }
}

/// Starts the reader and writer of one connection. Events go to `events`.
pub fn spawn<S>(
    conn: ConnId,
    stream: S,
    limits: ReadLimits,
    events: mpsc::Sender<ConnEvent>,
) -> ConnHandle
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    start(conn, stream, limits, events, None, true)
}

/// [`spawn`] for a plain TCP connection: its reader and writer are not polled inside the
/// connection's span. Entering and leaving a span on every poll of the two tasks cost about
/// 570 instructions a poll (BENCHMARKS.md "Session 18: the cost of a bridge wake-up"); on a
/// plain connection nothing under those polls logs but the reader's refusals, which enter the
/// span themselves. A TLS stream's polls run rustls, which may log: [`spawn`] keeps the span
/// around them.
pub fn spawn_plain(
    conn: ConnId,
    stream: tokio::net::TcpStream,
    limits: ReadLimits,
    events: mpsc::Sender<ConnEvent>,
) -> ConnHandle {
    start(conn, stream, limits, events, None, false)
}

/// The halves of a connection started with [`spawn_upgradable`], once released.
pub struct Upgrade<S> {
    read: oneshot::Receiver<(ReadHalf<S>, Bytes)>,
    write: oneshot::Receiver<WriteHalf<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Upgrade<S> {
    /// After [`ConnHandle::release`]: the stream, and the bytes read past the last message
    /// (they come first on the stream's next layer). `None` if the connection ended
    /// otherwise (closed by the peer, aborted).
    pub async fn wait(self) -> Option<(S, Bytes)> {
        let w = self.write.await.ok()?;
        let (r, leftover) = self.read.await.ok()?;
        Some((r.unsplit(w), leftover))
    }
}

/// [`spawn`] for a plain connection that may turn to TLS after CER/CEA: until
/// [`ConnHandle::open`] the reader holds after each message (see the module docs), and
/// [`ConnHandle::release`] hands the stream back through the returned [`Upgrade`].
pub fn spawn_upgradable<S>(
    conn: ConnId,
    stream: S,
    limits: ReadLimits,
    events: mpsc::Sender<ConnEvent>,
) -> (ConnHandle, Upgrade<S>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read_tx, read) = oneshot::channel();
    let (write_tx, write) = oneshot::channel();
    // Plain until released (the TLS handshake then runs on the stream handed back): no span
    // around the polls, as for `spawn_plain`.
    let handle = start(
        conn,
        stream,
        limits,
        events,
        Some((read_tx, write_tx)),
        false,
    );
    (handle, Upgrade { read, write })
}

type GiveBack<S> = (
    oneshot::Sender<(ReadHalf<S>, Bytes)>,
    oneshot::Sender<WriteHalf<S>>,
);

/// `polls_in_span`: every poll of the reader and writer runs inside the connection's span
/// (whatever their stream logs carries it); otherwise only the reader's refusals do.
fn start<S>(
    conn: ConnId,
    stream: S,
    limits: ReadLimits,
    events: mpsc::Sender<ConnEvent>,
    give_back: Option<GiveBack<S>>,
    polls_in_span: bool,
) -> ConnHandle
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let (stop_tx, stop_rx) = oneshot::channel();
    let (abort_tx, abort_rx) = watch::channel(false);
    let max_len = Arc::new(AtomicUsize::new(limits.before_open));
    let opened = Arc::new(Notify::new());
    let (give_read, give_write) = match give_back {
        Some((r, w)) => (Some(r), Some(w)),
        None => (None, None),
    };
    // One span per connection for its whole life: whatever the reader and writer log
    // carries its id and remote address.
    use tracing::Instrument;
    let span = match limits.source {
        Some(ip) => dmnode::spans::conn_from(conn, &ip),
        None => dmnode::spans::conn(conn),
    };
    let writer = writer(write_half, rx, stop_tx, abort_rx.clone(), give_write);
    let reader = reader(
        conn,
        read_half,
        (limits, max_len.clone(), opened.clone()),
        events,
        (stop_rx, abort_rx),
        (give_read, span.clone()),
    );
    if polls_in_span {
        tokio::spawn(writer.instrument(span.clone()));
        tokio::spawn(reader.instrument(span));
    } else {
        tokio::spawn(writer);
        tokio::spawn(reader);
    }
    ConnHandle {
        tx,
        max_len,
        opened,
        abort: std::sync::Arc::new(abort_tx),
    }
}

/// A stream whose first bytes are `prefix` (read earlier by someone else), then the
/// stream's own: the bytes a reader took past the CER/CEA go to the TLS handshake.
#[derive(Debug)]
pub struct Rewound<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewound<S> {
    /// `inner`, with `prefix` (bytes a Diameter reader took past the CEA) read first.
    pub fn new(prefix: Bytes, inner: S) -> Rewound<S> {
        Rewound { prefix, inner }
    }

    /// The underlying stream, e.g. to read its peer address.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn aborted(mut abort: watch::Receiver<bool>) {
    while !*abort.borrow_and_update() {
        if abort.changed().await.is_err() {
            // Every handle is gone: not an abort. The writer ends by itself once its queue
            // is drained (flushing what was queued, e.g. a last answer or DPA).
            std::future::pending::<()>().await;
        }
    }
}

async fn writer<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Command>,
    stop_reader: oneshot::Sender<Stop>,
    abort: watch::Receiver<bool>,
    give_back: Option<oneshot::Sender<W>>,
) {
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    let write_all = async {
        while let Some(first) = rx.recv().await {
            // Batch what is already queued into one flush.
            let mut next = Some(first);
            while let Some(cmd) = next {
                match cmd {
                    Command::Send(b) => w.write_all(&b).await?,
                    Command::Close => {
                        w.flush().await?;
                        return Ok::<Stop, io::Error>(Stop::Close);
                    }
                    Command::Release => {
                        w.flush().await?;
                        return Ok(Stop::Release);
                    }
                }
                next = rx.try_recv().ok();
            }
            w.flush().await?;
        }
        w.flush().await?;
        Ok(Stop::Close)
    };
    let ended = tokio::select! {
        r = write_all => r.ok(),
        _ = aborted(abort) => None,
    };
    match (ended, give_back) {
        (Some(Stop::Release), Some(give)) => {
            // Flushed: nothing is lost by unwrapping the buffer.
            let _ = give.send(w.into_inner());
            let _ = stop_reader.send(Stop::Release);
        }
        (Some(_), _) => {
            let _ = w.shutdown().await;
            let _ = stop_reader.send(Stop::Close);
        }
        (None, _) => {
            let _ = stop_reader.send(Stop::Close);
        }
    }
}

/// Gives the read half back (in-band TLS), with the bytes read past the last message.
fn hand_over<R>(give_back: Option<oneshot::Sender<(R, Bytes)>>, r: R, framer: &mut Framer) {
    if let Some(give) = give_back {
        let _ = give.send((r, framer.take_buffered()));
    }
}

/// What a reader holding after a message (before open) was woken by.
enum Held {
    Opened,
    Stop(Stop),
    Aborted,
}

async fn reader<R: AsyncRead + Unpin>(
    conn: ConnId,
    mut r: R,
    (limits, max_len, opened): (ReadLimits, Arc<AtomicUsize>, Arc<Notify>),
    events: mpsc::Sender<ConnEvent>,
    (mut stop, abort): (oneshot::Receiver<Stop>, watch::Receiver<bool>),
    (give_back, span): (Option<oneshot::Sender<(R, Bytes)>>, tracing::Span),
) {
    let abort = aborted(abort);
    tokio::pin!(abort);
    // Hold after each message until open: only on connections that may turn to TLS.
    let mut hold = give_back.is_some();
    let mut max = max_len.load(Ordering::Relaxed);
    let mut framer = Framer::new(max);
    let mut buf = vec![0u8; max.min(READ_CHUNK)];
    // Bytes this reader counts against the budget, and when the partial message it holds
    // started to arrive.
    let mut share = 0usize;
    let mut partial_since: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    // In the connection's span, which the reader's polls may not be in (`spawn_plain`).
    let refuse = |cause: Refusal, detail: String| {
        span.in_scope(|| {
            limits.refusals.record(
                cause,
                limits.source,
                &format!("connection {conn:?}: {detail}"),
                std::time::Instant::now(),
            )
        });
        Some(detail)
    };
    let error = 'read: loop {
        let raised = max_len.load(Ordering::Relaxed);
        if raised != max {
            max = raised;
            framer.set_max_message_len(max);
            buf.resize(max.min(READ_CHUNK), 0);
        }
        let deadline = partial_since.map_or(far, |t| t + limits.message_timeout);
        let n = tokio::select! {
            s = &mut stop => match s {
                Ok(Stop::Release) => {
                    limits.budget.account(share, 0);
                    return hand_over(give_back, r, &mut framer);
                }
                _ => break None,
            },
            _ = &mut abort => break Some("aborted".to_string()),
            // Armed only while a partial message is held: a timer made and polled on every
            // read registered with the runtime's timer wheel and left it again each time, a
            // cost per wake-up of the reader (BENCHMARKS.md "Session 18: the cost of a bridge
            // wake-up"). Disabled, the future is made but not polled: nothing registered.
            _ = tokio::time::sleep_until(deadline), if partial_since.is_some() => {
                break refuse(
                    Refusal::MessageTimeout,
                    format!(
                        "message incomplete {:?} after its first bytes ({} bytes buffered)",
                        limits.message_timeout,
                        framer.buffered()
                    ),
                );
            }
            n = r.read(&mut buf) => n,
        };
        let n = match n {
            Ok(0) => break None,
            Ok(n) => n,
            Err(e) => break Some(e.to_string()),
        };
        if let Some(ack) = &limits.ack {
            let _ = ack.set_tcp_quickack(true);
        }
        // The limit may have been raised while this read waited (the CEA went out meanwhile).
        let raised = max_len.load(Ordering::Relaxed);
        if raised != max {
            max = raised;
            framer.set_max_message_len(max);
        }
        let data = buf.get(..n).unwrap_or(&[]);
        if let Err(error) = framer.feed(data) {
            let _ = events.send(ConnEvent::FrameError { conn, error }).await;
            break frame_refusal(&error, refuse);
        }
        let mut failed = None;
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    if events.send(ConnEvent::Frame { conn, frame }).await.is_err() {
                        limits.budget.account(share, 0);
                        return; // the node is gone
                    }
                    if !hold {
                        continue;
                    }
                    // Before open on a connection that may turn to TLS: read no further
                    // until the node decides (open, hand over to TLS, or close).
                    let held = tokio::select! {
                        _ = opened.notified() => Held::Opened,
                        s = &mut stop => Held::Stop(s.unwrap_or(Stop::Close)),
                        _ = &mut abort => Held::Aborted,
                    };
                    match held {
                        Held::Opened => hold = false,
                        Held::Stop(Stop::Release) => {
                            limits.budget.account(share, 0);
                            return hand_over(give_back, r, &mut framer);
                        }
                        Held::Stop(Stop::Close) => break 'read None,
                        Held::Aborted => break 'read Some("aborted".to_string()),
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = events.send(ConnEvent::FrameError { conn, error }).await;
                    failed = frame_refusal(&error, refuse);
                    break;
                }
            }
        }
        if failed.is_some() {
            break failed;
        }
        let held = framer.buffered();
        partial_since = match (held, partial_since) {
            (0, _) => None,
            (_, Some(t)) => Some(t),
            (_, None) => Some(tokio::time::Instant::now()),
        };
        if !limits.budget.account(share, held) {
            share = 0;
            break refuse(
                Refusal::BufferBudget,
                format!(
                    "global receive buffer budget spent ({} bytes held here)",
                    held
                ),
            );
        }
        share = held;
    };
    limits.budget.account(share, 0);
    let _ = events.send(ConnEvent::Closed { conn, error }).await;
}

/// A frame the reader cannot take: a message over the size limit is a refusal of ours
/// (counted here, as [`Refusal::MessageTooLarge`]); any other framing error is the peer's
/// and is counted by the node with its answer ([`dmnode::endpoint::Endpoint::frame_error`]),
/// so that each event is counted once.
fn frame_refusal(
    error: &FrameError,
    refuse: impl Fn(Refusal, String) -> Option<String>,
) -> Option<String> {
    if error.is_size_limit() {
        refuse(Refusal::MessageTooLarge, error.to_string())
    } else {
        Some(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::{Header, Message, MessageWriter};
    use tokio::io::duplex;

    fn limits(max: usize) -> ReadLimits {
        ReadLimits {
            ack: None,
            before_open: max,
            message_timeout: Duration::from_secs(5),
            budget: Arc::new(Budget::new(1 << 20)),
            refusals: Arc::new(Refusals::new()),
            source: None,
        }
    }

    fn msg(hbh: u32) -> Bytes {
        let mut w = MessageWriter::new(Header::request(280, 0, hbh, hbh));
        w.str(264, 0x40, 0, "peer.example.net");
        w.finish().unwrap()
    }

    #[tokio::test]
    async fn frames_in_order_and_close_once() {
        let (ours, mut theirs) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(16);
        let handle = spawn(ConnId(1), ours, limits(4096), tx);
        // Two messages in one write, one split across two writes.
        let (a, b, c) = (msg(1), msg(2), msg(3));
        let mut first = a.to_vec();
        first.extend_from_slice(&b);
        first.extend_from_slice(&c[..7]);
        theirs.write_all(&first).await.unwrap();
        theirs.write_all(&c[7..]).await.unwrap();
        for want in 1..=3 {
            match rx.recv().await.unwrap() {
                ConnEvent::Frame { conn, frame } => {
                    assert_eq!(conn, ConnId(1));
                    assert_eq!(Message::decode(frame).unwrap().header.hop_by_hop, want);
                }
                other => panic!("{other:?}"),
            }
        }
        // Our side writes, then closes after flushing.
        assert!(handle.send(msg(9)));
        handle.close();
        let mut got = vec![0u8; 1024];
        let mut read = 0;
        loop {
            let n = theirs.read(&mut got[read..]).await.unwrap();
            if n == 0 {
                break;
            }
            read += n;
        }
        assert_eq!(
            Message::decode(Bytes::copy_from_slice(&got[..read]))
                .unwrap()
                .header
                .hop_by_hop,
            9
        );
        assert!(matches!(
            rx.recv().await.unwrap(),
            ConnEvent::Closed {
                conn: ConnId(1),
                ..
            }
        ));
        assert!(rx.recv().await.is_none(), "Closed is the last event");
    }

    /// Over real TCP, with a peer that leaves Nagle on: the reader asks for an immediate
    /// ACK through a duplicate of its socket (the same socket: same addresses) and frames
    /// arrive as without it. How much sooner a Nagle-held answer comes is a benchmark's
    /// question (BENCHMARKS "Session 12: answers held by the peer's Nagle"), not a test's.
    #[tokio::test]
    async fn immediate_acks_go_through_the_same_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (ours, (mut theirs, _)) = (ours.unwrap(), accepted.unwrap());
        theirs.set_nodelay(false).unwrap();
        let ack = quick_ack(&ours).expect("a duplicate of the descriptor");
        assert_eq!(
            ack.local_addr().unwrap().as_socket(),
            Some(ours.local_addr().unwrap())
        );
        assert_eq!(
            ack.peer_addr().unwrap().as_socket(),
            Some(ours.peer_addr().unwrap())
        );
        let (tx, mut rx) = mpsc::channel(16);
        let mut l = limits(4096);
        l.ack = Some(ack);
        let _handle = spawn(ConnId(4), ours, l, tx);
        // Two small writes: the second is the one Nagle holds until the first is acked.
        for hbh in 1..=2 {
            theirs.write_all(&msg(hbh)).await.unwrap();
        }
        for want in 1..=2 {
            match rx.recv().await.unwrap() {
                ConnEvent::Frame { frame, .. } => {
                    assert_eq!(Message::decode(frame).unwrap().header.hop_by_hop, want)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn oversized_message_is_a_frame_error_with_its_header() {
        let (ours, mut theirs) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(16);
        let _handle = spawn(ConnId(2), ours, limits(4096), tx);
        let mut h = Header::request(272, 4, 5, 6);
        h.length = 100_000;
        let mut b = bytes::BytesMut::new();
        h.encode(&mut b);
        theirs.write_all(&b).await.unwrap();
        match rx.recv().await.unwrap() {
            ConnEvent::FrameError { error, .. } => {
                assert_eq!(error.result_code(), Some(5015));
                assert_eq!(error.header.map(|h| h.hop_by_hop), Some(5));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            rx.recv().await.unwrap(),
            ConnEvent::Closed { error: Some(_), .. }
        ));
    }

    #[tokio::test]
    async fn peer_close_is_reported() {
        let (ours, theirs) = duplex(1024);
        let (tx, mut rx) = mpsc::channel(16);
        let _handle = spawn(ConnId(3), ours, limits(4096), tx);
        drop(theirs);
        assert!(matches!(
            rx.recv().await.unwrap(),
            ConnEvent::Closed {
                conn: ConnId(3),
                ..
            }
        ));
    }

    #[tokio::test]
    async fn trickled_message_is_cut_off_and_counted() {
        let (ours, mut theirs) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(16);
        let mut l = limits(4096);
        l.message_timeout = Duration::from_millis(300);
        let refusals = l.refusals.clone();
        let budget = l.budget.clone();
        let _handle = spawn(ConnId(4), ours, l, tx);
        let m = msg(1);
        theirs.write_all(&m[..24]).await.unwrap();
        // One more byte every 100 ms: each read is progress, but the message never ends.
        for i in 24..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = theirs.write_all(&m[i..i + 1]).await;
        }
        match rx.recv().await.unwrap() {
            ConnEvent::Closed { error: Some(e), .. } => assert!(e.contains("incomplete"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(refusals.get(Refusal::MessageTimeout), 1);
        assert_eq!(budget.used(), 0, "the reader's share is released");
    }

    #[tokio::test]
    async fn small_limit_until_open_then_raised() {
        let (ours, mut theirs) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(16);
        let handle = spawn(ConnId(5), ours, limits(64), tx);
        // Fits the small limit; after `open`, a bigger one passes too.
        let small = msg(1);
        assert!(small.len() <= 64, "{}", small.len());
        theirs.write_all(&small).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), ConnEvent::Frame { .. }));
        handle.open(4096);
        let mut w = MessageWriter::new(Header::request(280, 0, 2, 2));
        w.str(264, 0x40, 0, &"x".repeat(200));
        let big = w.finish().unwrap();
        theirs.write_all(&big).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), ConnEvent::Frame { .. }));
        // And before `open`, the same message is refused as too large.
        let (ours, mut theirs) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(16);
        let _h = spawn(ConnId(6), ours, limits(64), tx);
        theirs.write_all(&big).await.unwrap();
        assert!(matches!(
            rx.recv().await.unwrap(),
            ConnEvent::FrameError { .. }
        ));
    }

    #[tokio::test]
    async fn budget_overflow_closes_the_connection_that_overflows() {
        let (ours, mut theirs) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(16);
        let mut l = limits(4096);
        l.budget = Arc::new(Budget::new(100));
        let refusals = l.refusals.clone();
        let _h = spawn(ConnId(7), ours, l, tx);
        let mut h = Header::request(272, 4, 5, 6);
        h.length = 2000;
        let mut b = bytes::BytesMut::new();
        h.encode(&mut b);
        b.extend_from_slice(&[0u8; 200]);
        theirs.write_all(&b).await.unwrap();
        match rx.recv().await.unwrap() {
            ConnEvent::Closed { error: Some(e), .. } => assert!(e.contains("budget"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(refusals.get(Refusal::BufferBudget), 1);
    }

    #[tokio::test]
    async fn upgradable_holds_after_a_message_and_hands_back_what_follows() {
        let (ours, mut theirs) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(16);
        let (handle, upgrade) = spawn_upgradable(ConnId(8), ours, limits(4096), tx);
        // A CER and, in the same write, the first bytes of a ClientHello (0x16 0x03 0x01):
        // not Diameter, and not to be taken for it.
        let mut first = msg(1).to_vec();
        first.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x05]);
        theirs.write_all(&first).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), ConnEvent::Frame { .. }));
        // More handshake bytes arrive after our answer is queued: the reader holds, so
        // they stay in the socket.
        assert!(handle.send(msg(2)));
        theirs.write_all(b"hello").await.unwrap();
        assert!(handle.release());
        let (mut stream, leftover) = upgrade.wait().await.expect("the stream comes back");
        assert_eq!(&leftover[..], &[0x16, 0x03, 0x01, 0x00, 0x05]);
        // Our queued answer was written before the hand-over.
        let answer = read_one(&mut theirs).await;
        assert_eq!(Message::decode(answer).unwrap().header.hop_by_hop, 2);
        // The rest is on the stream, in order, through Rewound.
        let mut rewound = Rewound::new(leftover, &mut stream);
        let mut got = [0u8; 10];
        rewound.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x16\x03\x01\x00\x05hello");
        // No Closed event: the connection was handed over, not closed.
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn upgradable_reads_on_once_open() {
        let (ours, mut theirs) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(16);
        let (handle, _upgrade) = spawn_upgradable(ConnId(9), ours, limits(4096), tx);
        let mut two = msg(1).to_vec();
        two.extend_from_slice(&msg(2));
        theirs.write_all(&two).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), ConnEvent::Frame { .. }));
        // Held: the second message waits for the node's decision.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err());
        handle.open(4096);
        match rx.recv().await.unwrap() {
            ConnEvent::Frame { frame, .. } => {
                assert_eq!(Message::decode(frame).unwrap().header.hop_by_hop, 2)
            }
            other => panic!("{other:?}"),
        }
        // Closing a held connection still reports Closed once.
        let (ours, mut theirs) = duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(16);
        let (handle, upgrade) = spawn_upgradable(ConnId(10), ours, limits(4096), tx);
        theirs.write_all(&msg(3)).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), ConnEvent::Frame { .. }));
        handle.close();
        assert!(matches!(
            rx.recv().await.unwrap(),
            ConnEvent::Closed { error: None, .. }
        ));
        assert!(upgrade.wait().await.is_none());
    }

    async fn read_one(s: &mut tokio::io::DuplexStream) -> Bytes {
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
        let mut all = head.to_vec();
        all.resize(len, 0);
        s.read_exact(&mut all[4..]).await.unwrap();
        Bytes::from(all)
    }
}
