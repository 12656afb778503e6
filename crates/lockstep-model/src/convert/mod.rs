//! GGUF (or seeded random weights) -> INT4 ONNX model package.
//!
//! Every projection is re-quantized to 4 bits with the Q4_0 rule; the embedding, which is
//! also the tied LM head, stays at 8 bits (a Q8_0 source is copied without loss):
//! DESIGN.md measured that a 4-bit embedding changes the first generated word on 1 of
//! 12 prompts and the first six ids on 11 of 12 at 270M.

mod graph;
pub mod graph_coreml;
pub mod kv_graph;
pub mod names;
mod quantize;
mod synthetic;
mod to_gguf;

pub use graph::{
    join_nibbles, past_key, past_value, present_key, present_value, split_nibbles, ATTENTION_MASK,
    INPUT_IDS, LOGITS, LOGITS_TO_KEEP,
};
pub use quantize::{q8_0_to_matrix, quantize_q4, quantize_q8, relative_error, BLOCK};
pub use synthetic::{gemma3_1b_config, gemma3_4b_config, synthetic_weights, tiny_config};
pub use to_gguf::{gguf_from_weights, package_gguf, PACKAGE_GGUF_FILE};

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use lockstep_core::{Error, ModelConfig, Result};

use crate::gguf::{GgmlType, GgufFile};
use crate::package::{
    PackageManifest, QuantSettings, SourceInfo, TensorError, CONVERTER_VERSION, GENAI_CONFIG_FILE,
    MANIFEST_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE,
};
use crate::weights::{LayerWeights, ModelWeights, QuantMatrix};

/// Choices the converter makes; recorded in the manifest.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Name written into the manifest (e.g. `gemma3-270m`).
    pub name: String,
    /// MatMulNBits `accuracy_level`: 0 (f32 compute, the reference) or 4 (int8 activations).
    pub accuracy_level: i64,
    /// Directory holding `tokenizer.json` and `tokenizer_config.json` to copy beside the model.
    pub tokenizer_dir: PathBuf,
    /// Bits of the projections: 4 (the product) or 8 (a near-lossless reference for
    /// telling quantization error from architecture errors).
    pub projection_bits: u8,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Which graph to write: the dynamic-shape default, or the static-shape `coreml` one.
    pub variant: Variant,
}

/// The graph a conversion writes; recorded as the manifest's `variant`. Both store the same
/// weights (4-bit codes and scales in MatMulNBits layout); the default graph stores Q/K/V
/// and gate/up row-concatenated (one matmul each), the CoreML graph one by one, and
/// [`crate::weights::ModelWeights::load`] reads either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// Dynamic shapes, ONNX Runtime contrib ops (GroupQueryAttention,
    /// SimplifiedLayerNormalization), onnxruntime-genai compatible.
    #[default]
    Default,
    /// Static shapes and standard ops for the CoreML execution provider; see
    /// [`graph_coreml`] for the I/O contract and what stays on the CPU.
    CoreMl,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Default, Variant::CoreMl];

    /// The name used on the command line and in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::CoreMl => "coreml",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown model variant '{s}'; known variants: default, coreml"
                ))
            })
    }
}

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub dir: PathBuf,
    pub manifest: PackageManifest,
}

