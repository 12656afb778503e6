//! The standard suite on the tiny synthetic model: ORT CPU against its committed golden
//! file, the GPU backend (lavapipe in CI) against ORT CPU, and a fault injected into a
//! real backend caught at its position.

use std::sync::Arc;

use lockstep::Model;
use lockstep_conformance::fault::{Fault, FaultyBackend};
use lockstep_conformance::{
    default_dir, golden_path, run_model, suite_path, BackendStatus, Candidate, Golden, GoldenInput,
    GoldenStatus, Outcome, RunOptions, Runner, Suite, DEFAULT_SUITE,
};
use lockstep_core::Backend;

const MODEL: &str = "gemma3-tiny";

fn suite() -> Suite {
    Suite::load(suite_path(&default_dir(), DEFAULT_SUITE)).unwrap()
}

fn opts() -> RunOptions {
    RunOptions {
        conformance_dir: Some(default_dir()),
        ..Default::default()
    }
}

#[test]
fn the_standard_suite_covers_what_it_claims() {
    let model = Model::open(MODEL).unwrap();
    let suite = suite();
    let prompts = suite.encode(model.tokenizer()).unwrap();
    let len = |id: &str| prompts.iter().find(|p| p.id == id).unwrap().tokens.len();
    // Past the real model's 512-token window, and past 1024.
    assert!(len("long-past-512") > 512 && len("long-past-512") < 1024);
    assert!(len("long-past-1024") > 1024);
    // The chat prompt went through the template and ends ready for the model's turn.
    let chat = model
        .tokenizer()
        .decode(
            &prompts
                .iter()
                .find(|p| p.id == "chat-multi-turn")
                .unwrap()
                .tokens,
        )
        .unwrap();
    assert_eq!(chat.matches("<start_of_turn>user").count(), 2, "{chat}");
    assert!(chat.ends_with("<start_of_turn>model\n"), "{chat}");
    for t in [&suite.tolerances.near_tie_margin, &suite.tolerances.max_kl] {
        assert!(!t.why.is_empty());
    }
}

#[test]
fn ort_cpu_matches_the_golden_file() {
    let model = Model::open(MODEL).unwrap();
    let report = run_model(&model, MODEL, &suite(), &["ort-cpu".into()], &opts()).unwrap();
    let GoldenStatus::Checked { prompts, .. } = &report.golden else {
        panic!(
            "no golden file at {}: run `lockstep conform --bless`",
            golden_path(&default_dir(), MODEL, DEFAULT_SUITE).display()
        );
    };
    assert_eq!(prompts.len(), suite().prompts.len());
    assert!(report.passed(), "{}", report.to_markdown());
    assert_eq!(report.backends[0].status, BackendStatus::Reference);
}

/// The GPU backend on every prompt (CI runs it on lavapipe). Set LOCKSTEP_SKIP_GPU=1 on a
/// machine with no Vulkan/Metal/D3D12 device at all; otherwise an unavailable GPU fails.
/// On lavapipe a tiny-model step takes ~0.4 s, so by default the test runs the prompts
/// that cross the tiny model's 16-token window with the fewest positions; set
/// LOCKSTEP_CONFORMANCE_FULL=1 for all of them.
#[test]
fn gpu_matches_ort_cpu() {
    if std::env::var_os("LOCKSTEP_SKIP_GPU").is_some() {
        eprintln!("LOCKSTEP_SKIP_GPU is set: the GPU backend is not checked");
        return;
    }
    let model = Model::open(MODEL).unwrap();
    let mut suite = suite();
    if std::env::var_os("LOCKSTEP_CONFORMANCE_FULL").is_none() {
        let quick = ["code-python", "chat-multi-turn", "repetition"];
        suite.select(&quick.map(String::from)).unwrap();
    }
    let report = run_model(
        &model,
        MODEL,
        &suite,
        &["ort-cpu".into(), "gpu".into()],
        &opts(),
    )
    .unwrap();
    println!("{}", report.to_markdown());
    let gpu = &report.backends[1];
    assert_eq!(
        gpu.status,
        BackendStatus::Passed,
        "{}",
        report.to_markdown()
    );
    assert!(report.passed());
    assert!(gpu.prompts.iter().all(|p| p.teacher_forced.is_some()));
}

/// The f16 KV cache's own suite (`conformance/suites/kv-f16.toml`) on both backends that
/// have the mode: ONNX Runtime (q, k, v and the attention output rounded to f16 around its
/// attention op) and the GPU backend (only the cached keys and values rounded).
#[test]
fn f16_kv_caches_pass_their_own_suite() {
    let model = Model::open(MODEL).unwrap();
    let mut suite = Suite::load(suite_path(&default_dir(), "kv-f16")).unwrap();
    let mut backends = vec!["ort-cpu".to_string(), "ort-cpu+kv-f16".to_string()];
    if std::env::var_os("LOCKSTEP_SKIP_GPU").is_none() {
        backends.push("gpu+kv-f16".into());
        // lavapipe: the prompts that cross the 16-token window with the fewest positions.
        let quick = ["code-python", "chat-multi-turn", "repetition"];
        suite.select(&quick.map(String::from)).unwrap();
    }
    let report = run_model(&model, MODEL, &suite, &backends, &opts()).unwrap();
    println!("{}", report.to_markdown());
    for b in &report.backends[1..] {
        assert_eq!(b.status, BackendStatus::Passed, "{}", report.to_markdown());
    }
}

