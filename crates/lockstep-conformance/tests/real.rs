//! The standard suite on the real Gemma 3 270M through ONNX Runtime CPU, against its
//! committed golden file: a runtime or converter change that changes a token, or moves a
//! top-5 log-probability past the suite's tolerance, fails here. (The GPU backend on the
//! real model is for manual runs: `lockstep conform --backends ort-cpu,gpu`; lavapipe is
//! too slow for every CI run.)

use lockstep::Model;
use lockstep_conformance::{
    default_dir, run_model, suite_path, BackendStatus, GoldenStatus, RunOptions, Suite,
    DEFAULT_SUITE,
};

const MODEL: &str = "gemma3-270m";

#[test]
fn ort_cpu_matches_the_golden_file() {
    let model = Model::open(MODEL).unwrap();
    let suite = Suite::load(suite_path(&default_dir(), DEFAULT_SUITE)).unwrap();
    let opts = RunOptions {
        conformance_dir: Some(default_dir()),
        ..Default::default()
    };
    let report = run_model(&model, MODEL, &suite, &["ort-cpu".into()], &opts).unwrap();
    println!("{}", report.to_markdown());
    assert!(
        matches!(report.golden, GoldenStatus::Checked { .. }),
        "no golden file for {MODEL}: run `lockstep conform --bless`"
    );
    assert_eq!(report.backends[0].status, BackendStatus::Reference);
    assert!(report.passed(), "{}", report.to_markdown());
}
