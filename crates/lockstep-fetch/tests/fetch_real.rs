//! The real fetch, into the real cache (`$LOCKSTEP_HOME` or the user cache directory), so
//! that every later test and command on this machine reuses it. Then, with no registry
//! client reachable, the same calls must succeed from the cache alone.
//!
//! One test only: it changes PATH for its process.

use lockstep_fetch::cache::{sha256_file, Cache};
use lockstep_fetch::fetch::{fetch_model, fetch_onnxruntime, onnxruntime_library, FetchedSources};
use lockstep_fetch::manifest::{ModelManifest, RuntimeManifest};
use std::time::{Duration, Instant};

#[test]
fn real_fetch_is_verified_and_then_served_from_the_cache() {
    let cache = Cache::from_env().unwrap();
    let manifest = ModelManifest::builtin("gemma3-270m").unwrap();

    let sources = fetch_model(&manifest, &cache, true).unwrap();
    assert_eq!(sources.gguf_sha256, manifest.gguf.sha256);
    assert_eq!(sha256_file(&sources.gguf).unwrap(), manifest.gguf.sha256);
    assert_eq!(
        sha256_file(&sources.tokenizer_json).unwrap(),
        manifest.tokenizer.tokenizer_json.sha256
    );
    assert_eq!(
        sha256_file(&sources.tokenizer_config).unwrap(),
        manifest.tokenizer.tokenizer_config.sha256
    );
    assert!(sources.gguf.starts_with(cache.sources_dir("gemma3-270m")));
    assert_eq!(
        FetchedSources::locate(&manifest, &cache),
        Some(sources.clone())
    );

    let library = fetch_onnxruntime(&cache, true).unwrap();
    let rt = RuntimeManifest::default_runtime().unwrap();
    let platform = rt.current_platform().unwrap();
    assert_eq!(sha256_file(&library).unwrap(), platform.library.sha256);
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        assert_eq!(onnxruntime_library(&cache).unwrap(), library);
    }

    // No pip, no npm, no registry: everything must come from the cache.
    let empty = tempfile::tempdir().unwrap();
    // Edition 2021: set_var is safe; this binary has no other test.
    std::env::set_var("PATH", empty.path());
    std::env::set_var("PIP_INDEX_URL", "http://127.0.0.1:9/simple");
    std::env::set_var("npm_config_registry", "http://127.0.0.1:9/");
    let started = Instant::now();
    assert_eq!(fetch_model(&manifest, &cache, false).unwrap(), sources);
    assert_eq!(fetch_onnxruntime(&cache, false).unwrap(), library);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a cached fetch only checks hashes, took {:?}",
        started.elapsed()
    );
}
