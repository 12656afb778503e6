//! Backend ids, as used on the command line, and loading a backend for a model directory.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use lockstep_core::{Backend, Error, Result};
use lockstep_model::cache::Cache;

/// The runtimes lockstep can run a model on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// ONNX Runtime with its CPU execution provider.
    OrtCpu,
    /// lockstep's own WGSL kernels on wgpu (Vulkan, Metal, D3D12).
    Gpu,
}

impl BackendKind {
    pub const ALL: [BackendKind; 2] = [BackendKind::OrtCpu, BackendKind::Gpu];

    pub fn id(self) -> &'static str {
        match self {
            BackendKind::OrtCpu => "ort-cpu",
            BackendKind::Gpu => "gpu",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|k| k.id() == s).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|k| k.id()).collect();
            Error::InvalidInput(format!(
                "unknown backend '{s}'; known backends: {}",
                known.join(", ")
            ))
        })
    }
}

/// Options shared by every backend; each uses what applies to it.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// CPU threads for ONNX Runtime; `None` lets it choose.
    pub threads: Option<usize>,
    /// The ONNX Runtime library; `None` means `ORT_DYLIB_PATH`, then the cache, fetching
    /// onnxruntime from PyPI on first use.
    pub ort_library: Option<PathBuf>,
    /// Substring of the GPU adapter name to use.
    pub gpu_adapter: Option<String>,
    /// Show progress bars for a first-use download.
    pub progress: bool,
}

/// The ONNX Runtime library to load: the explicit one, `ORT_DYLIB_PATH`, the cached one,
/// or a fresh download of the pinned wheel from PyPI.
pub fn ort_library(opts: &LoadOptions) -> Result<PathBuf> {
    if let Some(p) = &opts.ort_library {
        return Ok(p.clone());
    }
    let cache = Cache::from_env()?;
    match lockstep_model::fetch::onnxruntime_library(&cache) {
        Ok(p) => Ok(p),
        // An explicit ORT_DYLIB_PATH that is wrong stays an error: never silently
        // replace what the user asked for.
        Err(e) if std::env::var_os(lockstep_model::fetch::ORT_DYLIB_PATH_ENV).is_some() => Err(e),
        Err(_) => lockstep_model::fetch::fetch_onnxruntime(&cache, opts.progress),
    }
}

/// Loads `model_dir` (a converted model directory) on `kind`.
pub fn load_backend(
    kind: BackendKind,
    model_dir: &Path,
    opts: &LoadOptions,
) -> Result<Arc<dyn Backend>> {
    Ok(match kind {
        BackendKind::OrtCpu => {
            let library = ort_library(opts)?;
            Arc::new(lockstep_ort::OrtBackend::load(
                model_dir,
                &lockstep_ort::OrtOptions {
                    library,
                    threads: opts.threads,
                },
            )?)
        }
        BackendKind::Gpu => {
            let gpu_opts = lockstep_gpu::GpuOptions {
                adapter: opts.gpu_adapter.clone(),
                ..Default::default()
            };
            Arc::new(lockstep_gpu::GpuBackend::load_dir(model_dir, gpu_opts)?)
        }
    })
}
