//! Execution providers from the command line, against the Linux ONNX Runtime that
//! `lockstep fetch` installs (CPU only): `providers`, strict `--provider`, `--fallback`,
//! and `inspect`'s measured and predicted placement.

use std::process::{Command, Output};

fn lockstep(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .output()
        .expect("the lockstep binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The command failed with exactly one `error:` line on stderr and no panic.
fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got success");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {stderr}");
    lines[0].to_string()
}

fn row<'a>(stdout: &'a str, first: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{stdout}"))
        .split_whitespace()
        .collect()
}

#[test]
fn providers_lists_every_runtime_and_profile() {
    let out = lockstep(&["providers"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("ONNX Runtime packages"), "{stdout}");
    for id in [
        "onnxruntime-1.31.1 (default)",
        "onnxruntime-1.32.0",
        "onnxruntime-node-1.30.0",
        "onnxruntime-openvino-1.24.1",
        "onnxruntime-gpu-1.31.1",
    ] {
        assert!(stdout.contains(id), "{id} missing:\n{stdout}");
    }
    // The default runtime is fetched by the tests' first use; the CPU profile runs on it.
    let cpu = row(&stdout, "cpu");
    assert_eq!(
        cpu[1..4],
        ["ort-cpu", "CPUExecutionProvider", "onnxruntime-1.31.1"],
        "{stdout}"
    );
    assert_eq!(cpu[4], "yes", "{stdout}");
    // The compiled-in engines, llama.cpp with the instruction sets it was built for.
    let llama = row(&stdout, "llama-cpp");
    assert_eq!(llama[1..3], ["llama.cpp,", "llama-cpp-sys-2"], "{stdout}");
    assert!(
        stdout.contains("runs the model's original GGUF"),
        "{stdout}"
    );
    // CoreML: no pinned runtime carries it on Linux, and the row says what would.
    if cfg!(target_os = "linux") {
        let coreml = row(&stdout, "coreml");
        assert_eq!(coreml[3], "—", "{stdout}");
        assert_eq!(coreml[4], "no:", "{stdout}");
    }
}

#[test]
fn coreml_is_strict_by_default() {
    let out = lockstep(&[
        "run",
        "-m",
        "gemma3-tiny",
        "--provider",
        "coreml",
        "-n",
        "2",
        "Hi",
    ]);
    let line = one_error_line(&out);
    assert!(line.contains("CoreMLExecutionProvider"), "{line}");
    assert!(line.contains("--fallback cpu"), "{line}");
    assert!(out.stdout.is_empty(), "nothing generated");
    // The backend id names the profile too.
    let out = lockstep(&[
        "run",
        "-m",
        "gemma3-tiny",
        "-b",
        "ort-coreml",
        "-n",
        "2",
        "Hi",
    ]);
    assert!(one_error_line(&out).contains("CoreMLExecutionProvider"));
}

#[test]
fn fallback_cpu_runs_and_says_so() {
    let out = lockstep(&[
        "run",
        "-m",
        "gemma3-tiny",
        "--provider",
        "coreml",
        "--fallback",
        "cpu",
        "-n",
        "2",
        "Hi",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "coreml is not available in this ONNX Runtime (not built with CoreMLExecutionProvider): running on cpu, as --fallback cpu allows"
        ),
        "{stderr}"
    );
    // The summary's [backend on device] never calls it CoreML.
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.contains("CPUExecutionProvider on CPU ("),
        "{summary}"
    );
    assert!(!summary.contains("CoreMLExecutionProvider on"), "{summary}");
    assert!(
        summary.contains("fallback: coreml is not available"),
        "{summary}"
    );
}

#[test]
fn conflicting_backend_and_provider() {
    let out = lockstep(&[
        "run",
        "-m",
        "gemma3-tiny",
        "-b",
        "ort-cpu",
        "--provider",
        "coreml",
        "Hi",
    ]);
    assert!(one_error_line(&out).contains("--backend ort --provider coreml"));
    let out = lockstep(&[
        "run",
        "-m",
        "gemma3-tiny",
        "-b",
        "gpu",
        "--provider",
        "coreml",
        "Hi",
    ]);
    assert!(one_error_line(&out).contains("do not apply to --backend gpu"));
    let out = lockstep(&[
        "run",
        "-m",
        "gemma3-tiny",
        "-b",
        "llama-cpp",
        "--fallback",
        "cpu",
        "Hi",
    ]);
    assert!(one_error_line(&out).contains("do not apply to --backend llama-cpp"));
    let out = lockstep(&["run", "-m", "gemma3-tiny", "-b", "llama-cpp:1.32.0", "Hi"]);
    assert!(one_error_line(&out).contains("only ONNX Runtime backends (ort-*)"));
    let out = lockstep(&["run", "-m", "gemma3-tiny", "--provider", "tpu", "Hi"]);
    assert!(one_error_line(&out).contains("unknown provider 'tpu'"));
}

#[test]
fn inspect_coreml_is_predicted_with_matmulnbits_on_cpu() {
    let out = lockstep(&["inspect", "--provider", "coreml", "gemma3-tiny"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("PREDICTED"), "{stdout}");
    assert!(
        stdout.contains("CoreMLExecutionProvider is not in this ONNX Runtime"),
        "{stdout}"
    );
    let mm = row(&stdout, "com.microsoft.MatMulNBits");
    let count: usize = mm[1].parse().unwrap();
    assert!(count > 0);
    assert_eq!(
        mm[2..4],
        ["0", mm[1]],
        "every MatMulNBits on the CPU: {stdout}"
    );
    assert!(
        stdout.contains("com.microsoft contrib op, declared unsupported"),
        "{stdout}"
    );
    // The vocabulary (262144 > 16384) keeps the LM head's add off Core ML too.
    assert!(stdout.contains("262144 > 16384"), "{stdout}");
}

#[test]
fn inspect_cpu_is_measured_and_all_on_cpu() {
    let out = lockstep(&["inspect", "--provider", "cpu", "gemma3-tiny"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("MEASURED"), "{stdout}");
    let total = stdout.lines().find(|l| l.starts_with("total:")).unwrap();
    // "total: N nodes; N ran on CPUExecutionProvider"
    let words: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(words[1], words[3], "{total}");
    assert!(total.ends_with("ran on CPUExecutionProvider"), "{total}");
    assert!(stdout.contains("MatMulNBits"), "{stdout}");
}
