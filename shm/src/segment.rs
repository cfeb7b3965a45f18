//! The shared-memory segments: one per attached worker, created by the
//! bridge when the worker registers, passed to that worker (and only to it)
//! as a sealed memfd over the control socket.
//!
//! Layout of one segment (all offsets from the start of the file):
//!
//! ```text
//! 0        SegmentHeader (magic, wire version, geometry, generation)  4 KiB
//! 4096     slot 0: SlotHeader, ScriptTimes | 3 RingHeaders | 3 data areas   slot_stride
//! ...      (a file made by `Segment::create` may hold more slots; the
//!           per-worker memfds of `Segment::create_anonymous` hold one)
//! ```
//!
//! Per slot the three rings are: requests to the worker, answers to the
//! worker, and everything from the worker to the bridge (replies and
//! outgoing requests). Answers get their own ring so a worker blocked in a
//! synchronous `dm_send_request` can wait for *its* answer without pulling
//! incoming requests out of shared memory: those stay in their ring, where
//! they keep exerting backpressure on the bridge (3004) instead of piling up
//! in the worker's private memory.
//!
//! Why one memfd per worker (DESIGN §10: a worker reads and writes only its
//! own rings): a worker holds a descriptor for its own segment and nothing
//! else; there is no file name another local user (or another worker) could
//! open, and a worker that scribbles over its segment damages only its own
//! rings. The memfd is sealed against shrinking and growing, so a hostile
//! worker cannot truncate it under the bridge (which would make the bridge's
//! next access fault with SIGBUS). Memory follows the attached workers: a
//! segment exists only while its worker is attached (DESIGN §7; the old
//! single file reserved every slot up front).
//!
//! The header is validated field by field by the worker (magic, version,
//! sizes against the file's real length), so a mismatched or damaged segment
//! is refused with a message instead of being read out of bounds. The bridge
//! never reads a header back: it keeps its own copy of the geometry.

use crate::error::{Error, Result};
use crate::ring::{RingHeader, RingMem};
use crate::sync::AtomicU32;
use crate::times::ScriptTimes;
use memmap2::MmapRaw;
use std::fs::{File, OpenOptions, Permissions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// First 8 bytes of every segment.
pub const MAGIC: u64 = u64::from_le_bytes(*b"DMBRSHM\0");
/// Version of the segment layout, record formats and control messages
/// together; bumped on any incompatible change.
/// Version 2: one segment (memfd) per worker, its slot at index 0.
/// Version 3: the Dictionary control message; a Reply may carry encoded AVPs.
/// Version 4: an Answer carries the bridge's round trip (record version 2); the slot area
/// holds the worker's [`ScriptTimes`] (1 KiB instead of 256 bytes before the rings).
pub const WIRE_VERSION: u32 = 4;

const HEADER_BYTES: u64 = 4096;
const SLOT_HEADER_BYTES: u64 = 1024;
/// Where a slot's [`ScriptTimes`] start: their own cache lines, apart from the
/// [`SlotHeader`] the bridge writes.
const SCRIPT_TIMES_OFFSET: u64 = 128;
const _: () = assert!(
    SCRIPT_TIMES_OFFSET as usize >= std::mem::size_of::<SlotHeader>()
        && SCRIPT_TIMES_OFFSET as usize + std::mem::size_of::<ScriptTimes>()
            <= SLOT_HEADER_BYTES as usize
);
const RING_HEADER_BYTES: u64 = 256;
const MIN_RING: u32 = 4096;
const MAX_RING: u32 = 1 << 30;
const MAX_SLOTS: u32 = 4096;

/// Which of a slot's three rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingId {
    /// Incoming Diameter requests, bridge -> worker.
    Requests = 0,
    /// Answers to the worker's own requests, bridge -> worker.
    Answers = 1,
    /// Replies and outgoing requests, worker -> bridge.
    ToBridge = 2,
}

/// The sizes of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Number of worker slots.
    pub slots: u32,
    /// Data bytes of each ring (power of two).
    pub ring_bytes: u32,
    /// Largest record payload (must fit a ring with room to spare).
    pub max_msg: u32,
}

