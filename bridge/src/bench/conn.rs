//! The tokio side of one bench connection: connect and exchange capabilities, then drive a
//! [`Client`] over the socket from a single task.
//!
//! One task per connection, no channels and no split halves: the loop polls the client, which
//! appends every due request to one output buffer, writes that buffer with as few `write`
//! calls as the socket allows (requests made in one poll leave in one segment train), and
//! waits for whichever comes first of readable, writable (only while output is pending) and
//! the client's next timer. Reads go straight into the framer's buffer; frames are split off
//! without copying. The clock is read once per wake-up and shared by everything handled in it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use dmproto::{Framer, Message};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::capabilities::{self as caps, AppAdvert, LocalNode, PeerInfo};
use super::client::Client;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Largest message accepted from the peer.
pub const MAX_MESSAGE: usize = 1 << 20;

/// A connection past CER/CEA and the first DWR/DWA.
pub struct Established {
    pub stream: TcpStream,
    /// May already hold messages that followed the DWA.
    pub framer: Framer,
    pub peer: PeerInfo,
    /// The peer's DWRs answered during the handshake.
    pub dwr_answered: u64,
}

/// Connects, sends CER, checks the CEA and does one DWR/DWA round trip, all within `timeout`.
pub async fn handshake(
    addr: SocketAddr,
    node: &LocalNode,
    apps: &[AppAdvert],
    ids: (u32, u32),
    timeout: Duration,
) -> Result<Established, String> {
    let work = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        // Requests are small and latency is measured: never let Nagle hold them back.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("{addr}: TCP_NODELAY: {e}"))?;
        let local = stream
            .local_addr()
            .map_err(|e| format!("{addr}: local address: {e}"))?;
        let cer = caps::cer(node, local.ip(), apps, ids.0, ids.1)
            .map_err(|e| format!("encoding CER: {e}"))?;
        stream
            .write_all(&cer)
            .await
            .map_err(|e| format!("{addr}: sending CER: {e}"))?;
        let mut framer = Framer::new(MAX_MESSAGE);
        let cea = next_message(&stream, &mut framer, addr, "CEA").await?;
        let info = caps::check_cea(&cea).map_err(|e| format!("{addr}: {e}"))?;
        // DWR round trip before the load (see `caps::dwr`); the peer's own requests in
        // between are answered.
        let (dwr_hbh, dwr_e2e) = (ids.0.wrapping_sub(1), ids.1.wrapping_sub(1));
        let dwr = caps::dwr(node, dwr_hbh, dwr_e2e).map_err(|e| format!("encoding DWR: {e}"))?;
        stream
            .write_all(&dwr)
            .await
            .map_err(|e| format!("{addr}: sending DWR: {e}"))?;
        let mut dwr_answered = 0;
        loop {
            let m = next_message(&stream, &mut framer, addr, "DWA").await?;
            if m.is_request() {
                let answer = match m.header.code {
                    caps::cmd::DWR => {
                        dwr_answered += 1;
                        caps::dwa(node, &m)
                    }
                    _ => caps::unsupported(node, &m),
                }
                .map_err(|e| format!("encoding an answer: {e}"))?;
                stream
                    .write_all(&answer)
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?;
                if m.header.code == caps::cmd::DPR {
                    return Err(format!("{addr}: the peer sent DPR right after CEA"));
                }
            } else if m.header.code == caps::cmd::DWR && m.header.hop_by_hop == dwr_hbh {
                return Ok(Established {
                    stream,
                    framer,
                    peer: info,
                    dwr_answered,
                });
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{addr}: no CEA/DWA within {} ms", timeout.as_millis()))?
}

/// Reads until the framer yields a message.
async fn next_message(
    stream: &TcpStream,
    framer: &mut Framer,
    addr: SocketAddr,
    what: &str,
) -> Result<Message, String> {
    loop {
        if let Some(frame) = framer
            .next_frame()
            .map_err(|e| format!("{addr}: bad data instead of {what}: {e}"))?
        {
            return Message::decode(frame).map_err(|e| format!("{addr}: bad {what}: {e}"));
        }
        let buf = framer
            .read_space(READ_CHUNK)
            .map_err(|e| format!("{addr}: {e}"))?;
        stream
            .readable()
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        match stream.try_read_buf(buf) {
            Ok(0) => {
                return Err(format!(
                    "{addr}: the peer closed the connection before {what}"
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("{addr}: reading {what}: {e}")),
        }
    }
}

/// Writes as much of `out` as the socket takes now.
fn flush(stream: &TcpStream, out: &mut BytesMut) -> io::Result<()> {
    while !out.is_empty() {
        match stream.try_write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        // Reuse the allocation from the start instead of creeping through it.
        out.clear();
    }
    Ok(())
}

/// Runs the connection until the client is done; returns it with its tally. `tick`: rate
/// mode's fine clock ([`super::pacer`]), which wakes the loop between tokio's 1 ms timer
/// ticks so scheduled requests leave close to their time instead of in bursts.
pub async fn drive(
    mut stream: TcpStream,
    mut framer: Framer,
    mut client: Client,
    tick: Option<Arc<Notify>>,
) -> Client {
    let mut out = BytesMut::with_capacity(64 * 1024);
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    let sleep = tokio::time::sleep_until(far());
    tokio::pin!(sleep);
    // Frames that arrived with the CEA (a DWR right behind it) are already in the framer.
    if let Err(why) = handle_frames(&mut framer, &mut client, &mut out) {
        client.end(Some(why));
    }
    while !client.is_done() {
        let now = Instant::now();
        client.poll(now, &mut out);
        if let Err(e) = flush(&stream, &mut out) {
            client.end(Some(format!("write: {e}")));
            break;
        }
        if client.is_done() {
            break;
        }
        let wake = client.next_wakeup(now);
        if let Some(w) = wake {
            let w = tokio::time::Instant::from_std(w);
            if sleep.deadline() != w {
                sleep.as_mut().reset(w);
            }
        }
        tokio::select! {
            biased;
            r = stream.readable() => {
                if let Err(e) = r {
                    client.end(Some(format!("read: {e}")));
                    break;
                }
                if let Err(why) = read_once(&stream, &mut framer, &mut client, &mut out) {
                    client.end(Some(why));
                    break;
                }
            }
            r = stream.writable(), if !out.is_empty() => {
                if let Err(e) = r {
                    client.end(Some(format!("write: {e}")));
                    break;
                }
            }
            _ = &mut sleep, if wake.is_some() => {}
            _ = ticked(tick.as_deref()), if tick.is_some() => {}
        }
    }
    // Whatever is still queued (a DPA to the peer's DPR, our DPR): best effort, bounded.
    if !out.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    client
}

/// The next tick of the pacer (never, without one).
async fn ticked(tick: Option<&Notify>) {
    match tick {
        Some(t) => t.notified().await,
        None => std::future::pending().await,
    }
}

/// One `read` into the framer, then every complete frame to the client.
fn read_once(
    stream: &TcpStream,
    framer: &mut Framer,
    client: &mut Client,
    out: &mut BytesMut,
) -> Result<(), String> {
    let buf = framer.read_space(READ_CHUNK).map_err(|e| e.to_string())?;
    match stream.try_read_buf(buf) {
        Ok(0) => return Err("the peer closed the connection".into()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
        Err(e) => return Err(format!("read: {e}")),
    }
    handle_frames(framer, client, out)
}

/// Hands every complete frame in the framer to the client, with one clock reading.
fn handle_frames(
    framer: &mut Framer,
    client: &mut Client,
    out: &mut BytesMut,
) -> Result<(), String> {
    let now = Instant::now();
    while let Some(frame) = framer.next_frame().map_err(|e| format!("framing: {e}"))? {
        client.on_frame(now, frame, out)?;
        if client.is_done() {
            break;
        }
    }
    Ok(())
}
