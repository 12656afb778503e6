//! The C examples in `examples/c`, compiled by the system C compiler (`$CC`, else `cc`)
//! against the committed header and the libraries this cargo build made, and run on the
//! tiny model: what C streams must be what the Rust API generates for the same prompt and
//! options.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lockstep::{GenerateOptions, Model};

const MODEL: &str = "gemma3-tiny";
const PROMPT: &str = "The three primary colors are";

/// `target/<profile>/deps`: where `cargo test` builds this crate's staticlib and cdylib
/// (fresh for this test run; only `cargo build` copies them up to `target/<profile>`),
/// next to the test binary itself.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_path_buf()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Clone, Copy)]
enum Link {
    Static,
    Shared,
}

fn compile(source: &str, link: Link, out_dir: &Path) -> PathBuf {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let src = repo().join("examples/c").join(source);
    let exe = out_dir.join(source.trim_end_matches(".c"));
    let lib = lib_dir();
    let mut cmd = Command::new(&cc);
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .arg("-I")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Static => {
            // llama.cpp (the llama-cpp backend) is C++: the static library needs the C++
            // standard library, which a C compiler does not link by itself.
            let cxx = if cfg!(target_os = "macos") {
                "-lc++"
            } else {
                "-lstdc++"
            };
            cmd.arg(lib.join("liblockstep_ffi.a")).args([
                cxx,
                "-lpthread",
                "-ldl",
                "-lm",
                "-lrt",
                "-lgcc_s",
            ]);
        }
        Link::Shared => {
            cmd.arg("-L")
                .arg(&lib)
                .arg(format!("-Wl,-rpath,{}", lib.display()))
                .arg("-llockstep_ffi");
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(
        out.status.success(),
        "{cc} failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn run(exe: &Path, args: &[&str]) -> Output {
    // cargo's LD_LIBRARY_PATH holds target/<profile>, where an older `cargo build` may
    // have left another liblockstep_ffi: load the one the rpath names.
    let out = Command::new(exe)
        .env_remove("LD_LIBRARY_PATH")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\nstdout: {}\nstderr: {}",
        exe.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the Rust API generates, with a KV budget of prompt plus new tokens as the C
/// example (and `lockstep run`) use.
fn rust_output(opts: GenerateOptions) -> lockstep::Output {
    let model = Model::open(MODEL).unwrap();
    let generator = model.generator("ort-cpu").unwrap();
    let budget = model.tokenizer().encode(PROMPT).unwrap().len() + opts.max_new_tokens;
    let mut session = pollster::block_on(generator.session(budget)).unwrap();
    generator.generate(session.as_mut(), PROMPT, opts).unwrap()
}

fn summary_of(out: &Output) -> serde_json::Value {
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no summary line in stderr: {stderr}"));
    serde_json::from_str(line).unwrap()
}

fn assert_streams_like_rust(exe: &Path, args: &[&str], opts: GenerateOptions) {
    let expected = rust_output(opts);
    let mut all = vec!["--model", MODEL, "--backend", "ort-cpu"];
    all.extend_from_slice(args);
    all.push(PROMPT);
    let out = run(exe, &all);
    let streamed = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        streamed.strip_suffix('\n'),
        Some(expected.text.as_str()),
        "streamed text, {args:?}"
    );
    let summary = summary_of(&out);
    let tokens: Vec<u32> = serde_json::from_value(summary["tokens"].clone()).unwrap();
    assert_eq!(tokens, expected.tokens, "token ids, {args:?}");
    assert_eq!(summary["text"], expected.text);
    assert_eq!(summary["backend"]["id"], "ort-cpu");
    assert_eq!(summary["stop"]["reason"], "max_tokens");
}

#[test]
fn stream_c_linked_statically_streams_what_the_rust_api_generates() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("stream.c", Link::Static, dir.path());
    assert_streams_like_rust(
        &exe,
        &["--max-tokens", "24"],
        GenerateOptions::new().max_new_tokens(24),
    );
    // Sampled: the same seed and options give the same tokens.
    assert_streams_like_rust(
        &exe,
        &[
            "--max-tokens",
            "24",
            "--temperature",
            "0.9",
            "--top-k",
            "40",
            "--top-p",
            "0.95",
            "--seed",
            "7",
        ],
        GenerateOptions::new()
            .max_new_tokens(24)
            .temperature(0.9)
            .top_k(40)
            .top_p(0.95)
            .seed(7),
    );
}

#[test]
fn two_sessions_on_one_backend_from_two_threads_match_running_alone() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("two_threads.c", Link::Shared, dir.path());
    let out = run(&exe, &[MODEL, "ort-cpu"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches(": same: ").count(), 2, "{stdout}");
    assert!(stdout.ends_with("0 failed\n"), "{stdout}");
}

#[test]
fn errors_c_gets_one_clear_error_for_each_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("errors.c", Link::Shared, dir.path());
    let out = run(&exe, &[MODEL]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' line in {stdout}"))
            .to_string()
    };
    assert!(line("missing model").contains("is neither a model directory nor a known model"));
    assert!(line("unknown backend").contains("unknown backend 'no-such-backend'"));
    assert!(line("over-budget prompt").contains("do not fit: the session's KV budget is 8"));
    assert!(stdout.ends_with("0 failed\n"), "{stdout}");
}

#[test]
fn the_header_compiles_as_cpp_too() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(&cxx)
        .args(["-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-x", "c++"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/lockstep.h"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cxx}: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
