//! Measuring one backend: load, warm up, then pp and tg repetitions.

use std::path::PathBuf;
use std::time::Instant;

use lockstep::{
    load_spec, Backend, BackendSpec, Error, LoadOptions, Result, SessionOptions, Speculation,
    Tokenizer, Want,
};
use pollster::block_on;

use crate::report::{BackendResult, BenchProfile, Status};
use crate::{mem, prompt_ids, Stats};

/// What to measure; the same for every backend of a run.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub model_dir: PathBuf,
    pub load: LoadOptions,
    /// pp: tokens of the prompt prefilled in one `forward(Want::Last)`; 0 skips pp.
    pub prompt_tokens: usize,
    /// tg: tokens generated one `forward_greedy` at a time; 0 skips tg.
    pub gen_tokens: usize,
    /// Tokens prefilled before tg starts (llama-bench's tg runs on an almost empty cache).
    pub tg_prompt_tokens: usize,
    pub reps: usize,
    /// After the measured runs, one profiled pp and tg run (`Session::profile`).
    pub profile: bool,
    /// The KV budget of every session; `None`: just what each test needs. Memory by
    /// context length is measured with it (a session allocates its budget up front).
    pub context: Option<usize>,
    /// A workload run through the generation loop after pp and tg: each prompt's ids,
    /// plain and, with `speculation`, speculative.
    pub workload: Option<WorkloadSpec>,
}

impl BenchSpec {
    /// The budget of a session that needs `needed` tokens.
    fn budget(&self, needed: usize) -> Result<usize> {
        match self.context {
            None => Ok(needed),
            Some(c) if c >= needed => Ok(c),
            Some(c) => Err(Error::InvalidInput(format!(
                "--context {c} is shorter than the {needed} tokens a test needs"
            ))),
        }
    }
}

/// Samples the backend's device buffers while a session is alive.
fn sample_device(backend: &dyn Backend, out: &mut BackendResult) {
    let m = backend.memory();
    if let Some(d) = m.device_bytes() {
        out.device_bytes = Some(out.device_bytes.map_or(d, |p: u64| p.max(d)));
    }
    let host = m.host_bytes();
    if host > 0 {
        out.kv_host_bytes = Some(out.kv_host_bytes.map_or(host, |p: u64| p.max(host)));
    }
}

/// The prompts of a workload and how to run them.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub prompts: Vec<(String, Vec<u32>)>,
    pub max_new_tokens: usize,
    pub speculation: Option<Speculation>,
}

/// Loads `kind` and measures it. Never fails: a backend that cannot load is reported as
/// unavailable with the reason, one that fails while running as failed.
pub fn bench_backend(
    kind: &BackendSpec,
    spec: &BenchSpec,
    progress: &dyn Fn(&str),
) -> BackendResult {
    let mut result = BackendResult::new(&kind.id());
    mem::reset_peak();
    let rss_before = mem::rss();
    progress(&format!("{kind}: loading {}", spec.model_dir.display()));
    let t = Instant::now();
    let backend = match load_spec(kind, &spec.model_dir, &spec.load) {
        Ok(b) => b,
        Err(e) => {
            progress(&format!("{kind}: unavailable: {e}"));
            result.status = Status::Unavailable;
            result.reason = Some(match e {
                Error::Unavailable { reason, .. } => reason,
                e => e.to_string(),
            });
            return result;
        }
    };
    result.load_s = Some(t.elapsed().as_secs_f64());
    result.info = Some(backend.info());
    progress(&format!(
        "{kind}: {} on {}, loaded in {:.2} s",
        backend.info().runtime_label(),
        backend.info().device,
        t.elapsed().as_secs_f64()
    ));
    let outcome = run(backend.as_ref(), spec, &mut result, progress).and_then(|()| {
        let Some(w) = &spec.workload else {
            return Ok(());
        };
        let modes = crate::workload::run_workload(
            backend.clone(),
            Tokenizer::from_dir(&spec.model_dir)?,
            &w.prompts,
            w.max_new_tokens,
            w.speculation.as_ref(),
            spec.reps,
            progress,
        )?;
        result.workload = Some(modes);
        Ok(())
    });
    if let Err(e) = outcome {
        progress(&format!("{kind}: failed: {e}"));
        result.status = Status::Failed;
        result.reason = Some(e.to_string());
    }
    match backend.host_process() {
        // A backend in a host process of its own: that whole process is its footprint.
        Some(pid) => {
            result.peak_rss_bytes = mem::peak_rss_of(pid);
            result.rss_delta_bytes = result.peak_rss_bytes;
        }
        None => {
            result.peak_rss_bytes = mem::peak_rss();
            result.rss_delta_bytes = match (result.peak_rss_bytes, rss_before) {
                (Some(peak), Some(before)) => Some(peak.saturating_sub(before)),
                _ => None,
            };
        }
    }
    result
}

