//! The ONNX Runtime backend: one `ort` session per loaded model, one KV cache per
//! lockstep session, the execution provider chosen by a profile.

pub mod available;
pub mod host;
mod mapped;
pub mod placement;
pub mod profile;
mod runtime;
mod session;
mod session_static;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lockstep_core::{
    Backend, BackendInfo, Error, KvPrecision, MemoryPart, MemoryReport, ModelConfig, Result,
    Session, SessionMemory, SessionOptions,
};
use lockstep_model::package::ModelPackage;
use ort::session::builder::{AutoDevicePolicy, GraphOptimizationLevel};

pub use available::{
    availability, available_providers, providers_report, Availability, ProvidersReport,
};
pub use placement::{Method, PlacementReport};
pub use profile::ProviderProfile;
pub use runtime::{
    loaded_library, minimum_version, probe as probe_library, version as runtime_version,
};

/// How to build the ONNX Runtime session.
#[derive(Debug, Clone)]
pub struct OrtOptions {
    /// The ONNX Runtime shared library (see `lockstep_fetch::fetch::onnxruntime_library`).
    pub library: PathBuf,
    /// Intra-op threads; `None` lets ONNX Runtime use one per physical core.
    pub threads: Option<usize>,
    /// Where the library came from, for reports: `onnxruntime 1.32.0 (PyPI)`.
    pub package: Option<String>,
    /// The KV cache's element type (a numeric mode; f32 is the reference).
    pub kv: KvPrecision,
    /// Keep the sliding-window layers' cache at window size where the runtime and provider
    /// support it (the default); `false` allocates the whole budget on every layer, as
    /// before, which comparisons use as the baseline.
    pub window_cache: bool,
}

impl OrtOptions {
    pub fn new(library: impl Into<PathBuf>) -> Self {
        Self {
            library: library.into(),
            threads: None,
            package: None,
            kv: KvPrecision::F32,
            window_cache: true,
        }
    }
}

/// The oldest ONNX Runtime whose CPU GroupQueryAttention was measured to evict on its own
/// (`sliding_window_cache`): 1.31.1, token-identical to the full-length cache.
const WINDOW_CACHE_MIN: (u32, u32) = (1, 31);

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    Some((
        it.next()?.trim().parse().ok()?,
        it.next()?.trim().parse().ok()?,
    ))
}

/// Which provider profile to run on, and what may replace it when it cannot run here.
#[derive(Debug, Clone)]
pub struct ProviderChoice {
    pub profile: ProviderProfile,
    /// Strict when `None`: a provider that cannot run here is an error.
    pub fallback: Option<ProviderProfile>,
}

impl ProviderChoice {
    pub fn cpu() -> Self {
        Self {
            profile: ProviderProfile::cpu(),
            fallback: None,
        }
    }
}

/// A converted model loaded into ONNX Runtime with one provider profile.
pub struct OrtBackend {
    session: Arc<Mutex<ort::session::Session>>,
    /// The `coreml` variant's prefill graph (`session` is then its decode graph).
    prefill: Option<Arc<Mutex<ort::session::Session>>>,
    config: ModelConfig,
    info: BackendInfo,
    fallback: Option<String>,
    cpu_nodes: Option<String>,
    /// Where sessions keep their KV cache.
    kv: session::KvMemory,
    /// Which cache layout and precision the loaded graph has.
    layout: session::KvLayout,
    /// Bytes of the live sessions' KV buffers.
    live_kv: Arc<AtomicU64>,
}

pub(crate) fn runtime_err(what: &str) -> impl Fn(ort::Error) -> Error + '_ {
    move |e| Error::Runtime(format!("ONNX Runtime: {what}: {e}"))
}

