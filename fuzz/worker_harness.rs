//! What the worker library (libdmbridge, `cabi/` over `dmshm`) reads from outside the worker
//! process, fed arbitrary bytes: whatever the bridge — or a process scribbling over the
//! shared memory — wrote. Shared by the `worker` fuzz target and the corpus replay in
//! `cabi/tests/fuzz_corpus.rs`.
//!
//! The first byte picks the input kind, the rest is the input:
//! - `0`: a control-socket message (`Ctl::decode`);
//! - `1`: one ring record (`Record::decode`);
//! - `2`: the bytes of a worker's slot (ring headers with their head/tail positions, and the
//!   ring data) in a real, mapped segment: every record the worker would pop from its two
//!   incoming rings is popped and decoded, and records are pushed into the outgoing ring
//!   over whatever head position was scribbled there;
//! - `3`: a script's AVP JSON for `dm_send_request`, `4`: for `dm_send_reply`, through the
//!   library's own checks (`dmbridge::fuzzing::script_json`);
//! - `5`: a whole segment file as a worker maps it (`Segment::open`: its header, then every
//!   ring of every slot it declares, as in kind 2).
//!
//! Invariants: nothing panics or reads out of bounds (ASan); a decoded control message or
//! record encodes to bytes that decode to the same value; a popped record is at most the
//! segment's `max_msg` long.

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use dmshm::control::Ctl;
use dmshm::record::Record;
use dmshm::ring::{Consumer, Producer};
use dmshm::segment::{Geometry, RingId, Segment, ShmRing, WIRE_VERSION};

/// The smallest geometry the segment accepts: one slot, 4 KiB rings.
const GEOMETRY: Geometry = Geometry {
    slots: 1,
    ring_bytes: 4096,
    max_msg: 2048,
};

/// Records popped per ring and input: a scribbled ring can hold at most
/// `ring_bytes / 8` frames, so this bounds the work without hiding any.
const MAX_POPS: usize = 4096 / 8;

/// Largest segment file of a kind-5 input (a few slots of the smallest geometry).
const MAX_FILE: u64 = 1 << 16;

/// Built once per process: a real one-slot segment (a sealed memfd, mapped), rewritten
/// through its descriptor by every kind-2 input, all of the slot's bytes each time, so no
/// state passes from one input to the next; and a scratch file for kind 5.
struct Fixed {
    segment: Segment,
    memfd: File,
    scratch: File,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let (segment, memfd) =
            match Segment::create_anonymous("dmbridge-fuzz", GEOMETRY, 1, WIRE_VERSION) {
                Ok(s) => s,
                Err(e) => panic!("fuzz segment: {e}"),
            };
        let path = std::env::temp_dir().join(format!("dmbridge-fuzz-{}", std::process::id()));
        let scratch = match File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        // Only the descriptor is needed.
        let _ = std::fs::remove_file(&path);
        Fixed {
            segment,
            memfd,
            scratch,
        }
    })
}

/// Runs one input; panics only on an invariant violation.
pub fn worker(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => control(rest),
        1 => record(rest),
        2 => slot(rest),
        3 => drop(dmbridge::fuzzing::script_json(rest, false)),
        4 => drop(dmbridge::fuzzing::script_json(rest, true)),
        _ => segment_file(rest),
    }
}

fn control(bytes: &[u8]) {
    if let Ok(m) = Ctl::decode(bytes) {
        let again = Ctl::decode(&m.encode());
        assert_eq!(again.ok(), Some(m), "control message round trip");
    }
}

fn record(bytes: &[u8]) {
    if let Ok(r) = Record::decode(bytes) {
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(Record::decode(&out).ok(), Some(r), "record round trip");
    }
}

/// Kind 2: the slot's bytes (zero-padded) written into the live segment, then read as the
/// worker reads them.
fn slot(bytes: &[u8]) {
    let f = fixed();
    let g = f.segment.geometry();
    let stride = g.slot_stride() as usize;
    let mut area = vec![0u8; stride];
    let n = bytes.len().min(stride);
    area[..n].copy_from_slice(&bytes[..n]);
    // The slot follows the segment header.
    let base = g.segment_size() - g.slot_stride();
    if let Err(e) = f.memfd.write_all_at(&area, base) {
        panic!("writing the fuzz segment: {e}");
    }
    read_slot(&f.segment, 0);
}

/// Kind 5: a segment file as the bridge would pass it: the generation the bridge announced
/// (8 bytes), the file's length (3 bytes, at most [`MAX_FILE`]; the file is sparse, zeros
/// past the content), then its content.
fn segment_file(bytes: &[u8]) {
    let f = fixed();
    let Some((gen, rest)) = bytes.split_first_chunk::<8>() else {
        return;
    };
    let Some((len, content)) = rest.split_first_chunk::<3>() else {
        return;
    };
    let len = (u64::from(len[0]) | u64::from(len[1]) << 8 | u64::from(len[2]) << 16).min(MAX_FILE);
    let content = content.get(..len as usize).unwrap_or(content);
    if f.scratch.set_len(0).is_err()
        || f.scratch.set_len(len).is_err()
        || f.scratch.write_all_at(content, 0).is_err()
    {
        panic!("writing the scratch segment file");
    }
    let Ok(file) = f.scratch.try_clone() else {
        panic!("duplicating the scratch descriptor");
    };
    if let Ok(seg) = Segment::open(file, Path::new("fuzz"), u64::from_le_bytes(*gen)) {
        for s in 0..seg.geometry().slots {
            read_slot(&seg, s);
        }
    }
}

/// What a worker reads from one slot: records from the two bridge-to-worker rings, and the
/// head position of the worker-to-bridge ring when it pushes.
fn read_slot(seg: &Segment, slot: u32) {
    let max = seg.geometry().max_msg as usize;
    for id in [RingId::Requests, RingId::Answers] {
        let Some(ring) = seg.ring(slot, id) else {
            return;
        };
        let mut rx: Consumer<ShmRing> = Consumer::new(ring, max);
        let mut buf = Vec::new();
        for _ in 0..MAX_POPS {
            match rx.pop_into(&mut buf) {
                Ok(true) => {
                    assert!(buf.len() <= max, "popped a record over max_msg");
                    record(&buf);
                }
                Ok(false) | Err(_) => break,
            }
        }
        let _ = rx.used_bytes();
    }
    if let Some(ring) = seg.ring(slot, RingId::ToBridge) {
        let mut tx: Producer<ShmRing> = Producer::new(ring, max);
        let payload = [0x5au8; 300];
        for len in [0, 1, 7, 8, 300, max] {
            let part = payload.get(..len.min(payload.len())).unwrap_or(&[]);
            if tx.push(&[part, part]).is_err() {
                break;
            }
        }
        let _ = tx.used_bytes();
    }
}
