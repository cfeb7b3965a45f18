//! libdmbridge: the C ABI used by the OpenSIPS and Kamailio modules.
//!
//! A thin layer over [`dmshm::worker`]: it converts C arguments, validates
//! JSON syntax before anything reaches the bridge, and turns every failure
//! into a negative return value plus a thread-local message
//! (`dmb_last_error()`). No function aborts: each body runs under
//! `catch_unwind`, and a panic becomes `DMB_E_PANIC`. Everything the
//! library returns is allocated and freed by the library (`*_free`); it never
//! uses the SIP server's allocators.
//!
//! The header `include/dmbridge.h` is generated from this file by cbindgen
//! (`cabi/cbindgen.toml`); `cargo test -p dmbridge-cabi` fails when the
//! committed header is stale (`DMB_BLESS=1` rewrites it).

#![allow(non_camel_case_types)]
// Public items carry doc comments (issue 10 item 7): every one flows into include/dmbridge.h.
#![warn(missing_docs)]

mod avps_check;
#[doc(hidden)]
pub mod fuzzing;
mod reply;

use dmshm::record::{IncomingRequest, Payload, ReplyStatus};
use dmshm::worker::{Completion, Worker, WorkerConfig};
use dmshm::Error;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, CStr, CString};
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Success.
pub const DMB_OK: c_int = 0;
/// A bad argument: NULL pointer, invalid UTF-8 or JSON, unknown token.
pub const DMB_E_INVAL: c_int = -1;
/// Not attached to a bridge right now (it is down or restarting); the
/// worker re-attaches by itself, retry later.
pub const DMB_E_DETACHED: c_int = -2;
/// The ring towards the bridge is full (the bridge is not keeping up).
pub const DMB_E_FULL: c_int = -3;
/// The message exceeds the configured maximum size.
pub const DMB_E_TOO_BIG: c_int = -4;
/// The library and the bridge speak different wire versions.
pub const DMB_E_VERSION: c_int = -5;
/// The bridge refused the worker (for example: no free slot).
pub const DMB_E_REFUSED: c_int = -6;
/// A system call failed.
pub const DMB_E_SYS: c_int = -7;
/// The other side broke the protocol (damaged segment or message).
pub const DMB_E_PROTO: c_int = -8;
/// Internal error (a bug in the library); the call had no effect or only part.
pub const DMB_E_PANIC: c_int = -9;

/// Answer class: a 2xxx answer.
pub const DMB_ANSWER_SUCCESS: c_int = 1;
/// Answer class: an answer with an error Result-Code.
pub const DMB_ANSWER_ERROR: c_int = -1;
/// Answer class: no answer within the timeout, or none coming (its connection was lost after
/// sending and no alternate peer could take it, the bridge stopped first, or the bridge went
/// away after taking the request from the library's ring): the peer may have acted on it, so
/// a blind retry may act twice.
pub const DMB_ANSWER_TIMEOUT: c_int = -2;
/// Answer class: not sent (bad JSON, no route, bridge down, too big, busy). "Bridge down"
/// includes a bridge that went away before it took the request from the library's ring
/// (DESIGN §3's "bridge down", made exact: what it had taken is -2): never sent, safe to retry.
pub const DMB_ANSWER_NOT_SENT: c_int = -3;

/// A worker's connection to the bridge (opaque). One per process, created
/// after fork, used by one thread at a time.
pub struct dmb_worker {
    inner: Worker,
    /// The process that attached: a worker inherited through fork must not
    /// be used (it would share the parent's slot and rings).
    pid: u32,
    /// Cleared when the worker is freed: requests taken from it check it
    /// before answering through it (see [`dmb_request_free`]).
    alive: Rc<Cell<bool>>,
    /// The bridge's dictionary, for converting replies here (see [`reply`]).
    dict: reply::ReplyDictionary,
    /// Freed requests kept for the next ones, their buffers with them.
    spare: Spares<dmb_request>,
    /// Freed answers kept for the next ones, as `spare`.
    spare_answers: Spares<dmb_answer>,
    /// The buffer a reply's AVPs are encoded into, kept from one reply to the next.
    reply_buf: bytes::BytesMut,
    /// The JSON reader's scratch buffer for replies (hex, base64, escaped strings), kept too.
    reply_scratch: Vec<u8>,
}

/// At most this many freed requests (and as many answers) are kept per worker for reuse: a
/// Kamailio or OpenSIPS worker runs one request's route at a time, so one is the steady state;
/// a few more cover a module that holds requests a while. With them, taking, reading and
/// freeing a request or an answer allocates nothing once the buffers have grown to the
/// traffic's sizes (issue 15 item 2: no per-request allocation on either side of the seam);
/// before, each was a box and its strings, allocated and freed.
const SPARE_REQUESTS: usize = 4;

/// A request or answer whose buffers have grown past this many bytes in all is not kept: one
/// large message must not pin its memory in every SIP worker for the process's life.
const SPARE_BYTES: usize = 64 * 1024;

/// What a worker hands to C and takes back when C frees it: a request or an answer.
trait Handed {
    /// The bytes its buffers hold on to.
    fn capacity(&self) -> usize;
}

/// Freed requests or answers of one worker, kept with their buffers for the next ones
/// ([`SPARE_REQUESTS`], [`SPARE_BYTES`]). Boxed: C holds one by the box's address, so keeping
/// the box is what saves its allocation. A spare's `owner` and `alive` are its worker's
/// already: a worker keeps only its own.
struct Spares<T>(Vec<Box<T>>);

impl<T: Handed> Spares<T> {
    const fn new() -> Self {
        Spares(Vec::new())
    }

    /// A spare, or `new()` boxed.
    fn take(&mut self, new: impl FnOnce() -> T) -> Box<T> {
        self.0.pop().unwrap_or_else(|| Box::new(new()))
    }

    /// Keeps `b` for the next one, unless enough are kept or it holds too much.
    fn keep(&mut self, b: Box<T>) {
        if self.0.len() < SPARE_REQUESTS && b.capacity() <= SPARE_BYTES {
            self.0.push(b);
        }
    }
}

/// The worker that handed out a request or answer being freed, if C may still use it from
/// here: not after `dmb_detach` (`alive` cleared), not in a forked child (the parent's).
///
/// # Safety
/// `owner` is the worker the object was handed out by, live while `alive` is set.
unsafe fn owner_here<'a>(owner: *mut dmb_worker, alive: &Cell<bool>) -> Option<&'a mut dmb_worker> {
    if !alive.get() {
        return None;
    }
    // SAFETY: `alive` is cleared when the worker is dropped, so `owner` is live; C uses a
    // worker from one thread at a time and no other borrow of it exists during this call.
    let owner = unsafe { &mut *owner };
    (owner.pid == current_pid()).then_some(owner)
}

/// This process's id, cached: `std::process::id()` is a `getpid` system call each time
/// (glibc stopped caching it in 2.25), and every call that takes a worker checks the pid
/// (the fork rule above) — 3.5 `getpid`s per incoming request in a Kamailio worker (issue 15
/// item 2, session 9 profile). 0 = not known; a `pthread_atfork` child handler clears it, so
/// a forked child reads its own pid on its first call.
static PID: AtomicU32 = AtomicU32::new(0);
/// Set once the `pthread_atfork` handler is registered: only then may [`PID`] be kept.
static PID_CACHEABLE: AtomicBool = AtomicBool::new(false);
static PID_ATFORK: Once = Once::new();

extern "C" fn forget_pid_in_child() {
    PID.store(0, Ordering::Relaxed);
}

/// The caller's process id (see [`PID`]).
fn current_pid() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    PID_ATFORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic (async-signal-safe, as
        // a child handler must be); the function lives as long as the process.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) };
        // without the handler nothing is cached: every call asks the kernel, as before
        PID_CACHEABLE.store(rc == 0, Ordering::Relaxed);
    });
    let pid = std::process::id();
    if PID_CACHEABLE.load(Ordering::Relaxed) {
        PID.store(pid, Ordering::Relaxed);
    }
    pid
}

impl Drop for dmb_worker {
    fn drop(&mut self) {
        self.alive.set(false);
    }
}

/// The worker behind `w`, if it is usable from this process.
///
/// # Safety
/// `w` is NULL or a live worker.
unsafe fn worker<'a>(w: *mut dmb_worker) -> Result<&'a mut Worker, c_int> {
    // SAFETY: w is NULL or live per the caller's contract.
    unsafe { handle(w) }.map(|h| &mut h.inner)
}

/// [`worker`], with the library's own state of that worker.
///
/// # Safety
/// `w` is NULL or a live worker.
unsafe fn handle<'a>(w: *mut dmb_worker) -> Result<&'a mut dmb_worker, c_int> {
    // SAFETY: w is NULL or live per the caller's contract.
    let Some(w) = (unsafe { w.as_mut() }) else {
        return Err(invalid("worker is NULL"));
    };
    if w.pid != current_pid() {
        return Err(invalid(
            "this worker was attached by the parent process; call dmb_attach again after fork",
        ));
    }
    Ok(w)
}

