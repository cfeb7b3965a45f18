//! The unix control socket: registration, doorbell and liveness.
//!
//! `SOCK_SEQPACKET` keeps message boundaries (no framing code) and, like a
//! stream socket, reports EOF when the other process dies — which is how
//! each side learns the other is gone, without heartbeats. The same
//! connection carries the doorbell: a one-byte message sent only when the
//! ring header says the other side sleeps (see [`crate::ring`]).
//!
//! Messages (first byte is the kind):
//!
//! | kind | direction | content |
//! |------|-----------|---------|
//! | 0x01 | both | doorbell |
//! | 0x10 | worker -> bridge | Hello: wire version, pid, worker name |
//! | 0x11 | bridge -> worker | Welcome: wire version, slot, generation, max_msg, segment path; the segment fd rides along (SCM_RIGHTS) |
//! | 0x12 | bridge -> worker | Refused: reason (the connection is then closed) |
//! | 0x13 | worker -> bridge | Handles: the event names this worker serves |
//! | 0x14 | worker -> bridge | StatusQuery |
//! | 0x15 | bridge -> worker | Status: the bridge's status JSON |
//! | 0x16 | bridge -> worker | Dictionary: generation; a sealed memfd with the bridge's dictionary sources rides along (SCM_RIGHTS) |
//!
//! Hello and Welcome put the wire version right after the kind so that any
//! future layout can still tell an old peer *why* it is refused.
//!
//! The segment travels as a file descriptor rather than only as a path: the
//! worker maps exactly the file the bridge created, even if a restarting
//! bridge has already replaced the path.

use crate::error::{Error, Result};
use crate::record::Reader;
use std::fs::File;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

/// Largest control message (status JSON is truncated to fit).
pub const MAX_CONTROL_MSG: usize = 64 * 1024;
/// Most messages one [`Conn::recv_batch`] takes: a doorbell, and room to learn in the same
/// call that nothing follows it.
pub const RECV_BATCH: usize = 2;
/// Most event names one worker may declare.
pub const MAX_HANDLES: usize = 1024;
/// Longest event name.
pub const MAX_NAME: usize = 128;

const K_DOORBELL: u8 = 0x01;
const K_HELLO: u8 = 0x10;
const K_WELCOME: u8 = 0x11;
const K_REFUSED: u8 = 0x12;
const K_HANDLES: u8 = 0x13;
const K_STATUS_QUERY: u8 = 0x14;
const K_STATUS: u8 = 0x15;
const K_DICTIONARY: u8 = 0x16;

/// Largest dictionary blob a worker reads (the bridge's dictionary files, all together).
pub const MAX_DICTIONARY_BLOB: usize = 64 * 1024 * 1024;