/// Builds an ONNX Runtime session for `model_path` with `profile`'s provider, and with
/// ONNX Runtime's profiling written under `profiling` when given.
fn build_session(
    env: &ort::environment::Environment,
    model_path: &Path,
    profile: &ProviderProfile,
    threads: Option<usize>,
    profiling: Option<&Path>,
) -> Result<ort::session::Session> {
    let err = runtime_err("cannot create a session");
    // PreferCPU never auto-registers a provider: `ort`'s default policy would add CoreML
    // on macOS, and the cpu profile must mean the CPU. The profile's provider is then
    // registered explicitly, and a failure to register is an error.
    let mut builder = ort::session::Session::builder(env)
        .map_err(&err)?
        .with_auto_device(AutoDevicePolicy::PreferCPU)
        .map_err(|e| err(e.into()))?
        .with_execution_providers([profile.dispatch(threads)?])
        .map_err(|e| {
            Error::Runtime(format!(
                "ONNX Runtime cannot register {} for the {} profile: {e}",
                profile.ep_name(),
                profile.name
            ))
        })?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| err(e.into()))?;
    let env_profile = std::env::var("LOCKSTEP_ORT_PROFILE")
        .ok()
        .map(PathBuf::from);
    if let Some(prefix) = profiling.map(Path::to_path_buf).or(env_profile) {
        // ONNX Runtime's own per-node timings and placement.
        builder = builder.with_profiling(prefix).map_err(|e| err(e.into()))?;
    }
    // Session config entries to try without a rebuild (`key=value,key=value`, e.g.
    // `session.intra_op.allow_spinning=0`): BENCHMARKS.md measures them this way.
    if let Ok(entries) = std::env::var("LOCKSTEP_ORT_CONFIG") {
        for entry in entries.split(',').filter(|e| !e.trim().is_empty()) {
            let (key, value) = entry.split_once('=').ok_or_else(|| {
                Error::InvalidInput(format!(
                    "LOCKSTEP_ORT_CONFIG entry '{entry}' is not key=value"
                ))
            })?;
            builder = builder
                .with_config_entry(key.trim(), value.trim())
                .map_err(|e| err(e.into()))?;
        }
    }
    if let Some(threads) = threads {
        if threads == 0 {
            return Err(Error::InvalidInput("--threads must be at least 1".into()));
        }
        builder = builder
            .with_intra_threads(threads)
            .map_err(|e| err(e.into()))?;
    }
    builder.commit_from_file(model_path).map_err(|e| {
        Error::Runtime(format!(
            "ONNX Runtime cannot load {} with {}: {e}",
            model_path.display(),
            profile.ep_name()
        ))
    })
}

/// The one-line error for a provider that cannot run here, with what to do.
fn unavailable(profile: &ProviderProfile, reason: &str) -> Error {
    Error::Unavailable {
        backend: profile.backend_id(),
        reason: format!("{reason}; or pass --fallback cpu to run on the CPU instead"),
    }
}

impl OrtBackend {
    /// Loads `model_dir` on the CPU profile.
    pub fn load(model_dir: &Path, opts: &OrtOptions) -> Result<Self> {
        Self::load_with(model_dir, opts, &ProviderChoice::cpu())
    }

