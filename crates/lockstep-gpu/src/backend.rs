//! The `gpu` backend: weights uploaded once, pipelines built once, sessions on top.

use std::path::Path;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use lockstep_core::{
    Backend, BackendInfo, Error, KvPrecision, MemoryPart, MemoryReport, ModelConfig, Result,
    Session, SessionMemory, SessionOptions,
};
use lockstep_model::weights::ModelWeights;

use crate::context::GpuContext;
use crate::kernels::Kernels;
use crate::session::GpuSession;
use crate::upload::GpuWeights;

/// How to open the GPU and shape sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuOptions {
    /// Use the first adapter whose name contains this (case-insensitive); default: the
    /// best one (discrete GPU, then integrated, then a CPU driver such as lavapipe).
    pub adapter: Option<String>,
    /// Most tokens one step runs at once (prefill longer than this runs in several steps).
    /// Activation buffers and the `Want::All` logits buffer are sized by it.
    pub max_batch: usize,
    /// Ring slots the sliding-window layers keep beyond what a step needs: how much further
    /// back than `max_batch` tokens `Session::truncate` can always rewind.
    pub ring_history: usize,
    /// Split the embedding / LM head into chunks of at most this many rows (default: as
    /// large as the device's binding limit allows). Tests use it to exercise chunking.
    pub max_embed_chunk_rows: Option<usize>,
    /// Time every dispatch with GPU timestamps (see [`GpuSession::profile`]). Costs a
    /// read-back per step; ignored where the device has no timestamps inside passes.
    pub profile: bool,
    /// Submit the next greedy one-token step before the host has read the current one's id
    /// (see `GpuSession`'s run-ahead). Off only to measure what it gains.
    pub run_ahead: bool,
    /// Fewest 32-key tiles one split-K attention workgroup takes: contexts up to this many
    /// tiles run in one workgroup per head and need no combine pass.
    pub attention_min_tiles: usize,
    /// Steps of at least this many tokens run the tiled prefill matmul.
    pub tiled_min_tokens: usize,
    /// The KV cache's element type: f32 (the reference) or f16 (half the memory; keys and
    /// values rounded to f16 when written, everything else f32).
    pub kv: KvPrecision,
    /// Sum with subgroup operations where the adapter has them (subgroups of at least 8);
    /// off: always the workgroup-memory path (tests compare the two).
    pub subgroups: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            adapter: None,
            max_batch: 512,
            ring_history: 512,
            max_embed_chunk_rows: None,
            profile: false,
            run_ahead: true,
            attention_min_tiles: 1,
            tiled_min_tokens: crate::kernels::TILED_MIN_TOKENS,
            kv: KvPrecision::F32,
            subgroups: true,
        }
    }
}

/// What sessions share: device, pipelines, weights.
pub(crate) struct Inner {
    pub ctx: GpuContext,
    pub kernels: Kernels,
    pub weights: GpuWeights,
    pub config: ModelConfig,
    pub opts: GpuOptions,
    pub projection_bits: u8,
    /// Device bytes of the live sessions' buffers.
    pub live_session_bytes: AtomicU64,
}

/// The model on a GPU through wgpu (Vulkan, Metal, D3D12), with our own WGSL kernels.
#[derive(Clone)]
pub struct GpuBackend {
    inner: Arc<Inner>,
}

impl GpuBackend {
    /// Opens the GPU, builds the pipelines and uploads `weights` in their quantized form.
    /// Without a usable adapter this is `Error::Unavailable`, saying what to install.
    pub fn load(weights: ModelWeights, opts: GpuOptions) -> Result<Self> {
        let ctx = GpuContext::new(opts.adapter.as_deref(), opts.profile, opts.subgroups)?;
        let mut defined: Vec<&'static str> = Vec::new();
        if opts.kv == KvPrecision::F16 {
            defined.push("kv_f16");
        }
        if ctx.subgroups {
            defined.push("subgroups");
        }
        if opts.kv == KvPrecision::F16 && !weights.config.head_dim.is_multiple_of(8) {
            return Err(Error::InvalidInput(format!(
                "the gpu backend's f16 KV cache needs a head_dim divisible by 8 (this model's is {}); use the f32 cache",
                weights.config.head_dim
            )));
        }
        if opts.profile && !ctx.timestamps {
            tracing::warn!(
                "{} has no timestamp queries inside compute passes: no profile",
                ctx.describe()
            );
        }
        let kernels = Kernels::new(&ctx.device, &defined)?;
        let projection_bits = crate::upload::projection_bits(&weights);
        let gpu_weights = GpuWeights::upload(&ctx, &weights, opts.max_embed_chunk_rows)?;
        tracing::info!(
            device = %ctx.describe(),
            weights_mib = gpu_weights.bytes as f64 / (1 << 20) as f64,
            embed_chunks = gpu_weights.embed.len(),
            "gpu backend loaded"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                kernels,
                weights: gpu_weights,
                config: weights.config,
                opts,
                projection_bits,
                live_session_bytes: AtomicU64::new(0),
            }),
        })
    }

    /// Loads a converted model directory (reads the INT4/INT8 weights out of its ONNX file).
    pub fn load_dir(model_dir: &Path, opts: GpuOptions) -> Result<Self> {
        Self::load(ModelWeights::load(model_dir)?, opts)
    }

    /// Whether the kernels sum with subgroup operations (the adapter has them, with
    /// subgroups of at least 8 invocations, and `GpuOptions::subgroups` allows them).
    pub fn uses_subgroups(&self) -> bool {
        self.inner.ctx.subgroups
    }

    /// A session as its concrete type (the `Backend` trait returns it boxed).
    pub fn new_session(&self, opts: SessionOptions) -> Result<GpuSession> {
        GpuSession::new(self.inner.clone(), opts.max_tokens)
    }
}

#[async_trait::async_trait]
impl Backend for GpuBackend {
    fn info(&self) -> BackendInfo {
        let info = &self.inner.ctx.info;
        let driver = [info.driver.as_str(), info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        BackendInfo {
            // As the facade writes ids: a KV precision other than f32 after `+kv-`.
            id: match self.inner.opts.kv {
                KvPrecision::F32 => "gpu".into(),
                kv => format!("gpu+kv-{kv}"),
            },
            runtime: if driver.is_empty() {
                "wgpu 27".into()
            } else {
                format!("wgpu 27 ({driver})")
            },
            device: self.inner.ctx.describe(),
            precision: {
                let weights = match self.inner.projection_bits {
                    4 => "int4 weights (int8 embedding)".to_string(),
                    b => format!("int{b} weights"),
                };
                format!(
                    "{weights}, f32 compute; KV cache {}, sliding layers in a ring",
                    self.inner.opts.kv
                )
            },
            ..Default::default()
        }
    }

    fn config(&self) -> &ModelConfig {
        &self.inner.config
    }

    async fn session(&self, opts: SessionOptions) -> Result<Box<dyn Session>> {
        Ok(Box::new(self.new_session(opts)?))
    }

    fn memory(&self) -> MemoryReport {
        MemoryReport {
            parts: vec![
                MemoryPart {
                    what: "weights".into(),
                    bytes: self.inner.weights.device_bytes(),
                    device: true,
                },
                MemoryPart {
                    what: "sessions (KV cache and working buffers)".into(),
                    bytes: self.inner.live_session_bytes.load(Ordering::Relaxed),
                    device: true,
                },
            ],
        }
    }

    fn session_memory(&self, opts: &SessionOptions) -> Option<SessionMemory> {
        Some(crate::session::plan(&self.inner, opts.max_tokens))
    }
}
