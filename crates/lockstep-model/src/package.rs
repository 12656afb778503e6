//! A converted model directory: `model.onnx` + `model.onnx.data`, the tokenizer files,
//! `genai_config.json` (so onnxruntime-genai runs the very same file) and
//! `manifest.json`, which records how the model was made.

use std::path::{Path, PathBuf};

use lockstep_core::{Error, ModelConfig, Result};
use serde::{Deserialize, Serialize};

pub const MODEL_FILE: &str = "model.onnx";
pub const DATA_FILE: &str = "model.onnx.data";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const GENAI_CONFIG_FILE: &str = "genai_config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// Bumped whenever the graph or the weight layout changes, so that a cached conversion
/// made by an older lockstep is rebuilt instead of trusted. 5: Q/K/V and gate/up as one
/// matmul each, and the default variant carries one graph per KV-cache layout and precision
/// (`convert::kv_graph`). 3 and 4 were taken by development branches' graphs: never reuse a
/// number that a cache may hold for another graph.
pub const CONVERTER_VERSION: u32 = 5;

/// How the weights were quantized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantSettings {
    /// Bits of every projection (MatMulNBits).
    pub projection_bits: u8,
    /// Bits of the embedding table, which is also the tied LM head.
    pub embedding_bits: u8,
    pub block_size: usize,
    /// MatMulNBits `accuracy_level`: 0 computes in f32, 4 quantizes activations to int8.
    pub accuracy_level: i64,
    /// How block scales were chosen, e.g. `q4_0` (largest-magnitude value kept exact).
    pub scheme: String,
}

/// Where the weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// `gguf` or `synthetic`.
    pub kind: String,
    pub file: String,
    /// sha256 of the source file, or the seed of a synthetic model.
    pub sha256: Option<String>,
    pub seed: Option<u64>,
}

/// Quantization error of one tensor: ||W_q - W|| / ||W|| against the dequantized source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorError {
    pub name: String,
    pub source_type: String,
    pub bits: u8,
    pub relative_error: f64,
}

/// `manifest.json` of a converted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageManifest {
    pub name: String,
    pub converter: String,
    pub converter_version: u32,
    pub variant: String,
    pub source: SourceInfo,
    pub quantization: QuantSettings,
    pub config: ModelConfig,
    pub tensor_errors: Vec<TensorError>,
}

/// An opened, converted model directory.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    pub dir: PathBuf,
    pub manifest: PackageManifest,
}

impl ModelPackage {
    /// Opens a converted model directory and checks that its files are there.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Model(format!(
                    "{} is not a lockstep model directory (no {MANIFEST_FILE}); convert a GGUF with `lockstep convert FILE.gguf {}`",
                    dir.display(),
                    dir.display()
                ))
            } else {
                Error::io("cannot read the model manifest", &manifest_path, e)
            }
        })?;
        let manifest: PackageManifest = serde_json::from_str(&text).map_err(|e| {
            Error::Model(format!(
                "{}: invalid manifest ({e}); re-run `lockstep convert`",
                manifest_path.display()
            ))
        })?;
        if manifest.converter_version != CONVERTER_VERSION {
            return Err(Error::Model(format!(
                "{} was converted by converter version {}, this lockstep needs {CONVERTER_VERSION}; re-run `lockstep convert` (or `lockstep fetch` for a built-in model)",
                dir.display(),
                manifest.converter_version
            )));
        }
        for file in [MODEL_FILE, DATA_FILE, TOKENIZER_FILE] {
            if !dir.join(file).is_file() {
                return Err(Error::Model(format!(
                    "{}: {file} is missing; re-run `lockstep convert`",
                    dir.display()
                )));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.manifest.config
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// The graph with the sliding layers' cache at window size (`windowed`) and the cache
    /// in `kv` precision, when this package has it (default variant); `None` for a
    /// `coreml` package, which has one graph.
    pub fn kv_graph_path(&self, windowed: bool, kv: lockstep_core::KvPrecision) -> Option<PathBuf> {
        let p = self
            .dir
            .join(crate::convert::kv_graph::graph_file(windowed, kv));
        p.is_file().then_some(p)
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_FILE)
    }
}