/// Reads the architecture facts from a Gemma 3 GGUF's metadata. The values Gemma 3's files
/// do not store (the local RoPE theta, the 5:1 local/global pattern) are the
/// architecture's unless the file has llama.cpp's keys for them.
pub fn config_from_gguf(gguf: &GgufFile) -> Result<ModelConfig> {
    let arch = gguf
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if arch != "gemma3" {
        return Err(Error::Model(format!(
            "the GGUF's architecture is '{arch}', lockstep converts Gemma 3 text models ('gemma3') only"
        )));
    }
    let num = |key: &str| -> Result<u64> {
        gguf.get(&format!("gemma3.{key}"))
            .and_then(|v| v.as_u64())
            .ok_or_else(|| {
                Error::Model(format!(
                    "the GGUF has no 'gemma3.{key}'; is it a complete Gemma 3 file?"
                ))
            })
    };
    // Every size must be at least 1 (a zero head count would divide by zero below) and is
    // checked against the tensors before anything is sized by it.
    let size = |key: &str| -> Result<usize> {
        let v = num(key)?;
        usize::try_from(v).ok().filter(|&v| v >= 1).ok_or_else(|| {
            Error::Model(format!(
                "the GGUF's 'gemma3.{key}' is {v}; it must be at least 1 (is the file damaged?)"
            ))
        })
    };
    let hidden = size("embedding_length")?;
    let heads = size("attention.head_count")?;
    let kv_heads = size("attention.head_count_kv")?;
    let head_dim = match gguf.get("gemma3.attention.key_length") {
        Some(_) => size("attention.key_length")?,
        None => match hidden / heads {
            0 => {
                return Err(Error::Model(format!(
                    "the GGUF has no 'gemma3.attention.key_length' and its embedding_length {hidden} is smaller than its head_count {heads}; is it a complete Gemma 3 file?"
                )))
            }
            d => d,
        },
    };
    let intermediate = size("feed_forward_length")?;
    let num_layers = size("block_count")?;
    let width = |what: &str, n: usize| -> Result<usize> {
        n.checked_mul(head_dim).ok_or_else(|| {
            Error::Model(format!(
                "the GGUF's {what} {n} x key_length {head_dim} overflows; is the file damaged?"
            ))
        })
    };
    let q_size = width("head_count", heads)?;
    let kv_size = width("head_count_kv", kv_heads)?;
    let tensor = |name: &str| {
        gguf.tensor(name).ok_or_else(|| {
            Error::Model(format!(
                "the GGUF has no tensor '{name}'; is it a complete Gemma 3 file?"
            ))
        })
    };
    let embd = tensor("token_embd.weight")?;
    let vocab = match embd.dims[..] {
        [h, v] if h == hidden as u64 && v >= 1 => usize::try_from(v).map_err(|_| {
            Error::Model(format!("the GGUF's vocabulary of {v} ids is too large"))
        })?,
        _ => {
            return Err(Error::Model(format!(
                "tensor 'token_embd.weight' has dims {:?}, expected [{hidden}, {}] for this architecture",
                embd.dims,
                match embd.dims.get(1) {
                    Some(v) if embd.dims.len() == 2 => v.to_string(),
                    _ => "vocabulary size".into(),
                }
            )))
        }
    };
    // The sizes the metadata multiplies must be what the first layer's tensors hold.
    for (name, n) in [
        ("blk.0.attn_q.weight", q_size),
        ("blk.0.attn_k.weight", kv_size),
        ("blk.0.ffn_gate.weight", intermediate),
    ] {
        let t = tensor(name)?;
        if t.dims[..] != [hidden as u64, n as u64] {
            return Err(Error::Model(format!(
                "tensor '{name}' has dims {:?}, expected [{hidden}, {n}] for this architecture",
                t.dims
            )));
        }
    }
    check_layer_count(gguf, num_layers)?;
    let mut eos = vec![gguf
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.as_u64())
        .unwrap_or(1) as u32];
    // `<end_of_turn>` ends a chat turn; it is not in the metadata's eos id.
    if let Some(tokens) = gguf.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
        if let Some(id) = tokens
            .iter()
            .position(|t| t.as_str() == Some("<end_of_turn>"))
        {
            eos.push(id as u32);
        }
    }
    let eps = gguf
        .get("gemma3.attention.layer_norm_rms_epsilon")
        .and_then(|v| v.as_f32())
        .unwrap_or(1e-6);
    let config = ModelConfig {
        num_layers,
        hidden_size: hidden,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        intermediate_size: intermediate,
        vocab_size: vocab,
        context_length: usize::try_from(num("context_length")?).unwrap_or(usize::MAX),
        rms_norm_eps: eps,
        sliding_window: num("attention.sliding_window").unwrap_or(512) as usize,
        // Gemma 3's own files store neither: 5 sliding layers then a global one, local
        // theta 10,000. A GGUF may say otherwise (lockstep's synthetic models do).
        global_every: match gguf.get("gemma3.attention.sliding_window_pattern") {
            Some(_) => size("attention.sliding_window_pattern")?,
            None => 6,
        },
        rope_theta_local: gguf
            .get("gemma3.rope.freq_base_swa")
            .and_then(|v| v.as_f32())
            .unwrap_or(10_000.0),
        rope_theta_global: gguf
            .get("gemma3.rope.freq_base")
            .and_then(|v| v.as_f32())
            .unwrap_or(1_000_000.0),
        attn_scale: 1.0 / (head_dim as f32).sqrt(),
        embed_scale: (hidden as f32).sqrt(),
        bos_token_id: gguf
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.as_u64())
            .unwrap_or(2) as u32,
        eos_token_ids: eos,
        pad_token_id: gguf
            .get("tokenizer.ggml.padding_token_id")
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as u32,
    };
    config.validate("the GGUF's metadata")?;
    Ok(config)
}

