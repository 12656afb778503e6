//! The arguments and the body of `lockstep bench` (the CLI only wires them in).

use std::path::PathBuf;

use lockstep::{resolve_model, BackendSpec, LoadOptions, Result, Speculation, Tokenizer};

use crate::measure::WorkloadSpec;
use crate::workload::{Workload, WorkloadInfo, WorkloadPromptIds};
use crate::{bench_backend, chart, prompt_ids, BenchReport, BenchSpec, Machine};

/// Measure prefill and generation speed of each backend (llama-bench style).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Backends to measure, comma-separated; one this machine cannot run is listed as unavailable.
    #[arg(long, value_delimiter = ',', default_value = "ort-cpu,gpu")]
    pub backends: Vec<String>,
    /// A built-in model name (e.g. gemma3-270m, gemma3-1b-synthetic) or a converted model directory.
    #[arg(long, default_value = "gemma3-270m")]
    pub model: String,
    /// CPU threads for ONNX Runtime and llama.cpp (default: each runtime's own choice;
    /// llama-cpp takes every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// pp: prompt tokens prefilled in one step.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// tg: tokens generated one step at a time.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Prompt tokens prefilled (unmeasured) before tg.
    #[arg(long, default_value_t = 8)]
    pub tg_prompt_tokens: usize,
    /// Repetitions of each test.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// KV budget of every session, in tokens (default: what each test needs). Sessions
    /// allocate their budget up front, so this is how memory by context length is measured.
    #[arg(long)]
    pub context: Option<usize>,
    /// KV cache precision: f32 (the reference) or f16 (ONNX Runtime backends);
    /// one backend can also ask for its own with a suffix (ort-cpu+kv-f16).
    #[arg(long, default_value = "f32")]
    pub kv_cache: lockstep::KvPrecision,
    /// Print the full report as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG chart of tok/s per backend here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// GPU adapter: a substring of its name.
    #[arg(long)]
    pub gpu_adapter: Option<String>,
    /// The ONNX Runtime shared library (default: ORT_DYLIB_PATH, then the cache).
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Also show where a step's time goes, for backends that can tell (gpu: device time
    /// per kernel class from GPU timestamps, dispatches per step, and the host's encode,
    /// submit, wait and read-back time), from one extra pp and tg run after the measured
    /// ones. Timestamps slow the steps of that backend, so its pp/tg figures are then for
    /// reading the profile, not for comparing backends.
    #[arg(long)]
    pub profile: bool,
    /// Also run a workload through the generation loop (greedy, each prompt's own text):
    /// a name under benches/workloads (e.g. grounded) or a workload .toml file.
    #[arg(long)]
    pub workload: Option<String>,
    /// Run the workload plain and with speculative decoding by prompt lookup, side by
    /// side (tok/s, tokens per step, acceptance, and whether the tokens equal plain
    /// decoding's); without --workload it runs the grounded workload.
    #[arg(long)]
    pub speculate: bool,
    /// Most draft tokens verified per step.
    #[arg(long, default_value_t = 8)]
    pub draft_max: usize,
    /// Shortest n-gram looked up for a draft.
    #[arg(long, default_value_t = 1)]
    pub ngram_min: usize,
    /// Longest n-gram looked up for a draft.
    #[arg(long, default_value_t = 3)]
    pub ngram_max: usize,
}

impl Default for BenchArgs {
    /// The defaults `lockstep bench` has with no flags.
    fn default() -> Self {
        use clap::{Args, FromArgMatches};
        let cmd = BenchArgs::augment_args(clap::Command::new("bench"));
        BenchArgs::from_arg_matches(&cmd.get_matches_from(["bench"])).expect("the defaults parse")
    }
}

/// Runs the benchmark; progress goes to stderr, the table or JSON to stdout.
pub fn run(args: &BenchArgs) -> Result<BenchReport> {
    let report = measure(args)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        print!("{}", report.table());
    }
    Ok(report)
}

