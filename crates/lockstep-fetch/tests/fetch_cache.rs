//! The cache's guarantees: hashes, atomic writes, partial files never taken for good,
//! checksum mismatches removing the bad file. The last tests fetch the ONNX Runtime wheel
//! from PyPI for real (pip's own cache makes repeats cheap).

use std::fs;
use std::path::{Path, PathBuf};

use lockstep_fetch::cache::{
    atomic_write, sha256_bytes, sha256_file, verify_file, AtomicFile, Cache,
};
use lockstep_fetch::fetch::{
    fetch_runtime, find_onnxruntime_library, FetchedSources, TOKENIZER_JSON,
};
use lockstep_fetch::manifest::{ModelManifest, RuntimeManifest};
use lockstep_fetch::Error;

const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
/// A pid no Linux process can have (above PID_MAX_LIMIT).
const DEAD_PID: u32 = 4_194_305;

/// Every entry under `dir` whose name marks it as partial.
fn partials(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(".partial-") {
                found.push(path);
            } else if path.is_dir() {
                found.extend(partials(&path));
            }
        }
    }
    found
}

#[test]
fn sha256_of_known_bytes() {
    assert_eq!(sha256_bytes(b"abc"), ABC_SHA256);
    assert_eq!(
        sha256_bytes(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("abc");
    fs::write(&path, b"abc").unwrap();
    assert_eq!(sha256_file(&path).unwrap(), ABC_SHA256);
    // Larger than one read buffer.
    let big = vec![7u8; 3 << 20];
    fs::write(&path, &big).unwrap();
    assert_eq!(sha256_file(&path).unwrap(), sha256_bytes(&big));
}

#[test]
fn sha256_of_a_missing_file_is_an_io_error() {
    match sha256_file("/nonexistent/file") {
        Err(Error::Io { path, .. }) => assert_eq!(path, PathBuf::from("/nonexistent/file")),
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn cache_layout() {
    let cache = Cache::new("/c");
    assert_eq!(cache.downloads_dir(), PathBuf::from("/c/downloads"));
    assert_eq!(cache.sources_dir("m"), PathBuf::from("/c/sources/m"));
    assert_eq!(
        cache.runtime_dir("onnxruntime-1.31.1"),
        PathBuf::from("/c/runtimes/onnxruntime-1.31.1")
    );
    assert_eq!(cache.converted_dir("m", 3), PathBuf::from("/c/models/v3/m"));
}

#[test]
fn atomic_write_replaces_whole_files_and_leaves_no_partials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/file.txt");
    atomic_write(&path, b"first").unwrap();
    atomic_write(&path, b"second").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second");
    assert!(partials(dir.path()).is_empty());
}

#[test]
fn an_abandoned_atomic_file_never_appears_under_its_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("model.gguf");
    {
        let mut file = AtomicFile::create(&dest).unwrap();
        file.write_bytes(b"half a file").unwrap();
        assert!(file.partial_path().exists());
        // Dropped without commit: an error path.
    }
    assert!(!dest.exists());
    assert!(
        partials(dir.path()).is_empty(),
        "drop removes the partial file"
    );

    // A killed process cannot run drop: simulate that with forget.
    let mut file = AtomicFile::create(&dest).unwrap();
    file.write_bytes(b"half a file").unwrap();
    let partial = file.partial_path().to_path_buf();
    std::mem::forget(file);
    assert!(!dest.exists());
    assert!(partial.exists());
    fs::remove_file(&partial).unwrap();
}

#[test]
fn commit_verified_mismatch_removes_the_file_and_says_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x.bin");
    let mut file = AtomicFile::create(&dest).unwrap();
    file.write_bytes(b"abd").unwrap();
    match file.commit_verified(ABC_SHA256, "x.bin") {
        Err(Error::Checksum {
            what,
            expected,
            actual,
        }) => {
            assert_eq!(what, "x.bin");
            assert_eq!(expected, ABC_SHA256);
            assert_eq!(actual, sha256_bytes(b"abd"));
        }
        other => panic!("expected Error::Checksum, got {other:?}"),
    }
    assert!(!dest.exists());
    assert!(partials(dir.path()).is_empty());

    let mut file = AtomicFile::create(&dest).unwrap();
    file.write_bytes(b"abc").unwrap();
    file.commit_verified(ABC_SHA256, "x.bin").unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"abc");
}

#[test]
fn verify_file_mismatch_removes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wheel.whl");
    fs::write(&path, b"tampered").unwrap();
    let err = verify_file(&path, ABC_SHA256, "wheel.whl").unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("wheel.whl") && msg.contains("removed"),
        "{msg}"
    );
    assert!(!path.exists());

    fs::write(&path, b"abc").unwrap();
    verify_file(&path, ABC_SHA256, "wheel.whl").unwrap();
    assert!(path.exists());
}