fn run(
    backend: &dyn Backend,
    spec: &BenchSpec,
    out: &mut BackendResult,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let id = backend.info().id;
    let bos = backend.config().bos_token_id;
    let prompt = prompt_ids(spec.prompt_tokens, bos);
    let tg_prompt = prompt_ids(spec.tg_prompt_tokens.max(1), bos);

    // Warm-up, unmeasured: first runs allocate arenas and compile pipelines.
    progress(&format!("{id}: warm-up"));
    let warm_budget = spec.budget(spec.prompt_tokens.max(tg_prompt.len()) + 2)?;
    out.session_memory = backend.session_memory(&SessionOptions::with_max_tokens(warm_budget));
    let mut s = block_on(backend.session(SessionOptions::with_max_tokens(warm_budget)))?;
    sample_device(backend, out);
    block_on(s.forward(
        if prompt.is_empty() {
            &tg_prompt
        } else {
            &prompt
        },
        Want::Last,
    ))?;
    let tok = block_on(s.forward_greedy(&[bos]))?;
    block_on(s.forward_greedy(&[tok]))?;
    drop(s);

    if !prompt.is_empty() {
        let (mut rates, mut ttft) = (Vec::new(), Vec::new());
        for rep in 1..=spec.reps {
            // TTFT: a fresh session, the whole prompt, and the first token's id.
            let t0 = Instant::now();
            let budget = spec.budget(prompt.len())?;
            let mut s = block_on(backend.session(SessionOptions::with_max_tokens(budget)))?;
            let t1 = Instant::now();
            let logits = block_on(s.forward(&prompt, Want::Last))?;
            let pp = t1.elapsed().as_secs_f64();
            std::hint::black_box(logits.argmax(logits.rows() - 1));
            ttft.push(t0.elapsed().as_secs_f64() * 1e3);
            rates.push(prompt.len() as f64 / pp);
            progress(&format!(
                "{id}: pp{} rep {rep}/{}: {:.3} s, {:.1} tok/s",
                prompt.len(),
                spec.reps,
                pp,
                prompt.len() as f64 / pp
            ));
        }
        out.pp = Some(Stats::new(rates));
        out.ttft_ms = Some(Stats::new(ttft));
    }

    if spec.gen_tokens > 0 {
        let mut rates = Vec::new();
        for rep in 1..=spec.reps {
            let budget = spec.budget(tg_prompt.len() + spec.gen_tokens)?;
            let mut s = block_on(backend.session(SessionOptions::with_max_tokens(budget)))?;
            sample_device(backend, out);
            let mut tok = block_on(s.forward_greedy(&tg_prompt))?;
            let t = Instant::now();
            for _ in 0..spec.gen_tokens {
                tok = block_on(s.forward_greedy(&[tok]))?;
            }
            let secs = t.elapsed().as_secs_f64();
            rates.push(spec.gen_tokens as f64 / secs);
            progress(&format!(
                "{id}: tg{} rep {rep}/{}: {:.3} s, {:.1} tok/s",
                spec.gen_tokens,
                spec.reps,
                secs,
                spec.gen_tokens as f64 / secs
            ));
        }
        out.tg = Some(Stats::new(rates));
    }

    if spec.profile {
        out.profile = Some(profile(backend, spec, &prompt, &tg_prompt)?);
    }
    Ok(())
}

/// One pp and one tg run with the session's profile read after each; empty where the
/// backend has none.
fn profile(
    backend: &dyn Backend,
    spec: &BenchSpec,
    prompt: &[u32],
    tg_prompt: &[u32],
) -> Result<BenchProfile> {
    let mut out = BenchProfile::default();
    if !prompt.is_empty() {
        let mut s = block_on(backend.session(SessionOptions::with_max_tokens(prompt.len())))?;
        s.reset_profile();
        block_on(s.forward(prompt, Want::Last))?;
        out.prefill = s.profile();
    }
    if spec.gen_tokens > 0 {
        let budget = tg_prompt.len() + spec.gen_tokens;
        let mut s = block_on(backend.session(SessionOptions::with_max_tokens(budget)))?;
        let mut tok = block_on(s.forward_greedy(tg_prompt))?;
        s.reset_profile();
        for _ in 0..spec.gen_tokens {
            tok = block_on(s.forward_greedy(&[tok]))?;
        }
        out.decode = s.profile();
    }
    Ok(out)
}
