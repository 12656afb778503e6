//! Arguments shared by the commands that load a model and generate.

use std::io::IsTerminal;

use clap::builder::ArgPredicate;
use clap::Args;
use lockstep::{GenerateOptions, LoadOptions, Model, SamplingParams, Speculation};
use lockstep_core::Result;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A built-in model name (fetched and converted on first use) or a converted model
    /// directory. Built-in: gemma3-270m, gemma3-tiny (synthetic weights, for tests).
    #[arg(long, short, default_value = "gemma3-270m")]
    pub model: String,
    /// The backend: ort-cpu (ONNX Runtime, CPU provider), ort-webgpu, ort-openvino,
    /// ort-openvino-accuracy, ort-cuda, ort-coreml, ort-xnnpack, ort (ONNX Runtime with the
    /// --provider profile), gpu (lockstep's WGSL kernels), or llama-cpp (llama.cpp on the
    /// model's original GGUF, the reference engine). An ONNX Runtime backend takes a
    /// runtime after a colon: ort-cpu:1.32.0 (`lockstep providers` lists the runtimes).
    /// With --provider and no --backend, it is ort.
    #[arg(
        long,
        short,
        default_value = "ort-cpu",
        default_value_if("provider", ArgPredicate::IsPresent, "ort")
    )]
    pub backend: String,
    /// ONNX Runtime execution-provider profile: cpu, coreml, cuda, xnnpack, or a path to a
    /// profile .toml (`lockstep providers` lists them). Strict: if it cannot run here, the
    /// command fails, unless --fallback names a profile to run instead.
    #[arg(long)]
    pub provider: Option<String>,
    /// The profile to run on when --provider's cannot run here (e.g. --fallback cpu);
    /// stderr and the backend's device then say so.
    #[arg(long)]
    pub fallback: Option<String>,
    /// CPU threads for ONNX Runtime (default: one per physical core) and llama.cpp (default:
    /// every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The ONNX Runtime runtime, by id or version (same as BACKEND:RUNTIME), e.g. 1.32.0 or
    /// onnxruntime-node-1.30.0; fetched from its registry on first use.
    #[arg(long)]
    pub runtime: Option<String>,
    /// An ONNX Runtime shared library to use instead of a pinned runtime (like
    /// ORT_DYLIB_PATH); reports name it as such.
    #[arg(long)]
    pub ort_library: Option<std::path::PathBuf>,
    /// KV cache precision: f32 (the reference) or f16 (ONNX Runtime backends; the gpu
    /// backend keeps f32)
    /// (half the cache memory, a different numeric mode: see conformance/suites/kv-f16.toml).
    #[arg(long, default_value = "f32")]
    pub kv_cache: lockstep::KvPrecision,
}

impl ModelArgs {
    /// The backend, then the model's tokenizer, and the generator over both. Loading the
    /// backend first keeps its load-time peak (ONNX Runtime touches every weight page while
    /// it pre-packs, before lockstep drops the mapped copies) from stacking on top of the
    /// tokenizer's resident vocabulary.
    pub fn open_generator(&self) -> Result<(Model, lockstep::Generator)> {
        let opts = self.load_options();
        let dir = lockstep::resolve_model(&self.model, opts.progress)?;
        let spec: lockstep::BackendSpec = self.backend.parse()?;
        let backend = lockstep::load_spec(&spec, &dir, &opts)?;
        lockstep::heap::trim();
        let model = Model::open_with(&dir.to_string_lossy(), opts)?;
        let generator = lockstep::Generator::new(backend, model.tokenizer().clone());
        Ok((model, generator))
    }

    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            threads: self.threads,
            progress: std::io::stderr().is_terminal(),
            provider: self.provider.clone(),
            fallback: self.fallback.clone(),
            runtime: self.runtime.clone(),
            ort_library: self.ort_library.clone(),
            kv_cache: self.kv_cache,
            ..Default::default()
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 (the default) is greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the k most likely tokens when sampling.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p (0 < p <= 1).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0 <= p <= 1).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Penalize tokens already seen (Hugging Face rule; 1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Seed of the sampler's random numbers (same seed, same logits: same tokens).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (not printed); repeat for several.
    #[arg(long)]
    pub stop: Vec<String>,
    #[command(flatten)]
    pub speculation: SpeculationArgs,
}

/// Speculative decoding by prompt lookup, shared by run, chat and bench.
#[derive(Args, Debug, Clone)]
pub struct SpeculationArgs {
    /// Speculative decoding by prompt lookup: draft the tokens that followed the last few
    /// tokens earlier in the prompt or the output, verify the draft in one model step,
    /// keep what the model itself picks. Same rule as plain decoding (greedy: the argmax;
    /// sampling: the same distribution and, for a seed, the same tokens), so the output
    /// changes only where a step over several positions computes logits that differ in
    /// the last bits and a near-tie flips. Off by default for that reason: measured on
    /// the conformance suite (`lockstep conform --speculate`), see BENCHMARKS.md.
    /// Pays off when the output copies its input (rewrite, extract, edit code).
    #[arg(long)]
    pub speculate: bool,
    /// Most draft tokens verified per step (the draft length adapts between 1 and this).
    #[arg(long, default_value_t = 8, requires = "speculate")]
    pub draft_max: usize,
    /// Shortest n-gram looked up for a draft.
    #[arg(long, default_value_t = 1, requires = "speculate")]
    pub ngram_min: usize,
    /// Longest n-gram looked up for a draft (longer matches are tried first).
    #[arg(long, default_value_t = 3, requires = "speculate")]
    pub ngram_max: usize,
}

impl SpeculationArgs {
    /// `None` unless --speculate; checked, so that bad values fail before a model loads.
    pub fn speculation(&self) -> Result<Option<Speculation>> {
        if !self.speculate {
            return Ok(None);
        }
        let s = Speculation::default()
            .max_draft(self.draft_max)
            .ngram(self.ngram_min, self.ngram_max);
        s.validate()?;
        Ok(Some(s))
    }
}

impl SamplingArgs {
    pub fn options(&self) -> Result<GenerateOptions> {
        let mut sampling = SamplingParams::default()
            .temperature(self.temperature)
            .top_p(self.top_p)
            .min_p(self.min_p)
            .repetition_penalty(self.repeat_penalty)
            .seed(self.seed);
        if let Some(k) = self.top_k {
            sampling = sampling.top_k(k);
        }
        let mut opts = GenerateOptions::new()
            .max_new_tokens(self.max_tokens)
            .sampling(sampling);
        for s in &self.stop {
            opts = opts.stop(s.clone());
        }
        opts.speculation = self.speculation.speculation()?;
        opts.validate()?;
        Ok(opts)
    }
}