/// The start of every function that hands back one pointer: `*out` is cleared first, so it
/// is NULL on every error, then the worker is checked as by [`handle`].
///
/// # Safety
/// `w` is NULL or a live worker (the caller's contract); `out` is NULL or writable.
unsafe fn worker_out<'a, T>(
    w: *mut dmb_worker,
    out: *mut *mut T,
) -> Result<&'a mut dmb_worker, c_int> {
    if out.is_null() {
        return Err(invalid("out is NULL"));
    }
    // SAFETY: out is non-NULL and writable per the caller's contract.
    unsafe { *out = std::ptr::null_mut() };
    // SAFETY: w is NULL or live per the caller's contract.
    unsafe { handle(w) }
}

/// An incoming Diameter request (opaque); free with `dmb_request_free()`.
pub struct dmb_request {
    /// The worker it came from, usable while `alive` is set (the exactly-one-answer rule:
    /// freeing an unanswered request answers it through this worker).
    owner: *mut dmb_worker,
    alive: Rc<Cell<bool>>,
    token: u64,
    app_id: u32,
    cmd_code: u32,
    event: CText,
    sess_id: CText,
    cmd_name: CText,
    origin_host: CText,
    origin_realm: CText,
    avps_json: CText,
}

impl dmb_request {
    /// Overwrites this request (a new one, or a spare) with `r`, reusing the buffers.
    fn fill(&mut self, r: &IncomingRequest<'_>) {
        self.token = r.token;
        self.app_id = r.app_id;
        self.cmd_code = r.cmd_code;
        self.event.set(r.event);
        self.sess_id.set(r.sess_id);
        self.cmd_name.set(r.cmd_name);
        self.origin_host.set(r.origin_host);
        self.origin_realm.set(r.origin_realm);
        self.avps_json.set(r.avps_json);
    }
}

impl Handed for dmb_request {
    fn capacity(&self) -> usize {
        [
            &self.event,
            &self.sess_id,
            &self.cmd_name,
            &self.origin_host,
            &self.origin_realm,
            &self.avps_json,
        ]
        .iter()
        .map(|t| t.0.capacity())
        .sum()
    }
}

/// A NUL-terminated text handed to C whose buffer is reused for the next text (see
/// [`SPARE_REQUESTS`]). Empty until [`set`](Self::set): then it reads as "".
#[derive(Default)]
struct CText(Vec<u8>);

impl CText {
    /// Replaces the text with `s` and its NUL. An interior NUL, which C could not see past, is
    /// dropped, as [`cstring`] does.
    fn set(&mut self, s: &str) {
        self.0.clear();
        // With the NUL's byte: a new buffer is allocated once, not grown for the NUL.
        self.0.reserve(s.len() + 1);
        if s.as_bytes().contains(&0) {
            self.0.extend(s.bytes().filter(|b| *b != 0));
        } else {
            self.0.extend_from_slice(s.as_bytes());
        }
        self.0.push(0);
    }

    fn as_c_str(&self) -> &CStr {
        if self.0.is_empty() {
            return c"";
        }
        // SAFETY: `set` is the only writer: the bytes end with the one NUL it pushed after
        // text from which every NUL was removed.
        unsafe { CStr::from_bytes_with_nul_unchecked(&self.0) }
    }

    fn as_ptr(&self) -> *const c_char {
        self.as_c_str().as_ptr()
    }
}

/// The outcome of an outgoing request (opaque); free with
/// `dmb_answer_free()`.
pub struct dmb_answer {
    /// The worker that took it, which keeps it for reuse when it is freed while `alive` is set
    /// ([`Spares`]).
    owner: *mut dmb_worker,
    alive: Rc<Cell<bool>>,
    handle: u64,
    class: c_int,
    result_code: u32,
    peer_ns: u64,
    worker_ns: u64,
    avps_json: CText,
    error: CText,
}

impl Handed for dmb_answer {
    fn capacity(&self) -> usize {
        self.avps_json.0.capacity() + self.error.0.capacity()
    }
}

// Both are `ManuallyDrop` so that no thread-exit destructor is registered with the C library:
// glibc's `exit()` runs those (`__call_tls_dtors`), and OpenSIPS's children call `exit(0)` from
// their SIGTERM handler, where a `free()` that meets the malloc lock held by the code the
// signal interrupted would hang the process until the main process kills it. What is left at
// a thread's exit is one error string and one backoff per thread, which a SIP server's
// single-threaded processes give back with the process. Assignments through the `RefCell`
// still drop the value they replace. tests/c/dmb_test.c counts the registrations (0).
thread_local! {
    static LAST_ERROR: RefCell<ManuallyDrop<CString>> =
        RefCell::new(ManuallyDrop::new(CString::default()));
    /// Set while the bridge refuses this process (no free slot, not allowed): further
    /// `dmb_attach()` calls wait for `next` instead of knocking again at once.
    static REFUSED: RefCell<ManuallyDrop<Option<Backoff>>> =
        const { RefCell::new(ManuallyDrop::new(None)) };
}
const _: () = assert!(
    !std::mem::needs_drop::<RefCell<ManuallyDrop<CString>>>()
        && !std::mem::needs_drop::<RefCell<ManuallyDrop<Option<Backoff>>>>()
);

/// The pacing of attach attempts after a refusal: the first retry after
/// [`BACKOFF_FIRST`], each further refusal doubles the wait up to [`BACKOFF_MAX`];
/// an attach that succeeds (or fails for another reason) starts over. A SIP server
/// calls `dmb_attach()` on every use while it is not attached, so without this a
/// full bridge would be asked again hundreds of times a second by each process.
struct Backoff {
    next: Instant,
    delay: Duration,
    reason: String,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Before an attach: `Err(DMB_E_REFUSED)` (and the message) while the backoff runs.
fn backoff_wait() -> Result<(), c_int> {
    REFUSED.with(|b| match &**b.borrow() {
        Some(b) if Instant::now() < b.next => {
            set_error(format!(
                "the bridge refused this process ({}); next attach attempt in {} ms \
                 (backoff, at most every {} s)",
                b.reason,
                b.next.saturating_duration_since(Instant::now()).as_millis(),
                BACKOFF_MAX.as_secs()
            ));
            Err(DMB_E_REFUSED)
        }
        _ => Ok(()),
    })
}

/// After an attach: a refusal starts or doubles the backoff, anything else ends it.
fn backoff_note(refused: Option<&str>) {
    REFUSED.with(|b| {
        let mut b = b.borrow_mut();
        **b = refused.map(|reason| {
            let delay = b
                .as_ref()
                .map_or(BACKOFF_FIRST, |p| (p.delay * 2).min(BACKOFF_MAX));
            Backoff {
                next: Instant::now() + delay,
                delay,
                reason: reason.to_owned(),
            }
        });
    });
}

/// A C string from text that may contain NUL bytes (they are dropped; valid
/// JSON and Diameter identities never contain raw NULs).
fn cstring(s: String) -> CString {
    CString::new(s).unwrap_or_else(|e| {
        let mut v = e.into_vec();
        v.retain(|b| *b != 0);
        CString::new(v).unwrap_or_default()
    })
}

fn set_error(msg: impl Into<String>) {
    let c = cstring(msg.into());
    LAST_ERROR.with(|e| **e.borrow_mut() = c);
}

fn code_of(e: &Error) -> c_int {
    match e {
        Error::Io { .. } => DMB_E_SYS,
        Error::Version { .. } | Error::Incompatible(_) => DMB_E_VERSION,
        Error::Protocol(_) => DMB_E_PROTO,
        Error::Refused(_) => DMB_E_REFUSED,
        Error::Detached(_) => DMB_E_DETACHED,
        Error::TooBig { .. } => DMB_E_TOO_BIG,
        Error::Full => DMB_E_FULL,
        Error::Invalid(_) => DMB_E_INVAL,
    }
}

fn fail(e: Error) -> c_int {
    set_error(e.to_string());
    code_of(&e)
}

fn invalid(msg: impl Into<String>) -> c_int {
    set_error(msg);
    DMB_E_INVAL
}

/// Runs `f`, turning a panic into `on_panic` and a message.
fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            set_error(format!(
                "internal error in libdmbridge (please report): {what}"
            ));
            on_panic
        }
    }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, c_int> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// # Safety
