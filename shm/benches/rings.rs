//! Throughput and latency of the rings between two processes sharing a real
//! `/dev/shm` segment (the peer is a forked child, as a SIP-server worker
//! would be).
//!
//! * `one_way/<size>`: messages/s from this process to the peer, which
//!   consumes them and acknowledges each batch (criterion reports elements/s).
//! * `round_trip/<size>`: one message to the peer and its echo back, both
//!   sides polling the ring (spin, then yield; the doorbell path is not
//!   involved: a busy worker never sleeps).
//! * `round_trip_encoded`: the same with a realistic IncomingRequest record
//!   encoded and decoded on each side.
//!
//! Run: `cargo bench -p dmbridge-shm --bench rings`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dmshm::record::{IncomingRequest, Payload, Record};
use dmshm::ring::{Consumer, Producer, PushError};
use dmshm::segment::{CreateOptions, Geometry, RingId, Segment, ShmRing, WIRE_VERSION};
use std::time::{Duration, Instant};

/// Spins briefly, then yields the core: with two processes on two shared
/// cores, pure spinning measures the scheduler, not the ring.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn snooze(&mut self) {
        self.0 += 1;
        if self.0 < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

const OP_ECHO: u8 = 1;
const OP_ACK_AFTER: u8 = 2;
const OP_EXIT: u8 = 3;
const OP_COUNT: u8 = 4;

/// The forked peer: consumes `Requests`, answers on `ToBridge`.
fn peer(seg: &Segment) -> ! {
    let max = seg.geometry().max_msg as usize;
    let (Some(rx), Some(tx)) = (seg.ring(0, RingId::Requests), seg.ring(0, RingId::ToBridge))
    else {
        // SAFETY: _exit in the forked child.
        unsafe { libc::_exit(2) }
    };
    let mut rx = Consumer::new(rx, max);
    let mut tx = Producer::new(tx, max);
    let mut buf = Vec::with_capacity(max);
    let mut counted = 0u64;
    let mut idle = Backoff::default();
    loop {
        match rx.pop_into(&mut buf) {
            Ok(true) => idle = Backoff::default(),
            Ok(false) => {
                idle.snooze();
                continue;
            }
            // SAFETY: _exit in the forked child.
            Err(_) => unsafe { libc::_exit(3) },
        }
        match buf.first().copied() {
            Some(OP_COUNT) => counted += 1,
            Some(OP_ECHO) => {
                if buf.get(1) == Some(&1) {
                    // Encoded record: decode it like the worker would.
                    let _ = Record::decode(&buf[2..]);
                }
                let mut b = Backoff::default();
                while tx.push(&[&buf]) == Err(PushError::Full) {
                    b.snooze();
                }
            }
            Some(OP_ACK_AFTER) => {
                counted += 1;
                let mut b = Backoff::default();
                while tx.push(&[&counted.to_le_bytes()]) == Err(PushError::Full) {
                    b.snooze();
                }
                counted = 0;
            }
            // SAFETY: _exit in the forked child.
            _ => unsafe { libc::_exit(0) },
        }
    }
}

struct Peer {
    pid: libc::pid_t,
    tx: Producer<ShmRing>,
    rx: Consumer<ShmRing>,
    buf: Vec<u8>,
    path: std::path::PathBuf,
}

impl Peer {
    fn start() -> Peer {
        let path = std::path::PathBuf::from(format!("/dev/shm/dmshm-bench-{}", std::process::id()));
        let geometry = Geometry {
            slots: 1,
            ring_bytes: 1 << 20,
            max_msg: 64 * 1024,
        };
        let seg = Segment::create(&CreateOptions {
            path: path.clone(),
            geometry,
            group: None,
            generation: 1,
            version: WIRE_VERSION,
        })
        .expect("creating the bench segment");
        // SAFETY: the bench is single-threaded here; the child only touches
        // the inherited shared mapping and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            peer(&seg);
        }
        let max = geometry.max_msg as usize;
        Peer {
            pid,
            tx: Producer::new(seg.ring(0, RingId::Requests).unwrap(), max),
            rx: Consumer::new(seg.ring(0, RingId::ToBridge).unwrap(), max),
            buf: Vec::with_capacity(max),
            path,
        }
    }

    fn push(&mut self, parts: &[&[u8]]) {
        let mut b = Backoff::default();
        while self.tx.push(parts) == Err(PushError::Full) {
            b.snooze();
        }
    }

    fn pop(&mut self) {
        let mut b = Backoff::default();
        while !self.rx.pop_into(&mut self.buf).expect("ring") {
            b.snooze();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.tx.push(&[&[OP_EXIT]]);
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: kill/waitpid of the child we forked, by its pid.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn one_way(c: &mut Criterion) {
    let mut p = Peer::start();
    let mut g = c.benchmark_group("one_way");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    for size in [16usize, 64, 512] {
        let body = vec![0xA5u8; size - 1];
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 1..iters {
                    p.push(&[&[OP_COUNT], &body]);
                }
                p.push(&[&[OP_ACK_AFTER], &body]);
                p.pop();
                t0.elapsed()
            })
        });
    }
    g.finish();
}