/// Why a registration was refused. This message's shape never changes, so
/// any library version can show any bridge's reason.
pub mod refusal {
    /// Wire versions differ.
    pub const VERSION: u32 = 1;
    /// No free worker slot.
    pub const NO_SLOT: u32 = 2;
    /// Anything else.
    pub const OTHER: u32 = 3;
    /// The connecting process's uid/gid (SO_PEERCRED) is not allowed.
    pub const NOT_ALLOWED: u32 = 4;
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ctl {
    /// Wake up and look at the rings.
    Doorbell,
    /// First message of a worker.
    Hello {
        /// The worker's wire version, first so any bridge can refuse a mismatch with a reason.
        version: u32,
        /// The worker's process id, for logs and status (the bridge trusts SO_PEERCRED, not this).
        pid: u32,
        /// The worker's name (e.g. "opensips worker 3"), shown in status and logs.
        name: String,
    },
    /// The bridge accepted the worker (segment fd attached).
    Welcome {
        /// The bridge's wire version; the worker refuses anything but its own.
        version: u32,
        /// The worker slot the bridge gave this worker: which rings in the segment are its own.
        slot: u32,
        /// The bridge instance's generation (new on every start); the segment header must carry
        /// the same, so a worker never uses a segment a previous bridge left behind.
        generation: u64,
        /// Largest record either side may push, in bytes; must equal the segment's geometry.
        max_msg: u32,
        /// Where the segment lives, for logs and status: the fd that rides along is what is
        /// mapped, since a restarting bridge may already have replaced the path.
        segment_path: String,
    },
    /// The bridge refused the worker; `code` is one of [`refusal`].
    Refused {
        /// One of [`refusal`]: [`refusal::VERSION`] becomes [`Error::Incompatible`] in the
        /// worker (someone must upgrade), anything else [`Error::Refused`].
        code: u32,
        /// The bridge's words for the operator (names both versions on a mismatch).
        reason: String,
    },
    /// Event names served by this worker (`PPR`, `E_DM_PPR`, `*`, ...).
    Handles {
        /// At most [`MAX_HANDLES`] names of at most [`MAX_NAME`] bytes each.
        names: Vec<String>,
    },
    /// Ask for the bridge's status.
    StatusQuery,
    /// The bridge's status as JSON.
    Status {
        /// The status document, truncated to fit [`MAX_CONTROL_MSG`].
        json: String,
    },
    /// The dictionary the bridge runs with, as the dictionary files it loaded on top of the
    /// built-in one ([`encode_sources`]), in a sealed memfd passed with the message. Sent
    /// after the Welcome and again after a reload changed it; `generation` grows with each.
    /// The library converts a script's reply with it, so a reply that does not fit the
    /// dictionary gets an error return in the script (DESIGN §9).
    Dictionary {
        /// 1 for the bridge instance's first dictionary, then one more per reload that changed
        /// it.
        generation: u64,
    },
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Ctl {
    /// Serialises the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Ctl::Doorbell => out.push(K_DOORBELL),
            Ctl::Hello { version, pid, name } => {
                out.push(K_HELLO);
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&pid.to_le_bytes());
                put_str(&mut out, name);
            }
            Ctl::Welcome {
                version,
                slot,
                generation,
                max_msg,
                segment_path,
            } => {
                out.push(K_WELCOME);
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&slot.to_le_bytes());
                out.extend_from_slice(&generation.to_le_bytes());
                out.extend_from_slice(&max_msg.to_le_bytes());
                put_str(&mut out, segment_path);
            }
            Ctl::Refused { code, reason } => {
                out.push(K_REFUSED);
                out.extend_from_slice(&code.to_le_bytes());
                put_str(&mut out, reason);
            }
            Ctl::Handles { names } => {
                out.push(K_HANDLES);
                out.extend_from_slice(
                    &u32::try_from(names.len()).unwrap_or(u32::MAX).to_le_bytes(),
                );
                for n in names {
                    put_str(&mut out, n);
                }
            }
            Ctl::StatusQuery => out.push(K_STATUS_QUERY),
            Ctl::Dictionary { generation } => {
                out.push(K_DICTIONARY);
                out.extend_from_slice(&generation.to_le_bytes());
            }
            Ctl::Status { json } => {
                out.push(K_STATUS);
                put_str(&mut out, json);
            }
        }
        out
    }

    /// Parses one message; every length is checked.
    pub fn decode(buf: &[u8]) -> Result<Ctl> {
        let mut r = Reader {
            buf,
            what: "control message",
        };
        let kind = r.u8()?;
        let msg = match kind {
            K_DOORBELL => Ctl::Doorbell,
            K_HELLO => {
                let version = r.u32()?;
                if version != crate::segment::WIRE_VERSION {
                    // Do not parse further: the rest may have another shape.
                    return Ok(Ctl::Hello {
                        version,
                        pid: 0,
                        name: String::new(),
                    });
                }
                Ctl::Hello {
                    version,
                    pid: r.u32()?,
                    name: r.str()?.to_owned(),
                }
            }
            K_WELCOME => {
                let version = r.u32()?;
                if version != crate::segment::WIRE_VERSION {
                    return Ok(Ctl::Welcome {
                        version,
                        slot: 0,
                        generation: 0,
                        max_msg: 0,
                        segment_path: String::new(),
                    });
                }
                Ctl::Welcome {
                    version,
                    slot: r.u32()?,
                    generation: r.u64()?,
                    max_msg: r.u32()?,
                    segment_path: r.str()?.to_owned(),
                }
            }
            K_REFUSED => Ctl::Refused {
                code: r.u32()?,
                reason: r.str()?.to_owned(),
            },
            K_HANDLES => {
                let n = r.u32()? as usize;
                if n > MAX_HANDLES {
                    return Err(Error::Protocol(format!(
                        "{n} handled names, at most {MAX_HANDLES}"
                    )));
                }
                let mut names = Vec::with_capacity(n);
                for _ in 0..n {
                    let s = r.str()?;
                    if s.is_empty() || s.len() > MAX_NAME {
                        return Err(Error::Protocol(format!("bad handled name {s:?}")));
                    }
                    names.push(s.to_owned());
                }
                Ctl::Handles { names }
            }
            K_STATUS_QUERY => Ctl::StatusQuery,
            K_STATUS => Ctl::Status {
                json: r.str()?.to_owned(),
            },
            K_DICTIONARY => Ctl::Dictionary {
                generation: r.u64()?,
            },
            other => {
                return Err(Error::Protocol(format!(
                    "unknown control message kind {other:#x}"
                )))
            }
        };
        if !r.buf.is_empty() {
            return Err(Error::Protocol("trailing bytes in control message".into()));
        }
        Ok(msg)
    }
}

