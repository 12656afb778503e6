//! Execution-provider profiles: `providers/*.toml`, compiled in, or any TOML file given by
//! path. A profile names one ONNX Runtime execution provider, its options (each one maps
//! onto an `ort::ep` builder call), and the ops it declares it can run, which is what
//! `inspect` predicts placement from where the provider is not in the library.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use lockstep_core::{Error, Result};
use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};
use serde::{Deserialize, Serialize};

/// The compiled-in profiles, so that the binary works from any directory.
const BUILTIN: [(&str, &str); 8] = [
    ("cpu", include_str!("../../../providers/cpu.toml")),
    ("webgpu", include_str!("../../../providers/webgpu.toml")),
    ("openvino", include_str!("../../../providers/openvino.toml")),
    (
        "openvino_accuracy",
        include_str!("../../../providers/openvino_accuracy.toml"),
    ),
    (
        "openvino_bf16",
        include_str!("../../../providers/openvino_bf16.toml"),
    ),
    ("cuda", include_str!("../../../providers/cuda.toml")),
    ("coreml", include_str!("../../../providers/coreml.toml")),
    ("xnnpack", include_str!("../../../providers/xnnpack.toml")),
];

/// One execution provider and how to configure it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderProfile {
    /// Short name: `--provider NAME`, and the backend id `ort-NAME`.
    pub name: String,
    pub description: String,
    /// Exactly one of the provider sections below; its key picks the provider.
    pub cpu: Option<CpuOptions>,
    pub coreml: Option<CoreMlOptions>,
    pub cuda: Option<CudaOptions>,
    pub xnnpack: Option<XnnpackOptions>,
    pub webgpu: Option<WebGpuOptions>,
    pub openvino: Option<OpenVinoOptions>,
    /// The numeric mode the provider computes in, in words, for reports (`f32`, or what
    /// differs from the CPU provider's f32 reference).
    pub numerics: Option<String>,
    /// What the provider declares it can run (for predicted placement).
    pub support: OpSupport,
    /// "built-in" or the file the profile came from (set by the loader, whatever the file
    /// says).
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CpuOptions {
    /// `ep::CPU::with_arena_allocator`.
    #[serde(default = "yes")]
    pub arena_allocator: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum ModelFormat {
    MLProgram,
    NeuralNetwork,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum ComputeUnits {
    All,
    CPUAndNeuralEngine,
    CPUAndGPU,
    CPUOnly,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum SpecializationStrategy {
    Default,
    FastPrediction,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CoreMlOptions {
    /// `ep::CoreML::with_model_format`.
    pub model_format: ModelFormat,
    /// `with_compute_units`.
    pub compute_units: ComputeUnits,
    /// `with_static_input_shapes`: only nodes with static input shapes go to Core ML.
    #[serde(default)]
    pub static_input_shapes: bool,
    /// `with_model_cache_dir`; `{cache}` is lockstep's cache directory.
    pub model_cache_dir: Option<String>,
    /// `with_subgraphs`.
    #[serde(default)]
    pub subgraphs: bool,
    /// `with_specialization_strategy`.
    pub specialization_strategy: Option<SpecializationStrategy>,
    /// `with_low_precision_accumulation_on_gpu`.
    pub low_precision_accumulation_on_gpu: Option<bool>,
    /// `with_profile_compute_plan`.
    #[serde(default)]
    pub profile_compute_plan: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CudaOptions {
    /// `ep::CUDA::with_device_id`.
    #[serde(default)]
    pub device_id: i32,
    /// `with_memory_limit`, bytes.
    pub memory_limit: Option<usize>,
    /// `with_tf32`.
    #[serde(default)]
    pub tf32: bool,
    /// `with_cuda_graph`.
    #[serde(default)]
    pub cuda_graph: bool,
    /// Where the KV cache lives between steps: `device` (CUDA memory, bound in place) or
    /// `host`.
    #[serde(default = "device_kv")]
    pub kv_cache: KvPlacement,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XnnpackOptions {
    /// `ep::XNNPACK::with_intra_op_num_threads`.
    pub intra_op_num_threads: Option<NonZeroUsize>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum DawnBackend {
    Vulkan,
    D3D12,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum WebGpuValidation {
    Disabled,
    WgpuOnly,
    Basic,
    Full,
}

/// ONNX Runtime's WebGPU execution provider (Dawn).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebGpuOptions {
    /// `dawnBackendType`: unset lets Dawn choose (Vulkan on Linux, Metal on macOS, D3D12
    /// on Windows).
    pub dawn_backend: Option<DawnBackend>,
    /// `deviceId`.
    pub device_id: Option<i32>,
    /// `validationMode`: Dawn's API validation; `disabled` is fastest.
    pub validation: Option<WebGpuValidation>,
    /// Where the KV cache lives between steps: `device` (WebGPU buffers, bound in place:
    /// no host round trip per step) or `host`.
    #[serde(default = "device_kv")]
    pub kv_cache: KvPlacement,
    /// Further provider options, passed to ONNX Runtime verbatim.
    #[serde(default)]
    pub extra: std::collections::BTreeMap<String, String>,
}

/// ONNX Runtime's OpenVINO execution provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpenVinoOptions {
    /// `device_type`: `CPU`, `GPU`, `NPU`, `GPU.0`, `AUTO:GPU,CPU`, `HETERO:GPU,CPU`.
    pub device_type: String,
    /// `precision`: `FP32`, `FP16` or `ACCURACY` (OpenVINO's execution-mode hint).
    pub precision: Option<String>,
    /// `num_of_threads`; unset: lockstep's --threads, else OpenVINO's default.
    pub num_threads: Option<usize>,
    /// `num_streams`.
    pub num_streams: Option<u8>,
    /// `cache_dir`: compiled models are cached here, so a second load skips the compile;
    /// `{cache}` is lockstep's cache directory.
    pub cache_dir: Option<String>,
    /// `load_config`: OpenVINO properties per device, e.g.
    /// `{ CPU = { INFERENCE_PRECISION_HINT = "f32" } }`, passed as JSON.
    #[serde(default)]
    pub load_config: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// Further provider options, passed to ONNX Runtime verbatim.
    #[serde(default)]
    pub extra: std::collections::BTreeMap<String, String>,
}

/// Where an execution provider's session keeps the KV cache between steps.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KvPlacement {
    /// In host memory, one buffer per layer bound as both past and present.
    Host,
    /// In the provider's device memory, bound the same way.
    Device,
}

fn device_kv() -> KvPlacement {
    KvPlacement::Device
}

/// The ops a provider declares it runs. Ops are written `OpType` for the standard ONNX
/// domain and `domain.OpType` otherwise (`com.microsoft.MatMulNBits`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpSupport {
    /// Every op (the CPU provider, which has a kernel for everything).
    #[serde(default)]
    pub all_ops: bool,
    #[serde(default)]
    pub ops: Vec<String>,
    /// Ops named as not supported, so that a report can say so rather than "not listed".
    #[serde(default)]
    pub unsupported: Vec<String>,
    /// The largest input dimension the provider accepts.
    pub max_dim: Option<i64>,
}

/// The provider section of a profile, resolved.
#[derive(Debug, Clone, Copy)]
pub enum EpKind<'a> {
    Cpu(&'a CpuOptions),
    CoreMl(&'a CoreMlOptions),
    Cuda(&'a CudaOptions),
    Xnnpack(&'a XnnpackOptions),
    WebGpu(&'a WebGpuOptions),
    OpenVino(&'a OpenVinoOptions),
}

impl ProviderProfile {
    /// The built-in profile names.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// Every built-in profile.
    pub fn builtins() -> Vec<ProviderProfile> {
        BUILTIN
            .iter()
            .map(|(name, text)| {
                Self::from_toml_str(text, "built-in")
                    .unwrap_or_else(|e| panic!("built-in provider profile {name} is invalid: {e}"))
            })
            .collect()
    }

    pub fn builtin(name: &str) -> Option<ProviderProfile> {
        Self::builtins().into_iter().find(|p| p.name == name)
    }

    /// The CPU profile, the default.
    pub fn cpu() -> ProviderProfile {
        Self::builtin("cpu").expect("the cpu profile is built in")
    }

    /// A built-in name, or a path to a profile TOML file.
    pub fn resolve(name_or_path: &str) -> Result<ProviderProfile> {
        if let Some(p) = Self::builtin(name_or_path) {
            return Ok(p);
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") || path.is_file() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io("cannot read the provider profile", path, e))?;
            return Self::from_toml_str(&text, &path.display().to_string());
        }
        Err(Error::InvalidInput(format!(
            "unknown provider '{name_or_path}'; built-in providers: {} (or a path to a profile .toml)",
            Self::builtin_names().join(", ")
        )))
    }

    pub fn from_toml_str(text: &str, source: &str) -> Result<ProviderProfile> {
        let mut p: ProviderProfile = toml::from_str(text).map_err(|e| {
            let msg = e.message().replace('\n', " ");
            Error::InvalidInput(format!("provider profile {source}: {msg}"))
        })?;
        p.source = source.to_string();
        let sections = [
            p.cpu.is_some(),
            p.coreml.is_some(),
            p.cuda.is_some(),
            p.xnnpack.is_some(),
            p.webgpu.is_some(),
            p.openvino.is_some(),
        ];
        if sections.iter().filter(|s| **s).count() != 1 {
            return Err(Error::InvalidInput(format!(
                "provider profile {source}: needs exactly one provider section ([cpu], [webgpu], [openvino], [cuda], [coreml] or [xnnpack])"
            )));
        }
        if p.name.is_empty()
            || !p
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::InvalidInput(format!(
                "provider profile {source}: name '{}' must be letters, digits or _",
                p.name
            )));
        }
        Ok(p)
    }

    pub fn kind(&self) -> EpKind<'_> {
        if let Some(o) = &self.cpu {
            EpKind::Cpu(o)
        } else if let Some(o) = &self.coreml {
            EpKind::CoreMl(o)
        } else if let Some(o) = &self.cuda {
            EpKind::Cuda(o)
        } else if let Some(o) = &self.xnnpack {
            EpKind::Xnnpack(o)
        } else if let Some(o) = &self.webgpu {
            EpKind::WebGpu(o)
        } else if let Some(o) = &self.openvino {
            EpKind::OpenVino(o)
        } else {
            unreachable!("checked at parse time")
        }
    }

    /// ONNX Runtime's name for the provider (`CoreMLExecutionProvider`).
    pub fn ep_name(&self) -> &'static str {
        match self.kind() {
            EpKind::Cpu(_) => ep::CPU::NAME,
            EpKind::CoreMl(_) => ep::CoreML::NAME,
            EpKind::Cuda(_) => ep::CUDA::NAME,
            EpKind::Xnnpack(_) => ep::XNNPACK::NAME,
            EpKind::WebGpu(_) => ep::WebGPU::NAME,
            EpKind::OpenVino(_) => ep::OpenVINO::NAME,
        }
    }

    /// Where the session keeps the KV cache between steps.
    pub fn kv_placement(&self) -> KvPlacement {
        match self.kind() {
            EpKind::WebGpu(o) => o.kv_cache,
            EpKind::Cuda(o) => o.kv_cache,
            _ => KvPlacement::Host,
        }
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self.kind(), EpKind::Cpu(_))
    }

    /// The backend id: `ort-cpu`, `ort-coreml`, `ort-openvino-accuracy` (a `_` in the
    /// profile name is a `-` in the id).
    pub fn backend_id(&self) -> String {
        format!("ort-{}", self.name.replace('_', "-"))
    }

    /// Whether the provider only takes nodes whose input shapes are static.
    pub fn requires_static_shapes(&self) -> bool {
        matches!(self.kind(), EpKind::CoreMl(o) if o.static_input_shapes)
    }

    /// The `ort` provider, configured from the profile; registration errors are errors,
    /// never a silent fall back to the CPU.
    pub fn dispatch(&self, threads: Option<usize>) -> Result<ExecutionProviderDispatch> {
        let d = match self.kind() {
            EpKind::Cpu(o) => ep::CPU::default()
                .with_arena_allocator(o.arena_allocator)
                .build(),
            EpKind::CoreMl(o) => {
                let mut b = ep::CoreML::default()
                    .with_model_format(match o.model_format {
                        ModelFormat::MLProgram => ep::coreml::ModelFormat::MLProgram,
                        ModelFormat::NeuralNetwork => ep::coreml::ModelFormat::NeuralNetwork,
                    })
                    .with_compute_units(match o.compute_units {
                        ComputeUnits::All => ep::coreml::ComputeUnits::All,
                        ComputeUnits::CPUAndNeuralEngine => {
                            ep::coreml::ComputeUnits::CPUAndNeuralEngine
                        }
                        ComputeUnits::CPUAndGPU => ep::coreml::ComputeUnits::CPUAndGPU,
                        ComputeUnits::CPUOnly => ep::coreml::ComputeUnits::CPUOnly,
                    })
                    .with_static_input_shapes(o.static_input_shapes)
                    .with_subgraphs(o.subgraphs)
                    .with_profile_compute_plan(o.profile_compute_plan);
                if let Some(dir) = &o.model_cache_dir {
                    let dir = expand_cache(dir)?;
                    lockstep_fetch::cache::create_dir_all(&dir)?;
                    b = b.with_model_cache_dir(dir.display());
                }
                if let Some(s) = o.specialization_strategy {
                    b = b.with_specialization_strategy(match s {
                        SpecializationStrategy::Default => {
                            ep::coreml::SpecializationStrategy::Default
                        }
                        SpecializationStrategy::FastPrediction => {
                            ep::coreml::SpecializationStrategy::FastPrediction
                        }
                    });
                }
                if let Some(v) = o.low_precision_accumulation_on_gpu {
                    b = b.with_low_precision_accumulation_on_gpu(v);
                }
                b.build()
            }
            EpKind::Cuda(o) => {
                let mut b = ep::CUDA::default()
                    .with_device_id(o.device_id)
                    .with_tf32(o.tf32)
                    .with_cuda_graph(o.cuda_graph);
                if let Some(limit) = o.memory_limit {
                    b = b.with_memory_limit(limit);
                }
                b.build()
            }
            EpKind::Xnnpack(o) => {
                let mut b = ep::XNNPACK::default();
                if let Some(n) = o.intra_op_num_threads {
                    b = b.with_intra_op_num_threads(n);
                }
                b.build()
            }
            EpKind::WebGpu(o) => {
                use ep::ArbitrarilyConfigurableExecutionProvider;
                let mut b = ep::WebGPU::default();
                if let Some(d) = o.dawn_backend {
                    b = b.with_dawn_backend_type(match d {
                        DawnBackend::Vulkan => ep::webgpu::DawnBackendType::Vulkan,
                        DawnBackend::D3D12 => ep::webgpu::DawnBackendType::D3D12,
                    });
                }
                if let Some(id) = o.device_id {
                    b = b.with_device_id(id);
                }
                if let Some(v) = o.validation {
                    b = b.with_validation_mode(match v {
                        WebGpuValidation::Disabled => ep::webgpu::ValidationMode::Disabled,
                        WebGpuValidation::WgpuOnly => ep::webgpu::ValidationMode::WgpuOnly,
                        WebGpuValidation::Basic => ep::webgpu::ValidationMode::Basic,
                        WebGpuValidation::Full => ep::webgpu::ValidationMode::Full,
                    });
                }
                for (k, v) in &o.extra {
                    b = b.with_arbitrary_config(k, v);
                }
                b.build()
            }
            EpKind::OpenVino(o) => {
                use ep::ArbitrarilyConfigurableExecutionProvider;
                let mut b = ep::OpenVINO::default().with_device_type(&o.device_type);
                if let Some(p) = &o.precision {
                    b = b.with_precision(p);
                }
                if let Some(n) = o.num_threads.or(threads) {
                    b = b.with_num_threads(n);
                }
                if let Some(n) = o.num_streams {
                    b = b.with_num_streams(n);
                }
                if let Some(dir) = &o.cache_dir {
                    let dir = expand_cache(dir)?;
                    lockstep_fetch::cache::create_dir_all(&dir)?;
                    b = b.with_cache_dir(dir.display());
                }
                if !o.load_config.is_empty() {
                    let json = serde_json::to_string(&o.load_config).map_err(|e| {
                        Error::InvalidInput(format!(
                            "provider profile {}: load_config: {e}",
                            self.source
                        ))
                    })?;
                    b = b.with_arbitrary_config("load_config", json);
                }
                for (k, v) in &o.extra {
                    b = b.with_arbitrary_config(k, v);
                }
                b.build()
            }
        };
        Ok(d.error_on_failure())
    }

    /// Whether the profile names `domain`/`op_type` as supported, unsupported, or neither.
    pub fn declares(&self, domain: &str, op_type: &str) -> Declared {
        let key = op_key(domain, op_type);
        let s = &self.support;
        if s.unsupported.contains(&key) {
            Declared::Unsupported
        } else if s.all_ops || s.ops.contains(&key) {
            Declared::Supported
        } else {
            Declared::NotListed
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Supported,
    Unsupported,
    NotListed,
}

/// `MatMul` for the standard domain, `com.microsoft.MatMulNBits` otherwise.
pub fn op_key(domain: &str, op_type: &str) -> String {
    if domain.is_empty() || domain == "ai.onnx" {
        op_type.to_string()
    } else {
        format!("{domain}.{op_type}")
    }
}

fn expand_cache(dir: &str) -> Result<PathBuf> {
    if dir.contains("{cache}") {
        let cache = lockstep_fetch::cache::Cache::from_env()?;
        Ok(PathBuf::from(
            dir.replace("{cache}", &cache.root().display().to_string()),
        ))
    } else {
        Ok(PathBuf::from(dir))
    }
}