/// Fails unless the file has tensors for every one of `num_layers` layers (`blk.N.*`), so
/// that a huge `block_count` is an error before anything is sized by it.
fn check_layer_count(gguf: &GgufFile, num_layers: usize) -> Result<()> {
    let present: std::collections::HashSet<usize> = gguf
        .tensors()
        .iter()
        .filter_map(|t| {
            let rest = t.name.strip_prefix("blk.")?;
            rest.split('.').next()?.parse().ok()
        })
        .filter(|&l| l < num_layers)
        .collect();
    if present.len() == num_layers {
        return Ok(());
    }
    // At most present.len() + 1 candidates: one of them is missing.
    let missing = (0..=present.len())
        .find(|l| !present.contains(l))
        .unwrap_or(present.len());
    Err(Error::Model(format!(
        "the GGUF has no tensor 'blk.{missing}.attn_norm.weight'; is it a complete Gemma 3 file?"
    )))
}

/// Reads a Gemma 3 GGUF and quantizes it into [`ModelWeights`]; returns the per-tensor
/// quantization error against the dequantized source too.
pub fn weights_from_gguf(
    gguf: &GgufFile,
    config: ModelConfig,
    projection_bits: u8,
    progress: &ProgressBar,
) -> Result<(ModelWeights, Vec<TensorError>)> {
    let mut errors = Vec::new();
    let tensor = |name: &str| {
        gguf.tensor(name).ok_or_else(|| {
            Error::Model(format!(
                "the GGUF has no tensor '{name}'; is it a complete Gemma 3 file?"
            ))
        })
    };
    let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
        let t = tensor(name)?;
        let v = gguf.dequantize(t)?;
        progress.inc(1);
        if v.len() != len {
            return Err(Error::Model(format!(
                "tensor '{name}' has {} values, expected {len}",
                v.len()
            )));
        }
        Ok(v)
    };
    let mut matrix = |name: &str, n: usize, k: usize, bits: u8| -> Result<QuantMatrix> {
        let t = tensor(name)?;
        if t.dims.len() != 2 || t.dims[0] as usize != k || t.dims[1] as usize != n {
            return Err(Error::Model(format!(
                "tensor '{name}' has dims {:?}, expected [{k}, {n}] for this architecture",
                t.dims
            )));
        }
        let q = if bits == 8 && t.ggml_type == GgmlType::Q8_0 {
            q8_0_to_matrix(&gguf.read_raw(t)?, n, k).ok_or_else(|| {
                Error::Model(format!("tensor '{name}': Q8_0 data has the wrong size"))
            })?
        } else {
            let values = gguf.dequantize(t)?;
            let q = if bits == 8 {
                quantize_q8(&values, n, k)
            } else {
                quantize_q4(&values, n, k)
            };
            errors.push(TensorError {
                name: name.to_string(),
                source_type: format!("{:?}", t.ggml_type),
                bits,
                relative_error: relative_error(&q, &values),
            });
            q
        };
        progress.inc(1);
        Ok(q)
    };
    config.validate("the model config")?;
    check_layer_count(gguf, config.num_layers)?;
    let c = &config;
    let embed = matrix("token_embd.weight", c.vocab_size, c.hidden_size, 8)?;
    // Not preallocated: the count comes from the file (checked above against its tensors,
    // but a layer's tensors are what bound the memory, not the count).
    let mut layers = Vec::new();
    for l in 0..c.num_layers {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        layers.push(LayerWeights {
            attn_norm: vector(&p("attn_norm"), c.hidden_size)?,
            q_proj: matrix(&p("attn_q"), c.q_size(), c.hidden_size, projection_bits)?,
            k_proj: matrix(&p("attn_k"), c.kv_size(), c.hidden_size, projection_bits)?,
            v_proj: matrix(&p("attn_v"), c.kv_size(), c.hidden_size, projection_bits)?,
            o_proj: matrix(
                &p("attn_output"),
                c.hidden_size,
                c.q_size(),
                projection_bits,
            )?,
            q_norm: vector(&p("attn_q_norm"), c.head_dim)?,
            k_norm: vector(&p("attn_k_norm"), c.head_dim)?,
            post_attn_norm: vector(&p("post_attention_norm"), c.hidden_size)?,
            pre_ffn_norm: vector(&p("ffn_norm"), c.hidden_size)?,
            gate_proj: matrix(
                &p("ffn_gate"),
                c.intermediate_size,
                c.hidden_size,
                projection_bits,
            )?,
            up_proj: matrix(
                &p("ffn_up"),
                c.intermediate_size,
                c.hidden_size,
                projection_bits,
            )?,
            down_proj: matrix(
                &p("ffn_down"),
                c.hidden_size,
                c.intermediate_size,
                projection_bits,
            )?,
            post_ffn_norm: vector(&p("post_ffw_norm"), c.hidden_size)?,
        });
    }
    let final_norm = vector("output_norm.weight", c.hidden_size)?;
    Ok((
        ModelWeights {
            config,
            embed,
            layers,
            final_norm,
        },
        errors,
    ))
}