/// What a non-blocking receive produced.
#[derive(Debug)]
pub enum Recv {
    /// A message of this many bytes (and a descriptor, if one came along).
    Msg(usize, Option<OwnedFd>),
    /// Nothing queued.
    WouldBlock,
    /// The other side closed or died.
    Eof,
}

/// One end of a control connection (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct Conn {
    fd: OwnedFd,
}

fn sockaddr(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(Error::Invalid(format!(
            "control socket path {:?} is empty, contains NUL or is longer than {} bytes",
            path,
            addr.sun_path.len() - 1
        )));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn new_socket() -> Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(Error::last_os("creating control socket"));
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Conn {
    /// Connects to the bridge's control socket.
    pub fn connect(path: &Path) -> Result<Conn> {
        let (addr, len) = sockaddr(path)?;
        let fd = new_socket()?;
        // SAFETY: addr/len describe a valid sockaddr_un.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!("connecting to the bridge at {}", path.display()),
                io::Error::last_os_error(),
            ));
        }
        Ok(Conn { fd })
    }

    /// A connected pair (tests).
    pub fn pair() -> Result<(Conn, Conn)> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(Error::last_os("socketpair"));
        }
        // SAFETY: both are fresh descriptors we own.
        Ok(unsafe {
            (
                Conn {
                    fd: OwnedFd::from_raw_fd(fds[0]),
                },
                Conn {
                    fd: OwnedFd::from_raw_fd(fds[1]),
                },
            )
        })
    }

    /// Sends one message, optionally with a descriptor. Never blocks: a full
    /// socket buffer is `WouldBlock` (for a doorbell that is harmless — the
    /// other side already has one queued).
    pub fn send(&self, msg: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut hdr: libc::msghdr = unsafe { zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        // u64 array: correctly aligned for cmsghdr.
        let mut cbuf = [0u64; 4];
        if let Some(fd) = fd {
            // SAFETY: CMSG_SPACE is a pure computation.
            let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
            hdr.msg_control = cbuf.as_mut_ptr().cast();
            hdr.msg_controllen = space as _;
            // SAFETY: msg_control points at `space` <= 32 bytes of aligned
            // buffer, so the first header and its data fit.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd.as_raw_fd());
            }
        }
        loop {
            // SAFETY: hdr points at live iov/control buffers for the call.
            let n = unsafe {
                libc::sendmsg(
                    self.fd.as_raw_fd(),
                    &hdr,
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receives one message into `buf` without blocking. A message longer
    /// than `buf` is an error (the protocol bounds them).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Recv> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut hdr: libc::msghdr = unsafe { zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        let mut cbuf = [0u64; 8];
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = size_of::<[u64; 8]>() as _;
        let n = loop {
            // SAFETY: hdr points at live buffers for the duration of the call.
            let n = unsafe {
                libc::recvmsg(
                    self.fd.as_raw_fd(),
                    &mut hdr,
                    libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
                )
            };
            if n >= 0 {
                break n;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(Recv::WouldBlock),
                io::ErrorKind::ConnectionReset => return Ok(Recv::Eof),
                _ => return Err(e),
            }
        };
        // Collect descriptors first so none leaks, even on error below.
        let mut got: Option<OwnedFd> = None;
        // SAFETY: walking the control buffer the kernel filled, with the
        // CMSG_* macros, bounded by msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let count =
                        ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                    for i in 0..count {
                        let fd = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                        if got.is_none() {
                            got = Some(fd);
                        } // extra descriptors are closed by dropping them
                    }
                }
                c = libc::CMSG_NXTHDR(&hdr, c);
            }
        }
        if hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control message too long",
            ));
        }
        if n == 0 {
            return Ok(Recv::Eof);
        }
        Ok(Recv::Msg(n as usize, got))
    }

    /// Receives up to [`RECV_BATCH`] messages without blocking, in one `recvmmsg(2)`: message
    /// `i` lands in the `i`-th of `RECV_BATCH` equal parts of `buf` (each at least
    /// [`MAX_CONTROL_MSG`] long; a longer message is an error, as in [`Conn::recv`]). What came
    /// is appended to `got` (cleared first): [`Recv::Msg`] per message, then [`Recv::Eof`] if
    /// the other side closed; nothing if nothing was queued.
    ///
    /// Returns whether the socket was found empty (or closed): fewer messages than
    /// `RECV_BATCH` came, so the kernel's own next receive in the call would have blocked.
    /// A reader that cleared its readiness before calling needs no further receive to learn
    /// that, where a loop of [`Conn::recv`] spends one more system call per drain on the
    /// `EAGAIN` that ends it: with one doorbell per bridge wake-up, half of the bridge's
    /// `recvmsg` calls (BENCHMARKS.md "Session 18: the cost of a bridge wake-up"). A message
    /// that arrives after the call raises readiness anew, as after an `EAGAIN`.
    pub fn recv_batch(&self, buf: &mut [u8], got: &mut Vec<Recv>) -> io::Result<bool> {
        got.clear();
        let each = buf.len() / RECV_BATCH;
        if each < MAX_CONTROL_MSG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive buffer smaller than RECV_BATCH control messages",
            ));
        }
        let mut iovs: [libc::iovec; RECV_BATCH] = std::array::from_fn(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        });
        for (iov, part) in iovs.iter_mut().zip(buf.chunks_exact_mut(each)) {
            iov.iov_base = part.as_mut_ptr().cast();
            iov.iov_len = part.len();
        }
        let mut cbufs = [[0u64; 8]; RECV_BATCH];
        // SAFETY: mmsghdr is plain data; all-zero is valid.
        let mut hdrs: [libc::mmsghdr; RECV_BATCH] = unsafe { zeroed() };
        for ((h, iov), cbuf) in hdrs.iter_mut().zip(iovs.iter_mut()).zip(cbufs.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = cbuf.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = size_of::<[u64; 8]>() as _;
        }
        let n = loop {
            // SAFETY: every header points at live iov/control buffers for the duration of the
            // call; the count passed is the array's length.
            let n = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    RECV_BATCH as _,
                    libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(true),
                io::ErrorKind::ConnectionReset => {
                    got.push(Recv::Eof);
                    return Ok(true);
                }
                _ => return Err(e),
            }
        };
        // Every message's descriptors first, so none leaks, even on error below.
        let mut truncated = false;
        for h in hdrs.iter().take(n) {
            let mut fd: Option<OwnedFd> = None;
            // SAFETY: walking the control buffer the kernel filled for this message, with the
            // CMSG_* macros, bounded by its msg_controllen.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                        let data = libc::CMSG_DATA(c).cast::<RawFd>();
                        let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                            / size_of::<RawFd>();
                        for i in 0..count {
                            let got = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                            if fd.is_none() {
                                fd = Some(got);
                            } // extra descriptors are closed by dropping them
                        }
                    }
                    c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
                }
            }
            truncated |= h.msg_hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
            if h.msg_len == 0 {
                // End of stream (repeated by every receive after it): the last entry.
                got.push(Recv::Eof);
                break;
            }
            got.push(Recv::Msg(h.msg_len as usize, fd));
        }
        if truncated {
            got.clear();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control message too long",
            ));
        }
        Ok(n < RECV_BATCH || matches!(got.last(), Some(Recv::Eof)))
    }

    /// Sends a control message.
    pub fn send_ctl(&self, msg: &Ctl, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        self.send(&msg.encode(), fd)
    }

    /// Rings the other side's doorbell (errors ignored: a full buffer means
    /// one is already pending; a dead peer is noticed by EOF).
    pub fn ring(&self) {
        let _ = self.send(&[K_DOORBELL], None);
    }

    /// Waits until readable (or EOF) or `timeout`; true if readable.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        poll_in(self.fd.as_fd(), timeout)
    }

    /// The peer's pid/uid/gid (SO_PEERCRED).
    pub fn peer_cred(&self) -> io::Result<libc::ucred> {
        // SAFETY: ucred is plain data.
        let mut cred: libc::ucred = unsafe { zeroed() };
        let mut len = size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: cred/len describe a writable ucred.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cred)
    }
}

