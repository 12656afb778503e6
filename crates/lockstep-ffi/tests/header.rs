//! include/lockstep.h is committed so that C, Swift and Kotlin users need no Rust tools;
//! this test fails when it is not what cbindgen generates from the current source.
//! `LOCKSTEP_BLESS=1 cargo test -p lockstep-ffi --test header` rewrites it.

use std::path::Path;

#[test]
fn committed_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = crate_dir.join("include/lockstep.h");
    if std::env::var_os("LOCKSTEP_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: the C ABI changed. Regenerate it with\n  LOCKSTEP_BLESS=1 cargo test -p lockstep-ffi --test header\nand commit it.",
        path.display()
    );
}