    /// Loads `model_dir` on `choice`'s profile. A profile whose provider cannot run here
    /// is an error unless a fallback is given; then the fallback runs, and the backend's
    /// id, device and [`OrtBackend::fallback`] say so.
    pub fn load_with(model_dir: &Path, opts: &OrtOptions, choice: &ProviderChoice) -> Result<Self> {
        let package = ModelPackage::open(model_dir)?;
        let env = runtime::environment(&opts.library)?;
        let wanted = &choice.profile;
        let avail = availability(wanted, env);
        let (profile, fallback) = if avail.runnable {
            (wanted, None)
        } else {
            let Some(fb) = &choice.fallback else {
                return Err(unavailable(wanted, &avail.reason));
            };
            let fb_avail = availability(fb, env);
            if !fb_avail.runnable {
                return Err(Error::Unavailable {
                    backend: wanted.backend_id(),
                    reason: format!(
                        "{}; the fallback {} cannot run either: {}",
                        avail.reason, fb.name, fb_avail.reason
                    ),
                });
            }
            let short = if avail.built_in {
                format!("{} did not register", wanted.ep_name())
            } else {
                format!("not built with {}", wanted.ep_name())
            };
            let note = format!(
                "{} is not available in this ONNX Runtime ({short}): running on {}, as --fallback {} allows",
                wanted.name, fb.name, fb.name
            );
            (fb, Some(note))
        };
        let version = available::library_version(&opts.library);
        // GroupQueryAttention evicts by itself only in the CPU kernel (WebGPU and CUDA reject
        // the attribute or want capacity == window; OpenVINO compiles the op itself).
        let cpu_attention = matches!(
            profile.kind(),
            profile::EpKind::Cpu(_) | profile::EpKind::Xnnpack(_) | profile::EpKind::CoreMl(_)
        );
        let windowed = opts.window_cache
            && cpu_attention
            && parse_version(&version).is_some_and(|v| v >= WINDOW_CACHE_MIN)
            && package.kv_graph_path(true, opts.kv).is_some();
        let layout = session::KvLayout {
            windowed,
            precision: opts.kv,
        };
        let graph = match package.kv_graph_path(windowed, opts.kv) {
            Some(p) => p,
            None if opts.kv == KvPrecision::F32 => package.model_path(),
            None => {
                return Err(Error::InvalidInput(format!(
                    "{} has no graph with an {} KV cache (a coreml conversion has only f32)",
                    model_dir.display(),
                    opts.kv
                )))
            }
        };
        let session = build_session(env, &graph, profile, opts.threads, None)?;
        let released = mapped::release(&model_dir.join(lockstep_model::package::DATA_FILE));
        tracing::debug!(
            mib = released as f64 / (1 << 20) as f64,
            "weights ONNX Runtime keeps mapped after pre-packing, dropped from memory"
        );
        let prefill = session_static::prefill_path(&package)
            .map(|p| build_session(env, &p, profile, opts.threads, None))
            .transpose()?
            .map(|s| Arc::new(Mutex::new(s)));
        let threads = opts
            .threads
            .map(|t| format!("{t} threads"))
            .unwrap_or_else(|| "default threads".into());
        // Under a non-CPU provider, nodes it does not take run on the CPU: say which.
        let cpu_nodes = if profile.is_cpu() {
            None
        } else {
            placement::predict(&package.model_path(), profile, "at load")
                .ok()
                .filter(|r| r.on_cpu() > 0)
                .map(|r| {
                    format!(
                        "{} of {} nodes predicted on the CPU ({}); `lockstep inspect --provider {}` measures it",
                        r.on_cpu(),
                        r.total(),
                        r.cpu_ops().join(", "),
                        profile.name
                    )
                })
        };
        let mut device = match profile.kind() {
            profile::EpKind::Cpu(_) => format!("CPU ({threads})"),
            profile::EpKind::WebGpu(o) => format!(
                "GPU through Dawn ({}), KV cache in {} memory; CPU ops on {threads}",
                match o.dawn_backend {
                    Some(profile::DawnBackend::Vulkan) => "Vulkan",
                    Some(profile::DawnBackend::D3D12) => "D3D12",
                    None if cfg!(target_os = "macos") => "Metal",
                    None if cfg!(windows) => "D3D12",
                    None => "Vulkan",
                },
                if o.kv_cache == profile::KvPlacement::Device {
                    "GPU"
                } else {
                    "host"
                }
            ),
            profile::EpKind::Cuda(o) => format!(
                "NVIDIA GPU {} (CUDA), KV cache in {} memory; CPU ops on {threads}",
                o.device_id,
                if o.kv_cache == profile::KvPlacement::Device {
                    "GPU"
                } else {
                    "host"
                }
            ),
            profile::EpKind::OpenVino(o) => format!(
                "OpenVINO device {}{}",
                o.device_type,
                o.precision
                    .as_deref()
                    .map(|p| format!(", precision {p}"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "{} with CPU fallback for unsupported nodes ({threads})",
                profile.ep_name()
            ),
        };
        let kv = match (profile.kind(), profile.kv_placement()) {
            (profile::EpKind::WebGpu(_), profile::KvPlacement::Device) => session::KvMemory::WebGpu,
            (profile::EpKind::Cuda(_), profile::KvPlacement::Device) => session::KvMemory::Cuda,
            _ => session::KvMemory::Host,
        };
        if let Some(note) = &fallback {
            device = format!("{device}; fallback: {note}");
        }
        if let Some(n) = &cpu_nodes {
            device = format!("{device}; {n}");
        }
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
            prefill,
            config: package.manifest.config.clone(),
            info: BackendInfo {
                id: profile.backend_id(),
                runtime: format!("ONNX Runtime {version}"),
                device,
                precision: format!(
                    "int4 weights (int8 embedding), accuracy_level {}; {}; KV cache {}{}",
                    package.manifest.quantization.accuracy_level,
                    profile
                        .numerics
                        .as_deref()
                        .unwrap_or("the provider's own numerics"),
                    opts.kv,
                    if windowed {
                        ", sliding layers at window size"
                    } else {
                        ""
                    }
                ),
                package: Some(
                    opts.package
                        .clone()
                        .unwrap_or_else(|| format!("library {}", opts.library.display())),
                ),
                provider: Some(profile.ep_name().to_string()),
                process: None,
            },
            fallback,
            cpu_nodes,
            kv,
            layout,
            live_kv: Arc::default(),
        })
    }