impl Conn {
    /// Shuts the connection down both ways: the other side sees EOF, and so
    /// does every holder of this socket here (a driver's duplicate becomes
    /// readable), which is how the bridge drops a worker from a place that
    /// cannot report events (see `Bridge::dispatch`).
    pub fn shutdown(&self) {
        // SAFETY: plain syscall on our socket.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// poll(2) for readability.
pub fn poll_in(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(rc > 0);
    }
}

/// What [`prepare_runtime_dir`] did, for the bridge's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeDir {
    /// The directory was missing and was created with this mode (and group).
    Created {
        /// The permission bits it was created with.
        mode: u32,
        /// The group it was handed to (the SIP server's), when one was configured.
        group: Option<u32>,
    },
    /// It existed and passed the checks; left as it is (an operator or
    /// systemd's `RuntimeDirectory=` made it).
    Existing,
}

/// Makes sure the directory that will hold the control socket exists and is
/// safe (DESIGN §10): created here when missing — only its last component,
/// `0700`, or `0750` with `group` so that group's workers can reach the
/// socket — owned by the bridge's user. An existing directory is refused if
/// it is a symlink, not a directory, or writable by others without the
/// sticky bit (anyone could replace the socket there); otherwise it is left
/// as it is: `/tmp`-like shared directories are fine because the socket file
/// itself is owner/group-only and workers are checked by SO_PEERCRED.
///
/// systemd alternative: `RuntimeDirectory=dmbridge` with
/// `RuntimeDirectoryMode=0750` and `Group=<SIP server group>` in the unit
/// creates `/run/dmbridge` before start and removes it after stop; this
/// function then finds it existing and leaves it alone.
pub fn prepare_runtime_dir(dir: &Path, group: Option<u32>) -> Result<RuntimeDir> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            if m.file_type().is_symlink() {
                return Err(Error::Invalid(format!(
                    "control socket directory {} is a symlink; refusing to use it",
                    dir.display()
                )));
            }
            if !m.is_dir() {
                return Err(Error::Invalid(format!(
                    "control socket directory {} is not a directory",
                    dir.display()
                )));
            }
            let mode = m.mode() & 0o7777;
            if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                return Err(Error::Invalid(format!(
                    "control socket directory {} is writable by everyone (mode {mode:04o}) without \
                     the sticky bit: anyone could replace the socket; use a directory of the \
                     bridge's own (e.g. /run/dmbridge, created by the bridge or by systemd's \
                     RuntimeDirectory=)",
                    dir.display()
                )));
            }
            Ok(RuntimeDir::Existing)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mode = if group.is_some() { 0o750 } else { 0o700 };
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(dir)
                .map_err(|e| {
                    Error::io(
                        format!("creating the control socket directory {}", dir.display()),
                        e,
                    )
                })?;
            if let Some(gid) = group {
                std::os::unix::fs::chown(dir, None, Some(gid)).map_err(|e| {
                    Error::io(format!("giving {} to group {gid}", dir.display()), e)
                })?;
            }
            // The umask may have removed bits; set exactly what we mean.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("setting the mode of {}", dir.display()), e))?;
            Ok(RuntimeDir::Created { mode, group })
        }
        Err(e) => Err(Error::io(
            format!("looking at the control socket directory {}", dir.display()),
            e,
        )),
    }
}

