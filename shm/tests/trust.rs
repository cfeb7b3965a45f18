//! The local seam as an attacker sees it (DESIGN §10): who may attach
//! (SO_PEERCRED against the allow list), what an attached worker can reach
//! (its own segment only), and what silent or scribbling local clients can
//! do to the others (nothing: the others stay served).
//!
//! `other_users_can_neither_attach_nor_read_rings` creates users and a group
//! with `useradd`/`groupadd` and runs a probe (this test binary, re-executed
//! as those users with `setpriv`): it needs root, and says so and returns
//! without it.

mod common;

use common::{poll_fd, wcfg};
use dmshm::bridge::{BridgeConfig, PeerAllow, RefusalCause};
use dmshm::control::{Conn, Ctl, Recv, MAX_CONTROL_MSG};
use dmshm::record::{class, OutgoingRequest, Record};
use dmshm::reference::{EchoBridge, EchoHandle, EchoStats, CMD_INJECT};
use dmshm::ring::{Consumer, Producer};
use dmshm::segment::{Geometry, RingId, Segment, WIRE_VERSION};
use dmshm::worker::{Worker, WorkerConfig};
use dmshm::Error;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn cfg(dir: &Path) -> BridgeConfig {
    let mut cfg = BridgeConfig::new(dir.join("run").join("ctl.sock"), "dmshm-trust");
    cfg.geometry = Geometry {
        slots: 2,
        ring_bytes: 16384,
        max_msg: 4096,
    };
    cfg
}