/// `p` is NULL (then `len` must be 0) or points at `len` readable bytes.
unsafe fn bytes_arg<'a>(p: *const c_char, len: usize) -> Result<&'a [u8], c_int> {
    if p.is_null() {
        return if len == 0 {
            Ok(b"")
        } else {
            Err(invalid("json is NULL but len is not 0"))
        };
    }
    // SAFETY: p points at len bytes per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// Checks that `json` is a JSON array (DESIGN §4: a list of single-key
/// objects); the bridge checks AVP names and types against the dictionary.
/// Empty input means "no AVPs".
fn check_avps_json(json: &[u8]) -> Result<&[u8], avps_check::ScriptJsonError> {
    check_avps(json).map(|(json, _)| json)
}

/// [`check_avps_json`] with the reply's result AVPs counted in the same pass.
fn check_avps(json: &[u8]) -> Result<(&[u8], avps_check::Counts), avps_check::ScriptJsonError> {
    let json = blank_as_empty(json);
    if json == b"[]" {
        return Ok((json, avps_check::Counts::default()));
    }
    avps_check::scan(json).map(|c| (json, c))
}

/// Why a request's `json`/`len` arguments were refused before anything was sent.
#[derive(Debug, thiserror::Error)]
enum RequestJsonError {
    /// `json` is NULL with a length.
    #[error("json is NULL but len is not 0")]
    NullWithLength,
    /// The library's check of the JSON (callers that did not check it themselves).
    #[error(transparent)]
    Script(#[from] avps_check::ScriptJsonError),
}

/// A request's JSON argument: blank means `[]`; checked with [`check_avps_json`] when
/// `check`, else passed on as the caller checked it (the bridge converts it and refuses
/// what it cannot convert).
///
/// # Safety
/// `json` is NULL (then `len` must be 0) or points at `len` readable bytes.
unsafe fn request_json<'a>(
    json: *const c_char,
    len: usize,
    check: bool,
) -> Result<&'a [u8], RequestJsonError> {
    // SAFETY: json/len per the caller's contract.
    let bytes = unsafe { bytes_arg(json, len) }.map_err(|_| RequestJsonError::NullWithLength)?;
    if check {
        Ok(check_avps_json(bytes)?)
    } else {
        Ok(blank_as_empty(bytes))
    }
}

/// Blank (empty or whitespace only) JSON means "no AVPs": `[]`.
fn blank_as_empty(json: &[u8]) -> &[u8] {
    if json.iter().all(u8::is_ascii_whitespace) {
        b"[]"
    } else {
        json
    }
}

/// The library's version and the wire version it speaks, e.g.
/// `"libdmbridge 0.1.0 (wire 4)"`. Static storage; never NULL.
#[no_mangle]
pub extern "C" fn dmb_version() -> *const c_char {
    // `concat!` takes literals only: the number is written here, and the build fails when
    // it is not `WIRE_VERSION`, so a bump cannot leave the version text behind.
    const _: () = assert!(
        dmshm::segment::WIRE_VERSION == 4,
        "dmb_version's text names another wire version than dmshm::segment::WIRE_VERSION"
    );
    static V: &str = concat!("libdmbridge ", env!("CARGO_PKG_VERSION"), " (wire 4)\0");
    V.as_ptr().cast()
}