impl Geometry {
    /// Checks the sizes and explains what is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(Error::Invalid(format!(
                "slots must be 1..={MAX_SLOTS}, not {}",
                self.slots
            )));
        }
        if !self.ring_bytes.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&self.ring_bytes) {
            return Err(Error::Invalid(format!(
                "ring_bytes must be a power of two in {MIN_RING}..={MAX_RING}, not {}",
                self.ring_bytes
            )));
        }
        // Half the ring, so one maximal record never starves the others.
        if self.max_msg < 256 || self.max_msg > self.ring_bytes / 2 {
            return Err(Error::Invalid(format!(
                "max_msg must be between 256 and ring_bytes/2 ({}), not {}",
                self.ring_bytes / 2,
                self.max_msg
            )));
        }
        Ok(())
    }

    /// Bytes between two slots.
    pub fn slot_stride(&self) -> u64 {
        let raw = SLOT_HEADER_BYTES + 3 * RING_HEADER_BYTES + 3 * u64::from(self.ring_bytes);
        raw.div_ceil(4096) * 4096
    }

    /// Total size of the file.
    pub fn segment_size(&self) -> u64 {
        HEADER_BYTES + u64::from(self.slots) * self.slot_stride()
    }
}

/// The segment header, at offset 0.
#[repr(C)]
struct SegmentHeader {
    magic: u64,
    version: u32,
    header_bytes: u32,
    generation: u64,
    segment_size: u64,
    slot_stride: u64,
    slots: u32,
    ring_bytes: u32,
    max_msg: u32,
    bridge_pid: u32,
}

/// Per-slot bookkeeping visible to both sides (for diagnostics; the
/// authoritative slot ownership is the control connection).
#[repr(C)]
pub struct SlotHeader {
    /// 1 while a worker is attached.
    pub attached: AtomicU32,
    /// The attached worker's pid (0 when free).
    pub worker_pid: AtomicU32,
    /// This attachment's reply address ([`crate::worker::Worker::reply_address`]), written by
    /// the bridge before its Welcome; 0 from a bridge that cannot deliver an outcome to
    /// another attachment (one of before reply-to left these bytes zero, so the capability
    /// needs no new wire version). The bridge never reads it back: it checks an address
    /// against its own table, so a worker that overwrites it only names another address,
    /// which the bridge refuses or delivers to that address's owner as named.
    pub reply_address: std::sync::atomic::AtomicU64,
}

/// A mapped segment. Cheap to clone (the mapping is shared).
#[derive(Clone)]
pub struct Segment {
    map: Arc<MmapRaw>,
    geometry: Geometry,
    generation: u64,
    path: PathBuf,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .field("geometry", &self.geometry)
            .finish()
    }
}

/// Options the bridge uses to create a segment.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Where the file goes (replaced if it exists).
    pub path: PathBuf,
    /// Sizes.
    pub geometry: Geometry,
    /// Group that may also use it (mode 0660); owner-only (0600) if `None`.
    pub group: Option<u32>,
    /// Identifies this bridge instance; workers check it.
    pub generation: u64,
    /// Written into the header; only tests set anything but [`WIRE_VERSION`].
    pub version: u32,
}

