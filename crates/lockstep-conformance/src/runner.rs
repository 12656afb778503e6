//! Running a suite: the reference's traces, the golden check, and every backend's
//! comparisons, gathered into a [`Report`].

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use lockstep_core::{Backend, Result};
use lockstep_generate::Tokenizer;

use crate::compare::{compare_free_running, compare_teacher_forced, Outcome, TeacherForced};
use crate::golden::{Golden, GoldenPrompt, GOLDEN_FORMAT, GOLDEN_TOP};
use crate::report::{
    BackendReport, BackendStatus, GoldenPromptReport, GoldenStatus, PromptReport, Report,
};
use crate::suite::{EncodedPrompt, Suite};
use crate::trace::{trace_greedy, Trace};

/// A backend running another conversion of the same weights (e.g. the `coreml` variant),
/// reported under `BACKEND@MODEL` so that it is never mistaken for the reference.
struct OtherModel {
    id: String,
    inner: Arc<dyn Backend>,
}

#[async_trait::async_trait]
impl Backend for OtherModel {
    fn info(&self) -> lockstep_core::BackendInfo {
        lockstep_core::BackendInfo {
            id: self.id.clone(),
            ..self.inner.info()
        }
    }

    fn config(&self) -> &lockstep_core::ModelConfig {
        self.inner.config()
    }

    async fn session(
        &self,
        opts: lockstep_core::SessionOptions,
    ) -> Result<Box<dyn lockstep_core::Session>> {
        self.inner.session(opts).await
    }
}

/// A backend to compare, or why it cannot run here.
pub enum Candidate {
    Loaded(Arc<dyn Backend>),
    Unavailable { id: String, reason: String },
}

impl Candidate {
    /// `backend` on `other_model` (a name or directory), compared against the reference
    /// running `model`: proves that two conversions of one model give the same tokens.
    pub fn other_model(
        model: &lockstep::Model,
        backend: &str,
        other_model: &str,
        id: &str,
    ) -> Self {
        let loaded = lockstep::Model::open_with(other_model, model.load_options.clone())
            .and_then(|m| m.backend(backend));
        match loaded {
            Ok(inner) => Candidate::Loaded(Arc::new(OtherModel {
                id: id.to_string(),
                inner,
            })),
            Err(e) => Candidate::Unavailable {
                id: id.to_string(),
                reason: e.to_string(),
            },
        }
    }

    /// Loads `id` on `model`; any error (unknown id, missing device, load failure) makes
    /// it unavailable with that error as the reason.
    pub fn load(model: &lockstep::Model, id: &str) -> Self {
        match model.backend(id) {
            Ok(b) => Candidate::Loaded(b),
            Err(e) => Candidate::Unavailable {
                id: id.to_string(),
                reason: e.to_string(),
            },
        }
    }
}

/// Which golden file to check the reference against.
#[derive(Clone, Copy)]
pub enum GoldenInput<'a> {
    None,
    Missing(&'a Path),
    Loaded(&'a Path, &'a Golden),
}

/// Runs one suite for one model.
pub struct Runner<'a> {
    suite: &'a Suite,
    tokenizer: &'a Tokenizer,
    model: String,
    prompts: Vec<EncodedPrompt>,
    progress: bool,
    teacher_forced: bool,
}

impl<'a> Runner<'a> {
    /// Tokenizes the suite's prompts (checking their minimum lengths) for `model`.
    pub fn new(suite: &'a Suite, tokenizer: &'a Tokenizer, model: &str) -> Result<Self> {
        Ok(Self {
            suite,
            tokenizer,
            model: model.to_string(),
            prompts: suite.encode(tokenizer)?,
            progress: false,
            teacher_forced: true,
        })
    }

    /// Progress lines on stderr.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Skips the teacher-forced comparison (free-running greedy only).
    pub fn teacher_forced(mut self, on: bool) -> Self {
        self.teacher_forced = on;
        self
    }

    pub fn prompts(&self) -> &[EncodedPrompt] {
        &self.prompts
    }

    fn note(&self, msg: impl AsRef<str>) {
        if self.progress {
            eprintln!("conform: {}", msg.as_ref());
        }
    }