/// The bridge's listening control socket. Removes its path on drop.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    path: std::path::PathBuf,
}

impl Listener {
    /// Binds `path` (replacing a stale socket file) with mode 0600, or 0660
    /// and group `group`.
    pub fn bind(path: &Path, group: Option<u32>) -> Result<Listener> {
        let (addr, len) = sockaddr(path)?;
        match std::fs::symlink_metadata(path) {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                std::fs::remove_file(path).map_err(|e| {
                    Error::io(format!("removing stale socket {}", path.display()), e)
                })?
            }
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                )))
            }
            Err(_) => {}
        }
        let fd = new_socket()?;
        // SAFETY: addr/len describe a valid sockaddr_un.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc < 0 {
            return Err(Error::last_os(format!(
                "binding control socket {}",
                path.display()
            )));
        }
        let listener = Listener {
            fd,
            path: path.to_path_buf(),
        };
        if let Some(gid) = group {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(|e| Error::io(format!("giving {} to group {gid}", path.display()), e))?;
        }
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| Error::io("setting control socket permissions", e))?;
        // SAFETY: plain syscall on our socket.
        if unsafe { libc::listen(listener.fd.as_raw_fd(), 128) } < 0 {
            return Err(Error::last_os("listen on control socket"));
        }
        Ok(listener)
    }

    /// Accepts one pending connection without blocking.
    pub fn accept(&self) -> io::Result<Option<Conn>> {
        loop {
            // SAFETY: plain syscall; null address arguments are allowed.
            let fd = unsafe {
                libc::accept4(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            };
            if fd >= 0 {
                // SAFETY: accept4 just returned this descriptor: open, and owned by nobody else.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                return Ok(Some(Conn { fd }));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                _ => return Err(e),
            }
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Turns a received descriptor into the segment file.
pub fn fd_to_file(fd: OwnedFd) -> File {
    File::from(fd)
}

/// Named byte strings (the dictionary files: path, contents) as one blob:
/// `u32 count`, then per item `u32 name length, name, u32 length, bytes` (little-endian).
pub fn encode_sources<'a>(items: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let items: Vec<_> = items.into_iter().collect();
    let mut out = Vec::new();
    out.extend_from_slice(&u32::try_from(items.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (name, bytes) in items {
        put_str(&mut out, name);
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The items of an [`encode_sources`] blob, borrowed from it; every length is checked.
pub fn decode_sources(blob: &[u8]) -> Result<Vec<(&str, &[u8])>> {
    let mut r = Reader {
        buf: blob,
        what: "dictionary sources",
    };
    let n = r.u32()? as usize;
    // Each item takes at least 8 bytes: a count larger than that is damage, not a reason
    // to reserve memory.
    if n > blob.len() / 8 {
        return Err(Error::Protocol(format!(
            "dictionary sources: bad count {n}"
        )));
    }
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push((r.str()?, r.bytes()?));
    }
    if !r.buf.is_empty() {
        return Err(Error::Protocol(
            "trailing bytes in dictionary sources".into(),
        ));
    }
    Ok(items)
}

/// `bytes` in a new anonymous memfd named `name`, sealed against every change, so the
/// processes it is passed to read exactly what the bridge wrote (DESIGN §10: a worker
/// cannot alter what another worker reads).
pub fn sealed_blob(name: &str, bytes: &[u8]) -> Result<OwnedFd> {
    use std::io::Write;
    let cname = std::ffi::CString::new(name.replace('\0', "?"))
        .map_err(|_| Error::Invalid("blob name contains NUL".into()))?;
    // SAFETY: cname is a valid NUL-terminated string; flags are constants.
    let fd =
        unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(Error::last_os("memfd_create for a blob"));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)
        .map_err(|e| Error::io("writing a blob", e))?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: plain fcntl on our descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(Error::last_os("sealing a blob"));
    }
    Ok(OwnedFd::from(file))
}

/// Reads a blob passed as `fd` (at most `max` bytes) from its start.
pub fn read_blob(fd: OwnedFd, max: usize) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = File::from(fd);
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading a blob's size", e))?
        .len();
    if len > max as u64 {
        return Err(Error::Protocol(format!(
            "blob of {len} bytes, at most {max}"
        )));
    }
    let mut out = vec![0; len as usize];
    file.read_exact_at(&mut out, 0)
        .map_err(|e| Error::io("reading a blob", e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_roundtrip() {
        let msgs = vec![
            Ctl::Doorbell,
            Ctl::Dictionary { generation: 7 },
            Ctl::Hello {
                version: crate::segment::WIRE_VERSION,
                pid: 42,
                name: "worker 3".into(),
            },
            Ctl::Welcome {
                version: crate::segment::WIRE_VERSION,
                slot: 2,
                generation: 99,
                max_msg: 65536,
                segment_path: "/dev/shm/x".into(),
            },
            Ctl::Refused {
                code: refusal::OTHER,
                reason: "no".into(),
            },
            Ctl::Handles {
                names: vec!["PPR".into(), "*".into()],
            },
            Ctl::StatusQuery,
            Ctl::Status { json: "{}".into() },
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(Ctl::decode(&b).unwrap(), m);
            for n in 0..b.len() {
                let _ = Ctl::decode(&b[..n]);
            }
        }
        assert!(Ctl::decode(&[0x77]).is_err());
        assert!(Ctl::decode(&[]).is_err());
    }

    #[test]
    fn foreign_version_hello_is_still_recognised() {
        let mut b = vec![K_HELLO];
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(b"whatever comes in version 7");
        assert_eq!(
            Ctl::decode(&b).unwrap(),
            Ctl::Hello {
                version: 7,
                pid: 0,
                name: String::new()
            }
        );
    }

    #[test]
    fn listener_is_owner_only_and_refuses_to_replace_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("dmshm-ctl-{}.sock", std::process::id()));
        let l = Listener::bind(&path, None).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let c = Conn::connect(&path).unwrap();
        assert!(poll_in(l.as_fd(), Duration::from_secs(1)).unwrap());
        let server = l.accept().unwrap().unwrap();
        assert_eq!(server.peer_cred().unwrap().pid as u32, std::process::id());
        drop((c, server));
        // A stale socket is replaced; a regular file is not.
        std::mem::forget(l); // leave the socket file behind, as a crashed bridge would
        let l2 = Listener::bind(&path, None).unwrap();
        drop(l2);
        std::fs::write(&path, b"not a socket").unwrap();
        let e = Listener::bind(&path, None).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn fd_passing_and_eof() {
        let (a, b) = Conn::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        a.send_ctl(
            &Ctl::Refused {
                code: 2,
                reason: "x".into(),
            },
            Some(f.as_fd()),
        )
        .unwrap();
        let mut buf = [0u8; 128];
        match b.recv(&mut buf).unwrap() {
            Recv::Msg(n, Some(_fd)) => assert_eq!(
                Ctl::decode(&buf[..n]).unwrap(),
                Ctl::Refused {
                    code: 2,
                    reason: "x".into()
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(b.recv(&mut buf).unwrap(), Recv::WouldBlock));
        a.ring();
        assert!(b.wait_readable(Duration::from_secs(1)).unwrap());
        assert!(matches!(b.recv(&mut buf).unwrap(), Recv::Msg(1, None)));
        drop(a);
        assert!(matches!(b.recv(&mut buf).unwrap(), Recv::Eof));
    }

    /// `recv_batch` says "drained" exactly when fewer than RECV_BATCH messages were queued, keeps
    /// each message in its own part, passes descriptors, ends with EOF, refuses long messages.
    #[test]
    fn recv_batch_tells_when_drained() {
        let (a, b) = Conn::pair().unwrap();
        let mut buf = vec![0u8; RECV_BATCH * MAX_CONTROL_MSG];
        let mut got = Vec::new();
        // Nothing queued: drained, nothing taken.
        assert!(b.recv_batch(&mut buf, &mut got).unwrap());
        assert!(got.is_empty());
        // One doorbell: taken and drained in the same call.
        a.ring();
        assert!(b.recv_batch(&mut buf, &mut got).unwrap());
        assert!(matches!(got.as_slice(), [Recv::Msg(1, None)]));
        // RECV_BATCH + 1 messages: a full batch (not known drained), then the rest.
        let f = std::fs::File::open("/dev/null").unwrap();
        a.send_ctl(&Ctl::StatusQuery, Some(f.as_fd())).unwrap();
        for _ in 0..RECV_BATCH {
            a.ring();
        }
        assert!(!b.recv_batch(&mut buf, &mut got).unwrap());
        assert_eq!(got.len(), RECV_BATCH);
        match &got[0] {
            Recv::Msg(n, Some(_fd)) => {
                assert_eq!(Ctl::decode(&buf[..*n]).unwrap(), Ctl::StatusQuery)
            }
            other => panic!("{other:?}"),
        }
        let each = buf.len() / RECV_BATCH;
        assert!(matches!(got[1], Recv::Msg(1, None)));
        assert_eq!(Ctl::decode(&buf[each..each + 1]).unwrap(), Ctl::Doorbell);
        assert!(b.recv_batch(&mut buf, &mut got).unwrap());
        assert!(matches!(got.as_slice(), [Recv::Msg(1, None)]));
        // A message, then the other side gone: the message, then EOF, drained.
        a.ring();
        drop(a);
        assert!(b.recv_batch(&mut buf, &mut got).unwrap());
        assert!(matches!(got.as_slice(), [Recv::Msg(1, None), Recv::Eof]));
        assert!(b.recv_batch(&mut buf, &mut got).unwrap());
        assert!(matches!(got.as_slice(), [Recv::Eof]));
        // Longer than a part: an error, as for `recv`; a buffer too small is refused.
        let (a, b) = Conn::pair().unwrap();
        a.send(&vec![K_DOORBELL; MAX_CONTROL_MSG + 1], None)
            .unwrap();
        assert!(b.recv_batch(&mut buf, &mut got).is_err());
        assert!(b.recv_batch(&mut buf[..MAX_CONTROL_MSG], &mut got).is_err());
    }

    #[test]
    fn sources_roundtrip_and_damage() {
        let blob = encode_sources([("a.dict", &b"ATTRIBUTE x"[..]), ("b", &b""[..])]);
        assert_eq!(
            decode_sources(&blob).unwrap(),
            vec![("a.dict", &b"ATTRIBUTE x"[..]), ("b", &b""[..])]
        );
        assert_eq!(decode_sources(&encode_sources([])).unwrap(), vec![]);
        for cut in 0..blob.len() {
            assert!(decode_sources(&blob[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(decode_sources(&longer).is_err());
        // A huge count is refused before any allocation.
        assert!(decode_sources(&u32::MAX.to_le_bytes()).is_err());
    }

    #[test]
    fn sealed_blob_is_read_back_and_cannot_change() {
        let fd = sealed_blob("dmb-test-blob", b"hello").unwrap();
        let copy = fd.try_clone().unwrap();
        assert_eq!(read_blob(fd, 100).unwrap(), b"hello");
        let mut f = File::from(copy);
        use std::io::Write;
        assert!(f.write_all(b"x").is_err(), "the seal forbids writes");
        let fd = sealed_blob("dmb-test-blob", b"hello").unwrap();
        assert!(read_blob(fd, 4).is_err(), "larger than the bound");
    }
}