/// The message describing this thread's most recent failure ("" if none).
/// Valid until the next failing call on the same thread; never NULL.
/// Failures set it; successful calls leave it unchanged.
#[no_mangle]
pub extern "C" fn dmb_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Registers the calling process with the bridge listening on
/// `control_socket_path` (call after fork, once per process).
///
/// Returns 1 when attached; 0 when the worker was created but the bridge is
/// not reachable yet (it attaches by itself later; `dmb_last_error()` says
/// why); a negative `DMB_E_*` code on failure, with `*out` set to NULL — in
/// particular `DMB_E_VERSION` when library and bridge versions differ.
/// Free the worker with `dmb_detach()`.
///
/// `DMB_E_REFUSED`: the bridge refused this process (for example: no free
/// slot). The library paces the retries: calls in the next 250 ms fail at
/// once without asking the bridge, and each further refusal doubles that
/// wait, up to 30 s; `dmb_last_error()` says so ("retrying with backoff,
/// next attempt in N ms"), for the module's log. Keep calling it as usual.
///
/// # Safety
/// `control_socket_path` and `worker_name` are NUL-terminated strings;
/// `out` points at writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn dmb_attach(
    control_socket_path: *const c_char,
    worker_name: *const c_char,
    out: *mut *mut dmb_worker,
) -> c_int {
    guard(DMB_E_PANIC, || {
        if out.is_null() {
            return invalid("out is NULL");
        }
        // SAFETY: out is non-NULL and writable per the contract.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: per the contract.
        let path = match unsafe { str_arg(control_socket_path, "control_socket_path") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        // SAFETY: per the contract.
        let name = match unsafe { str_arg(worker_name, "worker_name") } {
            Ok(p) => p,
            Err(c) => return c,
        };
        if let Err(c) = backoff_wait() {
            return c;
        }
        let attached = Worker::attach(WorkerConfig::new(path, name));
        backoff_note(match &attached {
            Err(Error::Refused(reason)) => Some(reason),
            _ => None,
        });
        match attached {
            Err(Error::Refused(reason)) => {
                let wait = REFUSED.with(|b| b.borrow().as_ref().map_or(0, |b| b.delay.as_millis()));
                set_error(format!(
                    "refused by the bridge: {reason}; retrying with backoff, next attempt in \
                     {wait} ms"
                ));
                DMB_E_REFUSED
            }
            Ok(w) => {
                let attached = w.is_attached();
                if let Some(e) = w.last_attach_error() {
                    set_error(e.to_string());
                }
                // SAFETY: out is writable per the contract.
                unsafe {
                    *out = Box::into_raw(Box::new(dmb_worker {
                        inner: w,
                        pid: current_pid(),
                        alive: Rc::new(Cell::new(true)),
                        dict: reply::ReplyDictionary::new(),
                        spare: Spares::new(),
                        spare_answers: Spares::new(),
                        reply_buf: bytes::BytesMut::new(),
                        reply_scratch: Vec::new(),
                    }))
                };
                c_int::from(attached)
            }
            Err(e) => fail(e),
        }
    })
}

/// Closes the connection (the bridge sees the worker leave), unmaps the
/// segment and frees the worker. Requests received and not replied are
/// answered 5012 by the bridge. NULL is ignored.
///
/// # Safety
/// `w` is NULL or a worker from `dmb_attach()` not yet detached.
#[no_mangle]
pub unsafe extern "C" fn dmb_detach(w: *mut dmb_worker) {
    guard((), || {
        if !w.is_null() {
            // SAFETY: w came from Box::into_raw in dmb_attach.
            drop(unsafe { Box::from_raw(w) });
        }
    })
}

/// The descriptor to wait on for readability (poll/epoll/reactor). It stays
/// the same for the worker's whole life, across bridge restarts. When it is
/// readable call `dmb_next_request()` and `dmb_next_answer()` until each
/// returns 0. -1 if `w` is NULL.
///
/// # Safety
/// `w` is NULL or a live worker.
#[no_mangle]
pub unsafe extern "C" fn dmb_fd(w: *const dmb_worker) -> c_int {
    guard(-1, || {
        // SAFETY: w is NULL or live per the contract.
        match unsafe { w.as_ref() } {
            Some(w) => w.inner.fd(),
            None => invalid("worker is NULL"),
        }
    })
}

/// 1 while attached to a bridge, 0 while detached, `DMB_E_INVAL` for NULL.
///
/// # Safety
/// `w` is NULL or a live worker.
#[no_mangle]
pub unsafe extern "C" fn dmb_is_attached(w: *const dmb_worker) -> c_int {
    guard(DMB_E_PANIC, || {
        // SAFETY: w is NULL or live per the contract.
        match unsafe { w.as_ref() } {
            Some(w) => c_int::from(w.inner.is_attached()),
            None => invalid("worker is NULL"),
        }
    })
}

/// Declares the incoming requests this worker serves: command
/// abbreviations (`"PPR"`) or event names (`"E_DM_PPR"`), and `"*"` or
/// `"E_DM_REQUEST"` for every command. Replaces the previous list and is
/// re-sent after re-attaching. The bridge answers 3001 for commands no
/// worker serves. Returns `DMB_OK` or a negative code.
///
/// # Safety
/// `names` points at `n` NUL-terminated strings (or is NULL with n == 0).
#[no_mangle]
pub unsafe extern "C" fn dmb_set_handled(
    w: *mut dmb_worker,
    names: *const *const c_char,
    n: usize,
) -> c_int {
    guard(DMB_E_PANIC, || {
        // SAFETY: w is NULL or live per the contract.
        let w = match unsafe { worker(w) } {
            Ok(w) => w,
            Err(c) => return c,
        };
        if names.is_null() && n != 0 {
            return invalid("names is NULL but n is not 0");
        }
        if n > dmshm::control::MAX_HANDLES {
            return invalid(format!(
                "{n} names, at most {}",
                dmshm::control::MAX_HANDLES
            ));
        }
        let mut v = Vec::with_capacity(n.min(1024));
        for i in 0..n {
            // SAFETY: names points at n pointers per the contract.
            let p = unsafe { *names.add(i) };
            // SAFETY: each is a NUL-terminated string per the contract.
            match unsafe { str_arg(p, "a handled name") } {
                Ok(s) => v.push(s.to_owned()),
                Err(c) => return c,
            }
        }
        match w.set_handled(&v) {
            Ok(()) => DMB_OK,
            Err(e) => fail(e),
        }
    })
}

/// How long, in microseconds, `dmb_send_request()` polls for its answer before it sleeps on
/// the bridge's doorbell (0: never poll). The poll is adaptive: it runs only while the recent
/// round trips of this worker were shorter than the bound and the request is its only one in
/// flight, so a loaded SIP server sleeps at once (BENCHMARKS.md "Session 10: the sync round
/// trip" measures the default, `DMB_DEFAULT_SYNC_SPIN_US`). Kept across re-attaches. Returns
/// `DMB_OK` or `DMB_E_INVAL` (NULL worker, or more than `DMB_MAX_SYNC_SPIN_US`).
///
/// # Safety
/// `w` is NULL or a live worker.
#[no_mangle]
pub unsafe extern "C" fn dmb_set_sync_spin(w: *mut dmb_worker, us: u32) -> c_int {
    guard(DMB_E_PANIC, || {
        // SAFETY: w is NULL or live per the contract.
        let w = match unsafe { worker(w) } {
            Ok(w) => w,
            Err(c) => return c,
        };
        if us > DMB_MAX_SYNC_SPIN_US {
            return invalid(format!(
                "sync spin of {us} us, at most {DMB_MAX_SYNC_SPIN_US}"
            ));
        }
        w.set_sync_spin(std::time::Duration::from_micros(u64::from(us)));
        DMB_OK
    })
}

/// The default of `dmb_set_sync_spin()` (and of the modules' `sync_spin_us`), in microseconds.
/// (The same number as `dmshm::worker::DEFAULT_SYNC_SPIN_US`, written out for cbindgen; a
/// unit test keeps the two equal.)
pub const DMB_DEFAULT_SYNC_SPIN_US: u32 = 1000;
/// The largest bound `dmb_set_sync_spin()` takes: 10 ms (a poll longer than a few round trips
/// only burns the core).
pub const DMB_MAX_SYNC_SPIN_US: u32 = 10_000;

/// The shortest `slice_us` of `dmb_set_scheduling()` (the kernel's shortest slice).
pub const DMB_MIN_SLICE_US: u32 = 100;
/// The longest `slice_us` of `dmb_set_scheduling()` (the kernel's longest slice).
pub const DMB_MAX_SLICE_US: u32 = 100_000;
/// The highest `fifo_priority` of `dmb_set_scheduling()` (1 is the lowest).
pub const DMB_MAX_FIFO_PRIORITY: u32 = 99;
/// The lowest `nice` of `dmb_set_scheduling()` (the most weight).
pub const DMB_MIN_NICE: i32 = -20;
/// The highest `nice` of `dmb_set_scheduling()`.
pub const DMB_MAX_NICE: i32 = 19;
// Written as literals for cbindgen; the kernel's values are dmshm::sched's.
const _: () = assert!(DMB_MIN_SLICE_US as u128 == dmshm::sched::MIN_SLICE.as_micros());
const _: () = assert!(DMB_MAX_SLICE_US as u128 == dmshm::sched::MAX_SLICE.as_micros());
const _: () = assert!(DMB_MAX_FIFO_PRIORITY == *dmshm::sched::FIFO_PRIORITY.end());
const _: () = assert!(DMB_MIN_NICE == *dmshm::sched::NICE.start());
const _: () = assert!(DMB_MAX_NICE == *dmshm::sched::NICE.end());

/// Takes the next incoming request without blocking. Returns 1 and sets
/// `*out` (free it with `dmb_request_free()`), 0 when there is none, or a
/// negative code (`*out` NULL; for a damaged record, later calls may still
/// succeed).
///
/// # Safety
/// `w` is NULL or a live worker; `out` points at writable storage.
#[no_mangle]
pub unsafe extern "C" fn dmb_next_request(w: *mut dmb_worker, out: *mut *mut dmb_request) -> c_int {
    guard(DMB_E_PANIC, || {
        let owner = w;
        // SAFETY: w and out per the contract.
        let h = match unsafe { worker_out(w, out) } {
            Ok(h) => h,
            Err(c) => return c,
        };
        match h.inner.next_request_view() {
            Ok(None) => 0,
            Ok(Some(r)) => {
                let mut req = h.spare.take(|| dmb_request {
                    owner,
                    alive: Rc::clone(&h.alive),
                    token: 0,
                    app_id: 0,
                    cmd_code: 0,
                    event: CText::default(),
                    sess_id: CText::default(),
                    cmd_name: CText::default(),
                    origin_host: CText::default(),
                    origin_realm: CText::default(),
                    avps_json: CText::default(),
                });
                req.fill(&r);
                // SAFETY: out is writable per the contract.
                unsafe { *out = Box::into_raw(req) };
                1
            }
            Err(e) => fail(e),
        }
    })
}

/// The token to pass to `dmb_reply()` (0 if `r` is NULL).
///
/// # Safety
/// `r` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn dmb_request_token(r: *const dmb_request) -> u64 {
    // SAFETY: r is NULL or live per the contract.
    match unsafe { r.as_ref() } {
        Some(r) => r.token,
        None => 0,
    }
}
/// The event to raise: `"E_DM_<ABBR>"`, `"E_DM_<code>"` or
/// `"E_DM_REQUEST"` ("" if `r` is NULL). Valid until the request is freed.
///
/// # Safety
/// `r` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn dmb_request_event(r: *const dmb_request) -> *const c_char {
    // SAFETY: r is NULL or live per the contract.
    match unsafe { r.as_ref() } {
        Some(r) => r.event.as_ptr(),
        None => c"".as_ptr(),
    }
}
/// The Session-Id ("" if none). Valid until the request is freed.
///
/// # Safety
/// `r` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn dmb_request_sess_id(r: *const dmb_request) -> *const c_char {
    // SAFETY: r is NULL or live per the contract.
    match unsafe { r.as_ref() } {
        Some(r) => r.sess_id.as_ptr(),
        None => c"".as_ptr(),
    }
}
/// The Application-Id of the header.
///
/// # Safety
/// `r` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn dmb_request_app_id(r: *const dmb_request) -> u32 {
    // SAFETY: r is NULL or live per the contract.
    match unsafe { r.as_ref() } {
        Some(r) => r.app_id,
        None => 0,
    }
}
/// The Command-Code.
///
/// # Safety
/// `r` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn dmb_request_cmd_code(r: *const dmb_request) -> u32 {
    // SAFETY: r is NULL or live per the contract.
    match unsafe { r.as_ref() } {
        Some(r) => r.cmd_code,
        None => 0,
    }
}
/// The command's name from the dictionary ("" if unknown).
///
/// # Safety
/// `r` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn dmb_request_cmd_name(r: *const dmb_request) -> *const c_char {
    // SAFETY: r is NULL or live per the contract.
    match unsafe { r.as_ref() } {
        Some(r) => r.cmd_name.as_ptr(),
        None => c"".as_ptr(),
    }
}
/// The Origin-Host of the request.
///
/// # Safety
/// `r` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn dmb_request_origin_host(r: *const dmb_request) -> *const c_char {
    // SAFETY: r is NULL or live per the contract.
    match unsafe { r.as_ref() } {
        Some(r) => r.origin_host.as_ptr(),
        None => c"".as_ptr(),
    }
}
/// The Origin-Realm of the request.
///
/// # Safety
/// `r` is NULL or a live request.
#[no_mangle]
pub unsafe extern "C" fn dmb_request_origin_realm(r: *const dmb_request) -> *const c_char {
    // SAFETY: r is NULL or live per the contract.
    match unsafe { r.as_ref() } {
        Some(r) => r.origin_realm.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// The request's AVPs as JSON (NUL-terminated); its length in bytes is
/// stored in `*len` when `len` is not NULL. Valid until the request is freed.
///
/// # Safety
/// `r` is NULL or a live request; `len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmb_request_avps_json(
    r: *const dmb_request,
    len: *mut usize,
) -> *const c_char {
    // SAFETY: r is NULL or live per the contract; len is NULL or writable.
    unsafe { json_out(r.as_ref().map(|r| r.avps_json.as_c_str()), len) }
}

/// Frees a request (NULL is ignored). A request not answered yet is
/// answered now: the bridge sends the peer 5012
/// (DIAMETER_UNABLE_TO_COMPLY, RFC 6733 §7.1.5), so every request gets
/// exactly one answer whatever the script did (RFC 6733 §6.2: an answer is
/// owed for every request). Answer before freeing.
///
/// # Safety
/// `r` is NULL or a request from `dmb_next_request()` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmb_request_free(r: *mut dmb_request) {
    guard((), || {
        if r.is_null() {
            return;
        }
        // SAFETY: r came from Box::into_raw in dmb_next_request.
        let req = unsafe { Box::from_raw(r) };
        // Detached: the bridge answered what it held; in a forked child: the request belongs
        // to the parent's slot.
        // SAFETY: `owner` handed the request out; it is live while `alive` is set.
        let Some(owner) = (unsafe { owner_here(req.owner, &req.alive) }) else {
            return;
        };
        // Answered already (the usual case), or the bridge restarted: nothing owed. Asked
        // first, not found out from `reply`'s error, whose message is a `format!` (~1,000
        // instructions per request in a Kamailio worker, issue 15 item 2).
        if owner.inner.owes_reply(req.token) {
            let _ = owner.inner.reply(
                req.token,
                ReplyStatus::Failed,
                Payload::Json,
                b"",
                "the SIP server freed the request without answering it",
            );
        }
        owner.spare.keep(req);
    })
}

