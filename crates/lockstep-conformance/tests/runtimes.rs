//! The runtime matrix under the conformance suite: every ONNX Runtime package of
//! `providers/runtime/` that runs on a CPU-only Linux machine (Mesa lavapipe for WebGPU)
//! against the pinned reference, on the tiny model; a newer version of the reference
//! runtime in a host process; OpenVINO's bf16 mode against its own, measured suite; and the
//! report as JUnit XML.

use lockstep::Model;
use lockstep_conformance::{
    default_dir, run_model, suite_path, BackendStatus, Report, RunOptions, Suite, DEFAULT_SUITE,
};

const MODEL: &str = "gemma3-tiny";

fn run(suite: &str, backends: &[&str]) -> Report {
    let model = Model::open(MODEL).unwrap();
    let suite = Suite::load(suite_path(&default_dir(), suite)).unwrap();
    let opts = RunOptions {
        conformance_dir: Some(default_dir()),
        ..Default::default()
    };
    let backends: Vec<String> = backends.iter().map(|s| s.to_string()).collect();
    run_model(&model, MODEL, &suite, &backends, &opts).unwrap()
}

/// Every backend ran (none unavailable) and passed; each names its package and provider.
fn assert_all_passed(report: &Report, packages: &[(&str, &str, &str)]) {
    for b in &report.backends {
        assert_ne!(
            b.status,
            BackendStatus::Unavailable,
            "{} did not run here: {:?}",
            b.id,
            b.unavailable
        );
    }
    assert!(report.passed(), "{}", report.to_markdown());
    for (id, package, provider) in packages {
        let b = report.backends.iter().find(|b| b.id == *id).unwrap();
        let info = b.info.as_ref().unwrap();
        assert_eq!(info.package.as_deref(), Some(*package), "{id}");
        assert_eq!(info.provider.as_deref(), Some(*provider), "{id}");
    }
}

#[test]
fn a_newer_onnx_runtime_runs_beside_the_pinned_one_and_agrees() {
    let report = run(DEFAULT_SUITE, &["ort-cpu", "ort-cpu:1.32.0"]);
    assert_all_passed(
        &report,
        &[
            (
                "ort-cpu",
                "onnxruntime 1.31.1 (PyPI)",
                "CPUExecutionProvider",
            ),
            (
                "ort-cpu:1.32.0",
                "onnxruntime 1.32.0 (PyPI)",
                "CPUExecutionProvider",
            ),
        ],
    );
    // The second library cannot share this process: it ran in a host process.
    let newer = &report.backends[1];
    assert!(newer.info.as_ref().unwrap().process.is_some());
    assert_eq!(newer.info.as_ref().unwrap().runtime, "ONNX Runtime 1.32.0");
}

#[test]
fn openvino_passes_the_f32_suite_where_it_computes_in_f32() {
    let report = run(DEFAULT_SUITE, &["ort-openvino-accuracy"]);
    assert_all_passed(
        &report,
        &[(
            "ort-openvino-accuracy",
            "onnxruntime-openvino 1.24.1 (PyPI)",
            "OpenVINOExecutionProvider",
        )],
    );
}

/// Whether this CPU has bf16 dot products, without which OpenVINO ignores a bf16 hint.
fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.split_whitespace()
            .any(|f| f == "avx512_bf16" || f == "amx_bf16")
    })
}

#[test]
fn openvino_bf16_is_caught_by_the_f32_suite_and_passes_its_own() {
    let f32 = run(DEFAULT_SUITE, &["ort-openvino-bf16"]);
    let b = &f32.backends[0];
    assert_ne!(b.status, BackendStatus::Unavailable, "{:?}", b.unavailable);
    if !cpu_has_bf16() {
        // OpenVINO computes in f32 where the CPU has no bf16: then it must pass as f32.
        assert!(f32.passed(), "{}", f32.to_markdown());
        return;
    }
    // bf16 is a numeric mode of its own: the f32 bounds must catch it...
    assert_eq!(b.status, BackendStatus::Failed, "{}", f32.to_markdown());
    // ...and the suite written for it, with measured bounds, passes it.
    let bf16 = run("openvino-bf16", &["ort-openvino-bf16"]);
    assert!(bf16.passed(), "{}", bf16.to_markdown());
    assert_eq!(
        bf16.prompts, f32.prompts,
        "same prompts as the standard suite"
    );
}

/// ONNX Runtime's WebGPU provider (Dawn on Vulkan, here Mesa lavapipe) emits the CPU
/// provider's greedy tokens on every prompt of the standard suite. Its teacher-forced logits
/// do NOT stay inside the f32 bounds: measured on the tiny model (2026-12-02, lavapipe,
/// Mesa 25.0.7), max |Δlogit| 1.06 at 19 tokens growing to 6.58 at 1107, top-1 agreement
/// 98.6%..96.0%, max KL 0.58. That is a numeric mode of its own whose cause (f16 or reduced
/// precision inside the WebGPU kernels, or its attention) is not yet identified, so no
/// tolerance is written for it: the report shows the difference, and this test holds the
/// part users rely on today, identical greedy tokens.
#[test]
fn webgpu_emits_the_cpu_providers_greedy_tokens_on_lavapipe() {
    let report = run(DEFAULT_SUITE, &["ort-webgpu"]);
    let b = &report.backends[0];
    assert_ne!(b.status, BackendStatus::Unavailable, "{:?}", b.unavailable);
    let info = b.info.as_ref().unwrap();
    assert_eq!(
        info.package.as_deref(),
        Some("onnxruntime-node 1.30.0 (npm)")
    );
    assert_eq!(info.provider.as_deref(), Some("WebGpuExecutionProvider"));
    assert_eq!(b.prompts.len(), report.prompts.len());
    for p in &b.prompts {
        assert_eq!(
            p.outcome(),
            Some(lockstep_conformance::Outcome::Identical),
            "{}: {}",
            p.id,
            report.to_markdown()
        );
    }
    let totals = b
        .teacher_forced_totals()
        .expect("teacher-forced comparison ran");
    assert!(totals.max_abs_logit_diff.is_finite() && totals.mean_kl.is_finite());
}

#[test]
fn the_report_is_junit_xml_with_one_case_per_prompt() {
    let report = run(
        DEFAULT_SUITE,
        &["ort-cpu", "ort-cpu:1.32.0", "no-such-backend"],
    );
    let xml = report.to_junit();
    assert!(xml.starts_with("<?xml version=\"1.0\""), "{xml}");
    let n = report.prompts.len();
    // The reference (golden cases), the candidate, and the unknown backend as skipped.
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 3 * n, "{xml}");
    assert_eq!(xml.matches("<skipped ").count(), n, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
    assert!(
        xml.contains(&format!("tests=\"{}\" failures=\"0\"", 3 * n)),
        "{xml}"
    );
    assert!(xml.contains("name=\"package\" value=\"onnxruntime 1.32.0 (PyPI)\""));
}
