//! Backend ids, as used on the command line, and loading a backend for a model directory.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use lockstep_core::{Backend, Error, Result};
use lockstep_fetch::cache::Cache;

/// The runtimes lockstep can run a model on. ONNX Runtime backends are named after their
/// execution-provider profile (`providers/*.toml`): `ort-cpu`, `ort-coreml`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// ONNX Runtime with its CPU execution provider.
    OrtCpu,
    /// ONNX Runtime with the CoreML execution provider (macOS).
    OrtCoreml,
    /// ONNX Runtime with the CUDA execution provider (an onnxruntime-gpu build).
    OrtCuda,
    /// ONNX Runtime with the XNNPACK execution provider.
    OrtXnnpack,
    /// ONNX Runtime with the profile named by [`LoadOptions::provider`] (cpu if none).
    Ort,
    /// lockstep's own WGSL kernels on wgpu (Vulkan, Metal, D3D12).
    Gpu,
}

impl BackendKind {
    /// The backends that run on any machine (what `demo` and `bench` try by default).
    pub const ALL: [BackendKind; 2] = [BackendKind::OrtCpu, BackendKind::Gpu];

    /// Every id `--backend` accepts.
    pub const KNOWN: [BackendKind; 6] = [
        BackendKind::OrtCpu,
        BackendKind::OrtCoreml,
        BackendKind::OrtCuda,
        BackendKind::OrtXnnpack,
        BackendKind::Ort,
        BackendKind::Gpu,
    ];

    pub fn id(self) -> &'static str {
        match self {
            BackendKind::OrtCpu => "ort-cpu",
            BackendKind::OrtCoreml => "ort-coreml",
            BackendKind::OrtCuda => "ort-cuda",
            BackendKind::OrtXnnpack => "ort-xnnpack",
            BackendKind::Ort => "ort",
            BackendKind::Gpu => "gpu",
        }
    }

    /// Whether this is ONNX Runtime (with some provider profile).
    pub fn is_ort(self) -> bool {
        self != BackendKind::Gpu
    }

    /// The built-in provider profile the id names; `None` for `ort` and `gpu`.
    pub fn provider(self) -> Option<&'static str> {
        match self {
            BackendKind::OrtCpu => Some("cpu"),
            BackendKind::OrtCoreml => Some("coreml"),
            BackendKind::OrtCuda => Some("cuda"),
            BackendKind::OrtXnnpack => Some("xnnpack"),
            BackendKind::Ort | BackendKind::Gpu => None,
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
        Self::KNOWN
            .into_iter()
            .find(|k| k.id() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::KNOWN.iter().map(|k| k.id()).collect();
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
    /// ONNX Runtime execution-provider profile: a built-in name (cpu, coreml, cuda,
    /// xnnpack) or a path to a profile TOML. `None`: the one the backend id names.
    pub provider: Option<String>,
    /// The profile to run on when `provider`'s cannot run here. `None` is strict: that
    /// is an error.
    pub fallback: Option<String>,
}

impl LoadOptions {
    /// The ONNX Runtime library these options load (see [`ort_library`]).
    pub fn ort_library(&self) -> Result<PathBuf> {
        ort_library(self)
    }

    /// The provider profile (and fallback) for an ONNX Runtime backend `kind`.
    pub fn provider_choice(&self, kind: BackendKind) -> Result<lockstep_ort::ProviderChoice> {
        let profile = match (kind.provider(), &self.provider) {
            (Some(named), None) => lockstep_ort::ProviderProfile::resolve(named)?,
            (None, None) => lockstep_ort::ProviderProfile::cpu(),
            (None, Some(p)) => lockstep_ort::ProviderProfile::resolve(p)?,
            (Some(named), Some(p)) => {
                let profile = lockstep_ort::ProviderProfile::resolve(p)?;
                if profile.name != named {
                    return Err(Error::InvalidInput(format!(
                        "--backend {kind} runs the {named} provider but --provider asks for {}; use --backend ort --provider {p}",
                        profile.name
                    )));
                }
                profile
            }
        };
        let fallback = self
            .fallback
            .as_deref()
            .map(lockstep_ort::ProviderProfile::resolve)
            .transpose()?;
        Ok(lockstep_ort::ProviderChoice { profile, fallback })
    }
}

/// The ONNX Runtime library to load: the explicit one, `ORT_DYLIB_PATH`, the cached one,
/// or a fresh download of the pinned wheel from PyPI.
pub fn ort_library(opts: &LoadOptions) -> Result<PathBuf> {
    if let Some(p) = &opts.ort_library {
        return Ok(p.clone());
    }
    let cache = Cache::from_env()?;
    match lockstep_fetch::fetch::onnxruntime_library(&cache) {
        Ok(p) => Ok(p),
        // An explicit ORT_DYLIB_PATH that is wrong stays an error: never silently
        // replace what the user asked for.
        Err(e) if std::env::var_os(lockstep_fetch::fetch::ORT_DYLIB_PATH_ENV).is_some() => Err(e),
        Err(_) => lockstep_fetch::fetch::fetch_onnxruntime(&cache, opts.progress),
    }
}

/// Loads `model_dir` (a converted model directory) on `kind`.
pub fn load_backend(
    kind: BackendKind,
    model_dir: &Path,
    opts: &LoadOptions,
) -> Result<Arc<dyn Backend>> {
    Ok(match kind {
        BackendKind::Gpu => {
            if opts.provider.is_some() || opts.fallback.is_some() {
                return Err(Error::InvalidInput(
                    "--provider and --fallback choose ONNX Runtime execution providers; they do not apply to --backend gpu".into(),
                ));
            }
            let gpu_opts = lockstep_gpu::GpuOptions {
                adapter: opts.gpu_adapter.clone(),
                ..Default::default()
            };
            Arc::new(lockstep_gpu::GpuBackend::load_dir(model_dir, gpu_opts)?)
        }
        ort_kind => {
            let choice = opts.provider_choice(ort_kind)?;
            let library = ort_library(opts)?;
            let backend = lockstep_ort::OrtBackend::load_with(
                model_dir,
                &lockstep_ort::OrtOptions {
                    library,
                    threads: opts.threads,
                },
                &choice,
            )?;
            // A fallback is never silent: the backend's device says it, and so does stderr.
            if let Some(note) = backend.fallback() {
                eprintln!("lockstep: {note}");
            }
            if let Some(note) = backend.cpu_nodes() {
                eprintln!("lockstep: {note}");
            }
            Arc::new(backend)
        }
    })
}