/// Answers the incoming request `token` with the AVPs in `json` (`len`
/// bytes; NULL/0 for none: the bridge adds Result-Code 2001). `is_error`
/// non-zero asks for the E bit, which marks a protocol error (RFC 6733 §3,
/// §7.2): the reply must then carry a 3xxx Result-Code (2xxx, 4xxx and 5xxx
/// go without it; the bridge sets it for a 3xxx by itself). Each token can be
/// answered once.
///
/// JSON that is not an AVP array (a syntax error, a top level that is not an
/// array) returns `DMB_E_INVAL` and leaves the token open: nothing was
/// answered, a corrected reply may follow, and a request freed unanswered is
/// answered 5012. A reply that is an AVP array but would make an invalid
/// answer (a name or type the dictionary refuses, two result AVPs,
/// `is_error` without a 3xxx Result-Code) returns
/// `DMB_E_INVAL` *and* tells the bridge, which answers the peer 5012 at once
/// (the peer always gets exactly one answer); so does an oversized reply
/// (`DMB_E_TOO_BIG`). The glue tells the two `DMB_E_INVAL`s apart with its
/// own syntax check, run only on this error path, so a reply that succeeds
/// is parsed once. `DMB_E_FULL` leaves the token open:
/// retry later. `DMB_E_DETACHED`: the bridge restarted; the old bridge
/// instance already dealt with the request.
///
/// # Safety
/// `w` is NULL or a live worker; `json` points at `len` bytes or is NULL.
#[no_mangle]
pub unsafe extern "C" fn dmb_reply(
    w: *mut dmb_worker,
    token: u64,
    json: *const c_char,
    len: usize,
    is_error: c_int,
) -> c_int {
    guard(DMB_E_PANIC, || {
        // SAFETY: w is NULL or live per the contract.
        let h = match unsafe { handle(w) } {
            Ok(h) => h,
            Err(c) => return c,
        };
        // SAFETY: json/len per the contract.
        let json = match unsafe { bytes_arg(json, len) } {
            Ok(j) => j,
            Err(c) => return c,
        };
        let status = if is_error != 0 {
            ReplyStatus::Error
        } else {
            ReplyStatus::Ok
        };
        reply_json(h, token, json, status)
    })
}

/// Answers the incoming request `token` with only a Result-Code: the glue's
/// own answers (no event route, the script sent no reply, out of memory).
/// The E bit is set exactly for protocol errors, 3xxx (RFC 6733 §7.1.3 and
/// §7.2: the 'E' bit marks an answer to a request that caused a protocol
/// error; transient and permanent failures, 4xxx and 5xxx, §7.1.4/§7.1.5,
/// are answered without it), so the glue does not carry that rule.
///
/// Return codes as [`dmb_reply`]: `DMB_OK`; `DMB_E_FULL` leaves the token
/// open (retry later); a code the dictionary refuses or an unknown token
/// gives `DMB_E_INVAL`; `DMB_E_DETACHED` when the bridge restarted.
///
/// # Safety
/// `w` is NULL or a live worker.
#[no_mangle]
pub unsafe extern "C" fn dmb_reply_result(
    w: *mut dmb_worker,
    token: u64,
    result_code: u32,
) -> c_int {
    guard(DMB_E_PANIC, || {
        // SAFETY: w is NULL or live per the contract.
        let h = match unsafe { handle(w) } {
            Ok(h) => h,
            Err(c) => return c,
        };
        let (json, status) = result_code_reply(result_code);
        reply_json(h, token, json.as_bytes(), status)
    })
}

/// The AVPs and the status of an answer carrying only `code`: an error
/// answer (E bit) exactly for 3xxx, RFC 6733 §7.1.3 / §7.2.
fn result_code_reply(code: u32) -> (String, ReplyStatus) {
    let status = if dmproto::result_code::is_protocol_error(code) {
        ReplyStatus::Error
    } else {
        ReplyStatus::Ok
    };
    (format!("[{{\"Result-Code\":{code}}}]"), status)
}

/// The reply path shared by [`dmb_reply`] and [`dmb_reply_result`]: `json`
/// checked and converted once, then written to the ring.
fn reply_json(h: &mut dmb_worker, token: u64, json: &[u8], status: ReplyStatus) -> c_int {
    let w = &mut h.inner;
    // One parse on the whole reply path. With the bridge's dictionary: converted here,
    // names, types, size and the result AVPs checked (DESIGN §9: a reply that would make
    // an invalid answer is refused here, with an error return, and the bridge answers the
    // peer 5012). Without it yet: the shape and the result AVPs, and the bridge converts.
    let max = w.max_msg().map_or(usize::MAX, |m| m as usize);
    // The record is written from the encoded AVPs (or the script's own JSON) as they
    // are: one copy, into the ring.
    let sent = match h.dict.get(w.dictionary()) {
        Some(dict) => {
            let buf = std::mem::take(&mut h.reply_buf);
            let is_error = status == ReplyStatus::Error;
            reply::encode_in(dict, json, max, is_error, buf, &mut h.reply_scratch).map(|avps| {
                let sent = w.reply(token, status, Payload::Avps, &avps, "");
                h.reply_buf = avps;
                sent
            })
        }
        None => check_avps(json)
            .and_then(|(json, counts)| {
                avps_check::check_reply(counts, status == ReplyStatus::Error).map(|()| json)
            })
            .map(|json| w.reply(token, status, Payload::Json, json, "")),
    };
    match sent {
        Ok(Ok(())) => DMB_OK,
        Ok(Err(e)) => fail(e),
        // Not an AVP array at all: the script's text is broken, not its answer; nothing
        // is answered yet (see dmb_reply's doc comment). Checked only on this error path.
        Err(why)
            if !json.iter().all(u8::is_ascii_whitespace) && avps_check::scan(json).is_err() =>
        {
            invalid(format!("reply to token {token:#x} not sent: {why}"))
        }
        Err(why) => {
            let why = format!("reply to token {token:#x} rejected: {why}");
            match w.reply(token, ReplyStatus::Failed, Payload::Json, b"", &why) {
                Ok(()) => invalid(format!("{why}; the bridge answers the peer 5012")),
                Err(e) => fail(e),
            }
        }
    }
}

fn answer_box(h: &mut dmb_worker, c: Completion) -> *mut dmb_answer {
    let owner: *mut dmb_worker = h;
    let mut a = h.spare_answers.take(|| dmb_answer {
        owner,
        alive: Rc::clone(&h.alive),
        handle: 0,
        class: 0,
        result_code: 0,
        peer_ns: 0,
        worker_ns: 0,
        avps_json: CText::default(),
        error: CText::default(),
    });
    a.handle = c.handle;
    a.class = c.class;
    a.result_code = c.result_code;
    a.peer_ns = c.peer_ns;
    a.worker_ns = c.worker_ns;
    a.avps_json.set(&c.avps_json);
    a.error.set(&c.error);
    // The library's strings go back to it for the next answers.
    h.inner.reuse_text(c.avps_json);
    h.inner.reuse_text(c.error);
    Box::into_raw(a)
}

/// Sends a request to a Diameter peer through the bridge and waits for the
/// outcome (at most `timeout_ms`, 0 for the default 5 s, plus a short grace).
/// Incoming requests arriving meanwhile stay queued (the fd is readable
/// afterwards).
///
/// Returns the answer class: `DMB_ANSWER_SUCCESS` (1, a 2xxx answer),
/// `DMB_ANSWER_ERROR` (-1), `DMB_ANSWER_TIMEOUT` (-2: no answer, also when the
/// bridge went away after taking the request) or `DMB_ANSWER_NOT_SENT` (-3:
/// bad JSON, no route, bridge down before it took the request, too big, ring
/// full; `dmb_last_error()` says which). When `out` is not NULL, `*out`
/// receives the answer (also for -2/-3, with the reason in
/// `dmb_answer_error()`); free it with `dmb_answer_free()`.
///
/// # Safety
/// `w` is NULL or a live worker; `json` points at `len` bytes or is NULL;
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmb_send_request(
    w: *mut dmb_worker,
    app_id: u32,
    cmd_code: u32,
    json: *const c_char,
    len: usize,
    timeout_ms: u32,
    out: *mut *mut dmb_answer,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { send_sync(w, app_id, cmd_code, json, len, timeout_ms, out, true) }
}

