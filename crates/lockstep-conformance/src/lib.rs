//! Conformance suites: prove that every backend emits the reference's tokens, and
//! explain every difference.
//!
//! - [`Suite`]: prompts and tolerances, from `conformance/suites/*.toml`.
//! - [`Golden`]: the reference backend's greedy tokens and top-5 log-probabilities,
//!   committed under `conformance/golden/<model>/<suite>.json`.
//! - [`compare_free_running`]: greedy on each side, stop at the first difference and
//!   classify it as a near-tie or a failure (vLLM's `check_logprobs_close`).
//! - [`compare_teacher_forced`]: the same sequence on both sides, every position's
//!   logits compared: max |Δlogit|, top-1 agreement, mean and max KL (llama.cpp's
//!   perplexity statistics).
//! - [`Runner`] / [`run_model`]: all of it for a model, into a [`Report`] with
//!   [`Report::to_markdown`] and [`Report::to_json`].
//!
//! ```no_run
//! # fn main() -> lockstep_core::Result<()> {
//! let dir = lockstep_conformance::default_dir();
//! let suite = lockstep_conformance::Suite::load(lockstep_conformance::suite_path(&dir, "standard"))?;
//! let model = lockstep::Model::open("gemma3-tiny")?;
//! let backends = ["ort-cpu".to_string(), "gpu".to_string()];
//! let opts = lockstep_conformance::RunOptions { conformance_dir: Some(dir), ..Default::default() };
//! let report = lockstep_conformance::run_model(&model, "gemma3-tiny", &suite, &backends, &opts)?;
//! println!("{}", report.to_markdown());
//! assert!(report.passed());
//! # Ok(()) }
//! ```

mod compare;
pub mod fault;
mod golden;
mod report;
mod runner;
mod speculative;
mod suite;
mod trace;

use std::path::{Path, PathBuf};

pub use compare::{
    compare_free_running, compare_rows, compare_teacher_forced, compare_teacher_forced_async,
    Divergence, FreeRunning, Outcome, RowComparison, TeacherForced, TopDisagreement, NEAR_TIE_TOP,
};
pub use golden::{golden_path, prompt_hash, Golden, GoldenPrompt, GOLDEN_FORMAT, GOLDEN_TOP};
pub use report::{
    describe_divergence, BackendReport, BackendStatus, GoldenPromptReport, GoldenStatus,
    PromptReport, Report, TeacherTotals,
};
pub use runner::{bless_model, run_model, Candidate, GoldenInput, RunOptions, Runner};
pub use speculative::{
    run_speculative, trace_speculative_async, SpeculativeBackend, SpeculativePrompt,
    SpeculativeReport,
};
pub use suite::{EncodedPrompt, Generated, PromptSpec, Suite, Tolerance, Tolerances};
pub use trace::{trace_greedy, trace_greedy_async, TopK, Trace, TRACE_TOP_K};

/// The suite `lockstep conform` runs unless told otherwise.
pub const DEFAULT_SUITE: &str = "standard";

/// The built-in models that have committed golden files (what `--bless` refreshes).
pub const GOLDEN_MODELS: &[&str] = &["gemma3-tiny", "gemma3-270m"];

/// Overrides where suites and golden files are read from.
pub const DIR_ENV: &str = "LOCKSTEP_CONFORMANCE_DIR";

/// The conformance directory: `$LOCKSTEP_CONFORMANCE_DIR`, else `./conformance` when it
/// holds suites, else the source tree's `conformance/` (where `--bless` writes for commit).
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let local = PathBuf::from("conformance");
    if local.join("suites").is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance")
}

/// `<dir>/suites/<name>.toml`.
pub fn suite_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("suites").join(format!("{name}.toml"))
}

/// The suite `lockstep conform --suite` names: a path to a suite file, else a name under
/// `<dir>/suites`. Shared by the CLI and the language bindings so that both run the same.
pub fn load_suite(dir: &Path, name_or_path: &str) -> lockstep_core::Result<Suite> {
    let as_path = PathBuf::from(name_or_path);
    if as_path.is_file() {
        Suite::load(as_path)
    } else {
        Suite::load(suite_path(dir, name_or_path))
    }
}

/// The name golden files are kept under for `--model ARG`: the built-in name as given, or
/// the model's own name (from its manifest) for a directory.
pub fn golden_name(arg: &str, model: &lockstep::Model) -> String {
    if Path::new(arg).is_dir() {
        model.package().manifest.name.clone()
    } else {
        arg.to_string()
    }
}
