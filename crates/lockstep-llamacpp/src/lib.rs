//! llama.cpp as a lockstep backend: the reference engine.
//!
//! It runs a GGUF file as llama.cpp does for its users (llama.cpp built from source by the
//! `llama-cpp-sys-2` binding; [`ffi`] wraps the calls we make), so that the ONNX conversions and their runtimes
//! can be compared with the engine most people run the original file on. For the real
//! model that is the original GGUF from the model's sources, not a conversion; for a
//! synthetic model, a GGUF written from its ONNX weights (`lockstep-model`'s
//! `gguf_from_weights`).
//!
//! Settings, and why: llama.cpp's defaults wherever they do not change what a step means
//! (its 8-bit activation quantization in quantized matmuls, an f16 KV cache, flash
//! attention when the device supports it), because the point is to compare with what
//! llama.cpp users get. One exception: the sliding-window layers keep every position
//! (`swa_full`), so that [`Session::truncate`] can rewind past the window like every other
//! backend; by default llama.cpp overwrites positions that left the window.

mod ffi;
mod session;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lockstep_core::{Backend, BackendInfo, Error, ModelConfig, Result, Session, SessionOptions};
use lockstep_model::gguf::{GgmlType, GgufFile};

use session::LlamaCppSession;

/// The backend id on the command line and in reports.
pub const BACKEND_ID: &str = "llama-cpp";

/// The binding and the llama.cpp it builds, as pinned in Cargo.toml (an `=` version: a
/// reference engine whose outputs are golden files must not move on its own).
pub const PACKAGE: &str = "llama-cpp-sys-2 0.1.161 (crates.io; llama.cpp built from source)";

/// Tokens llama.cpp computes per `llama_decode` call: its default physical batch. Bounds
/// the logits buffer llama.cpp keeps for one call (rows x vocabulary floats).
const BATCH: usize = 512;

/// How to run llama.cpp.
#[derive(Debug, Clone, Default)]
pub struct LlamaCppOptions {
    /// CPU threads for prefill and decode; `None`: every core this process may use.
    pub threads: Option<usize>,
}

/// A GGUF loaded by llama.cpp.
pub struct LlamaCppBackend {
    model: Arc<ffi::Model>,
    config: ModelConfig,
    info: BackendInfo,
    threads: usize,
    /// llama.cpp's context creation may write to the model (llama-cpp-2 calls it unsound
    /// in parallel): one session is created at a time.
    creating: Mutex<()>,
}

impl LlamaCppBackend {
    /// Loads a Gemma 3 GGUF. The architecture facts come from lockstep's own GGUF reader,
    /// and must be what llama.cpp loaded.
    pub fn load(gguf_path: &Path, opts: &LlamaCppOptions) -> Result<Self> {
        let gguf = GgufFile::open(gguf_path)?;
        let config = lockstep_model::convert::config_from_gguf(&gguf)?;
        let precision = precision(&gguf);
        drop(gguf);
        let model = ffi::Model::load(gguf_path)?;
        let loaded = (
            i64::from(model.n_vocab()),
            i64::from(model.n_layer()),
            i64::from(model.n_embd()),
        );
        let expected = (
            config.vocab_size as i64,
            config.num_layers as i64,
            config.hidden_size as i64,
        );
        if loaded != expected {
            return Err(Error::Model(format!(
                "{}: llama.cpp loaded (vocabulary, layers, hidden) = {loaded:?}, the file's metadata says {expected:?}",
                gguf_path.display()
            )));
        }
        let threads = opts.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let info = BackendInfo {
            id: BACKEND_ID.into(),
            runtime: "llama.cpp".into(),
            device: format!("CPU ({threads} threads{})", cpu_features()),
            precision,
            package: Some(PACKAGE.into()),
            provider: Some("ggml CPU backend".into()),
            process: None,
        };
        Ok(Self {
            model: Arc::new(model),
            config,
            info,
            threads: threads.max(1),
            creating: Mutex::new(()),
        })
    }
}

/// What the weights are and how llama.cpp computes with them, from the tensor types.
fn precision(gguf: &GgufFile) -> String {
    let mut types: Vec<GgmlType> = gguf.tensors().iter().map(|t| t.ggml_type).collect();
    types.sort();
    types.dedup();
    let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
    let matmuls = if types.iter().any(|t| t.is_quantized()) {
        "8-bit activations in quantized matmuls"
    } else {
        "f32 matmuls"
    };
    format!(
        "GGUF weights as stored ({}), {matmuls}, {} KV cache",
        names.join("/"),
        ffi::default_kv_type()
    )
}