/// [`dmb_send_request`] for a caller that has checked `json` itself, as
/// [`dmb_send_request_async_checked`]: the library does not parse it a
/// second time; a document the bridge cannot convert is a
/// `DMB_ANSWER_NOT_SENT` outcome with the bridge's reason.
///
/// # Safety
/// As [`dmb_send_request`].
#[no_mangle]
pub unsafe extern "C" fn dmb_send_request_checked(
    w: *mut dmb_worker,
    app_id: u32,
    cmd_code: u32,
    json: *const c_char,
    len: usize,
    timeout_ms: u32,
    out: *mut *mut dmb_answer,
) -> c_int {
    // SAFETY: the caller's contract is dmb_send_request's.
    unsafe { send_sync(w, app_id, cmd_code, json, len, timeout_ms, out, false) }
}

/// Both sync entry points; `check` as in [`send_async`].
///
/// # Safety
/// As [`dmb_send_request`].
#[allow(clippy::too_many_arguments)]
unsafe fn send_sync(
    w: *mut dmb_worker,
    app_id: u32,
    cmd_code: u32,
    json: *const c_char,
    len: usize,
    timeout_ms: u32,
    out: *mut *mut dmb_answer,
    check: bool,
) -> c_int {
    guard(DMB_ANSWER_NOT_SENT, || {
        if !out.is_null() {
            // SAFETY: out is writable per the contract.
            unsafe { *out = std::ptr::null_mut() };
        }
        // SAFETY: w is NULL or live per the contract.
        let h = match unsafe { handle(w) } {
            Ok(h) => h,
            Err(_) => return DMB_ANSWER_NOT_SENT,
        };
        // SAFETY: json/len per the contract.
        let c = match unsafe { request_json(json, len, check) } {
            Ok(json) => h.inner.send_request(app_id, cmd_code, json, timeout_ms),
            Err(why) => Completion::not_sent(0, why.to_string()),
        };
        let class = c.class;
        if class == DMB_ANSWER_NOT_SENT || class == DMB_ANSWER_TIMEOUT {
            set_error(c.error.clone());
        }
        if !out.is_null() {
            // SAFETY: out is writable per the contract.
            unsafe { *out = answer_box(h, c) };
        } else {
            h.inner.reuse_text(c.avps_json);
            h.inner.reuse_text(c.error);
        }
        class
    })
}

/// Queues a request without waiting; `*handle` identifies it. Its outcome
/// (exactly one, also on timeout or bridge restart) makes `dmb_fd()`
/// readable and comes from `dmb_next_answer()`. Returns `DMB_OK` or a
/// negative code (`DMB_E_INVAL` bad JSON, `DMB_E_DETACHED` bridge down,
/// `DMB_E_TOO_BIG`, `DMB_E_FULL`): then nothing was queued.
///
/// # Safety
/// `w` is NULL or a live worker; `json` points at `len` bytes or is NULL;
/// `handle` is writable.
#[no_mangle]
pub unsafe extern "C" fn dmb_send_request_async(
    w: *mut dmb_worker,
    app_id: u32,
    cmd_code: u32,
    json: *const c_char,
    len: usize,
    timeout_ms: u32,
    handle: *mut u64,
) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { send_async(w, app_id, cmd_code, json, len, timeout_ms, handle, true) }
}

/// Both async entry points; `check` says whether the library checks the JSON's shape
/// (`avps_check::scan`) or leaves it to the bridge's conversion.
///
/// # Safety
/// As [`dmb_send_request_async`].
#[allow(clippy::too_many_arguments)]
unsafe fn send_async(
    w: *mut dmb_worker,
    app_id: u32,
    cmd_code: u32,
    json: *const c_char,
    len: usize,
    timeout_ms: u32,
    handle: *mut u64,
    check: bool,
) -> c_int {
    guard(DMB_E_PANIC, || {
        if handle.is_null() {
            return invalid("handle is NULL");
        }
        // SAFETY: w is NULL or live per the contract.
        let w = match unsafe { worker(w) } {
            Ok(w) => w,
            Err(c) => return c,
        };
        // SAFETY: json/len per the contract.
        let json = match unsafe { request_json(json, len, check) } {
            Ok(j) => j,
            Err(why) => return invalid(why.to_string()),
        };
        match w.send_request_async(app_id, cmd_code, json, timeout_ms) {
            Ok(h) => {
                // SAFETY: handle is writable per the contract.
                unsafe { *handle = h };
                DMB_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// [`dmb_send_request_async`] for a caller that has checked `json` itself
/// (the modules check it with dmglue's `dmg_json_check_avps` in the SIP
/// worker, where the script still gets the error return and a log line):
/// the library does not parse it a second time (issue 15: that second look
/// cost ~2.5k instructions per originated call). Blank `json` means `[]`.
/// The bridge converts it with its dictionary as always and never trusts
/// it: a document that is not a JSON array of AVPs comes back as this
/// request's outcome, `DMB_ANSWER_NOT_SENT` with the reason in
/// `dmb_answer_error()`, not as `DMB_E_INVAL` here. Other return codes as
/// [`dmb_send_request_async`].
///
/// # Safety
/// As [`dmb_send_request_async`].
#[no_mangle]
pub unsafe extern "C" fn dmb_send_request_async_checked(
    w: *mut dmb_worker,
    app_id: u32,
    cmd_code: u32,
    json: *const c_char,
    len: usize,
    timeout_ms: u32,
    handle: *mut u64,
) -> c_int {
    // SAFETY: the caller's contract is dmb_send_request_async's.
    unsafe { send_async(w, app_id, cmd_code, json, len, timeout_ms, handle, false) }
}

/// This attachment's reply address: what another attachment of the same bridge names in
/// `dmb_send_request_reply_to_checked()` to have an outcome delivered here. 0 when not
/// attached (or `w` is NULL, or was attached by the parent process), or when the bridge
/// cannot deliver to another attachment (an older bridge): then send with
/// `dmb_send_request_async_checked()` as before. Changes when the worker re-attaches (a new
/// bridge, or the same slot given to another process), so an old address is never delivered
/// to a stranger. No system call: the bridge wrote it in this worker's segment.
///
/// # Safety
/// `w` is NULL or a live worker.
#[no_mangle]
pub unsafe extern "C" fn dmb_reply_address(w: *const dmb_worker) -> u64 {
    guard(0, || {
        // SAFETY: w is NULL or live per the contract.
        match unsafe { w.as_ref() } {
            Some(w) if w.pid == current_pid() => w.inner.reply_address(),
            _ => 0,
        }
    })
}

/// Like `dmb_send_request_async_checked()` (the caller checked the JSON), but the outcome
/// goes to the attachment whose `dmb_reply_address()` is `reply_to`, as a `dmb_answer` from
/// `dmb_next_answer()` whose `dmb_answer_handle()` is `token` (the caller's: the library
/// neither checks nor stores it). The sender keeps nothing in flight for it and never sees
/// its outcome. The bridge times it out (`timeout_ms`, 0: the default) and that outcome
/// goes to `reply_to` too.
///
/// `DMB_OK`: the request is on the ring, and exactly one outcome will reach `reply_to` if
/// that attachment is still the one the address named when the outcome is ready (otherwise
/// the bridge logs and counts it, and the address's owner, being gone, cannot wait for it).
/// <0 with `dmb_last_error()`: not sent, and no outcome will come (`DMB_E_DETACHED` not
/// attached, `DMB_E_INVAL` `reply_to` 0 or a bridge that does not support reply-to,
/// `DMB_E_FULL` ring full, `DMB_E_TOO_BIG`).
///
/// # Safety
/// `w` is NULL or a live worker; `json` points at `json_len` bytes or is NULL (then
/// `json_len` is 0).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn dmb_send_request_reply_to_checked(
    w: *mut dmb_worker,
    reply_to: u64,
    token: u64,
    app_id: u32,
    cmd_code: u32,
    json: *const c_char,
    json_len: usize,
    timeout_ms: u32,
) -> c_int {
    guard(DMB_E_PANIC, || {
        // SAFETY: w is NULL or live per the contract.
        let w = match unsafe { worker(w) } {
            Ok(w) => w,
            Err(c) => return c,
        };
        // SAFETY: json/json_len per the contract.
        let json = match unsafe { request_json(json, json_len, false) } {
            Ok(j) => j,
            Err(why) => return invalid(why.to_string()),
        };
        match w.send_request_reply_to(reply_to, token, app_id, cmd_code, json, timeout_ms) {
            Ok(()) => DMB_OK,
            Err(e) => fail(e),
        }
    })
}

/// Takes the next completed asynchronous request without blocking. Returns
/// 1 and sets `*out` (free with `dmb_answer_free()`), 0 when there is none,
/// or a negative code.
///
/// # Safety
/// `w` is NULL or a live worker; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn dmb_next_answer(w: *mut dmb_worker, out: *mut *mut dmb_answer) -> c_int {
    guard(DMB_E_PANIC, || {
        // SAFETY: w and out per the contract.
        let h = match unsafe { worker_out(w, out) } {
            Ok(h) => h,
            Err(c) => return c,
        };
        match h.inner.next_answer() {
            Some(c) => {
                // SAFETY: out is writable per the contract.
                unsafe { *out = answer_box(h, c) };
                1
            }
            None => 0,
        }
    })
}

/// The handle `dmb_send_request_async()` returned (0 for a synchronous
/// request that was not sent).
///
/// # Safety
/// `a` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn dmb_answer_handle(a: *const dmb_answer) -> u64 {
    // SAFETY: a is NULL or live per the contract.
    match unsafe { a.as_ref() } {
        Some(a) => a.handle,
        None => 0,
    }
}
/// The class: `DMB_ANSWER_SUCCESS`, `_ERROR`, `_TIMEOUT` or `_NOT_SENT`
/// (`DMB_ANSWER_NOT_SENT` if `a` is NULL).
///
/// # Safety
/// `a` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn dmb_answer_class(a: *const dmb_answer) -> c_int {
    // SAFETY: a is NULL or live per the contract.
    match unsafe { a.as_ref() } {
        Some(a) => a.class,
        None => DMB_ANSWER_NOT_SENT,
    }
}
/// The Result-Code (or Experimental-Result-Code) of the answer, 0 if
/// there was no answer.
///
/// # Safety
/// `a` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn dmb_answer_result_code(a: *const dmb_answer) -> u32 {
    // SAFETY: a is NULL or live per the contract.
    match unsafe { a.as_ref() } {
        Some(a) => a.result_code,
        None => 0,
    }
}
/// How long the bridge waited for the Diameter peer's answer to this request, in
/// nanoseconds: the request first written to the peer -> its answer read. 0 when no peer
/// answered (timeout, not sent, an error answer the bridge made itself) or the bridge is of
/// an older build that does not say. The caller's own round trip less this is the time the
/// module, library and bridge added to the request (issue 15 item 3).
///
/// # Safety
/// `a` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn dmb_answer_peer_ns(a: *const dmb_answer) -> u64 {
    // SAFETY: a is NULL or live per the contract.
    match unsafe { a.as_ref() } {
        Some(a) => a.peer_ns,
        None => 0,
    }
}
/// The library's round trip for this answer, in nanoseconds: for this worker's own request,
/// its send call entered (`dmb_send_request()`, `dmb_send_request_async*()`) -> the answer
/// taken (returned by the sync call, or by `dmb_next_answer()`); for an outcome of another
/// attachment's `dmb_send_request_reply_to_checked()`, that sender's call entered (the send
/// time it stamped into the request, on the host's CLOCK_MONOTONIC) -> taken here. It
/// includes the library on both sides, the rings and doorbells, the wake-ups, the bridge and
/// the peer (`dmb_answer_peer_ns()`); it does not include what the module did before the send
/// call or does after the take. So the script's round trip less this is the SIP server's
/// own part: for the Kamailio async path, the hand-over per call (suspending the
/// transaction, and resuming it in the module worker). What the library's histograms
/// (`dmbridge_script_request_worker_seconds`) count. 0 when unknown: an outcome the library
/// made itself (not sent, its own timeout, the bridge gone), or a reply-to send stamp that is
/// not a round trip (in the future, or older than any timeout).
///
/// # Safety
/// `a` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn dmb_answer_worker_ns(a: *const dmb_answer) -> u64 {
    // SAFETY: a is NULL or live per the contract.
    match unsafe { a.as_ref() } {
        Some(a) => a.worker_ns,
        None => 0,
    }
}
/// Why the request timed out or was not sent ("" otherwise). Valid
/// until the answer is freed.
///
/// # Safety
/// `a` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn dmb_answer_error(a: *const dmb_answer) -> *const c_char {
    // SAFETY: a is NULL or live per the contract.
    match unsafe { a.as_ref() } {
        Some(a) => a.error.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// The answer's AVPs as JSON ("" if there was no answer); its length is
/// stored in `*len` when `len` is not NULL. Valid until the answer is freed.
///
/// # Safety
/// `a` is NULL or a live answer; `len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmb_answer_avps_json(
    a: *const dmb_answer,
    len: *mut usize,
) -> *const c_char {
    // SAFETY: a is NULL or live per the contract; len is NULL or writable.
    unsafe { json_out(a.as_ref().map(|a| a.avps_json.as_c_str()), len) }
}