fn round_trip(c: &mut Criterion) {
    let mut p = Peer::start();
    let mut g = c.benchmark_group("round_trip");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    for size in [64usize, 4096] {
        let body = vec![0x5Au8; size - 2];
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                p.push(&[&[OP_ECHO, 0], &body]);
                p.pop();
            })
        });
    }
    let mut rec = Vec::new();
    let avps = r#"[{"Session-Id":"hss.example;1;2"},{"Origin-Host":"hss.example"},{"User-Name":"alice@example"}]"#;
    Record::Incoming(IncomingRequest {
        token: 42,
        app_id: 16777216,
        cmd_code: 305,
        event: "E_DM_PPR",
        sess_id: "hss.example;1;2",
        cmd_name: "Push-Profile-Request",
        origin_host: "hss.example",
        origin_realm: "example",
        avps_json: avps,
    })
    .encode(&mut rec);
    g.bench_function("encoded_ppr", |b| {
        b.iter(|| {
            p.push(&[&[OP_ECHO, 1], &rec]);
            p.pop();
        })
    });
    g.finish();
}

/// The whole library path: the bridge dispatches IncomingRequests, a worker
/// thread (dmshm::worker, what libdmbridge wraps) takes each from its fd and
/// replies, the bridge collects the replies; up to 256 in flight, doorbells
/// only when a side sleeps. Elements = requests answered.
fn request_reply(c: &mut Criterion) {
    use dmshm::bridge::{Bridge, BridgeConfig, BridgeEvent, Dispatch};
    use dmshm::record::ReplyStatus;
    use dmshm::worker::{Worker, WorkerConfig};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let id = std::process::id();
    let mut cfg = BridgeConfig::new(
        format!("/tmp/dmshm-bench-{id}.sock"),
        format!("/dev/shm/dmshm-bench-api-{id}"),
    );
    cfg.geometry = Geometry {
        slots: 2,
        ring_bytes: 1 << 20,
        max_msg: 64 * 1024,
    };
    let mut b = Bridge::create(cfg.clone()).expect("bridge");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let wcfg = WorkerConfig::new(&cfg.control_path, "bench worker");
    let worker = std::thread::spawn(move || {
        let mut w = Worker::attach(wcfg).expect("attach");
        w.set_handled(&["PPR".into()]).expect("handles");
        let reply = br#"[{"Result-Code":2001}]"#;
        while !stop2.load(Ordering::Relaxed) {
            let mut p = libc::pollfd {
                fd: w.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, 50) };
            while let Ok(Some(r)) = w.next_request() {
                while w
                    .reply(r.token, ReplyStatus::Ok, Payload::Json, reply, "")
                    .is_err()
                {
                    std::thread::yield_now();
                }
            }
        }
    });
    let mut evs = Vec::new();
    let mut slots: Vec<u32> = Vec::new();
    let t0 = Instant::now();
    while !evs.iter().any(|e| matches!(e, BridgeEvent::Handles { .. })) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "worker did not attach"
        );
        slots.extend(b.accept_all(&mut evs).expect("accept"));
        for s in &slots {
            while b.service(*s, &mut evs) {}
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let slot = slots[0];
    let fd = b.worker_fd(slot).expect("fd");
    let avps = r#"[{"Session-Id":"hss.example;1;2"},{"Origin-Host":"hss.example"},{"User-Name":"alice@example"}]"#;
    let req = IncomingRequest {
        token: 0,
        app_id: 16777216,
        cmd_code: 305,
        event: "",
        sess_id: "hss.example;1;2",
        cmd_name: "Push-Profile-Request",
        origin_host: "hss.example",
        origin_realm: "example",
        avps_json: avps,
    };
    let mut g = c.benchmark_group("request_reply");
    g.measurement_time(Duration::from_secs(3)).sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("window_256", |bch| {
        bch.iter_custom(|iters| {
            let t0 = Instant::now();
            let (mut sent, mut done, mut in_flight) = (0u64, 0u64, 0u64);
            while done < iters {
                while sent < iters && in_flight < 256 {
                    match b.dispatch("PPR", &req) {
                        Dispatch::Sent { .. } => {
                            sent += 1;
                            in_flight += 1;
                        }
                        _ => break,
                    }
                }
                evs.clear();
                let more = b.service(slot, &mut evs);
                let replies = evs
                    .iter()
                    .filter(|e| matches!(e, BridgeEvent::Reply { .. }))
                    .count() as u64;
                done += replies;
                in_flight -= replies;
                if replies == 0 && !more {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, 10) };
                }
            }
            t0.elapsed()
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = worker.join();
}

criterion_group!(benches, one_way, round_trip, request_reply);
criterion_main!(benches);