#[test]
fn stale_partials_are_never_taken_for_good_and_get_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let manifest = ModelManifest::builtin("gemma3-270m").unwrap();
    let sources = cache.sources_dir(&manifest.name);
    fs::create_dir_all(&sources).unwrap();
    // Partial files of the right size, as an interrupted run may leave them.
    let gguf_partial = sources.join(format!("{}.partial-{DEAD_PID}-0", manifest.gguf.file));
    fs::File::create(&gguf_partial)
        .unwrap()
        .set_len(manifest.gguf.size)
        .unwrap();
    let json_partial = sources.join(format!("{TOKENIZER_JSON}.partial-{DEAD_PID}-1"));
    fs::File::create(&json_partial)
        .unwrap()
        .set_len(manifest.tokenizer.tokenizer_json.size)
        .unwrap();
    assert_eq!(FetchedSources::locate(&manifest, &cache), None);

    // A runtime directory that was never committed.
    let rt = RuntimeManifest::default_runtime().unwrap();
    let runtime_dir = cache.runtime_dir(&rt.id);
    let runtime_partial = PathBuf::from(format!("{}.partial-{DEAD_PID}-2", runtime_dir.display()));
    fs::create_dir_all(&runtime_partial).unwrap();
    if let Ok(platform) = rt.current_platform() {
        fs::write(runtime_partial.join(platform.library.file_name()), b"half").unwrap();
    }
    let err = find_onnxruntime_library(&cache, None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("ONNX Runtime library not found: run `lockstep fetch`"),
        "{err}"
    );

    // Our own partials may belong to a live thread: left alone.
    let ours = sources.join(format!("{TOKENIZER_JSON}.partial-{}-9", std::process::id()));
    fs::write(&ours, b"in progress").unwrap();
    assert_eq!(cache.remove_stale_partials().unwrap(), 3);
    assert_eq!(partials(dir.path()), vec![ours]);
}

#[test]
fn ort_dylib_path_wins_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let lib = dir.path().join("libonnxruntime.so");
    fs::write(&lib, b"x").unwrap();
    assert_eq!(
        find_onnxruntime_library(&cache, Some(lib.as_os_str())).unwrap(),
        lib
    );
    let missing = dir.path().join("nope.so");
    match find_onnxruntime_library(&cache, Some(missing.as_os_str())) {
        Err(Error::Runtime(msg)) => {
            assert!(
                msg.contains("ORT_DYLIB_PATH") && msg.contains("nope.so"),
                "{msg}"
            )
        }
        other => panic!("expected Error::Runtime, got {other:?}"),
    }
}

/// A registry file that does not match the manifest is removed and reported, and nothing
/// is left under a final name.
#[test]
fn wheel_checksum_mismatch_from_pypi_is_reported_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let mut rt = RuntimeManifest::default_runtime().unwrap();
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    let platform = rt
        .platforms
        .iter_mut()
        .find(|p| p.os == os && p.arch == arch)
        .expect("this test needs a platform with a pinned ONNX Runtime wheel");
    platform.archive_sha256 = "0".repeat(64);
    let wheel = platform.archive.clone();
    match fetch_runtime(&rt, &cache, false) {
        Err(Error::Checksum {
            what,
            expected,
            actual,
        }) => {
            assert!(what.contains(&wheel), "{what}");
            assert_eq!(expected, "0".repeat(64));
            assert_eq!(actual.len(), 64);
        }
        other => panic!("expected Error::Checksum, got {other:?}"),
    }
    assert!(!cache.downloads_dir().join(&wheel).exists());
    assert!(!cache.runtime_dir(&rt.id).exists());
    assert!(
        partials(dir.path()).is_empty(),
        "{:?}",
        partials(dir.path())
    );
}

/// Real fetch into a fresh cache that holds leftovers of an interrupted run, by two
/// threads at once: both get the verified library, and the leftovers are gone.
#[test]
fn runtime_fetch_ignores_leftovers_and_survives_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let rt = RuntimeManifest::default_runtime().unwrap();
    let platform = rt.current_platform().unwrap().clone();
    let downloads = cache.downloads_dir();
    fs::create_dir_all(&downloads).unwrap();
    // A truncated wheel under a partial name, of a process that died.
    fs::write(
        downloads.join(format!("{}.partial-{DEAD_PID}-0", platform.archive)),
        b"PK truncated",
    )
    .unwrap();
    let runtime_dir = cache.runtime_dir(&rt.id);
    let stale_dir = PathBuf::from(format!("{}.partial-{DEAD_PID}-1", runtime_dir.display()));
    fs::create_dir_all(&stale_dir).unwrap();
    fs::write(stale_dir.join(platform.library.file_name()), b"half").unwrap();

    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| fetch_runtime(&rt, &cache, false)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let expected = runtime_dir.join(platform.library.file_name());
    for result in results {
        assert_eq!(result.unwrap(), expected);
    }
    assert_eq!(sha256_file(&expected).unwrap(), platform.library.sha256);
    for extra in &platform.extra {
        let path = runtime_dir.join(extra.file_name());
        assert_eq!(sha256_file(&path).unwrap(), extra.sha256);
    }
    assert_eq!(find_onnxruntime_library(&cache, None).unwrap(), expected);
    assert!(
        partials(dir.path()).is_empty(),
        "{:?}",
        partials(dir.path())
    );
    // The wheel's content is extracted: the wheel is not kept.
    assert!(!downloads.join(&platform.archive).exists());
}