/// The pointer and (through `len`, when not NULL) the length of a JSON string the library
/// owns, `""` for none: the one shape of every `*_avps_json` accessor.
///
/// # Safety
/// `len` is NULL or writable.
unsafe fn json_out(json: Option<&CStr>, len: *mut usize) -> *const c_char {
    let json = json.unwrap_or(c"");
    if !len.is_null() {
        // SAFETY: len is writable per the caller's contract.
        unsafe { *len = json.to_bytes().len() };
    }
    json.as_ptr()
}

/// Frees an answer (NULL is ignored).
///
/// # Safety
/// `a` is NULL or an answer from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmb_answer_free(a: *mut dmb_answer) {
    guard((), || {
        if a.is_null() {
            return;
        }
        // SAFETY: a came from Box::into_raw in answer_box.
        let a = unsafe { Box::from_raw(a) };
        // SAFETY: `owner` handed the answer out; it is live while `alive` is set.
        if let Some(owner) = unsafe { owner_here(a.owner, &a.alive) } {
            owner.spare_answers.keep(a);
        }
    })
}

fn status_json(w: &mut Worker) -> String {
    let s = w.status(Duration::from_millis(500));
    let bridge = s
        .bridge
        .as_deref()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "library": env!("CARGO_PKG_VERSION"),
        "attached": s.attached,
        "name": s.name,
        "pid": s.pid,
        "slot": s.slot,
        "generation": s.generation,
        "segment": s.segment,
        "control_socket": s.control_socket,
        "handles": s.handles,
        "max_msg": s.max_msg,
        "in_flight": s.in_flight,
        "queued_answers": s.queued_answers,
        "unreplied_requests": s.unreplied_requests,
        "attaches": s.attaches,
        "requests_received": s.requests_received,
        "replies_sent": s.replies_sent,
        "requests_sent": s.requests_sent,
        "answers_received": s.answers_received,
        "last_error": s.last_error,
        "bridge": bridge,
    })
    .to_string()
}

/// The worker's state and counters plus the bridge's own status (peers,
/// states, counters; `null` if it did not answer within 500 ms) as one JSON
/// object in `*out`; free it with `dmb_string_free()`. Returns `DMB_OK` or a
/// negative code.
///
/// # Safety
/// `w` is NULL or a live worker; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn dmb_status_json(w: *mut dmb_worker, out: *mut *mut c_char) -> c_int {
    guard(DMB_E_PANIC, || {
        // SAFETY: w and out per the contract.
        let w = match unsafe { worker_out(w, out) } {
            Ok(h) => &mut h.inner,
            Err(c) => return c,
        };
        let s = cstring(status_json(w));
        // SAFETY: out is writable per the contract.
        unsafe { *out = s.into_raw() };
        DMB_OK
    })
}