/// A private directory, removed on drop.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(tag: &str) -> TmpDir {
        let p = std::env::temp_dir().join(format!("dmshm-trust-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        TmpDir(p)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replies to every incoming request waiting for `w`; returns how many.
fn serve(w: &mut Worker) -> u64 {
    let mut served = 0;
    while let Some(r) = w.next_request().unwrap() {
        let json = format!("[{{\"Session-Id\":\"{}\"}}]", r.sess_id);
        w.reply(
            r.token,
            dmshm::record::ReplyStatus::Ok,
            dmshm::record::Payload::Json,
            json.as_bytes(),
            "",
        )
        .unwrap();
        served += 1;
    }
    served
}

/// Makes the bridge inject `n` PPRs (CMD_INJECT) and serves those that
/// reach `w`; returns (dispatched by the bridge, served by `w`).
fn inject_and_serve(w: &mut Worker, n: u32) -> (u64, u64) {
    let h = w
        .send_request_async(n, CMD_INJECT, br#"[{"inject":"PPR"}]"#, 5000)
        .unwrap();
    let t0 = Instant::now();
    let mut served = 0;
    let c = loop {
        assert!(t0.elapsed() < Duration::from_secs(10), "no answer");
        served += serve(w);
        if let Some(c) = w.next_answer() {
            break c;
        }
        poll_fd(w.fd(), 50);
    };
    assert_eq!((c.handle, c.class), (h, class::SUCCESS), "{c:?}");
    // The requests were published before the answer: all are there now.
    served += serve(w);
    let sent: u64 = c
        .avps_json
        .split_once("\"sent\":")
        .and_then(|(_, r)| r.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .unwrap();
    (sent, served)
}

/// A hand-made client: Hello, then the Welcome and the segment descriptor.
fn raw_attach(path: &Path, name: &str) -> (Conn, u32, u64, File) {
    let conn = Conn::connect(path).unwrap();
    conn.send_ctl(
        &Ctl::Hello {
            version: WIRE_VERSION,
            pid: std::process::id(),
            name: name.into(),
        },
        None,
    )
    .unwrap();
    let mut buf = vec![0u8; MAX_CONTROL_MSG];
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(5), "no Welcome");
        conn.wait_readable(Duration::from_millis(100)).unwrap();
        match conn.recv(&mut buf).unwrap() {
            Recv::Msg(n, Some(fd)) => match Ctl::decode(&buf[..n]).unwrap() {
                Ctl::Welcome {
                    slot, generation, ..
                } => return (conn, slot, generation, File::from(fd)),
                other => panic!("{other:?}"),
            },
            Recv::Msg(n, None) => panic!("{:?}", Ctl::decode(&buf[..n])),
            Recv::Eof => panic!("EOF instead of Welcome"),
            Recv::WouldBlock => {}
        }
    }
}

fn stats_until(h: &EchoHandle, what: &str, f: impl Fn(&EchoStats) -> bool) -> EchoStats {
    let t0 = Instant::now();
    loop {
        let st = h.stats();
        if f(&st) {
            return st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timed out: {what}: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_process_outside_the_allow_list_is_refused_with_its_credentials() {
    let dir = TmpDir::new("allow");
    let mut bc = cfg(&dir.0);
    // Nobody is allowed, not even the bridge's own user.
    bc.allow = Some(PeerAllow::default());
    let h = EchoBridge::spawn(bc.clone()).unwrap();
    let e = Worker::attach(wcfg(&bc, "outsider"))
        .err()
        .expect("refused");
    assert!(
        matches!(&e, Error::Refused(m) if m.contains("may not attach") && m.contains("uid")),
        "{e}"
    );
    let st = stats_until(&h, "refusal seen", |s| !s.refusals.is_empty());
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert_eq!(
        st.refusals[0],
        (RefusalCause::NotAllowed, std::process::id(), uid)
    );
    assert_eq!(st.seam.refused_not_allowed, 1);
    assert_eq!(st.seam.connections_admitted, 0);
    assert_eq!(st.attached, 0);

    // The default list is the bridge's own uid: the same worker gets in.
    drop(h);
    let bc = cfg(&dir.0);
    let h = EchoBridge::spawn(bc.clone()).unwrap();
    let mut w = Worker::attach(wcfg(&bc, "insider")).unwrap();
    assert!(w.is_attached());
    assert_eq!(w.send_request(4, 272, b"[1]", 2000).class, class::SUCCESS);
    drop(h);
}

#[test]
fn the_runtime_directory_is_created_owner_only_or_for_the_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = TmpDir::new("rundir");
    let bc = cfg(&dir.0);
    let run = bc.control_path.parent().unwrap().to_path_buf();
    let b = dmshm::bridge::Bridge::create(bc.clone()).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&run), 0o700);
    assert_eq!(mode(&bc.control_path), 0o600);
    assert!(matches!(
        b.runtime_dir(),
        Some(dmshm::control::RuntimeDir::Created {
            mode: 0o700,
            group: None
        })
    ));
    drop(b);
    std::fs::remove_dir(&run).unwrap();

    // With a group (ours: no privileges needed): 0750 and that group.
    let gid = std::fs::metadata(&dir.0).unwrap().gid();
    let mut bc = cfg(&dir.0);
    bc.group = Some(gid);
    let b = dmshm::bridge::Bridge::create(bc.clone()).unwrap();
    assert_eq!(mode(&run), 0o750);
    assert_eq!(std::fs::metadata(&run).unwrap().gid(), gid);
    assert_eq!(mode(&bc.control_path), 0o660);
    drop(b);
    // An existing directory is left as it is (systemd's RuntimeDirectory=).
    let b = dmshm::bridge::Bridge::create(bc.clone()).unwrap();
    assert_eq!(b.runtime_dir(), Some(&dmshm::control::RuntimeDir::Existing));
    drop(b);

    // World-writable without the sticky bit: refused with the reason.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = dmshm::bridge::Bridge::create(bc.clone()).err().unwrap();
    assert!(e.to_string().contains("writable by everyone"), "{e}");
    // A symlink is refused too.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = dir.0.join("link");
    std::os::unix::fs::symlink(&run, &link).unwrap();
    let mut bc2 = cfg(&dir.0);
    bc2.control_path = link.join("ctl.sock");
    let e = dmshm::bridge::Bridge::create(bc2).err().unwrap();
    assert!(e.to_string().contains("symlink"), "{e}");
}

/// Hundreds of connections that never say Hello hold no slot: workers attach
/// and are served while they sit there; they are refused when the pending
/// list overflows or their time is up, each counted.
#[test]
fn silent_connections_do_not_lock_workers_out() {
    let dir = TmpDir::new("silent");
    let mut bc = cfg(&dir.0);
    bc.max_pending = 16;
    bc.handshake_timeout = Duration::from_millis(500);
    let h = EchoBridge::spawn(bc.clone()).unwrap();
    // As fast as the listen backlog lets them in.
    let silent: Vec<Conn> = (0..200)
        .map(|_| {
            let t0 = Instant::now();
            loop {
                match Conn::connect(&bc.control_path) {
                    Ok(c) => break c,
                    Err(e) if t0.elapsed() < Duration::from_secs(5) => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .collect();
    stats_until(&h, "silent connections admitted", |s| {
        s.seam.connections_admitted >= 200
    });
    // Both slots are still there for real workers, while the silent ones
    // are connected.
    let mut w1 = Worker::attach(wcfg(&bc, "one")).unwrap();
    let mut w2 = Worker::attach(wcfg(&bc, "two")).unwrap();
    assert!(w1.is_attached() && w2.is_attached());
    w1.set_handled(&["PPR".into()]).unwrap();
    assert_eq!(w2.send_request(4, 272, b"[2]", 2000).class, class::SUCCESS);
    let (sent, served) = inject_and_serve(&mut w1, 20);
    assert_eq!((sent, served), (20, 20));
    let st = stats_until(&h, "silent ones expired", |s| {
        s.seam.refused_pending_full + s.seam.refused_handshake_timeout >= 200
    });
    assert_eq!(st.attached, 2);
    assert!(st.seam.refused_pending_full >= 184 - 16, "{:?}", st.seam);
    drop(silent);
}

/// A worker that scribbles over its own segment — garbage over the ring
/// headers, or well-framed garbage records — and tries to resize it: the
/// seals refuse the resize (the bridge would fault on a truncated mapping),
/// the bridge drops that worker only (its held requests come back for 5012),
/// the slot is reused with a fresh segment, and the other worker is served
/// throughout.
#[test]
fn scribbling_workers_are_dropped_and_others_served() {
    let dir = TmpDir::new("scribble");
    let bc = cfg(&dir.0);
    let h = EchoBridge::spawn(bc.clone()).unwrap();
    let mut good = Worker::attach(wcfg(&bc, "good")).unwrap();
    good.set_handled(&["PPR".into()]).unwrap();
    let per_worker = bc.segment_bytes_per_worker();

    for round in 0..2 {
        let (conn, slot, generation, file) = raw_attach(&bc.control_path, "scribbler");
        // Its own segment, and nothing more: one slot's worth of bytes.
        assert_eq!(file.metadata().unwrap().len(), per_worker);
        assert!(file.set_len(0).is_err(), "shrinking is sealed");
        assert!(file.set_len(per_worker * 2).is_err(), "growing is sealed");
        conn.send_ctl(
            &Ctl::Handles {
                names: vec!["PPR".into()],
            },
            None,
        )
        .unwrap();
        // Requests go to it too (least loaded first), so it holds some.
        let (sent, served) = inject_and_serve(&mut good, 10);
        assert_eq!(sent, 10);
        let held_by_scribbler = (sent - served) as usize;
        let gone_before = h.stats().gone.len();
        if round == 0 {
            // Garbage over everything: headers, positions, data.
            let map = memmap2::MmapRaw::map_raw(&file).unwrap();
            // SAFETY: the mapping is `per_worker` bytes long and ours; the
            // bridge treats everything in it as untrusted.
            unsafe { std::ptr::write_bytes(map.as_mut_ptr(), 0xA5, map.len()) };
        } else {
            // Well-framed records of garbage in the ring towards the bridge.
            let seg = Segment::open(file, Path::new("scribbler"), generation).unwrap();
            let mut p = Producer::new(seg.ring(0, RingId::ToBridge).unwrap(), 4096);
            p.push(&[b"\xff\xfe not a record at all"]).unwrap();
        }
        conn.send(&[0x01], None).unwrap(); // doorbell
        let st = stats_until(&h, "scribbler dropped", |s| s.gone.len() > gone_before);
        let (_, name, tokens, _) = st.gone.last().unwrap().clone();
        assert_eq!(name, "scribbler");
        // What it held comes back once, for the bridge to answer 5012.
        assert_eq!(tokens.len(), held_by_scribbler, "{st:?}");
        // It sees EOF: dropped.
        let mut buf = vec![0u8; MAX_CONTROL_MSG];
        let t0 = Instant::now();
        loop {
            assert!(t0.elapsed() < Duration::from_secs(5));
            conn.wait_readable(Duration::from_millis(100)).unwrap();
            match conn.recv(&mut buf) {
                Ok(Recv::Eof) | Err(_) => break,
                _ => {}
            }
        }
        // The other worker never noticed.
        let (sent, served) = inject_and_serve(&mut good, 10);
        assert_eq!((sent, served), (10, 10), "round {round}, slot {slot}");
        assert!(good.is_attached());
    }
    // The freed slot takes a new worker, with a fresh segment.
    let mut fresh = Worker::attach(wcfg(&bc, "fresh")).unwrap();
    assert_eq!(
        fresh.send_request(4, 272, b"[3]", 2000).class,
        class::SUCCESS
    );
    let st = h.stop();
    assert_eq!(st.seam.workers_dropped, 2, "{:?}", st.seam);
    assert_eq!(st.attached, 4);
}

/// A library of an older build (record version 2) still talks to this bridge: its
/// OutgoingRequest leaves byte 2 zero, so its answers come as version 2, which it reads (no
/// `peer_ns`); the same worker's request that says it reads version 3 gets the peer's wait.
#[test]
fn a_library_of_record_version_2_gets_version_2_answers() {
    let dir = TmpDir::new("v2-library");
    let bc = cfg(&dir.0);
    let h = EchoBridge::spawn(bc.clone()).unwrap();
    let (conn, _slot, generation, file) = raw_attach(&bc.control_path, "v2 library");
    let seg = Segment::open(file, Path::new("v2 library"), generation).unwrap();
    let max = seg.geometry().max_msg as usize;
    let mut tx = Producer::new(seg.ring(0, RingId::ToBridge).unwrap(), max);
    let mut rx = Consumer::new(seg.ring(0, RingId::Answers).unwrap(), max);
    let (mut rec, mut buf) = (Vec::new(), Vec::new());
    for (handle, reads_answer_v3) in [(1u64, false), (2, true)] {
        Record::Outgoing(OutgoingRequest {
            handle,
            app_id: 4,
            cmd_code: 272,
            timeout_ms: 2000,
            avps_json: b"[]",
            reads_answer_v3,
            reply_to: None,
        })
        .encode(&mut rec);
        assert_eq!((rec[1], rec[2]), (2, u8::from(reads_answer_v3)));
        tx.push(&[&rec]).unwrap();
        conn.send(&[0x01], None).unwrap(); // doorbell
        let t0 = Instant::now();
        while !rx.pop_into(&mut buf).unwrap() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no answer to {handle}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let version = buf[1];
        let Record::Answer(a) = Record::decode(&buf).unwrap() else {
            panic!("not an answer: {buf:?}")
        };
        assert_eq!((a.handle, a.class), (handle, class::SUCCESS));
        if reads_answer_v3 {
            assert_eq!(version, 3);
            assert!(a.peer_ns > 0, "{a:?}");
        } else {
            assert_eq!((version, a.peer_ns), (2, 0), "{a:?}");
        }
    }
    drop(h);
}

// ---------------------------------------------------------------------------
// Other local users (root only)

/// Users and a group made for the test, deleted on drop.
struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).output();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).output();
        }
    }
}

/// Runs an account command, retrying while another process holds the
/// passwd lock.
fn admin(args: &[&str]) {
    for _ in 0..20 {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("lock") {
            panic!("{args:?}: {err}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{args:?}: passwd lock never free");
}

fn id_of(flag: &str, name: &str) -> u32 {
    let out = Command::new("id").args([flag, name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn gid_of(group: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2).unwrap().trim().parse().unwrap()
}

/// Runs the probe (this binary) as `uid`/`gid` with `groups` supplementary.
fn probe_as(exe: &Path, uid: u32, gid: u32, groups: &[u32], env: &[(&str, String)]) -> String {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let g: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", g.join(",")));
    }
    cmd.arg("--")
        .arg(exe)
        .args(["--ignored", "--exact", "probe_as_other_user", "--nocapture"])
        .arg("--test-threads=1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "probe as {uid}: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (With --nocapture the first line follows the harness's "test ... ".)
    text.lines()
        .filter_map(|l| l.find("probe: ").map(|i| &l[i..]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn other_users_can_neither_attach_nor_read_rings() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create users (useradd) and switch to them (setpriv)");
        return;
    }
    let tag = format!("dmbt{}", std::process::id() % 1_000_000);
    let group = format!("{tag}g");
    let (allowed, member, stranger) = (format!("{tag}a"), format!("{tag}m"), format!("{tag}s"));
    let mut acc = Accounts {
        users: Vec::new(),
        groups: Vec::new(),
    };
    admin(&["groupadd", &group]);
    acc.groups.push(group.clone());
    // `allowed`: the SIP server's user, primary group = the bridge's group.
    admin(&[
        "useradd",
        "-M",
        "-N",
        "-s",
        "/usr/sbin/nologin",
        "-g",
        &group,
        &allowed,
    ]);
    acc.users.push(allowed.clone());
    // `member`: only a supplementary member of the group (reaches the socket
    // by its file mode, but is not the SIP server).
    admin(&[
        "useradd",
        "-M",
        "-U",
        "-s",
        "/usr/sbin/nologin",
        "-G",
        &group,
        &member,
    ]);
    acc.users.push(member.clone());
    acc.groups.push(member.clone());
    // `stranger`: nothing to do with it.
    admin(&["useradd", "-M", "-U", "-s", "/usr/sbin/nologin", &stranger]);
    acc.users.push(stranger.clone());
    acc.groups.push(stranger.clone());
    let gid = gid_of(&group);

    let dir = TmpDir::new("users");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.0.join("probe");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut bc = cfg(&dir.0);
    bc.geometry.slots = 4;
    bc.group = Some(gid);
    let h = EchoBridge::spawn(bc.clone()).unwrap();
    // A worker of the bridge's own user with a secret in its rings: the
    // request it sent (to-bridge ring) and the echoed answer (answers ring).
    let secret = format!("SECRET-{}-{:?}", std::process::id(), Instant::now());
    let mut victim = Worker::attach(wcfg(&bc, "victim")).unwrap();
    let json = format!("[{{\"User-Name\":\"{secret}\"}}]");
    let c = victim.send_request(4, 272, json.as_bytes(), 2000);
    assert!(c.avps_json.contains(&secret), "{c:?}");

    let env = vec![
        ("DMSHM_PROBE_CTL", bc.control_path.display().to_string()),
        ("DMSHM_PROBE_SECRET", secret.clone()),
        ("DMSHM_PROBE_VICTIM", std::process::id().to_string()),
    ];
    let per_worker = bc.segment_bytes_per_worker();

    // The SIP server's user attaches, and finds only its own segment.
    let out = probe_as(&exe, id_of("-u", &allowed), gid, &[], &env);
    for want in [
        "probe: attached=true".to_string(),
        "probe: own_memfds=1".to_string(),
        format!("probe: own_segment_bytes={per_worker}"),
        "probe: own_segment_has_secret=false".into(),
        "probe: victim_fds=denied".into(),
        "probe: victim_mem=denied".into(),
        "probe: dev_shm_secret=false".into(),
    ] {
        assert!(out.contains(&want), "{want}\n{out}");
    }

    // A member of the group reaches the socket, and is refused by SO_PEERCRED.
    let member_uid = id_of("-u", &member);
    let out = probe_as(&exe, member_uid, id_of("-g", &member), &[gid], &env);
    assert!(
        out.contains("probe: attach=refused") && out.contains("may not attach"),
        "{out}"
    );
    assert!(out.contains("probe: victim_fds=denied"), "{out}");
    let st = stats_until(&h, "member refused", |s| {
        s.refusals.iter().any(|r| r.2 == member_uid)
    });
    assert!(st
        .refusals
        .iter()
        .any(|&(cause, pid, uid)| cause == RefusalCause::NotAllowed
            && uid == member_uid
            && pid != 0));

    // A stranger cannot even reach the socket (directory 0750, socket 0660).
    let out = probe_as(
        &exe,
        id_of("-u", &stranger),
        id_of("-g", &stranger),
        &[],
        &env,
    );
    assert!(out.contains("probe: attached=false"), "{out}");
    assert!(out.contains("ermission denied"), "{out}");
    assert!(out.contains("probe: victim_fds=denied"), "{out}");
    assert!(out.contains("probe: dev_shm_secret=false"), "{out}");

    // The victim was served throughout.
    assert_eq!(
        victim.send_request(4, 272, b"[4]", 2000).class,
        class::SUCCESS
    );
    let st = h.stop();
    assert_eq!(st.seam.refused_not_allowed, 1, "{:?}", st.seam);
    drop(acc);
}

/// Not a test of its own: what `other_users_can_neither_attach_nor_read_rings`
/// runs as another user. Prints what that user could reach.
#[test]
#[ignore = "helper run by other_users_can_neither_attach_nor_read_rings as another uid"]
fn probe_as_other_user() {
    let (Ok(ctl), Ok(secret), Ok(victim)) = (
        std::env::var("DMSHM_PROBE_CTL"),
        std::env::var("DMSHM_PROBE_SECRET"),
        std::env::var("DMSHM_PROBE_VICTIM"),
    ) else {
        panic!("run by other_users_can_neither_attach_nor_read_rings only");
    };
    let contains = |bytes: &[u8]| bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
    let mut cfg = WorkerConfig::new(&ctl, "probe");
    cfg.handshake_timeout = Duration::from_secs(2);
    match Worker::attach(cfg) {
        Ok(w) => {
            println!("probe: attached={}", w.is_attached());
            println!(
                "probe: last_error={}",
                w.last_attach_error().unwrap_or("none")
            );
            if w.is_attached() {
                // Every shared mapping of a memfd in this process.
                let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
                let mut memfds = 0;
                for line in maps.lines().filter(|l| l.contains("/memfd:")) {
                    memfds += 1;
                    let range = line.split(' ').next().unwrap();
                    let (a, b) = range.split_once('-').unwrap();
                    let a = usize::from_str_radix(a, 16).unwrap();
                    let b = usize::from_str_radix(b, 16).unwrap();
                    let mut bytes = vec![0u8; b - a];
                    // SAFETY: [a, b) is a live shared mapping of this process
                    // (the worker's segment, kept mapped by `w`).
                    unsafe {
                        std::ptr::copy_nonoverlapping(a as *const u8, bytes.as_mut_ptr(), b - a)
                    };
                    println!("probe: own_segment_bytes={}", bytes.len());
                    println!("probe: own_segment_has_secret={}", contains(&bytes));
                }
                println!("probe: own_memfds={memfds}");
            }
            drop(w);
        }
        Err(Error::Refused(m)) => println!("probe: attach=refused {m}"),
        Err(e) => println!("probe: attach=error {e}"),
    }
    let denied = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => "denied".to_string(),
        Err(e) => format!("error {e}"),
        Ok(()) => "OPEN".to_string(),
    };
    let fds = std::fs::read_dir(format!("/proc/{victim}/fd")).map(|_| ());
    println!("probe: victim_fds={}", denied(fds));
    let mem = File::open(format!("/proc/{victim}/mem")).map(|_| ());
    println!("probe: victim_mem={}", denied(mem));
    let mut found = false;
    if let Ok(rd) = std::fs::read_dir("/dev/shm") {
        for e in rd.flatten() {
            if e.metadata()
                .is_ok_and(|m| m.is_file() && m.len() < 512 << 20)
            {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    found |= contains(&bytes);
                }
            }
        }
    }
    println!("probe: dev_shm_secret={found}");
}
