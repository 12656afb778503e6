//! Backend ids, as used on the command line, and loading a backend for a model directory.
//!
//! An id is `BACKEND` or, for ONNX Runtime backends, `BACKEND:RUNTIME`: `ort-cpu` runs the
//! default runtime, `ort-cpu:1.32.0` (or `ort-cpu:onnxruntime-1.32.0`) the same provider on
//! another pinned runtime (`providers/runtime/*.toml`). Tools that compare conversions add
//! `@MODEL` after that (`ort-cpu:1.32.0@gemma3-270m-int8act`); see `lockstep-conformance`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use lockstep_core::{Backend, Error, KvPrecision, Result};
use lockstep_fetch::cache::Cache;
use lockstep_fetch::fetch::ORT_DYLIB_PATH_ENV;
use lockstep_fetch::manifest::RuntimeManifest;

/// The runtimes lockstep can run a model on. ONNX Runtime backends are named after their
/// execution-provider profile (`providers/*.toml`): `ort-cpu`, `ort-webgpu`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// ONNX Runtime with its CPU execution provider.
    OrtCpu,
    /// ONNX Runtime with the WebGPU execution provider (Dawn; npm onnxruntime-node).
    OrtWebgpu,
    /// ONNX Runtime with the OpenVINO execution provider, OpenVINO's default precision.
    OrtOpenvino,
    /// ONNX Runtime with the OpenVINO execution provider in OpenVINO's ACCURACY mode (f32).
    OrtOpenvinoAccuracy,
    /// ONNX Runtime with the OpenVINO execution provider in bf16 inference precision.
    OrtOpenvinoBf16,
    /// ONNX Runtime with the CUDA execution provider (onnxruntime-gpu).
    OrtCuda,
    /// ONNX Runtime with the CoreML execution provider (macOS).
    OrtCoreml,
    /// ONNX Runtime with the XNNPACK execution provider.
    OrtXnnpack,
    /// ONNX Runtime with the profile named by [`LoadOptions::provider`] (cpu if none).
    Ort,
    /// lockstep's own WGSL kernels on wgpu (Vulkan, Metal, D3D12).
    Gpu,
    /// llama.cpp on the model's original GGUF: the reference engine (lockstep-llamacpp).
    LlamaCpp,
}

impl BackendKind {
    /// The backends that run on any machine (what `demo` and `bench` try by default).
    pub const ALL: [BackendKind; 2] = [BackendKind::OrtCpu, BackendKind::Gpu];

    /// Every id `--backend` accepts.
    pub const KNOWN: [BackendKind; 11] = [
        BackendKind::OrtCpu,
        BackendKind::OrtWebgpu,
        BackendKind::OrtOpenvino,
        BackendKind::OrtOpenvinoAccuracy,
        BackendKind::OrtOpenvinoBf16,
        BackendKind::OrtCuda,
        BackendKind::OrtCoreml,
        BackendKind::OrtXnnpack,
        BackendKind::Ort,
        BackendKind::Gpu,
        BackendKind::LlamaCpp,
    ];

    pub fn id(self) -> &'static str {
        match self {
            BackendKind::OrtCpu => "ort-cpu",
            BackendKind::OrtWebgpu => "ort-webgpu",
            BackendKind::OrtOpenvino => "ort-openvino",
            BackendKind::OrtOpenvinoAccuracy => "ort-openvino-accuracy",
            BackendKind::OrtOpenvinoBf16 => "ort-openvino-bf16",
            BackendKind::OrtCuda => "ort-cuda",
            BackendKind::OrtCoreml => "ort-coreml",
            BackendKind::OrtXnnpack => "ort-xnnpack",
            BackendKind::Ort => "ort",
            BackendKind::Gpu => "gpu",
            BackendKind::LlamaCpp => lockstep_llamacpp::BACKEND_ID,
        }
    }

    /// Whether this is ONNX Runtime (with some provider profile).
    pub fn is_ort(self) -> bool {
        !matches!(self, BackendKind::Gpu | BackendKind::LlamaCpp)
    }

    /// The built-in provider profile the id names; `None` for `ort`, `gpu` and `llama-cpp`.
    pub fn provider(self) -> Option<&'static str> {
        match self {
            BackendKind::OrtCpu => Some("cpu"),
            BackendKind::OrtWebgpu => Some("webgpu"),
            BackendKind::OrtOpenvino => Some("openvino"),
            BackendKind::OrtOpenvinoAccuracy => Some("openvino_accuracy"),
            BackendKind::OrtOpenvinoBf16 => Some("openvino_bf16"),
            BackendKind::OrtCuda => Some("cuda"),
            BackendKind::OrtCoreml => Some("coreml"),
            BackendKind::OrtXnnpack => Some("xnnpack"),
            BackendKind::Ort | BackendKind::Gpu | BackendKind::LlamaCpp => None,
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
                let hint = if s.contains(':') {
                    "; a runtime goes after a colon, as in ort-cpu:1.32.0"
                } else {
                    ""
                };
                Error::InvalidInput(format!(
                    "unknown backend '{s}'; known backends: {}{hint}",
                    known.join(", ")
                ))
            })
    }
}