impl Segment {
    /// Creates (replacing any stale file) and maps a new, zeroed segment.
    pub fn create(opts: &CreateOptions) -> Result<Segment> {
        opts.geometry.validate()?;
        let mode = if opts.group.is_some() { 0o660 } else { 0o600 };
        match std::fs::remove_file(&opts.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("removing stale segment {}", opts.path.display()),
                    e,
                ))
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(&opts.path)
            .map_err(|e| Error::io(format!("creating segment {}", opts.path.display()), e))?;
        if let Some(gid) = opts.group {
            std::os::unix::fs::fchown(&file, None, Some(gid))
                .map_err(|e| Error::io(format!("giving segment to group {gid}"), e))?;
        }
        // The umask may have removed group bits; set exactly what we mean.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| Error::io("setting segment permissions", e))?;
        let size = opts.geometry.segment_size();
        file.set_len(size)
            .map_err(|e| Error::io(format!("sizing segment to {size} bytes"), e))?;
        let map = MmapRaw::map_raw(&file).map_err(|e| Error::io("mapping segment", e))?;
        let seg = Segment {
            map: Arc::new(map),
            geometry: opts.geometry,
            generation: opts.generation,
            path: opts.path.clone(),
        };
        // Nobody else has the file yet (created with O_EXCL).
        seg.write_header(opts.version, size);
        Ok(seg)
    }

    /// Creates a one-slot segment in an anonymous, sealed memfd named
    /// `name` (shown in `/proc/<pid>/maps`), for one worker. Returns the
    /// mapping and the descriptor to pass to that worker. Only holders of
    /// the descriptor can map it; its size can no longer change (seals).
    pub fn create_anonymous(
        name: &str,
        geometry: Geometry,
        generation: u64,
        version: u32,
    ) -> Result<(Segment, File)> {
        let geometry = Geometry {
            slots: 1,
            ..geometry
        };
        geometry.validate()?;
        let cname = std::ffi::CString::new(name.replace('\0', "?"))
            .map_err(|_| Error::Invalid("segment name contains NUL".into()))?;
        // SAFETY: cname is a valid NUL-terminated string; flags are constants.
        let fd = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(Error::last_os("memfd_create for a worker segment"));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(fd) };
        // Owner-only: the worker gets the descriptor itself; nobody needs to
        // reopen it through /proc.
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(|e| Error::io("setting worker segment permissions", e))?;
        let size = geometry.segment_size();
        file.set_len(size)
            .map_err(|e| Error::io(format!("sizing worker segment to {size} bytes"), e))?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: plain fcntl on our descriptor.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(Error::last_os("sealing the worker segment"));
        }
        let map = MmapRaw::map_raw(&file).map_err(|e| Error::io("mapping worker segment", e))?;
        let seg = Segment {
            map: Arc::new(map),
            geometry,
            generation,
            path: PathBuf::from(name),
        };
        seg.write_header(version, size);
        Ok((seg, file))
    }

    fn write_header(&self, version: u32, size: u64) {
        let g = self.geometry;
        let hdr = SegmentHeader {
            magic: MAGIC,
            version,
            header_bytes: HEADER_BYTES as u32,
            generation: self.generation,
            segment_size: size,
            slot_stride: g.slot_stride(),
            slots: g.slots,
            ring_bytes: g.ring_bytes,
            max_msg: g.max_msg,
            bridge_pid: std::process::id(),
        };
        // SAFETY: the mapping is at least HEADER_BYTES long (segment_size
        // includes it), page aligned, and only we write the header.
        unsafe { std::ptr::write(self.map.as_mut_ptr().cast::<SegmentHeader>(), hdr) };
    }

    /// Maps a segment the bridge passed over the control socket and checks
    /// its header: magic, version, geometry against the file's length, and
    /// the generation the bridge announced.
    pub fn open(file: File, path: &Path, generation: u64) -> Result<Segment> {
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading segment size", e))?
            .len();
        if len < HEADER_BYTES {
            return Err(Error::Protocol(format!(
                "segment {} is only {len} bytes",
                path.display()
            )));
        }
        let map = MmapRaw::map_raw(&file).map_err(|e| Error::io("mapping segment", e))?;
        // SAFETY: the mapping is at least HEADER_BYTES long and page aligned;
        // the header is plain integers, any bit pattern is valid.
        let hdr = unsafe { std::ptr::read(map.as_ptr().cast::<SegmentHeader>()) };
        if hdr.magic != MAGIC {
            return Err(Error::Protocol(format!(
                "{} is not a dmbridge segment (bad magic {:#x})",
                path.display(),
                hdr.magic
            )));
        }
        if hdr.version != WIRE_VERSION {
            return Err(Error::Version {
                ours: WIRE_VERSION,
                theirs: hdr.version,
                detail: "segment header",
            });
        }
        let geometry = Geometry {
            slots: hdr.slots,
            ring_bytes: hdr.ring_bytes,
            max_msg: hdr.max_msg,
        };
        geometry
            .validate()
            .map_err(|e| Error::Protocol(format!("segment header: {e}")))?;
        if u64::from(hdr.header_bytes) != HEADER_BYTES
            || hdr.slot_stride != geometry.slot_stride()
            || hdr.segment_size != geometry.segment_size()
            || hdr.segment_size > len
        {
            return Err(Error::Protocol(format!(
                "segment {} has inconsistent sizes (file {len} bytes, header says {})",
                path.display(),
                hdr.segment_size
            )));
        }
        if hdr.generation != generation {
            return Err(Error::Protocol(format!(
                "segment generation {} does not match the bridge's {generation}",
                hdr.generation
            )));
        }
        Ok(Segment {
            map: Arc::new(map),
            geometry,
            generation,
            path: path.to_path_buf(),
        })
    }

    /// Slots, ring size and maximum message size as the header declares them, already
    /// checked against the file's size (the worker also refuses a Welcome whose `max_msg`
    /// differs).
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The bridge instance this segment belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn slot_base(&self, slot: u32) -> Option<u64> {
        (slot < self.geometry.slots)
            .then(|| HEADER_BYTES + u64::from(slot) * self.geometry.slot_stride())
    }

    /// The diagnostics header of `slot`.
    pub fn slot_header(&self, slot: u32) -> Option<&SlotHeader> {
        let base = self.slot_base(slot)?;
        // SAFETY: base + SLOT_HEADER_BYTES is inside the validated mapping;
        // SlotHeader is atomics only (all-zero valid), 64-byte aligned offset.
        Some(unsafe { &*self.map.as_ptr().add(base as usize).cast::<SlotHeader>() })
    }

    /// The histograms of `slot`'s worker ([`crate::times`]): written by that worker only,
    /// read by the bridge.
    pub fn script_times(&self, slot: u32) -> Option<&ScriptTimes> {
        let base = self.slot_base(slot)?;
        // SAFETY: base + SCRIPT_TIMES_OFFSET + size_of::<ScriptTimes>() <= base +
        // SLOT_HEADER_BYTES (checked at compile time), inside the validated mapping; the
        // offset is 8-byte aligned (slot bases are page aligned); ScriptTimes is atomics
        // only, valid for any bit pattern (all-zero: empty), and the mapping outlives &self.
        Some(unsafe {
            &*self
                .map
                .as_ptr()
                .add((base + SCRIPT_TIMES_OFFSET) as usize)
                .cast::<ScriptTimes>()
        })
    }

    /// One ring of `slot`, for a producer or consumer to take.
    pub fn ring(&self, slot: u32, id: RingId) -> Option<ShmRing> {
        let base = self.slot_base(slot)?;
        let k = id as u64;
        let hdr_off = base + SLOT_HEADER_BYTES + k * RING_HEADER_BYTES;
        let data_off = base
            + SLOT_HEADER_BYTES
            + 3 * RING_HEADER_BYTES
            + k * u64::from(self.geometry.ring_bytes);
        let ptr = self.map.as_mut_ptr();
        Some(ShmRing {
            _map: self.map.clone(),
            // SAFETY: offsets computed from the validated geometry stay
            // inside the mapping (segment_size <= file length was checked).
            header: unsafe { ptr.add(hdr_off as usize).cast::<RingHeader>() },
            // SAFETY: as above.
            data: unsafe { ptr.add(data_off as usize) },
            cap: u64::from(self.geometry.ring_bytes),
        })
    }

    /// Empties the three rings of `slot`, marks it attached to `pid` and writes its reply
    /// address ([`SlotHeader::reply_address`]). Bridge only, before handing the slot to a
    /// new worker (the previous owner is gone: its control connection reached EOF).
    pub fn reset_slot(&self, slot: u32, pid: u32, reply_address: u64) {
        for id in [RingId::Requests, RingId::Answers, RingId::ToBridge] {
            if let Some(r) = self.ring(slot, id) {
                r.header().reset();
            }
        }
        if let Some(h) = self.slot_header(slot) {
            h.worker_pid.store(pid, Relaxed);
            h.attached.store(u32::from(pid != 0), Relaxed);
            // Before the Welcome is sent, which orders it before the worker's read.
            h.reply_address.store(reply_address, Relaxed);
        }
    }
}