#[test]
fn an_unknown_backend_is_unavailable_never_passed() {
    let model = Model::open(MODEL).unwrap();
    let mut suite = suite();
    suite.select(&["fact-short".into()]).unwrap();
    let report = run_model(
        &model,
        MODEL,
        &suite,
        &["ort-cpu".into(), "ort-coreml".into()],
        &RunOptions::default(),
    )
    .unwrap();
    let b = &report.backends[1];
    assert_eq!(b.status, BackendStatus::Unavailable);
    assert!(b.unavailable.as_deref().unwrap().contains("ort-coreml"));
    assert_eq!(report.unavailable(), vec!["ort-coreml"]);
    let md = report.to_markdown();
    assert!(md.contains("| ort-coreml | — | — | unavailable: "), "{md}");
    assert!(md.contains("not passed: ort-coreml"), "{md}");
}

#[test]
fn a_changed_output_fails_the_golden_check() {
    let model = Model::open(MODEL).unwrap();
    let suite = suite();
    let path = golden_path(&default_dir(), MODEL, DEFAULT_SUITE);
    let mut golden = Golden::load(&path).unwrap();
    // As if the runtime had produced another token at step 3 of the first prompt.
    let first = &mut golden.prompts[0];
    first.tokens[3] = first.tokens[3].wrapping_add(1);
    let reference = model.backend("ort-cpu").unwrap();
    let mut one = suite.clone();
    one.select(std::slice::from_ref(&first.id)).unwrap();
    let runner = Runner::new(&one, model.tokenizer(), MODEL).unwrap();
    let report = runner
        .run(reference, vec![], GoldenInput::Loaded(&path, &golden))
        .unwrap();
    assert!(!report.passed());
    let GoldenStatus::Checked { prompts, .. } = &report.golden else {
        unreachable!()
    };
    let d = prompts[0]
        .free_running
        .as_ref()
        .unwrap()
        .divergence
        .as_ref()
        .unwrap();
    assert_eq!(d.step, 3);
    assert!(report.to_markdown().contains("instead of the golden"));
}

#[test]
fn noise_in_a_real_backend_is_caught_where_it_starts() {
    let model = Model::open(MODEL).unwrap();
    let mut suite = suite();
    suite.select(&["code-rust".into()]).unwrap();
    let runner = Runner::new(&suite, model.tokenizer(), MODEL).unwrap();
    let prompt_len = runner.prompts()[0].tokens.len();
    let reference = model.backend("ort-cpu").unwrap();
    // Noise from the 4th generated token on, so large (against logit gaps of tens)
    // that it decides every greedy choice.
    let from = prompt_len + 3;
    let noisy: Arc<dyn Backend> = Arc::new(FaultyBackend::new(
        model.backend("ort-cpu").unwrap(),
        Fault::Noise {
            from,
            amplitude: 1e4,
            seed: 7,
        },
    ));
    let report = runner
        .run(reference, vec![Candidate::Loaded(noisy)], GoldenInput::None)
        .unwrap();
    assert!(!report.passed());
    let p = &report.backends[0].prompts[0];
    assert_eq!(
        p.outcome(),
        Some(Outcome::Failure),
        "{}",
        report.to_markdown()
    );
    let d = p
        .free_running
        .as_ref()
        .unwrap()
        .divergence
        .as_ref()
        .unwrap();
    assert_eq!((d.step, d.position), (3, from), "{}", report.to_markdown());
    let tf = p.teacher_forced.as_ref().unwrap();
    assert_eq!(tf.first_disagreements[0].position, from);
    assert!(tf.max_kl_position >= from);
}

/// The CoreML-friendly graph variant, run on ONNX Runtime's CPU provider, gives the
/// default variant's tokens and logits on every prompt that fits its fixed 1024-position
/// cache (the 1107-token prompt does not, and is reported as a failure, not skipped).
#[test]
fn the_coreml_variant_agrees_with_the_default_variant() {
    let model = Model::open(MODEL).unwrap();
    let mut suite = suite();
    let fits = [
        "fact-short",
        "code-rust",
        "chat-multi-turn",
        "long-past-512",
    ];
    suite.select(&fits.map(String::from)).unwrap();
    let other = format!("ort-cpu@{MODEL}-coreml");
    let report = run_model(
        &model,
        MODEL,
        &suite,
        &["ort-cpu".into(), other.clone()],
        &opts(),
    )
    .unwrap();
    let variant = &report.backends[1];
    assert_eq!(variant.id, other);
    assert_eq!(
        variant.status,
        BackendStatus::Passed,
        "{}",
        report.to_markdown()
    );
    assert!(variant.prompts.iter().all(|p| p.teacher_forced.is_some()));
}
