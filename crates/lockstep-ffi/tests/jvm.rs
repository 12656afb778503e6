//! The JVM binding (bindings/jvm: dev.lockstep.Lockstep over JNI, what Kotlin calls too),
//! compiled here with the JDK's javac and the system C compiler against the C ABI, and run
//! on the tiny model: the text Java streams must be what the Rust API generates, and the
//! three common mistakes must arrive as LockstepExceptions with their status codes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The JDK: $JAVA_HOME, else the one `javac` on PATH belongs to.
fn java_home() -> PathBuf {
    if let Some(h) = std::env::var_os("JAVA_HOME") {
        return PathBuf::from(h);
    }
    let javac = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v javac)\""])
        .output()
        .expect("sh runs");
    let path = String::from_utf8(javac.stdout).unwrap();
    let path = Path::new(path.trim());
    assert!(
        path.is_file(),
        "no javac on PATH: install a JDK (17 or newer) or set JAVA_HOME"
    );
    path.parent().unwrap().parent().unwrap().to_path_buf()
}

fn check(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn java_streams_what_the_rust_api_generates() {
    let jdk = java_home();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let jvm = repo.join("bindings/jvm");
    // This test run's cdylib, in target/<profile>/deps next to the test binary.
    let lib_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let classes = out.path().join("classes");

    check(
        Command::new(jdk.join("bin/javac"))
            .arg("-d")
            .arg(&classes)
            .arg(jvm.join("src/dev/lockstep/Lockstep.java"))
            .arg(jvm.join("examples/Stream.java")),
    );
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    check(
        Command::new(cc)
            .args([
                "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-Werror",
            ])
            .arg("-I")
            .arg(jdk.join("include"))
            .arg("-I")
            .arg(jdk.join("include/linux"))
            .arg("-I")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("include"))
            .arg(jvm.join("native/lockstep_jni.c"))
            .arg("-L")
            .arg(&lib_dir)
            .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
            .arg("-llockstep_ffi")
            .arg("-o")
            .arg(out.path().join("liblockstep_jni.so")),
    );

    let prompt = "The three primary colors are";
    let run = check(
        Command::new(jdk.join("bin/java"))
            // cargo's LD_LIBRARY_PATH holds target/<profile>, where an older `cargo build`
            // may have left another liblockstep_ffi: load the one the rpath names.
            .env_remove("LD_LIBRARY_PATH")
            .arg(format!("-Djava.library.path={}", out.path().display()))
            .arg("-cp")
            .arg(&classes)
            .args(["Stream", "gemma3-tiny", "ort-cpu", "24", prompt]),
    );

    let model = lockstep::Model::open("gemma3-tiny").unwrap();
    let generator = model.generator("ort-cpu").unwrap();
    let mut session = pollster::block_on(generator.session(64)).unwrap();
    let expected = generator
        .generate(
            session.as_mut(),
            prompt,
            lockstep::GenerateOptions::new().max_new_tokens(24),
        )
        .unwrap();
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(stdout.strip_suffix('\n'), Some(expected.text.as_str()));

    let stderr = String::from_utf8(run.stderr).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stderr.lines().next().unwrap()).unwrap();
    assert_eq!(
        summary["tokens"],
        serde_json::to_value(&expected.tokens).unwrap()
    );
    for (line, status, words) in [
        (
            "missing model",
            5,
            "is neither a model directory nor a known model",
        ),
        ("unknown backend", 3, "unknown backend 'no-such-backend'"),
        (
            "over-budget prompt",
            4,
            "do not fit: the session's KV budget is 8",
        ),
    ] {
        let got = stderr
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no '{line}' line in {stderr}"));
        assert!(
            got.contains(&format!("status {status}: ")) && got.contains(words),
            "{got}"
        );
    }
}
