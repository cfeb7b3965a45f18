//! Builds tests/c/dmb_test.c against libdmbridge through include/dmbridge.h
//! and runs it under valgrind against dmshm's reference bridge: forked
//! workers, every dmb_* function, bridge restart, kill -9 of a worker, a
//! mismatched bridge version. Zero valgrind errors and zero definite or
//! indirect leaks are required (valgrind's exit code 99 fails the run).
//!
//! Skips, saying so, only when no C compiler is installed; without valgrind
//! the program still runs, without the memory checks (also said).

use dmshm::bridge::BridgeConfig;
use dmshm::reference::{EchoBridge, EchoHandle};
use dmshm::segment::Geometry;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn on_path(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// Kills the C program (by PID) if the test ends early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Removes the build directory.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bridge_cfg(dir: &Path, tag: &str) -> BridgeConfig {
    let mut cfg = BridgeConfig::new(
        dir.join(format!("{tag}.sock")),
        format!("/dev/shm/dmb-ctest-{}-{tag}", std::process::id()),
    );
    cfg.geometry = Geometry {
        slots: 8,
        ring_bytes: 256 * 1024,
        max_msg: 64 * 1024,
    };
    cfg
}

fn library_dir() -> PathBuf {
    // `DMB_LIBDIR` (scripts/test-binaries.sh): the release (thin LTO) library as deployed,
    // while this test binary is built with the release-tests profile.
    if let Some(dir) = std::env::var_os("DMB_LIBDIR").map(PathBuf::from) {
        if dir.join("libdmbridge.so").exists() {
            return dir;
        }
    }
    // target/<profile>/deps/c_program-<hash> -> the library is in deps/ too.
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir").to_path_buf();
    if deps.join("libdmbridge.so").exists() {
        return deps;
    }
    deps.parent().expect("profile dir").to_path_buf()
}