/// Runs the benchmark and returns the report that `--json` prints (and writes the SVG
/// chart if asked), printing nothing on stdout; progress goes to stderr. What the
/// language bindings' `bench(...)` returns.
pub fn measure(args: &BenchArgs) -> Result<BenchReport> {
    let kinds = args
        .backends
        .iter()
        .map(|b| b.trim().parse::<BackendSpec>())
        .collect::<Result<Vec<_>>>()?;
    let speculation = if args.speculate {
        let s = Speculation::default()
            .max_draft(args.draft_max)
            .ngram(args.ngram_min, args.ngram_max);
        s.validate()?;
        Some(s)
    } else {
        None
    };
    let workload = match (&args.workload, args.speculate) {
        (Some(w), _) => Some(Workload::resolve(w)?),
        (None, true) => Some(Workload::resolve("grounded")?),
        (None, false) => None,
    };
    let mut machine = Machine::current();
    let progress = |msg: &str| eprintln!("lockstep bench: {msg}");
    progress(&format!("resolving model {}", args.model));
    let model_dir = resolve_model(&args.model, true)?;
    let workload = match workload {
        Some(w) => Some(WorkloadSpec {
            prompts: w.encode(&Tokenizer::from_dir(&model_dir)?)?,
            max_new_tokens: w.max_new_tokens,
            speculation: speculation.clone(),
        })
        .map(|s| (w.name, s)),
        None => None,
    };
    let spec = BenchSpec {
        model_dir: model_dir.clone(),
        load: LoadOptions {
            threads: args.threads,
            ort_library: args.ort_library.clone(),
            gpu_adapter: args.gpu_adapter.clone(),
            gpu_profile: args.profile,
            progress: true,
            kv_cache: args.kv_cache,
            ..Default::default()
        },
        profile: args.profile,
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        tg_prompt_tokens: args.tg_prompt_tokens,
        reps: args.reps.max(1),
        context: args.context,
        workload: workload.as_ref().map(|(_, s)| s.clone()),
    };
    // One backend at a time, each dropped before the next loads, so that they neither
    // compete for cores nor share a peak-memory figure.
    let results = kinds
        .iter()
        .map(|k| bench_backend(k, &spec, &progress))
        .collect();
    machine.load_avg_end = crate::mem::load_avg();
    let bos = lockstep_model_bos(&model_dir);
    let report = BenchReport {
        model: args.model.clone(),
        model_dir: model_dir.display().to_string(),
        threads: args.threads,
        prompt_tokens: spec.prompt_tokens,
        gen_tokens: spec.gen_tokens,
        tg_prompt_tokens: spec.tg_prompt_tokens,
        reps: spec.reps,
        machine,
        prompt_ids: prompt_ids(spec.prompt_tokens, bos),
        workload: workload.map(|(name, s)| WorkloadInfo {
            name,
            max_new_tokens: s.max_new_tokens,
            prompts: s
                .prompts
                .into_iter()
                .map(|(id, ids)| WorkloadPromptIds { id, ids })
                .collect(),
            speculation: s.speculation.map(|_| {
                format!(
                    "prompt lookup over {}- to {}-grams, drafts of up to {} tokens, adaptive",
                    args.ngram_min, args.ngram_max, args.draft_max
                )
            }),
        }),
        results,
    };
    if let Some(path) = &args.svg {
        std::fs::write(path, chart(&report))
            .map_err(|e| lockstep::Error::io("cannot write the SVG chart", path, e))?;
        progress(&format!("chart written to {}", path.display()));
    }
    Ok(report)
}

/// The model's BOS id, from its manifest (2 for every Gemma 3), without loading the tokenizer.
fn lockstep_model_bos(dir: &std::path::Path) -> u32 {
    std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["config"]["bos_token_id"].as_u64())
        .unwrap_or(2) as u32
}

#[cfg(test)]
mod tests {
    use super::BenchArgs;

    #[test]
    fn default_args_are_the_cli_defaults() {
        let a = BenchArgs::default();
        assert_eq!(a.backends, ["ort-cpu", "gpu"]);
        assert_eq!(a.model, "gemma3-270m");
        assert_eq!(
            (a.prompt_tokens, a.gen_tokens, a.tg_prompt_tokens, a.reps),
            (512, 128, 8, 5)
        );
        assert!(!a.json && a.svg.is_none() && a.threads.is_none());
    }
}
