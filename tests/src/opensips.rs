//! OpenSIPS for the role tests: a built OpenSIPS source tree named by `OPENSIPS_SRC` (OpenSIPS
//! is not packaged by Debian, so CI has none and these tests say they are skipped, as
//! `tests/opensips/run.sh` does), the dmbridge module built into it, and an `opensips -F`
//! running a role cfg of `cfg-examples/roles/` rewritten for the test's paths and ports.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::bridge::Bridge;
use crate::child::ChildGuard;
use crate::dmbridge::dmbridge_bin;
use crate::paths::repo_root;
use crate::ports::free_port;
use crate::wait::poll_until;

/// Why an OpenSIPS test cannot run here.
#[derive(Debug)]
pub enum NoOpensips {
    /// `OPENSIPS_SRC` is not set.
    Unset,
    /// It is set, but not to a built tree (no `opensips` binary or `Makefile.modules`).
    NotBuilt(PathBuf),
    /// The tree lacks modules the cfg loads (their names).
    MissingModules(PathBuf, Vec<String>),
}

impl std::fmt::Display for NoOpensips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoOpensips::Unset => write!(f, "OPENSIPS_SRC is not set"),
            NoOpensips::NotBuilt(p) => write!(
                f,
                "OPENSIPS_SRC={} has no built ./opensips and Makefile.modules",
                p.display()
            ),
            NoOpensips::MissingModules(p, m) => write!(
                f,
                "OPENSIPS_SRC={} lacks the module(s) {} (build them there: make modules \
                 modules=\"{}\")",
                p.display(),
                m.join(" "),
                m.iter()
                    .map(|m| format!("modules/{m}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }
}

/// A built OpenSIPS source tree.
pub struct OpensipsTree {
    pub src: PathBuf,
}

impl OpensipsTree {
    /// The tree `OPENSIPS_SRC` names, if it is built and has `modules/<m>/<m>.so` for each of
    /// `modules` (dmbridge itself is built by [`OpensipsTree::build_dmbridge`]).
    pub fn from_env(modules: &[&str]) -> Result<OpensipsTree, NoOpensips> {
        let src = std::env::var_os("OPENSIPS_SRC").ok_or(NoOpensips::Unset)?;
        let src = PathBuf::from(src);
        if !src.join("opensips").is_file() || !src.join("Makefile.modules").is_file() {
            return Err(NoOpensips::NotBuilt(src));
        }
        let missing: Vec<String> = modules
            .iter()
            .filter(|m| !src.join(format!("modules/{m}/{m}.so")).is_file())
            .map(|m| m.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(NoOpensips::MissingModules(src, missing));
        }
        Ok(OpensipsTree { src })
    }

    /// The tree for test `test`, or `None` after saying on stderr why it is skipped: the
    /// opening of every OpenSIPS role test.
    pub fn for_test(test: &str, modules: &[&str]) -> Option<OpensipsTree> {
        OpensipsTree::from_env(modules)
            .map_err(|why| say_skipped(test, &why))
            .ok()
    }

    /// Copies `module-glue/opensips` to `<tree>/modules/dmbridge` and builds it there against
    /// this checkout's `target/release/libdmbridge.a` (as `tests/opensips/run.sh` does); the
    /// build log goes to `dir/opensips-module-build.log`. Panics with the log's tail.
    ///
    /// Several tests of one binary may call it at once: the first builds (the others wait for
    /// it, as they would otherwise overwrite each other's sources and objects in the one
    /// tree), the later calls find it built by this process and return.
    pub fn build_dmbridge(&self, dir: &Path) {
        static BUILT: Mutex<bool> = Mutex::new(false);
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if *built {
            return;
        }
        self.build_dmbridge_now(dir);
        *built = true;
    }

    fn build_dmbridge_now(&self, dir: &Path) {
        let top = repo_root();
        let lib = top.join("target/release/libdmbridge.a");
        assert!(
            lib.is_file() && top.join("include/dmbridge.h").is_file(),
            "{} is missing: `cargo build --release --workspace` first",
            lib.display()
        );
        let dst = self.src.join("modules/dmbridge");
        std::fs::create_dir_all(&dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
        // Other test binaries (scripts/test-binaries.sh runs two at a time) build in this same
        // tree and load the module from it: one build at a time (the lock, released when the
        // file is dropped or the process ends), and no rebuild of a module already built from
        // the same sources and library, which another binary's OpenSIPS may be loading now
        // (a rebuild removes it for a moment: "failed to load module 'dmbridge.so'").
        let lock_path = dst.join(".dmbridge-build.lock");
        let lock = std::fs::File::create(&lock_path)
            .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
        lock.lock()
            .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
        let glue = top.join("module-glue/opensips");
        let stamp_path = dst.join(".dmbridge-build.stamp");
        let stamp = build_stamp(&glue, &lib, &top);
        let so = dst.join("dmbridge.so");
        let so_time = |so: &Path| {
            std::fs::metadata(so)
                .and_then(|m| m.modified())
                .map(|t| format!("{t:?}"))
                .ok()
        };
        if let (Some(t), Ok(old)) = (so_time(&so), std::fs::read_to_string(&stamp_path)) {
            if old == format!("{stamp} {t}") {
                return;
            }
        }
        // an older version's sources and objects must not stay behind
        for e in std::fs::read_dir(&dst).unwrap_or_else(|e| panic!("{}: {e}", dst.display())) {
            let p = e
                .unwrap_or_else(|e| panic!("{}: {e}", dst.display()))
                .path();
            if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("c" | "h" | "o" | "d")
            ) {
                std::fs::remove_file(&p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
            }
        }
        for e in std::fs::read_dir(&glue).unwrap_or_else(|e| panic!("{}: {e}", glue.display())) {
            let p = e
                .unwrap_or_else(|e| panic!("{}: {e}", glue.display()))
                .path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name == "Makefile" || name.ends_with(".c") || name.ends_with(".h") {
                std::fs::copy(&p, dst.join(name))
                    .unwrap_or_else(|e| panic!("cp {}: {e}", p.display()));
            }
        }
        std::fs::write(
            dst.join("dmbridge-top.mk"),
            format!("DMB_TOP := {}\n", top.display()),
        )
        .unwrap_or_else(|e| panic!("dmbridge-top.mk: {e}"));
        let log = dir.join("opensips-module-build.log");
        let out = Command::new("make")
            .arg("-C")
            .arg(&self.src)
            .args(["modules", "module=dmbridge"])
            .output()
            .unwrap_or_else(|e| panic!("make: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&log, &text).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        assert!(
            out.status.success(),
            "the dmbridge module does not build in {}:\n{}",
            self.src.display(),
            text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
        if let Some(t) = so_time(&so) {
            std::fs::write(&stamp_path, format!("{stamp} {t}"))
                .unwrap_or_else(|e| panic!("{}: {e}", stamp_path.display()));
        }
        drop(lock);
    }
}

/// What a module build in the tree is made from: the glue's sources and the common glue
/// they include (`dmo_glue.c` includes module-glue/common/dmglue.c), the library (size and
/// time) and the header, and this checkout's path (the Makefile links from it).
fn build_stamp(glue: &Path, lib: &Path, top: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut names: Vec<PathBuf> = [glue.to_path_buf(), top.join("module-glue/common")]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(d)
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
                .filter_map(|e| e.ok().map(|e| e.path()))
        })
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    names.push(top.join("include/dmbridge.h"));
    for p in &names {
        p.hash(&mut h);
        std::fs::read(p).unwrap_or_default().hash(&mut h);
    }
    let m = std::fs::metadata(lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    m.len().hash(&mut h);
    format!("{:?}", m.modified().ok()).hash(&mut h);
    top.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Says on the test's real stderr (past libtest's capture, so CI logs show it) that `test` is
/// skipped and why.
pub fn say_skipped(test: &str, why: &NoOpensips) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "{test}: SKIPPED - {why}; set OPENSIPS_SRC to a built OpenSIPS source tree to run it"
    );
}

/// A foreground OpenSIPS (`opensips -F`) running a copy of a role cfg; stopped on drop.
pub struct RoleOpensips {
    pub guard: ChildGuard,
    pub sip_port: u16,
}

impl RoleOpensips {
    /// Writes `dir/<name>.cfg`, a copy of `cfg` with its `mpath=` line pointing at the tree's
    /// modules, its `udp:127.0.0.1:5060` socket on a free port, its
    /// `/run/dmbridge/control.sock` replaced by `bridge`'s control socket and each
    /// `(from, to)` of `rewrites` applied (each must occur: a cfg that changed fails here, not
    /// later with a default path); starts it and returns once `workers` of its processes are
    /// attached to the bridge (`dmbridge ctl workers`).
    pub fn start(
        tree: &OpensipsTree,
        dir: &Path,
        name: &str,
        cfg: &Path,
        bridge: &Bridge,
        rewrites: &[(&str, String)],
        workers: usize,
    ) -> RoleOpensips {
        let sip_port = free_port();
        let text =
            std::fs::read_to_string(cfg).unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
        let socket = bridge
            .config_path()
            .parent()
            .unwrap_or(dir)
            .join("control.sock");
        let mut all = vec![
            ("udp:127.0.0.1:5060", format!("udp:127.0.0.1:{sip_port}")),
            ("/run/dmbridge/control.sock", socket.display().to_string()),
        ];
        all.extend(rewrites.iter().cloned());
        let mut text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("mpath=") {
                    format!("mpath=\"{}/modules/\"\n", tree.src.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        for (from, to) in &all {
            assert!(text.contains(from), "{} has no {from:?}", cfg.display());
            text = text.replace(from, to);
        }
        let copy = dir.join(format!("{name}.cfg"));
        std::fs::write(&copy, text).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));

        let run_dir = dir.join(format!("{name}-run"));
        std::fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let mut cmd = Command::new(tree.src.join("opensips"));
        cmd.arg("-F").arg("-f").arg(&copy).arg("-w").arg(&run_dir);
        let guard = ChildGuard::spawn(name, cmd, dir);
        let mut o = RoleOpensips { guard, sip_port };
        let up = poll_until(
            "opensips attached to the bridge",
            Duration::from_secs(25),
            || {
                if !o.guard.is_running() {
                    return Some(Err("opensips exited".to_string()));
                }
                (attached_workers(bridge) >= workers).then_some(Ok(()))
            },
        );
        match up {
            Ok(Ok(())) => o,
            Ok(Err(e)) => panic!("{e}\n{}", o.guard.tail(40)),
            Err(e) => panic!(
                "opensips did not start and attach: {e}\n{}",
                o.guard.tail(40)
            ),
        }
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.guard.lines_containing(needle)
    }
}

/// How many SIP-server workers are attached to `bridge` (`dmbridge ctl workers --json`); 0
/// when it cannot tell.
fn attached_workers(bridge: &Bridge) -> usize {
    let Ok(bin) = dmbridge_bin() else { return 0 };
    let Ok(out) = Command::new(bin)
        .arg("ctl")
        .arg("--config")
        .arg(bridge.config_path())
        .args(["--json", "--timeout", "5", "workers"])
        .output()
    else {
        return 0;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return 0;
    };
    let list = if v.is_array() { &v } else { &v["workers"] };
    list.as_array().map_or(0, Vec::len)
}

/// A Diameter server role written in the OpenSIPS script (the HSS of `roles_hss_opensips.rs`,
/// the OCS of `roles_ocs_opensips.rs`): the database made from [`ScriptRole::sql`] as
/// `dir/<role>.db`, the bridge serving [`ScriptRole::app`] on `port`, and OpenSIPS running
/// `cfg-examples/roles/opensips-<role>.cfg` with its `sqlite:///var/lib/opensips/<role>.db`
/// pointed at that database and both UDP workers (`udp_workers=2`) attached. Dropped in field
/// order: OpenSIPS first, then the bridge.
///
/// [`ScriptRole::sql`]: crate::roles::ScriptRole::sql
/// [`ScriptRole::app`]: crate::roles::ScriptRole::app
pub struct OpensipsScriptServer {
    pub opensips: RoleOpensips,
    pub bridge: Bridge,
    pub db: PathBuf,
}

impl OpensipsScriptServer {
    pub fn start(
        tree: &OpensipsTree,
        dir: &Path,
        port: u16,
        role: crate::roles::ScriptRole<'_>,
    ) -> OpensipsScriptServer {
        let name = role.role;
        let db = dir.join(format!("{name}.db"));
        crate::roles::sqlite(&db, role.sql);
        let mut opts = crate::bridge::BridgeOptions {
            origin_host: role.host.into(),
            origin_realm: role.host.into(),
            port,
            applications: vec![role.app],
            dictionaries: role.dictionaries,
            ..crate::bridge::BridgeOptions::default()
        };
        opts.extra_toml = "reply_timeout = \"3s\"\n".into();
        let bridge = Bridge::start(dir, &opts);
        let default_db = format!("sqlite:///var/lib/opensips/{name}.db");
        let mut rewrites = vec![(default_db.as_str(), format!("sqlite://{}", db.display()))];
        rewrites.extend(crate::roles::opensips_event_route_rewrites(tree));
        let opensips = RoleOpensips::start(
            tree,
            dir,
            &format!("opensips-{name}"),
            &repo_root().join(format!("cfg-examples/roles/opensips-{name}.cfg")),
            &bridge,
            &rewrites,
            2,
        );
        OpensipsScriptServer {
            opensips,
            bridge,
            db,
        }
    }
}

/// A Cx client role (I-CSCF, S-CSCF) on OpenSIPS against the Cx HSS
/// `tests/peers/cx_hss.escript` (`hss.test.local`, started by
/// [`crate::roles::captured_server`] with `hss_options`): the bridge as `origin_host` (realm
/// `test.local`) with the HSS as its peer and default route, and OpenSIPS running
/// `cfg-examples/roles/opensips-<role>.cfg` (with `rewrites`, see [`RoleOpensips::start`]),
/// two workers attached. The OpenSIPS counterpart of [`crate::roles::CxRole`]. Dropped in
/// field order: OpenSIPS, the bridge, the HSS, the capture.
pub struct CxRoleOpensips {
    pub opensips: RoleOpensips,
    pub bridge: Bridge,
    pub hss: crate::roles::ScriptedPeer,
    pub hss_port: u16,
    pub capture: crate::capture::Capture,
}

impl CxRoleOpensips {
    pub fn start(
        tree: &OpensipsTree,
        dir: &Path,
        role: &str,
        origin_host: &str,
        hss_options: &[String],
        rewrites: &[(&str, String)],
    ) -> CxRoleOpensips {
        // built (once per process) before the HSS starts its 90 s
        let _ = dmbridge_bin();
        let hss_host = crate::roles::CxRole::HSS;
        let (hss, hss_port, capture) =
            crate::roles::captured_server(dir, "cx_hss.escript", hss_host, hss_options);
        let bridge = crate::roles::peer_client_bridge(
            dir,
            origin_host,
            crate::bridge::BridgeApp {
                id: 16_777_216,
                vendor: Some(10_415),
                acct: false,
            },
            &crate::roles::ServerPeer {
                peer: &hss,
                host: hss_host,
                port: hss_port,
            },
            &[],
        );
        let name = format!("opensips-{role}");
        let opensips = RoleOpensips::start(
            tree,
            dir,
            &name,
            &repo_root().join(format!("cfg-examples/roles/{name}.cfg")),
            &bridge,
            rewrites,
            2,
        );
        CxRoleOpensips {
            opensips,
            bridge,
            hss,
            hss_port,
            capture,
        }
    }
}

/// One MI command over OpenSIPS's FIFO `fifo` (mi_fifo, JSON-RPC): `method` with the JSON
/// object `params`; returns the reply's text ("" when none came within 5 s). The reply FIFO
/// is made under mi_fifo's default reply_dir, /tmp/, and removed afterwards.
pub fn mi_fifo(fifo: &Path, method: &str, params: &serde_json::Value) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // mi_fifo refuses reply FIFO names with dots
    let name = format!(
        "dmbtest_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let reply = Path::new("/tmp").join(&name);
    let _ = std::fs::remove_file(&reply);
    let made = Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&reply)
        .status()
        .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    assert!(made.success(), "mkfifo {}", reply.display());
    // the reader first: mi_fifo opens the reply FIFO without blocking (retrying briefly)
    let reader = Command::new("timeout")
        .arg("5")
        .arg("cat")
        .arg(&reply)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cat {}: {e}", reply.display()));
    let line = format!(
        ":{name}:{}\n",
        serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
    );
    let sent = std::fs::OpenOptions::new()
        .write(true)
        .open(fifo)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    let out = reader
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cat {}: {e}", reply.display()));
    let _ = std::fs::remove_file(&reply);
    sent.unwrap_or_else(|e| panic!("MI FIFO {}: {e}", fifo.display()));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// An OpenSIPS role and the bridge it talks to, as the role scenarios run them
/// ([`crate::roles::SipServerUnderTest`]); dropped in field order, OpenSIPS first.
pub struct OpensipsWithBridge {
    /// OpenSIPS running the role's cfg.
    pub opensips: RoleOpensips,
    /// Its bridge, kept alive as long as OpenSIPS.
    pub bridge: Bridge,
}

impl crate::roles::SipServerUnderTest for OpensipsWithBridge {
    fn sip_port(&self) -> u16 {
        self.opensips.sip_port
    }
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.opensips.log_lines(needle)
    }
    fn log_errors(&self) -> Vec<String> {
        self.opensips.log_lines("ERROR:")
    }
}
