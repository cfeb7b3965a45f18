//! systemd's service notification protocol (sd_notify(3)), in the few lines it takes: a
//! datagram to the unix socket named by `$NOTIFY_SOCKET` (`@` = abstract namespace).
//! Without that variable (not started by systemd with Type=notify) every call is a no-op.
//!
//! The unit (packaging/systemd/dmbridge.service) is Type=notify with WatchdogSec: the node
//! says READY=1 once it serves, RELOADING=1/READY=1 around a reload, STOPPING=1 on a
//! graceful stop, and WATCHDOG=1 from a task that first gets an answer from the node loop
//! (so a wedged loop stops the petting and systemd restarts the process).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification (`READY=1`, `STATUS=...`); errors are ignored, as in libsystemd's
/// `sd_notify` (the service must run without a listener too).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let _ = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name) {
            Ok(addr) => sock.send_to_addr(state.as_bytes(), &addr),
            Err(e) => Err(e),
        }
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
}

/// How often to send WATCHDOG=1: half of `$WATCHDOG_USEC` when it is meant for this process
/// (`$WATCHDOG_PID` absent or ours), else `None`.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifies_the_socket_systemd_names() {
        let dir = std::env::temp_dir().join(format!("dmb-sdnotify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        // Set for this test process only; no other test reads NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1\nSTATUS=serving");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
