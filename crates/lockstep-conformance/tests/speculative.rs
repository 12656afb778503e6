//! `lockstep conform --speculate` in CI: speculative greedy decoding gives plain greedy's
//! tokens on the tiny model (ONNX Runtime CPU, the GPU backend on lavapipe) and on the
//! real 270M (ONNX Runtime CPU, two prompts that copy from their input).

use lockstep::Model;
use lockstep_conformance::{
    default_dir, run_speculative, suite_path, trace_greedy, trace_speculative_async, Outcome,
    Suite, DEFAULT_SUITE,
};
use lockstep_generate::Speculation;

fn suite(prompts: &[&str]) -> Suite {
    let mut s = Suite::load(suite_path(&default_dir(), DEFAULT_SUITE)).unwrap();
    s.select(&prompts.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        .unwrap();
    s
}

fn check(model: &str, backends: &[&str], prompts: &[&str]) {
    let m = Model::open(model).unwrap();
    let backends: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
    let report = run_speculative(
        &m,
        model,
        &suite(prompts),
        &backends,
        &Speculation::default(),
        false,
    )
    .unwrap();
    println!("{}", report.to_markdown());
    assert!(report.unavailable().is_empty(), "{}", report.to_markdown());
    assert!(report.passed(), "{}", report.to_markdown());
    // The drafts were really verified, and kept where they were right.
    for b in &report.backends {
        let accepted: usize = b.prompts.iter().map(|p| p.accepted).sum();
        assert!(accepted > 0, "{}: no draft accepted", b.id);
        for p in &b.prompts {
            assert_eq!(p.outcome(), Some(Outcome::Identical), "{}/{}", b.id, p.id);
        }
    }
}

#[test]
fn tiny_model_ort_cpu_speculative_equals_plain_on_every_prompt() {
    let all: Vec<String> = Suite::load(suite_path(&default_dir(), DEFAULT_SUITE))
        .unwrap()
        .prompts
        .iter()
        .map(|p| p.id.clone())
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    check("gemma3-tiny", &["ort-cpu"], &all);
}

/// The GPU backend on lavapipe: the prompts that repeat (so drafts get verified) with the
/// fewest positions. LOCKSTEP_SKIP_GPU=1 skips it on a machine with no Vulkan/Metal device.
#[test]
fn tiny_model_gpu_speculative_equals_plain() {
    if std::env::var_os("LOCKSTEP_SKIP_GPU").is_some() {
        eprintln!("LOCKSTEP_SKIP_GPU is set: the GPU backend is not checked");
        return;
    }
    check("gemma3-tiny", &["gpu"], &["repetition", "code-python"]);
}

#[test]
fn real_model_ort_cpu_speculative_equals_plain() {
    check("gemma3-270m", &["ort-cpu"], &["repetition", "code-python"]);
}

#[test]
fn a_speculative_trace_is_a_plain_trace_with_fewer_steps() {
    let m = Model::open("gemma3-tiny").unwrap();
    let b = m.backend("ort-cpu").unwrap();
    let s = suite(&["repetition"]);
    let prompt = s.encode(m.tokenizer()).unwrap().remove(0).tokens;
    let plain = trace_greedy(b.as_ref(), &prompt, 24).unwrap();
    let (spec, stats, steps) = pollster::block_on(trace_speculative_async(
        b.as_ref(),
        &prompt,
        24,
        &Speculation::default(),
    ))
    .unwrap();
    assert_eq!(spec.tokens, plain.tokens);
    assert_eq!(spec.steps.len(), spec.tokens.len());
    // Each step's top candidates agree; their log-probabilities differ by rounding at most.
    for (a, b) in plain.steps.iter().zip(&spec.steps) {
        assert_eq!(a.top1(), b.top1());
    }
    assert!(stats.accepted > 0);
    assert!(steps < spec.tokens.len() - 1, "{steps} steps");
}
