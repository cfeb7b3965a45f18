//! The committed include/dmbridge.h must be what cbindgen generates from the
//! current source. `DMB_BLESS=1 cargo test -p dmbridge-cabi --test header`
//! rewrites it.

use std::path::Path;

#[test]
fn committed_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("reading cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed on cabi/src");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let header = crate_dir.join("../include/dmbridge.h");
    if std::env::var_os("DMB_BLESS").is_some() {
        std::fs::write(&header, &generated).expect("writing include/dmbridge.h");
        return;
    }
    let committed = std::fs::read(&header).unwrap_or_default();
    assert!(
        committed == generated,
        "include/dmbridge.h is stale: regenerate it with `DMB_BLESS=1 cargo test -p dmbridge-cabi --test header` and commit it"
    );
}