#[test]
fn c_program_under_valgrind() {
    let Some(cc) = on_path("cc")
        .or_else(|| on_path("gcc"))
        .or_else(|| on_path("clang"))
    else {
        eprintln!("SKIPPED c_program_under_valgrind: no C compiler (cc/gcc/clang) on PATH");
        return;
    };
    let valgrind = on_path("valgrind");
    if valgrind.is_none() {
        eprintln!("NOTE: valgrind not installed: running the C program without memory checks");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = TempDir(std::env::temp_dir().join(format!("dmb-ctest-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let libdir = library_dir();
    assert!(
        libdir.join("libdmbridge.so").exists(),
        "libdmbridge.so not found in {}",
        libdir.display()
    );
    let exe = dir.0.join("dmb_test");
    let out = Command::new(&cc)
        .args(["-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(root.join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(root.join("tests/c/dmb_test.c"))
        .arg(format!("-L{}", libdir.display()))
        .arg("-ldmbridge")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .output()
        .expect("running the C compiler");
    assert!(
        out.status.success(),
        "C compile failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let main_cfg = bridge_cfg(&dir.0, "main");
    let mut bad_cfg = bridge_cfg(&dir.0, "bad");
    bad_cfg.wire_version = 99;
    let bad = EchoBridge::spawn(bad_cfg.clone()).unwrap();
    let mut bridge1: Option<EchoHandle> = Some(EchoBridge::spawn(main_cfg.clone()).unwrap());
    let mut bridge2: Option<EchoHandle> = None;

    let mut cmd = match &valgrind {
        Some(vg) => {
            let mut c = Command::new(vg);
            c.args([
                "--quiet",
                "--error-exitcode=99",
                "--leak-check=full",
                "--show-leak-kinds=definite,indirect",
                "--errors-for-leak-kinds=definite,indirect",
            ])
            .arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.arg(&main_cfg.control_path).arg(&bad_cfg.control_path);
    // cargo's LD_LIBRARY_PATH also lists target/<profile>, whose uplifted
    // libdmbridge.so can be older than deps/ (and beats the rpath).
    cmd.env("LD_LIBRARY_PATH", &libdir);
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the C program");
    let mut guard = ChildGuard(child);
    let mut stdin = guard.0.stdin.take().unwrap();
    let stdout = BufReader::new(guard.0.stdout.take().unwrap());
    let mut stderr = guard.0.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Watchdog: the program must finish within the bound, hung or not.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let pid = guard.0.id() as libc::pid_t;
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(300)).is_err() {
            // SAFETY: plain kill(2) of the child we started (still running:
            // the driver signals the channel right after it exits).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });

    let mut lines = Vec::new();
    let mut held: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut killed = None;
    let mut served = 0;
    let mut stats1 = None;
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        lines.push(line.clone());
        let mut it = line.split_whitespace();
        match it.next() {
            Some("RESTART") => {
                stats1 = bridge1.take().map(|b| b.stop());
                writeln!(stdin, "STOPPED").unwrap();
            }
            Some("START") => {
                bridge2 = Some(EchoBridge::spawn(main_cfg.clone()).unwrap());
                writeln!(stdin, "STARTED").unwrap();
            }
            Some("HELD") => {
                let pid: u32 = it.next().unwrap().parse().unwrap();
                held.insert(pid, it.map(|t| t.parse().unwrap()).collect());
            }
            Some("KILLED") => killed = it.next().map(|p| p.parse::<u32>().unwrap()),
            Some("SERVED") => served += it.nth(1).unwrap().parse::<u32>().unwrap(),
            _ => {}
        }
        stdin.flush().unwrap();
    }
    let status = guard.0.wait().unwrap();
    let _ = done_tx.send(());
    watchdog.join().unwrap();
    let errors = err_thread.join().unwrap();
    let transcript = format!("stdout:\n{}\nstderr:\n{errors}", lines.join("\n"));
    assert!(
        status.success(),
        "C program failed ({status}; valgrind errors exit 99)\n{transcript}"
    );
    assert!(
        lines.last().is_some_and(|l| l.starts_with("PASS ")),
        "{transcript}"
    );

    // The first bridge saw every reply exactly as the workers sent them.
    let s1 = stats1.expect("restart phase ran");
    assert_eq!(
        served, 30,
        "children served all injected PPRs\n{transcript}"
    );
    assert_eq!(s1.replies_matched, 30, "{s1:?}");
    // dmb_reply_result's 3001 (E bit, RFC 6733 §7.1.3)
    assert_eq!(s1.replies_error, 1, "{s1:?}");
    // the empty RTR reply, and dmb_reply_result's 5012 (no E bit)
    assert_eq!(s1.replies_mismatched, 2, "{s1:?}");
    // the reply with two Result-Codes (the invalid JSON before it answered nothing: the token
    // stayed open), the E bit with 5012 (RFC 6733 §7.2), and the request freed without a
    // reply (answered by the library)
    assert_eq!(s1.replies_failed.len(), 3, "{s1:?}");
    assert!(
        s1.replies_failed[0].contains("2 Result-Code AVPs"),
        "{s1:?}"
    );
    assert!(
        s1.replies_failed[1].contains("3xxx") && s1.replies_failed[1].contains("5012"),
        "{s1:?}"
    );
    assert!(
        s1.replies_failed[2].contains("freed the request without answering it"),
        "{s1:?}"
    );
    assert!(
        s1.gone.iter().all(|(_, _, tokens, _)| tokens.is_empty()),
        "no request left unanswered: {s1:?}"
    );
    assert!(s1.warnings.is_empty(), "{s1:?}");

    // kill -9: the bridge lists exactly the tokens the victim held.
    let victim = killed.expect("victim phase ran");
    let want = held.get(&victim).cloned().unwrap_or_default();
    assert_eq!(want.len(), 3, "{transcript}");
    let b2 = bridge2.expect("second bridge");
    let t0 = Instant::now();
    let gone = loop {
        let s = b2.stats();
        let g: Vec<_> = s
            .gone
            .iter()
            .filter(|(p, _, _, _)| *p == victim)
            .cloned()
            .collect();
        if !g.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            break g;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        gone.len(),
        1,
        "one WorkerGone for the victim: {:?}",
        b2.stats()
    );
    let mut got = gone[0].2.clone();
    got.sort_unstable();
    let mut want = want;
    want.sort_unstable();
    assert_eq!(got, want, "outstanding tokens of the killed worker");
    assert_eq!(
        bad.stop().refused.len(),
        1,
        "the mismatched bridge refused the library once"
    );
    drop(b2);
}