/// The CPU features ggml's kernels were compiled for (`AVX2`, `FMA`, `NEON`, ...), as
/// llama.cpp reports them: what `lockstep providers` shows for this backend.
pub fn compiled_cpu_features() -> Vec<String> {
    parse_system_info(&ffi::system_info())
}

/// `CPU : SSE3 = 1 | AVX2 = 1 | LLAMAFILE = 1 | ...` -> the SIMD features that are on.
fn parse_system_info(text: &str) -> Vec<String> {
    text.split('|')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = k.trim().rsplit(':').next()?.trim();
            // Build options, not instruction sets.
            let option = matches!(k, "LLAMAFILE" | "OPENMP" | "REPACK");
            (v.trim() == "1" && !option).then(|| k.to_string())
        })
        .collect()
}

/// `; AVX2 FMA F16C` for the device string.
fn cpu_features() -> String {
    let on = compiled_cpu_features();
    if on.is_empty() {
        String::new()
    } else {
        format!("; {}", on.join(" "))
    }
}

#[async_trait]
impl Backend for LlamaCppBackend {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    async fn session(&self, opts: SessionOptions) -> Result<Box<dyn Session>> {
        let max_tokens = opts.max_tokens;
        if max_tokens == 0 {
            return Err(Error::InvalidInput(
                "a session needs a KV budget of at least 1 token".into(),
            ));
        }
        if max_tokens > self.config.context_length {
            return Err(Error::ContextOverflow {
                needed: max_tokens,
                limit: self.config.context_length,
                limit_name: "the model's context length",
            });
        }
        let n_ctx = u32::try_from(max_tokens).map_err(|_| {
            Error::InvalidInput(format!("a KV budget of {max_tokens} tokens is too large"))
        })?;
        let batch = BATCH.min(max_tokens);
        let params = ffi::ContextParams {
            n_ctx,
            n_batch: batch as u32,
            threads: i32::try_from(self.threads).unwrap_or(i32::MAX),
        };
        let context = {
            let _one_at_a_time = self.creating.lock().map_err(|_| {
                Error::Runtime("a panic while creating another llama.cpp session".into())
            })?;
            // SAFETY: the session keeps an Arc of the model for as long as the context
            // lives, and creation is serialized by the lock.
            unsafe { ffi::Context::new(&self.model, &params) }.ok_or_else(|| {
                Error::Runtime(format!(
                    "llama.cpp cannot create a context of {max_tokens} tokens; a smaller budget needs less memory (RUST_LOG=lockstep_llamacpp=debug shows its log)"
                ))
            })?
        };
        Ok(Box::new(LlamaCppSession::new(
            context,
            self.model.clone(),
            self.config.clone(),
            max_tokens,
            batch,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_info_gives_the_instruction_sets_that_are_on() {
        let text = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | AVX512 = 0 | LLAMAFILE = 1 | OPENMP = 0 | REPACK = 1 | ";
        assert_eq!(
            parse_system_info(text),
            ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA"]
        );
        assert!(parse_system_info("").is_empty());
    }

    #[test]
    fn this_build_reports_what_it_was_compiled_for() {
        let features = compiled_cpu_features();
        // .cargo/config.toml asks for AVX2 on x86-64 (as this crate is compiled, so does
        // llama.cpp); the environment may turn it off for an older CPU.
        let asked = option_env!("GGML_AVX2") == Some("ON") && cfg!(target_arch = "x86_64");
        assert_eq!(features.iter().any(|f| f == "AVX2"), asked, "{features:?}");
    }

    #[test]
    fn a_missing_or_broken_gguf_is_one_clear_error() {
        let dir = std::env::temp_dir().join(format!("lockstep-llamacpp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.gguf");
        let e = LlamaCppBackend::load(&missing, &LlamaCppOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("cannot open GGUF file"), "{e}");
        let broken = dir.join("broken.gguf");
        std::fs::write(&broken, b"GGUF\x03\0\0\0").unwrap();
        let e = LlamaCppBackend::load(&broken, &LlamaCppOptions::default())
            .err()
            .unwrap();
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().contains("truncated GGUF"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
