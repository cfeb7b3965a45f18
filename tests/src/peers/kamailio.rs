//! Kamailio 5.6 with cdp + ims_diameter_server answering test_app requests from its script
//! (`shared/peers/kamailio-ims/`): the anchor the bridge is raced against.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::child::ChildGuard;
use crate::paths::{require_program, shared_peer_file};
use crate::wait::wait_for_port;

/// Kamailio's module directory on Debian amd64 (as in the shared config).
const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";

/// A running Kamailio (`server.test.local`); its process group is stopped on drop.
pub struct KamailioIms {
    guard: ChildGuard,
    port: u16,
}

impl KamailioIms {
    /// Starts Kamailio with cdp listening on 127.0.0.1:`port`, expecting the peer
    /// `client.test.local` (port `peer_port`), `workers` cdp workers, SIP on UDP `sip_port`.
    /// Returns once the Diameter port listens.
    pub fn start(
        dir: &Path,
        port: u16,
        peer_port: u16,
        workers: u32,
        sip_port: u16,
    ) -> KamailioIms {
        let kamailio = require_program("kamailio", "kamailio kamailio-ims-modules");
        for module in ["cdp.so", "ims_diameter_server.so"] {
            if !Path::new(MODULES).join(module).is_file() {
                panic!("missing {MODULES}/{module}: run scripts/setup.sh (apt-get install -y kamailio-ims-modules)");
            }
        }
        let kdir = dir.join(format!("kamailio-{port}"));
        std::fs::create_dir_all(kdir.join("run"))
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", kdir.display()));
        let xml = substitute(
            &shared_peer_file("kamailio-ims/diameter.xml.in"),
            &[
                ("@WORKERS@", workers.to_string()),
                ("@PEER_PORT@", peer_port.to_string()),
                ("@PORT@", port.to_string()),
            ],
        );
        let cfg = substitute(
            &shared_peer_file("kamailio-ims/kamailio-ims.cfg.in"),
            &[
                ("@DIR@", kdir.display().to_string()),
                ("@SIP_PORT@", sip_port.to_string()),
            ],
        );
        let cfg_path = write(&kdir, "kamailio-ims.cfg", &cfg);
        write(&kdir, "diameter.xml", &xml);
        let mut cmd = Command::new(kamailio);
        cmd.args(["-DD", "-E", "-Y"])
            .arg(kdir.join("run"))
            .arg("-f")
            .arg(&cfg_path);
        let guard = ChildGuard::spawn("kamailio", cmd, &kdir);
        if let Err(e) = wait_for_port(port, Duration::from_secs(15)) {
            panic!("Kamailio cdp does not listen: {e}\n{}", guard.tail(40));
        }
        KamailioIms { guard, port }
    }

    /// The Diameter port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process guard.
    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }
}

fn substitute(template: &Path, pairs: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(template)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", template.display()));
    for (k, v) in pairs {
        text = text.replace(k, v);
    }
    text
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
    p
}