    /// Why this backend runs on a fallback profile, when it does.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Under a non-CPU provider: which nodes are predicted to run on the CPU.
    pub fn cpu_nodes(&self) -> Option<&str> {
        self.cpu_nodes.as_deref()
    }
}

/// Placement of `model_dir`'s nodes under `profile`: measured (one forward pass with
/// ONNX Runtime's profiling on) when the provider runs here, predicted otherwise.
/// `predict_only` skips the measurement (a prediction says what the profile declares).
pub fn inspect_placement(
    model_dir: &Path,
    opts: &OrtOptions,
    profile: &ProviderProfile,
    predict_only: bool,
) -> Result<PlacementReport> {
    let package = ModelPackage::open(model_dir)?;
    if predict_only {
        return placement::predict(&package.model_path(), profile, "--predict");
    }
    let env = runtime::environment(&opts.library)?;
    let avail = availability(profile, env);
    if !avail.runnable {
        let why = if avail.built_in {
            avail.reason
        } else {
            format!("{} is not in this ONNX Runtime", profile.ep_name())
        };
        return placement::predict(&package.model_path(), profile, &why);
    }
    let dir = std::env::temp_dir().join(format!("lockstep-placement-{}", std::process::id()));
    lockstep_fetch::cache::create_dir_all(&dir)?;
    let result = measure(&package, env, opts, profile, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(
    package: &ModelPackage,
    env: &ort::environment::Environment,
    opts: &OrtOptions,
    profile: &ProviderProfile,
    dir: &Path,
) -> Result<PlacementReport> {
    let session = build_session(
        env,
        &package.model_path(),
        profile,
        opts.threads,
        Some(&dir.join("placement")),
    )?;
    let backend = OrtBackend {
        session: Arc::new(Mutex::new(session)),
        prefill: None,
        config: package.manifest.config.clone(),
        info: BackendInfo {
            id: profile.backend_id(),
            runtime: String::new(),
            device: String::new(),
            precision: String::new(),
            ..Default::default()
        },
        fallback: None,
        cpu_nodes: None,
        kv: session::KvMemory::Host,
        layout: session::KvLayout {
            windowed: false,
            precision: KvPrecision::F32,
        },
        live_kv: Arc::default(),
    };
    let bos = backend.config.bos_token_id;
    pollster::block_on(async {
        let mut s = backend.session(SessionOptions::with_max_tokens(8)).await?;
        s.forward(&[bos, bos, bos, bos], lockstep_core::Want::Last)
            .await
            .map(|_| ())
    })?;
    let file = backend
        .session
        .lock()
        .map_err(|_| Error::Runtime("the ONNX Runtime session lock is poisoned".into()))?
        .end_profiling()
        .map_err(runtime_err("cannot end profiling"))?;
    let json = std::fs::read_to_string(&file)
        .map_err(|e| Error::io("cannot read ONNX Runtime's profile", &file, e))?;
    let nodes = lockstep_model::onnx::OnnxFile::open(&package.model_path())?
        .graph()
        .node
        .len();
    placement::from_profile_json(&json, profile, nodes)
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
        if session_static::is_static(&self.session) {
            return Ok(Box::new(session_static::StaticSession::new(
                Arc::clone(&self.session),
                self.prefill.clone(),
                self.config.clone(),
                opts.max_tokens,
            )?));
        }
        Ok(Box::new(session::OrtSession::new(
            Arc::clone(&self.session),
            self.config.clone(),
            opts.max_tokens,
            self.kv,
            self.layout,
            Arc::clone(&self.live_kv),
        )?))
    }

    fn memory(&self) -> MemoryReport {
        let bytes = self.live_kv.load(Ordering::Relaxed);
        MemoryReport {
            parts: vec![MemoryPart {
                what: "KV cache (live sessions)".into(),
                bytes,
                device: self.kv != session::KvMemory::Host,
            }],
        }
    }

    fn session_memory(&self, opts: &SessionOptions) -> Option<SessionMemory> {
        if session_static::is_static(&self.session) {
            return None;
        }
        Some(session::session_memory(
            &self.config,
            opts.max_tokens,
            self.layout,
            self.kv != session::KvMemory::Host,
        ))
    }
}

pub(crate) use lockstep_core::check_step;