    /// Greedy traces of every prompt on `backend`, in suite order.
    pub fn traces(&self, backend: &dyn Backend) -> Result<Vec<Trace>> {
        let id = backend.info().id;
        self.prompts
            .iter()
            .map(|p| {
                self.note(format!("{id}: {} ({} prompt tokens)", p.id, p.tokens.len()));
                trace_greedy(backend, &p.tokens, self.suite.max_new_tokens)
            })
            .collect()
    }

    /// The golden file for this suite: the reference's outputs now.
    pub fn bless(&self, reference: &dyn Backend) -> Result<Golden> {
        let traces = self.traces(reference)?;
        Ok(self.golden_from(reference, &traces))
    }

    fn golden_from(&self, reference: &dyn Backend, traces: &[Trace]) -> Golden {
        Golden {
            format: GOLDEN_FORMAT,
            model: self.model.clone(),
            suite: self.suite.golden_suite().to_string(),
            max_new_tokens: self.suite.max_new_tokens,
            reference: reference.info(),
            prompts: self
                .prompts
                .iter()
                .zip(traces)
                .map(|(p, t)| GoldenPrompt::new(&p.id, &p.tokens, t))
                .collect(),
        }
    }

    /// The whole run: reference traces, the golden check, then every candidate against
    /// the reference. A candidate with the reference's id is the reference itself (its
    /// row reports the golden check). Errors of a candidate become failures in the report;
    /// only the reference failing to run is an error.
    pub fn run(
        &self,
        reference: Arc<dyn Backend>,
        candidates: Vec<Candidate>,
        golden: GoldenInput<'_>,
    ) -> Result<Report> {
        let started = Instant::now();
        let ref_info = reference.info();
        let ref_traces = self.traces(reference.as_ref())?;
        let ref_seconds = started.elapsed().as_secs_f64();
        let golden = self.check_golden(&ref_traces, golden);

        let mut backends = Vec::new();
        for cand in candidates {
            let backend = match cand {
                Candidate::Unavailable { id, reason } => {
                    self.note(format!("{id}: unavailable: {reason}"));
                    backends.push(BackendReport::unavailable(&id, reason));
                    continue;
                }
                Candidate::Loaded(b) => b,
            };
            let info = backend.info();
            if info.id == ref_info.id {
                backends.push(BackendReport {
                    id: info.id.clone(),
                    status: BackendStatus::Reference,
                    info: Some(info),
                    unavailable: None,
                    prompts: Vec::new(),
                    seconds: ref_seconds,
                });
                continue;
            }
            let t0 = Instant::now();
            let prompts: Vec<PromptReport> = self
                .prompts
                .iter()
                .zip(&ref_traces)
                .map(|(p, rt)| {
                    let r = self.compare_prompt(reference.as_ref(), backend.as_ref(), p, rt);
                    self.note(format!(
                        "{}: {}: {}",
                        info.id,
                        p.id,
                        crate::report::one_line(&r)
                    ));
                    r
                })
                .collect();
            let status = if prompts.iter().all(PromptReport::passed) {
                BackendStatus::Passed
            } else {
                BackendStatus::Failed
            };
            backends.push(BackendReport {
                id: info.id.clone(),
                status,
                info: Some(info),
                unavailable: None,
                prompts,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
        Ok(Report {
            model: self.model.clone(),
            suite: self.suite.name.clone(),
            prompts: self.prompts.iter().map(|p| p.id.clone()).collect(),
            max_new_tokens: self.suite.max_new_tokens,
            reference: ref_info,
            tolerances: self.suite.tolerances.clone(),
            golden,
            backends,
        })
    }

    /// Free-running greedy, then teacher-forced over the reference's sequence.
    fn compare_prompt(
        &self,
        reference: &dyn Backend,
        test: &dyn Backend,
        prompt: &EncodedPrompt,
        ref_trace: &Trace,
    ) -> PromptReport {
        let tol = &self.suite.tolerances;
        let id = test.info().id;
        let mut report = PromptReport {
            id: prompt.id.clone(),
            prompt_tokens: prompt.tokens.len(),
            free_running: None,
            teacher_forced: None,
            failures: Vec::new(),
        };
        self.note(format!(
            "{id}: {} ({} prompt tokens)",
            prompt.id,
            prompt.tokens.len()
        ));
        match trace_greedy(test, &prompt.tokens, self.suite.max_new_tokens) {
            Ok(t) => {
                let mut fr = compare_free_running(
                    ref_trace,
                    &t,
                    prompt.tokens.len(),
                    tol.near_tie_margin.value,
                );
                if let Some(d) = &mut fr.divergence {
                    d.reference_text = self.text(d.reference_token);
                    d.test_text = self.text(d.test_token);
                }
                if fr.outcome() == Outcome::Failure {
                    report.failures.push(match &fr.divergence {
                        Some(d) => format!(
                            "greedy tokens differ at generated token {} (position {}), not a near-tie",
                            d.step, d.position
                        ),
                        None => format!(
                            "greedy lengths differ: {} vs {} tokens",
                            fr.reference_len, fr.test_len
                        ),
                    });
                }
                report.free_running = Some(fr);
            }
            Err(e) => report.failures.push(format!("greedy run failed: {e}")),
        }
        if self.teacher_forced {
            let mut seq = prompt.tokens.clone();
            seq.extend_from_slice(&ref_trace.tokens);
            match compare_teacher_forced(reference, test, &seq, tol.near_tie_margin.value) {
                Ok(mut tf) => {
                    for d in &mut tf.first_disagreements {
                        d.reference_text = self.text(d.reference_token);
                        d.test_text = self.text(d.test_token);
                    }
                    report.failures.extend(self.teacher_failures(&tf));
                    report.teacher_forced = Some(tf);
                }
                Err(e) => report
                    .failures
                    .push(format!("teacher-forced run failed: {e}")),
            }
        }
        report
    }

    fn teacher_failures(&self, tf: &TeacherForced) -> Vec<String> {
        let tol = &self.suite.tolerances;
        let mut out = Vec::new();
        let over = |x: f64, limit: f64| x.is_nan() || x > limit;
        if over(f64::from(tf.max_abs_logit_diff), tol.max_abs_logit.value) {
            out.push(format!(
                "teacher-forced max |Δlogit| {} at position {} exceeds {}",
                tf.max_abs_logit_diff, tf.max_abs_position, tol.max_abs_logit.value
            ));
        }
        if over(tf.mean_kl, tol.mean_kl.value) {
            out.push(format!(
                "teacher-forced mean KL {:.3e} exceeds {:.3e}",
                tf.mean_kl, tol.mean_kl.value
            ));
        }
        if over(tf.max_kl, tol.max_kl.value) {
            out.push(format!(
                "teacher-forced max KL {:.3e} at position {} exceeds {:.3e}",
                tf.max_kl, tf.max_kl_position, tol.max_kl.value
            ));
        }
        if tf.hard_disagreements > 0 {
            let first = tf.first_disagreements.iter().find(|d| !d.near_tie);
            out.push(format!(
                "teacher-forced top-1 differs beyond a near-tie at {} position(s){}",
                tf.hard_disagreements,
                first.map_or(String::new(), |d| format!(
                    ", first at position {}",
                    d.position
                ))
            ));
        }
        out
    }

    /// The reference's traces against the golden file: tokens exactly, top-5 logprobs
    /// within the suite's tolerance.
    fn check_golden(&self, traces: &[Trace], golden: GoldenInput<'_>) -> GoldenStatus {
        let (path, golden) = match golden {
            GoldenInput::None => return GoldenStatus::NotChecked,
            GoldenInput::Missing(p) => {
                return GoldenStatus::Missing {
                    path: p.display().to_string(),
                }
            }
            GoldenInput::Loaded(p, g) => (p.display().to_string(), g),
        };
        let tol = self.suite.tolerances.golden_logprob.value;
        let mut prompts = Vec::new();
        for (p, live) in self.prompts.iter().zip(traces) {
            let mut r = GoldenPromptReport {
                id: p.id.clone(),
                free_running: None,
                max_logprob_diff: None,
                failures: Vec::new(),
            };
            let Some(g) = golden.prompt(&p.id) else {
                r.failures
                    .push("not in the golden file: run `lockstep conform --bless`".into());
                prompts.push(r);
                continue;
            };
            if let Some(why) = g.stale_for(&p.tokens) {
                r.failures
                    .push(format!("{why}; run `lockstep conform --bless`"));
            }
            if golden.max_new_tokens != self.suite.max_new_tokens {
                r.failures.push(format!(
                    "the golden file has {} new tokens per prompt, the suite {}; run `lockstep conform --bless`",
                    golden.max_new_tokens, self.suite.max_new_tokens
                ));
            }
            let gt = g.trace();
            // Exact: the reference against its own past, a near-tie is no excuse.
            let mut fr = compare_free_running(&gt, live, p.tokens.len(), 0.0);
            if let Some(d) = &mut fr.divergence {
                d.reference_text = self.text(d.reference_token);
                d.test_text = self.text(d.test_token);
                r.failures.push(format!(
                    "the reference now generates {} instead of the golden {} at generated token {} (position {})",
                    d.test_token, d.reference_token, d.step, d.position
                ));
            } else if fr.outcome() == Outcome::Failure {
                r.failures.push(format!(
                    "the reference now generates {} tokens, the golden file has {}",
                    fr.test_len, fr.reference_len
                ));
            }
            let mut max_diff = 0.0f32;
            for (step, (gs, ls)) in gt
                .steps
                .iter()
                .zip(&live.steps)
                .take(fr.matching)
                .enumerate()
            {
                for &(id, glp) in gs.0.iter().take(GOLDEN_TOP) {
                    match ls.logprob(id) {
                        Some(lp) => max_diff = max_diff.max((lp - glp).abs()),
                        None => {
                            max_diff = f32::INFINITY;
                            r.failures.push(format!(
                                "golden candidate {id} at generated token {step} is no longer among the reference's best"
                            ));
                        }
                    }
                }
            }
            if f64::from(max_diff) > tol {
                r.failures.push(format!(
                    "top-5 logprobs differ from the golden file by up to {max_diff:.2e}, over the tolerance {tol:.1e}"
                ));
            }
            r.max_logprob_diff = Some(max_diff);
            r.free_running = Some(fr);
            prompts.push(r);
        }
        GoldenStatus::Checked {
            path,
            written_by: golden.reference.clone(),
            prompts,
        }
    }

    fn text(&self, id: u32) -> Option<String> {
        self.tokenizer.decode(&[id]).ok()
    }
}

/// How [`run_model`] runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the golden file is looked up (`<dir>/golden/<model>/<suite>.json`); `None`
    /// skips the golden check.
    pub conformance_dir: Option<std::path::PathBuf>,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Run the teacher-forced comparison too (the default).
    pub teacher_forced: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            conformance_dir: None,
            progress: false,
            teacher_forced: true,
        }
    }
}