/// Frees a string returned by this library (NULL is ignored).
///
/// # Safety
/// `s` is NULL or a string from `dmb_status_json()` or `dmb_set_scheduling()` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn dmb_string_free(s: *mut c_char) {
    guard((), || {
        if !s.is_null() {
            // SAFETY: s came from CString::into_raw in this library.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// Asks the kernel to schedule the calling thread, and the processes and threads it starts
/// afterwards, for short run-queue waits (issue 15 item 3; `dmshm::sched` and BENCHMARKS.md
/// "Session 11: latency under load"): the modules call it in each process that runs the
/// Diameter routes (their `sched_slice_us` / `sched_fifo_priority` parameters, and Kamailio's
/// `sched_nice`). Independent of any worker: call it before or after `dmb_attach()`.
///
/// * `slice_us`: the EEVDF slice of a `SCHED_OTHER` thread (Linux 6.12+), 100..=100000; 0: the
///   kernel's. Needs no privilege.
/// * `nice`: the nice value of a `SCHED_OTHER` thread, -20..=19 (more weight below 0: the
///   kernel still lets a busy thread take several messages per wake-up, BENCHMARKS.md
///   "Session 15: async p99 at load without losing throughput"); 0: unchanged. Below the
///   current one it needs `CAP_SYS_NICE` or `RLIMIT_NICE`.
/// * `fifo_priority`: `SCHED_FIFO` at this priority, 1..=99, instead (then `slice_us` and
///   `nice` are not used); 0: stay `SCHED_OTHER`. Needs `CAP_SYS_NICE` or `RLIMIT_RTPRIO`.
///
/// On `DMB_OK` and a non-NULL `out`, `*out` is the scheduling the kernel then reports
/// (`SCHED_OTHER nice 0 slice 100 us`; free it with `dmb_string_free()`). `DMB_E_INVAL`: a
/// value out of range; `DMB_E_REFUSED`: the kernel refused it (`EPERM` without the privilege)
/// or ignored it (a kernel before 6.12), and the thread keeps its scheduling; the reason, one
/// line for the log, is in `dmb_last_error()`. All 0: nothing asked, `DMB_OK`.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dmb_set_scheduling(
    slice_us: u32,
    nice: i32,
    fifo_priority: u32,
    out: *mut *mut c_char,
) -> c_int {
    guard(DMB_E_PANIC, || {
        let s = dmshm::sched::Scheduling {
            slice: (slice_us != 0).then(|| std::time::Duration::from_micros(slice_us.into())),
            nice: (nice != 0).then_some(nice),
            fifo_priority: (fifo_priority != 0).then_some(fifo_priority),
        };
        if let Some(p) = s.problems().into_iter().next() {
            return invalid(format!("scheduling: {p}"));
        }
        match s.apply() {
            Ok(now) => {
                if !out.is_null() {
                    // SAFETY: out is writable per the contract.
                    unsafe { *out = cstring(now.to_string()).into_raw() };
                }
                DMB_OK
            }
            Err(e) => {
                set_error(e.to_string());
                DMB_E_REFUSED
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_texts_read_as_the_last_one_set_without_interior_nuls() {
        let mut t = CText::default();
        assert_eq!(t.as_c_str(), c"");
        t.set("a longer first text");
        assert_eq!(t.as_c_str(), c"a longer first text");
        let cap = t.0.capacity();
        t.set("short");
        assert_eq!(t.as_c_str(), c"short");
        assert_eq!(t.0.capacity(), cap, "the buffer is reused");
        t.set("a\0b\0");
        assert_eq!(t.as_c_str(), c"ab", "as cstring() does");
        t.set("");
        assert_eq!(t.as_c_str(), c"");
        assert_eq!(t.as_ptr(), t.0.as_ptr().cast());
    }

    #[test]
    fn json_checks() {
        assert_eq!(check_avps_json(b"  ").unwrap(), b"[]");
        assert!(check_avps_json(br#"[{"Session-Id":"x"}]"#).is_ok());
        assert!(check_avps_json(b"[{")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        assert!(check_avps_json(br#"{"a":1}"#)
            .unwrap_err()
            .to_string()
            .contains("array"));
    }

    #[test]
    fn errors_are_reported_not_aborted() {
        // SAFETY: exercising NULL handling, which the functions allow.
        unsafe {
            let mut w: *mut dmb_worker = std::ptr::null_mut();
            assert_eq!(
                dmb_attach(std::ptr::null(), c"x".as_ptr(), &mut w),
                DMB_E_INVAL
            );
            let msg = CStr::from_ptr(dmb_last_error()).to_str().unwrap();
            assert!(msg.contains("control_socket_path is NULL"), "{msg}");
            assert_eq!(dmb_fd(std::ptr::null()), DMB_E_INVAL);
            assert_eq!(
                dmb_reply(std::ptr::null_mut(), 1, std::ptr::null(), 0, 0),
                DMB_E_INVAL
            );
            let mut a: *mut dmb_answer = std::ptr::null_mut();
            assert_eq!(
                dmb_send_request(std::ptr::null_mut(), 1, 2, std::ptr::null(), 0, 0, &mut a),
                DMB_ANSWER_NOT_SENT
            );
            assert!(a.is_null());
            dmb_detach(std::ptr::null_mut());
            dmb_request_free(std::ptr::null_mut());
            dmb_answer_free(std::ptr::null_mut());
            dmb_string_free(std::ptr::null_mut());
            assert_eq!(dmb_request_token(std::ptr::null()), 0);
            assert!(CStr::from_ptr(dmb_version())
                .to_str()
                .unwrap()
                .starts_with("libdmbridge "));
        }
    }

    #[test]
    fn sync_spin_is_bounded_and_its_default_is_the_library_s() {
        assert_eq!(
            u64::from(DMB_DEFAULT_SYNC_SPIN_US),
            dmshm::worker::DEFAULT_SYNC_SPIN_US
        );
        let dir = std::env::temp_dir().join(format!("dmb-spin-{}.sock", std::process::id()));
        let path = CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: valid strings and out pointer; the worker is detached at the end.
        unsafe {
            assert_eq!(dmb_set_sync_spin(std::ptr::null_mut(), 10), DMB_E_INVAL);
            let mut w: *mut dmb_worker = std::ptr::null_mut();
            // No bridge listens there: a detached worker (0), which takes settings all the same.
            assert_eq!(dmb_attach(path.as_ptr(), c"spin".as_ptr(), &mut w), 0);
            assert!(!w.is_null());
            assert_eq!(dmb_set_sync_spin(w, DMB_MAX_SYNC_SPIN_US + 1), DMB_E_INVAL);
            let msg = CStr::from_ptr(dmb_last_error()).to_str().unwrap();
            assert!(msg.contains("at most 10000"), "{msg}");
            assert_eq!(dmb_set_sync_spin(w, 0), DMB_OK);
            assert_eq!(dmb_set_sync_spin(w, DMB_MAX_SYNC_SPIN_US), DMB_OK);
            dmb_detach(w);
        }
    }

    #[test]
    fn result_code_answers_set_the_e_bit_exactly_for_3xxx() {
        // RFC 6733 §7.1.3: protocol errors (3xxx) only are answered with the E bit.
        for code in [
            1001, 2001, 2999, 3000, 3001, 3010, 3999, 4000, 4001, 5012, 5999,
        ] {
            let (json, status) = result_code_reply(code);
            assert_eq!(json, format!("[{{\"Result-Code\":{code}}}]"));
            let want = if (3000..=3999).contains(&code) {
                ReplyStatus::Error
            } else {
                ReplyStatus::Ok
            };
            assert_eq!(status, want, "Result-Code {code}");
            assert!(check_avps_json(json.as_bytes()).is_ok(), "{json}");
        }
        // SAFETY: a NULL worker is allowed and refused.
        let r = unsafe { dmb_reply_result(std::ptr::null_mut(), 1, 3001) };
        assert_eq!(r, DMB_E_INVAL);
    }

    #[test]
    fn panics_become_error_codes() {
        let r = guard(DMB_E_PANIC, || -> c_int { panic!("boom") });
        assert_eq!(r, DMB_E_PANIC);
        // SAFETY: dmb_last_error returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(dmb_last_error()) }
            .to_str()
            .unwrap()
            .to_owned();
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn scheduling_is_applied_read_back_or_refused_with_a_reason() {
        // in a thread of its own, so the harness's threads keep their scheduling
        std::thread::spawn(|| {
            // SAFETY: out is a valid pointer or NULL; the string is freed below.
            unsafe {
                let mut out: *mut c_char = std::ptr::null_mut();
                assert_eq!(dmb_set_scheduling(0, 0, 0, &mut out), DMB_OK);
                assert!(CStr::from_ptr(out)
                    .to_str()
                    .unwrap()
                    .starts_with("SCHED_OTHER"));
                dmb_string_free(out);
                assert_eq!(
                    dmb_set_scheduling(50, 0, 0, std::ptr::null_mut()),
                    DMB_E_INVAL
                );
                let msg = CStr::from_ptr(dmb_last_error()).to_str().unwrap();
                assert!(msg.contains("100..=100000 us"), "{msg}");
                assert_eq!(
                    dmb_set_scheduling(0, 0, 100, std::ptr::null_mut()),
                    DMB_E_INVAL
                );
                // a kernel before 6.12 ignores the slice: refused with the reason
                let mut out: *mut c_char = std::ptr::null_mut();
                match dmb_set_scheduling(200, 0, 0, &mut out) {
                    DMB_OK => {
                        let now = CStr::from_ptr(out).to_str().unwrap().to_owned();
                        dmb_string_free(out);
                        assert!(now.ends_with("slice 200 us"), "{now}");
                        let read = dmshm::sched::current_thread().unwrap();
                        assert_eq!(read.slice, std::time::Duration::from_micros(200));
                    }
                    DMB_E_REFUSED => {
                        let msg = CStr::from_ptr(dmb_last_error()).to_str().unwrap();
                        assert!(msg.contains("before 6.12"), "{msg}");
                    }
                    c => panic!("code {c}"),
                }
                assert_eq!(
                    dmb_set_scheduling(0, 20, 0, std::ptr::null_mut()),
                    DMB_E_INVAL
                );
                let msg = CStr::from_ptr(dmb_last_error()).to_str().unwrap();
                assert!(msg.contains("-20..=19"), "{msg}");
                // a higher nice needs no privilege (this thread is thrown away afterwards)
                let mut out: *mut c_char = std::ptr::null_mut();
                assert_eq!(dmb_set_scheduling(0, 3, 0, &mut out), DMB_OK);
                let now = CStr::from_ptr(out).to_str().unwrap().to_owned();
                dmb_string_free(out);
                assert!(now.starts_with("SCHED_OTHER nice 3"), "{now}");
            }
        })
        .join()
        .unwrap();
    }
}
