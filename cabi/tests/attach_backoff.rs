//! A refused attach is retried with backoff by the library (and says so): against the
//! reference bridge with one slot, a second worker is refused with "retrying with backoff",
//! asks again only after the wait (the bridge counts one refusal per real attempt), waits
//! twice as long after the next refusal, and attaches once the slot is free.

use dmbridge::{dmb_attach, dmb_detach, dmb_last_error, dmb_worker, DMB_E_REFUSED};
use dmshm::bridge::BridgeConfig;
use dmshm::reference::EchoBridge;
use dmshm::segment::Geometry;
use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

fn attach(path: &CString, name: &str) -> (i32, *mut dmb_worker, String) {
    let name = CString::new(name).unwrap();
    let mut w = std::ptr::null_mut();
    // SAFETY: valid C strings and a writable out pointer.
    let rc = unsafe { dmb_attach(path.as_ptr(), name.as_ptr(), &mut w) };
    // SAFETY: dmb_last_error never returns NULL.
    let err = unsafe { CStr::from_ptr(dmb_last_error()) }
        .to_string_lossy()
        .into_owned();
    (rc, w, err)
}

#[test]
fn refused_attach_backs_off() {
    let dir = std::env::temp_dir().join(format!("dmb-backoff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = BridgeConfig::new(
        dir.join("b.sock"),
        format!("/dev/shm/dmb-backoff-{}", std::process::id()),
    );
    cfg.geometry = Geometry {
        slots: 1,
        ring_bytes: 64 * 1024,
        max_msg: 16 * 1024,
    };
    let bridge = EchoBridge::spawn(cfg.clone()).unwrap();
    let path = CString::new(cfg.control_path.to_str().unwrap()).unwrap();

    let (rc, first, _) = attach(&path, "first");
    assert_eq!(rc, 1, "the only slot");

    // Threads have their own backoff state; this test runs on one.
    let (rc, w, err) = attach(&path, "second");
    assert_eq!(rc, DMB_E_REFUSED, "{err}");
    assert!(w.is_null());
    assert!(
        err.contains("retrying with backoff, next attempt in 250 ms"),
        "{err}"
    );
    let refusals = |b: &dmshm::reference::EchoHandle| b.stats().refused.len();
    let t = Instant::now();
    while refusals(&bridge) < 1 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(refusals(&bridge), 1);

    // Within the wait: refused at once, without asking the bridge.
    let (rc, _, err) = attach(&path, "second");
    assert_eq!(rc, DMB_E_REFUSED);
    assert!(err.contains("next attach attempt in"), "{err}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(refusals(&bridge), 1, "no attempt during the backoff");

    // After it: asked again, refused again, and the wait doubles.
    std::thread::sleep(Duration::from_millis(200));
    let (rc, _, err) = attach(&path, "second");
    assert_eq!(rc, DMB_E_REFUSED);
    assert!(err.contains("next attempt in 500 ms"), "{err}");

    // The slot frees up: the next attempt after the wait attaches.
    // SAFETY: first came from dmb_attach.
    unsafe { dmb_detach(first) };
    std::thread::sleep(Duration::from_millis(600));
    let (rc, w, err) = attach(&path, "second");
    assert_eq!(rc, 1, "{err}");
    // SAFETY: w came from dmb_attach.
    unsafe { dmb_detach(w) };
    bridge.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