/// One ring inside a mapped segment. Keeps the mapping alive.
pub struct ShmRing {
    _map: Arc<MmapRaw>,
    header: *const RingHeader,
    data: *mut u8,
    cap: u64,
}

// SAFETY: the pointers target a shared mapping kept alive by `_map`; all
// concurrent access is mediated by the ring protocol (atomics + ownership
// hand-over), so moving the handle to another thread is fine.
unsafe impl Send for ShmRing {}

// SAFETY: header and data point into the mapping held by `_map`, which
// lives as long as self; `cap` is the validated power-of-two ring size; the
// pointer arithmetic in write/read stays in bounds per the trait contract.
unsafe impl RingMem for ShmRing {
    fn header(&self) -> &RingHeader {
        // SAFETY: valid for self's lifetime (see above); all-zero is valid.
        unsafe { &*self.header }
    }
    fn capacity(&self) -> u64 {
        self.cap
    }
    unsafe fn write(&self, off: usize, src: &[u8]) {
        // SAFETY: caller guarantees off + len <= cap and exclusive ownership.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(off), src.len()) }
    }
    unsafe fn read(&self, off: usize, dst: &mut [u8]) {
        // SAFETY: caller guarantees off + len <= cap and publication.
        unsafe { std::ptr::copy_nonoverlapping(self.data.add(off), dst.as_mut_ptr(), dst.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("dmshm-test-{}-{name}", std::process::id()))
    }

    fn rw(p: &Path) -> File {
        File::options().read(true).write(true).open(p).unwrap()
    }

    fn geo() -> Geometry {
        Geometry {
            slots: 2,
            ring_bytes: 8192,
            max_msg: 4096,
        }
    }

    #[test]
    fn create_open_roundtrip_and_mode() {
        let path = tmp("seg-rt");
        let seg = Segment::create(&CreateOptions {
            path: path.clone(),
            geometry: geo(),
            group: None,
            generation: 7,
            version: WIRE_VERSION,
        })
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), geo().segment_size());
        let f = File::options().read(true).write(true).open(&path).unwrap();
        let w = Segment::open(f, &path, 7).unwrap();
        assert_eq!(w.geometry(), geo());
        // A record written through one mapping is read through the other.
        let mut p = crate::ring::Producer::new(seg.ring(1, RingId::Answers).unwrap(), 4096);
        let mut c = crate::ring::Consumer::new(w.ring(1, RingId::Answers).unwrap(), 4096);
        p.push(&[b"across mappings"]).unwrap();
        let mut buf = Vec::new();
        assert!(c.pop_into(&mut buf).unwrap());
        assert_eq!(buf, b"across mappings");
        assert!(seg.ring(2, RingId::Answers).is_none());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn version_and_generation_mismatch_refused() {
        let path = tmp("seg-ver");
        let _seg = Segment::create(&CreateOptions {
            path: path.clone(),
            geometry: geo(),
            group: None,
            generation: 1,
            version: 99,
        })
        .unwrap();
        let f = rw(&path);
        let e = Segment::open(f, &path, 1).unwrap_err();
        assert!(matches!(e, Error::Version { theirs: 99, .. }), "{e}");
        assert!(e.to_string().contains("version mismatch"));
        let _seg = Segment::create(&CreateOptions {
            path: path.clone(),
            geometry: geo(),
            group: None,
            generation: 1,
            version: WIRE_VERSION,
        })
        .unwrap();
        let e = Segment::open(rw(&path), &path, 2).unwrap_err();
        assert!(e.to_string().contains("generation"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn group_mode_is_0660() {
        let path = tmp("seg-group");
        // SAFETY: getgid has no preconditions.
        let gid = unsafe { libc::getgid() };
        let _seg = Segment::create(&CreateOptions {
            path: path.clone(),
            geometry: geo(),
            group: Some(gid),
            generation: 1,
            version: WIRE_VERSION,
        })
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn garbage_file_refused() {
        let path = tmp("seg-garbage");
        std::fs::write(&path, vec![0xAB; 8192]).unwrap();
        let e = Segment::open(rw(&path), &path, 0).unwrap_err();
        assert!(e.to_string().contains("not a dmbridge segment"), "{e}");
        std::fs::write(&path, vec![0; 10]).unwrap();
        assert!(Segment::open(rw(&path), &path, 0).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn geometry_validation() {
        assert!(Geometry { slots: 0, ..geo() }.validate().is_err());
        assert!(Geometry {
            ring_bytes: 5000,
            ..geo()
        }
        .validate()
        .is_err());
        assert!(Geometry {
            max_msg: 8192,
            ..geo()
        }
        .validate()
        .is_err());
        assert!(geo().validate().is_ok());
    }
}
