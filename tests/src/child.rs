//! `ChildGuard`: a spawned program that is always stopped and reaped, also when a test panics.
//!
//! The child runs in its own process group (so programs that fork workers, like Kamailio or
//! the Erlang VM, are stopped as a whole) and, where util-linux `setpriv` exists, with a
//! parent-death signal so that even a test process killed by SIGKILL leaves nothing behind.
//! Its stdout and stderr go to files in the test's directory; when the test fails, the drop
//! prints their tails so the failure explains itself.
//!
//! Caveat of the parent-death signal: Linux sends it when the *thread* that spawned the child
//! exits. Spawn children on the test's own thread (or on a thread that outlives them), not on
//! a short-lived helper thread.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, kill_process_group, Pid, Signal};

use crate::paths::find_program;
use crate::wait::{poll_until, WaitError};

/// Lines of each stream printed when a test fails.
const TAIL_LINES: usize = 30;

/// Signals the harness sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGTERM: ask to stop.
    Term,
    /// SIGINT: ask to stop (dumpcap, Erlang).
    Int,
    /// SIGKILL.
    Kill,
    /// SIGUSR1 (freeDiameter test_app: send a request / start the benchmark).
    Usr1,
    /// SIGHUP.
    Hup,
}

impl Sig {
    fn to_rustix(self) -> Signal {
        match self {
            Sig::Term => Signal::TERM,
            Sig::Int => Signal::INT,
            Sig::Kill => Signal::KILL,
            Sig::Usr1 => Signal::USR1,
            Sig::Hup => Signal::HUP,
        }
    }
}

/// A running child process owned by a test. See the module docs.
pub struct ChildGuard {
    name: String,
    child: Child,
    pid: Pid,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
    /// Signal used by `Drop` before escalating to SIGKILL.
    stop_signal: Sig,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout/stderr redirected to `<dir>/<name>.stdout` / `.stderr`.
    ///
    /// Panics with the command line when the program cannot be started.
    pub fn spawn(name: &str, cmd: Command, dir: &Path) -> ChildGuard {
        let stdout_path = dir.join(format!("{name}.stdout"));
        let stderr_path = dir.join(format!("{name}.stderr"));
        let mut cmd = with_parent_death_signal(cmd);
        let open = |p: &Path| {
            File::create(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()))
        };
        cmd.stdin(Stdio::null())
            .stdout(open(&stdout_path))
            .stderr(open(&stderr_path));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {cmd:?}: {e}"));
        let pid = Pid::from_child(&child);
        ChildGuard {
            name: name.to_string(),
            child,
            pid,
            stdout_path,
            stderr_path,
            status: None,
            stop_signal: Sig::Term,
        }
    }

    /// Sets the signal `Drop`/`stop` send first (default SIGTERM).
    pub fn with_stop_signal(mut self, sig: Sig) -> ChildGuard {
        self.stop_signal = sig;
        self
    }

    /// The name given at spawn (used in file names and messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's PID (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the child process itself.
    ///
    /// Refused once the child has been reaped: its PID may belong to someone else by then.
    pub fn signal(&self, sig: Sig) -> io::Result<()> {
        self.ensure_not_reaped()?;
        kill_process(self.pid, sig.to_rustix()).map_err(io::Error::from)
    }

    /// Sends `sig` to the child's whole process group (refused once the child is reaped).
    pub fn signal_group(&self, sig: Sig) -> io::Result<()> {
        self.ensure_not_reaped()?;
        kill_process_group(self.pid, sig.to_rustix()).map_err(io::Error::from)
    }

    fn ensure_not_reaped(&self) -> io::Result<()> {
        match self.status {
            Some(st) => Err(io::Error::other(format!(
                "{} already exited ({st})",
                self.name
            ))),
            None => Ok(()),
        }
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the child: the stop signal to its process group, up to `grace` to exit, then
    /// SIGKILL to the group. Always reaps it. Returns its exit status.
    ///
    /// The group is only signalled while its leader is unreaped, so its id cannot have been
    /// reused; programs that fork workers stop them on SIGTERM themselves.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        if let Some(st) = self.try_status() {
            return st;
        }
        let _ = self.signal_group(self.stop_signal);
        if let Some(st) = self.wait_exit(grace) {
            return st;
        }
        let _ = self.signal_group(Sig::Kill);
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(st) => {
                self.status = Some(st);
                st
            }
            Err(e) => panic!("cannot reap {} (pid {}): {e}", self.name, self.pid()),
        }
    }

    /// Path of the captured stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// Path of the captured stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// stdout followed by stderr.
    pub fn output(&self) -> String {
        let mut s = self.stdout();
        s.push_str(&self.stderr());
        s
    }

    /// The lines of [`ChildGuard::output`] containing `needle` (a server's log lines).
    pub fn lines_containing(&self, needle: &str) -> Vec<String> {
        let out = self.output();
        out.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// The last `n` lines of stdout and of stderr, labelled, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        format!(
            "--- {} (pid {}) stdout tail [{}] ---\n{}--- {} stderr tail [{}] ---\n{}",
            self.name,
            self.pid(),
            self.stdout_path.display(),
            last_lines(&self.stdout(), n),
            self.name,
            self.stderr_path.display(),
            last_lines(&self.stderr(), n)
        )
    }

    /// Waits until a line of stdout or stderr contains `needle`, and returns that line.
    /// Fails early (with the output tails) if the child exits first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, WaitError> {
        self.wait_for_line_matching(needle, timeout, |l| l.contains(needle))
    }

    /// Like [`ChildGuard::wait_for_line`] with a predicate; `what` describes it in errors.
    pub fn wait_for_line_matching(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String, WaitError> {
        let what_owned = format!("{what:?} in the output of {}", self.name);
        let mut exited = None;
        let res = poll_until(&what_owned, timeout, || {
            let out = self.output();
            if let Some(line) = out.lines().find(|l| pred(l)) {
                return Some(line.to_string());
            }
            if let Some(st) = self.try_status() {
                exited = Some(st);
                return Some(String::new());
            }
            None
        });
        match (res, exited) {
            (Ok(_), Some(st)) => Err(WaitError::new(format!(
                "{} exited ({st}) before printing {what:?}\n{}",
                self.name,
                self.tail(TAIL_LINES)
            ))),
            (Ok(line), None) => Ok(line),
            (Err(e), _) => Err(e.with_context(self.tail(TAIL_LINES))),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.tail(TAIL_LINES));
        }
        self.stop(Duration::from_secs(3));
    }
}

/// Prefixes `cmd` with `setpriv --pdeathsig KILL --` when util-linux `setpriv` exists, so the
/// child dies with the test process even if that is killed hard. `setpriv` execs the program,
/// so the PID stays the program's.
fn with_parent_death_signal(cmd: Command) -> Command {
    let Some(setpriv) = find_program("setpriv") else {
        return cmd;
    };
    let mut wrapped = Command::new(setpriv);
    wrapped
        .arg("--pdeathsig")
        .arg("KILL")
        .arg("--")
        .arg(cmd.get_program());
    wrapped.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    out.push('\n');
    out
}
