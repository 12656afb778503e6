//! The ONNX Runtime backend: one `ort` session per loaded model, one KV cache per
//! lockstep session, the execution provider chosen by a profile.

mod runtime;
mod session;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lockstep_core::{Backend, BackendInfo, Error, ModelConfig, Result, Session, SessionOptions};
use lockstep_model::package::ModelPackage;
use ort::session::builder::{AutoDevicePolicy, GraphOptimizationLevel};

pub use runtime::version as runtime_version;

/// How to build the ONNX Runtime session.
#[derive(Debug, Clone)]
pub struct OrtOptions {
    /// The ONNX Runtime shared library (see `lockstep_model::fetch::onnxruntime_library`).
    pub library: PathBuf,
    /// Intra-op threads; `None` lets ONNX Runtime use one per physical core.
    pub threads: Option<usize>,
}

/// A converted model loaded into ONNX Runtime with the CPU execution provider.
pub struct OrtBackend {
    session: Arc<Mutex<ort::session::Session>>,
    config: ModelConfig,
    info: BackendInfo,
}

pub(crate) fn runtime_err(what: &str) -> impl Fn(ort::Error) -> Error + '_ {
    move |e| Error::Runtime(format!("ONNX Runtime: {what}: {e}"))
}

impl OrtBackend {
    /// Loads `model_dir` on the CPU provider. The CPU is pinned: `ort`'s default device
    /// policy would pick CoreML on macOS, and the CPU profile must mean the CPU.
    pub fn load(model_dir: &Path, opts: &OrtOptions) -> Result<Self> {
        let package = ModelPackage::open(model_dir)?;
        let env = runtime::environment(&opts.library)?;
        let err = runtime_err("cannot create a session");
        let mut builder = ort::session::Session::builder(env)
            .map_err(&err)?
            .with_auto_device(AutoDevicePolicy::PreferCPU)
            .map_err(|e| err(e.into()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| err(e.into()))?;
        if let Ok(prefix) = std::env::var("LOCKSTEP_ORT_PROFILE") {
            // ONNX Runtime's own per-node timings, for finding where a step's time goes.
            builder = builder.with_profiling(prefix).map_err(|e| err(e.into()))?;
        }
        if let Some(threads) = opts.threads {
            if threads == 0 {
                return Err(Error::InvalidInput("--threads must be at least 1".into()));
            }
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| err(e.into()))?;
        }
        let session = builder
            .commit_from_file(package.model_path())
            .map_err(|e| {
                Error::Runtime(format!(
                    "ONNX Runtime cannot load {}: {e}",
                    package.model_path().display()
                ))
            })?;
        let threads = opts
            .threads
            .map(|t| format!("{t} threads"))
            .unwrap_or_else(|| "default threads".into());
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
            config: package.manifest.config.clone(),
            info: BackendInfo {
                id: "ort-cpu".into(),
                runtime: format!("ONNX Runtime {}", runtime::version()),
                device: format!("CPU ({threads})"),
                precision: format!(
                    "int4 weights (int8 embedding), accuracy_level {}",
                    package.manifest.quantization.accuracy_level
                ),
            },
        })
    }
}

#[async_trait]
impl Backend for OrtBackend {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    async fn session(&self, opts: SessionOptions) -> Result<Box<dyn Session>> {
        if opts.max_tokens == 0 || opts.max_tokens > self.config.context_length {
            return Err(Error::InvalidInput(format!(
                "a KV budget of {} tokens is outside 1..={} (the model's context)",
                opts.max_tokens, self.config.context_length
            )));
        }
        Ok(Box::new(session::OrtSession::new(
            Arc::clone(&self.session),
            self.config.clone(),
            opts.max_tokens,
        )?))
    }
}