fn bar(progress: bool, len: u64, msg: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} tensors ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Converts a Gemma 3 GGUF into a model package at `out_dir`. The directory appears only
/// when complete: everything is written into a sibling temp directory first.
pub fn convert_gguf(
    gguf_path: &Path,
    out_dir: &Path,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    let gguf = GgufFile::open(gguf_path)?;
    let config = config_from_gguf(&gguf)?;
    let pb = bar(
        opts.progress,
        2 + 13 * config.num_layers as u64,
        "converting",
    );
    let (weights, tensor_errors) = weights_from_gguf(&gguf, config, opts.projection_bits, &pb)?;
    pb.finish_and_clear();
    let sha256 = lockstep_fetch::cache::sha256_file(gguf_path)?;
    let source = SourceInfo {
        kind: "gguf".into(),
        file: gguf_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: Some(sha256),
        seed: None,
    };
    write_package(&weights, source, tensor_errors, out_dir, opts)
}

/// Builds a model with `config`'s shapes from seeded random weights (for tests and for
/// benchmarks at real shapes without the real weights).
pub fn build_synthetic(
    config: ModelConfig,
    seed: u64,
    out_dir: &Path,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    let weights = synthetic_weights(config, seed);
    let source = SourceInfo {
        kind: "synthetic".into(),
        file: String::new(),
        sha256: None,
        seed: Some(seed),
    };
    write_package(&weights, source, Vec::new(), out_dir, opts)
}