/// A backend id as written: the backend, for ONNX Runtime which runtime package, and a
/// KV-cache precision other than the load options' (`gpu+kv-f16`, `ort-cpu:1.32.0+kv-f16`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    pub kind: BackendKind,
    /// A runtime id (`onnxruntime-1.32.0`) or version (`1.32.0`) from
    /// `providers/runtime/`; `None`: the first runtime that carries the provider.
    pub runtime: Option<String>,
    /// `+kv-f16`: this backend's KV cache precision, over [`LoadOptions::kv_cache`].
    pub kv: Option<KvPrecision>,
}

/// Written after a backend id to give it a KV-cache precision: `gpu+kv-f16`.
pub const KV_SUFFIX: &str = "+kv-";

impl BackendSpec {
    pub fn new(kind: BackendKind) -> Self {
        Self {
            kind,
            runtime: None,
            kv: None,
        }
    }

    /// The id as written (`ort-cpu:1.32.0+kv-f16`): what reports call the backend.
    pub fn id(&self) -> String {
        let mut id = match &self.runtime {
            Some(r) => format!("{}:{r}", self.kind.id()),
            None => self.kind.id().to_string(),
        };
        if let Some(kv) = self.kv {
            id.push_str(&format!("{KV_SUFFIX}{kv}"));
        }
        id
    }
}

impl std::fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id())
    }
}

impl FromStr for BackendSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let (s, kv) = match s.rsplit_once(KV_SUFFIX) {
            Some((base, kv)) => (base, Some(kv.parse::<KvPrecision>()?)),
            None => (s, None),
        };
        let (kind, runtime) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        let kind: BackendKind = kind.parse()?;
        match runtime {
            None => Ok(Self::new(kind)),
            Some("") => Err(Error::InvalidInput(format!(
                "'{s}' names no runtime after the colon; e.g. {kind}:1.32.0 (`lockstep providers` lists the runtimes)"
            ))),
            Some(_) if !kind.is_ort() => Err(Error::InvalidInput(format!(
                "'{s}': only ONNX Runtime backends (ort-*) run on a choice of runtime"
            ))),
            Some(r) => Ok(Self {
                kind,
                runtime: Some(r.to_string()),
                kv: None,
            }),
        }
        .map(|spec| Self { kv, ..spec })
    }
}

/// Options shared by every backend; each uses what applies to it.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// CPU threads for ONNX Runtime and llama.cpp; `None` lets ONNX Runtime choose and
    /// gives llama.cpp every core.
    pub threads: Option<usize>,
    /// The ONNX Runtime library for every ONNX Runtime backend whose id names no runtime;
    /// `None` means `ORT_DYLIB_PATH`, then the pinned runtime that carries the backend's
    /// provider (fetched from its registry on first use).
    pub ort_library: Option<PathBuf>,
    /// The runtime (id or version) for ONNX Runtime backends whose id names none.
    pub runtime: Option<String>,
    /// Substring of the GPU adapter name to use.
    pub gpu_adapter: Option<String>,
    /// Time every GPU dispatch with timestamps (`Session::profile` then has device time
    /// per kernel class). Slows the GPU backend's steps: for profiling, not for speed.
    pub gpu_profile: bool,
    /// Show progress bars for a first-use download.
    pub progress: bool,
    /// ONNX Runtime execution-provider profile: a built-in name (cpu, webgpu, openvino,
    /// cuda, coreml, xnnpack) or a path to a profile TOML. `None`: the one the backend id
    /// names.
    pub provider: Option<String>,
    /// The profile to run on when `provider`'s cannot run here. `None` is strict: that
    /// is an error.
    pub fallback: Option<String>,
    /// The KV cache's element type on ONNX Runtime and GPU backends (f32, the reference,
    /// unless asked); llama.cpp keeps its own (f16).
    pub kv_cache: KvPrecision,
    /// ONNX Runtime: allocate the whole budget on every layer, as before sliding layers
    /// were kept at window size; comparisons use it as the baseline.
    pub full_kv_cache: bool,
}