/// Everything `lockstep conform` does for one model: load the reference and each
/// requested backend (unknown or failing ones become unavailable), check the golden file
/// and compare. `model_name` names the golden file.
pub fn run_model(
    model: &lockstep::Model,
    model_name: &str,
    suite: &Suite,
    backends: &[String],
    opts: &RunOptions,
) -> Result<Report> {
    let runner = Runner::new(suite, model.tokenizer(), model_name)?
        .progress(opts.progress)
        .teacher_forced(opts.teacher_forced);
    let reference = model.backend(&suite.reference)?;
    let candidates = backends
        .iter()
        .map(|id| {
            if *id == suite.reference {
                Candidate::Loaded(reference.clone())
            } else if let Some((backend, other)) = id.split_once('@') {
                Candidate::other_model(model, backend, other, id)
            } else {
                Candidate::load(model, id)
            }
        })
        .collect();
    let path = opts
        .conformance_dir
        .as_deref()
        .map(|d| crate::golden::golden_path(d, model_name, suite.golden_suite()));
    let loaded = match &path {
        Some(p) => Golden::load_if_exists(p)?,
        None => None,
    };
    let input = match (&path, &loaded) {
        (Some(p), Some(g)) => GoldenInput::Loaded(p, g),
        (Some(p), None) => GoldenInput::Missing(p),
        _ => GoldenInput::None,
    };
    runner.run(reference, candidates, input)
}

/// Writes the golden file of `model_name` for `suite` under `conformance_dir`, from the
/// suite's reference backend; returns its path.
pub fn bless_model(
    model: &lockstep::Model,
    model_name: &str,
    suite: &Suite,
    conformance_dir: &Path,
    progress: bool,
) -> Result<std::path::PathBuf> {
    let runner = Runner::new(suite, model.tokenizer(), model_name)?.progress(progress);
    let reference = model.backend(&suite.reference)?;
    let golden = runner.bless(reference.as_ref())?;
    let path = crate::golden::golden_path(conformance_dir, model_name, suite.golden_suite());
    golden.save(&path)?;
    Ok(path)
}