/// Writes model, data, tokenizer, genai_config.json and manifest.json, then moves the
/// finished directory into place (replacing an older one).
pub fn write_package(
    weights: &ModelWeights,
    source: SourceInfo,
    tensor_errors: Vec<TensorError>,
    out_dir: &Path,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    let parent = out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| Error::io("cannot create the output directory", parent, e))?;
    let leaf = out_dir
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    // Conversions killed before they finished left their temp directories here; nothing
    // else ever removes them.
    lockstep_fetch::cache::remove_stale_partials_of(out_dir)?;
    let tmp = parent.join(format!(".{leaf}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| Error::io("cannot create a temp directory", &tmp, e))?;
    let result = (|| {
        for file in [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE] {
            let src = opts.tokenizer_dir.join(file);
            std::fs::copy(&src, tmp.join(file)).map_err(|e| {
                Error::io(
                    "cannot copy the tokenizer (run `lockstep fetch` to get it)",
                    &src,
                    e,
                )
            })?;
        }
        let doc = format!(
            "Gemma 3 ({}) converted by lockstep {}",
            opts.name,
            env!("CARGO_PKG_VERSION")
        );
        match opts.variant {
            Variant::Default => graph::write_model(weights, &tmp, opts.accuracy_level, &doc)?,
            Variant::CoreMl => graph_coreml::write_model(weights, &tmp, opts.accuracy_level, &doc)?,
        }
        let manifest = PackageManifest {
            name: opts.name.clone(),
            converter: format!("lockstep {}", env!("CARGO_PKG_VERSION")),
            converter_version: CONVERTER_VERSION,
            variant: opts.variant.as_str().into(),
            source,
            quantization: QuantSettings {
                projection_bits: opts.projection_bits,
                embedding_bits: 8,
                block_size: BLOCK,
                accuracy_level: opts.accuracy_level,
                scheme: "q4_0 rule (scale = largest-magnitude value / -8, ties to even), symmetric; embedding q8_0".into(),
            },
            config: weights.config.clone(),
            tensor_errors,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        lockstep_fetch::cache::atomic_write(tmp.join(MANIFEST_FILE), &json)?;
        // onnxruntime-genai runs the default graph only (the coreml one has static shapes
        // and its own I/O names).
        if opts.variant == Variant::Default {
            let genai =
                serde_json::to_vec_pretty(&genai_config(&weights.config)).expect("serializes");
            lockstep_fetch::cache::atomic_write(tmp.join(GENAI_CONFIG_FILE), &genai)?;
        }
        Ok(manifest)
    })();
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // Move the old directory aside before the new one takes its name, so that a reader
    // never sees a mixture of the two.
    if out_dir.exists() {
        let old = parent.join(format!(".{leaf}.old-{}", std::process::id()));
        std::fs::rename(out_dir, &old)
            .map_err(|e| Error::io("cannot replace the model directory", out_dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(&tmp, out_dir)
        .map_err(|e| Error::io("cannot move the converted model into place", out_dir, e))?;
    Ok(ConvertReport {
        dir: out_dir.to_path_buf(),
        manifest,
    })
}

/// onnxruntime-genai's configuration for the converted decoder.
fn genai_config(c: &ModelConfig) -> serde_json::Value {
    serde_json::json!({
        "model": {
            "bos_token_id": c.bos_token_id,
            "context_length": c.context_length,
            "decoder": {
                "session_options": { "log_id": "onnxruntime-genai", "provider_options": [] },
                "filename": crate::package::MODEL_FILE,
                "head_size": c.head_dim,
                "hidden_size": c.hidden_size,
                "inputs": {
                    "input_ids": INPUT_IDS,
                    "attention_mask": ATTENTION_MASK,
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value"
                },
                "outputs": {
                    "logits": LOGITS,
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value"
                },
                "num_attention_heads": c.num_heads,
                "num_hidden_layers": c.num_layers,
                "num_key_value_heads": c.num_kv_heads
            },
            "eos_token_id": c.eos_token_ids,
            "pad_token_id": c.pad_token_id,
            "type": "gemma3_text",
            "vocab_size": c.vocab_size
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": false,
            "early_stopping": true,
            "length_penalty": 1.0,
            "max_length": c.context_length,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": false,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0
        }
    })
}