impl LoadOptions {
    /// The ONNX Runtime library of the default runtime these options load (see
    /// [`ort_library`]).
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

/// The ONNX Runtime library of the default runtime: the explicit one, `ORT_DYLIB_PATH`,
/// the cached one, or a fresh download of the pinned wheel from PyPI.
pub fn ort_library(opts: &LoadOptions) -> Result<PathBuf> {
    if let Some(p) = &opts.ort_library {
        return Ok(p.clone());
    }
    let cache = Cache::from_env()?;
    match lockstep_fetch::fetch::onnxruntime_library(&cache) {
        Ok(p) => Ok(p),
        // An explicit ORT_DYLIB_PATH that is wrong stays an error: never silently
        // replace what the user asked for.
        Err(e) if std::env::var_os(ORT_DYLIB_PATH_ENV).is_some() => Err(e),
        Err(_) => lockstep_fetch::fetch::fetch_onnxruntime(&cache, opts.progress),
    }
}

/// The library an ONNX Runtime backend runs and how reports name it: the runtime the id
/// (or `--runtime`) asks for; else `--ort-library` / `ORT_DYLIB_PATH`; else the first
/// pinned runtime that carries `provider` here, fetched on first use.
pub fn ort_runtime(
    runtime: Option<&str>,
    provider: &lockstep_ort::ProviderProfile,
    opts: &LoadOptions,
) -> Result<(PathBuf, String)> {
    let ep = provider.ep_name();
    let manifest = match runtime.or(opts.runtime.as_deref()) {
        Some(r) => RuntimeManifest::find(r, Some(ep))?,
        None => {
            if let Some(p) = &opts.ort_library {
                return Ok((
                    p.clone(),
                    format!("library {} (--ort-library)", p.display()),
                ));
            }
            if let Some(p) = std::env::var_os(ORT_DYLIB_PATH_ENV).filter(|v| !v.is_empty()) {
                let cache = Cache::from_env()?;
                let path =
                    lockstep_fetch::fetch::find_onnxruntime_library(&cache, Some(p.as_os_str()))?;
                return Ok((
                    path.clone(),
                    format!("library {} ({ORT_DYLIB_PATH_ENV})", path.display()),
                ));
            }
            match RuntimeManifest::for_provider(ep) {
                Some(m) => m,
                None => {
                    return Err(Error::Unavailable {
                        backend: provider.backend_id(),
                        reason: format!(
                            "no pinned ONNX Runtime carries {ep} on {}-{}: {}; or pass --fallback cpu to run on the CPU instead",
                            std::env::consts::OS,
                            std::env::consts::ARCH,
                            lockstep_ort::available::how_to_get(provider)
                        ),
                    })
                }
            }
        }
    };
    let cache = Cache::from_env()?;
    let library = match lockstep_fetch::fetch::cached_runtime_library(&manifest, &cache) {
        Some(p) => p,
        None => {
            if opts.progress {
                eprintln!(
                    "lockstep: fetching {} for {} (once)",
                    manifest.package_label(),
                    provider.backend_id()
                );
            }
            lockstep_fetch::fetch::fetch_runtime(&manifest, &cache, opts.progress)?
        }
    };
    Ok((library, manifest.package_label()))
}

/// Loads `model_dir` (a converted model directory) on `kind` with the default runtime.
pub fn load_backend(
    kind: BackendKind,
    model_dir: &Path,
    opts: &LoadOptions,
) -> Result<Arc<dyn Backend>> {
    load_spec(&BackendSpec::new(kind), model_dir, opts)
}

/// Loads `model_dir` on the backend `spec` names (its runtime included).
pub fn load_spec(
    spec: &BackendSpec,
    model_dir: &Path,
    opts: &LoadOptions,
) -> Result<Arc<dyn Backend>> {
    Ok(match spec.kind {
        BackendKind::Gpu => {
            if opts.provider.is_some() || opts.fallback.is_some() {
                return Err(Error::InvalidInput(
                    "--provider and --fallback choose ONNX Runtime execution providers; they do not apply to --backend gpu".into(),
                ));
            }
            let gpu_opts = lockstep_gpu::GpuOptions {
                adapter: opts.gpu_adapter.clone(),
                profile: opts.gpu_profile,
                kv: spec.kv.unwrap_or(opts.kv_cache),
                ..Default::default()
            };
            Arc::new(lockstep_gpu::GpuBackend::load_dir(model_dir, gpu_opts)?)
        }
        BackendKind::LlamaCpp => {
            if spec.kv.is_some_and(|kv| kv != KvPrecision::F16) {
                return Err(Error::InvalidInput(
                    "llama.cpp keeps its KV cache in f16; the llama-cpp backend takes no other KV precision".into(),
                ));
            }
            if opts.provider.is_some() || opts.fallback.is_some() {
                return Err(Error::InvalidInput(
                    "--provider and --fallback choose ONNX Runtime execution providers; they do not apply to --backend llama-cpp".into(),
                ));
            }
            let gguf = llama_cpp_gguf(model_dir, opts.progress)?;
            let llama_opts = lockstep_llamacpp::LlamaCppOptions {
                threads: opts.threads,
            };
            Arc::new(lockstep_llamacpp::LlamaCppBackend::load(
                &gguf,
                &llama_opts,
            )?)
        }
        ort_kind => {
            let choice = opts.provider_choice(ort_kind)?;
            let runtime = spec.runtime.as_deref();
            // A provider no pinned runtime carries here may still fall back: load the
            // fallback's runtime, and the wanted provider is found missing there, as it says.
            let (library, package) = match (
                ort_runtime(runtime, &choice.profile, opts),
                &choice.fallback,
            ) {
                (Err(Error::Unavailable { .. }), Some(fallback)) => {
                    ort_runtime(runtime, fallback, opts)?
                }
                (result, _) => result?,
            };
            let ort_opts = lockstep_ort::OrtOptions {
                threads: opts.threads,
                package: Some(package),
                kv: spec.kv.unwrap_or(opts.kv_cache),
                window_cache: !opts.full_kv_cache,
                ..lockstep_ort::OrtOptions::new(library)
            };
            // `ort` (generic) reports the profile's own id; the named ones their spec.
            let kv_suffix = spec
                .kv
                .map(|kv| format!("{KV_SUFFIX}{kv}"))
                .unwrap_or_default();
            let id = if ort_kind == BackendKind::Ort && spec.runtime.is_none() {
                format!("{}{kv_suffix}", choice.profile.backend_id())
            } else if ort_kind == BackendKind::Ort {
                format!(
                    "{}:{}{kv_suffix}",
                    choice.profile.backend_id(),
                    spec.runtime.as_deref().unwrap_or("")
                )
            } else {
                spec.id()
            };
            let loaded = lockstep_ort::host::load(model_dir, &ort_opts, &choice, &id)?;
            // A fallback is never silent: the backend's device says it, and so does stderr.
            for note in &loaded.notes {
                eprintln!("lockstep: {note}");
            }
            loaded.backend
        }
    })
}

/// The GGUF llama.cpp runs for the converted model in `model_dir`: the original file the
/// model was converted from (found by its sha256 among the built-in models' sources and
/// fetched if the cache lacks it, or lying in `model_dir` itself), or, for a synthetic
/// model, one written from the model's own ONNX weights.
pub fn llama_cpp_gguf(model_dir: &Path, progress: bool) -> Result<PathBuf> {
    let package = lockstep_model::package::ModelPackage::open(model_dir)?;
    let source = &package.manifest.source;
    if source.kind != "gguf" {
        return lockstep_model::convert::package_gguf(&package);
    }
    let sha = source.sha256.as_deref().unwrap_or_default();
    for name in lockstep_fetch::manifest::ModelManifest::builtin_names() {
        let manifest = lockstep_fetch::manifest::ModelManifest::builtin(name)?;
        if manifest.gguf.sha256.eq_ignore_ascii_case(sha) {
            let cache = Cache::from_env()?;
            // A file under its final name was verified when it was written (as
            // FetchedSources::locate trusts it): no second hash of 250 MB per load.
            let cached = cache.sources_dir(&manifest.name).join(&manifest.gguf.file);
            if std::fs::metadata(&cached).is_ok_and(|m| m.len() == manifest.gguf.size) {
                return Ok(cached);
            }
            return lockstep_fetch::fetch::fetch_gguf(&manifest, &cache, progress);
        }
    }
    let beside = model_dir.join(&source.file);
    if !source.file.is_empty() && beside.is_file() {
        let found = lockstep_fetch::cache::sha256_file(&beside)?;
        if found.eq_ignore_ascii_case(sha) {
            return Ok(beside);
        }
    }
    Err(Error::Unavailable {
        backend: BackendKind::LlamaCpp.id().into(),
        reason: format!(
            "it runs the GGUF a model was converted from; {} was converted from '{}' (sha256 {sha}), which is not a built-in model's source: copy that file into {}",
            model_dir.display(),
            source.file,
            model_dir.display()
        ),
    })
}
