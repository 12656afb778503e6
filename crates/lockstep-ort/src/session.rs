//! One sequence on an ONNX Runtime session: its KV cache and the step that extends it.
//!
//! The KV cache is one pre-allocated ONNX Runtime tensor per layer and kind, `[1,
//! kv_heads, max_tokens, head_dim]`, bound through an IoBinding as both the `past_*`
//! input and the `present_*` output. GroupQueryAttention sees the same buffer on both
//! sides and writes the new keys in place (onnxruntime-genai's "past_present_share_buffer"
//! mode), so a step neither copies the cache through Rust nor concatenates it inside
//! ONNX Runtime; the attention mask's length tells it how many positions are valid.
//!
//! Under a GPU provider (WebGPU, CUDA) the buffers are allocated in the provider's device
//! memory, so the cache never crosses to the host: a step uploads its token ids and reads
//! back only the logits it was asked for.
//!
//! Windowed graph (`model.window*.onnx`, CPU provider): the sliding-window layers' buffers
//! hold [`sliding_capacity`] positions instead of the budget, and GroupQueryAttention
//! evicts the oldest rows itself (`sliding_window_cache`); the global layers keep the
//! budget. Rewinding is exact only while the rows it needs were not evicted
//! ([`resident`]), as the op's contract says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lockstep_core::{
    Error, KvPrecision, LayerKind, Logits, ModelConfig, Result, Session, SessionMemory, Want,
};
use lockstep_model::convert::{
    past_key, past_value, present_key, present_value, ATTENTION_MASK, INPUT_IDS, LOGITS,
    LOGITS_TO_KEEP,
};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::IoBinding;
use ort::value::{DynTensor, DynValue, Tensor, TensorElementType};

use crate::runtime_err;

pub(crate) struct OrtSession {
    session: Arc<Mutex<ort::session::Session>>,
    binding: IoBinding,
    /// Where ONNX Runtime allocates the logits, whose shape changes from step to step.
    cpu: MemoryInfo<'static>,
    config: ModelConfig,
    max_tokens: usize,
    len: usize,
    /// Positions the sliding layers' buffers hold when the graph evicts (windowed).
    sliding: Option<usize>,
    /// Per layer: key and value buffers, bound in place; kept alive here.
    _cache: Vec<(DynValue, DynValue)>,
    /// The cache's bytes, counted in the backend's total while the session lives.
    kv_bytes: u64,
    live_kv: Arc<AtomicU64>,
}

impl Drop for OrtSession {
    fn drop(&mut self) {
        self.live_kv.fetch_sub(self.kv_bytes, Ordering::Relaxed);
    }
}

/// How a session's KV cache is laid out: which graph the backend loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KvLayout {
    /// The graph evicts on sliding layers (`sliding_window_cache`).
    pub windowed: bool,
    pub precision: KvPrecision,
}

/// Positions of a sliding layer's buffer in the windowed graph, for a budget of
/// `max_tokens`: window + 512 - 1 for Gemma 3 (window + 256 - 1 when the window is under
/// 256), never more than the budget needs, never under the window (the op's minimum).
///
/// Eviction reclaims `capacity - window + 1` rows at once and moves the kept rows down by
/// that much. A multiple of 256 keeps every key at the same index modulo 256 as in a
/// full-length buffer, where ONNX Runtime's attention blocks its sums; with other shifts
/// (17, 49 measured) logits moved by 1 ulp, with multiples of 4..512 they were bitwise
/// identical to the full-length cache.
pub(crate) fn sliding_capacity(config: &ModelConfig, max_tokens: usize) -> usize {
    let w = config.sliding_window;
    let reclaim = w.div_ceil(256).max(1) * 256;
    max_tokens.max(w).min(w - 1 + reclaim)
}

/// Rows a windowed buffer of `capacity` holds after `total` tokens (the op's L(T)): all of
/// them until it is full, then it drops `capacity - window + 1` rows at a time.
pub(crate) fn resident(total: usize, capacity: usize, window: usize) -> usize {
    if total <= capacity {
        return total;
    }
    let gap = capacity - window + 1;
    total - gap * (total - capacity).div_ceil(gap)
}

/// What a session of `max_tokens` allocates with `layout`.
pub(crate) fn session_memory(
    config: &ModelConfig,
    max_tokens: usize,
    layout: KvLayout,
    device: bool,
) -> SessionMemory {
    let sliding = layout
        .windowed
        .then(|| sliding_capacity(config, max_tokens));
    let mut m = lockstep_core::kv_layout(config, max_tokens, sliding, layout.precision);
    m.device = device;
    m
}

// SAFETY: the IoBinding and the cache tensors are only used while holding `session`'s
// lock (in `forward`), and ONNX Runtime's objects may be used from any thread.
unsafe impl Send for OrtSession {}

fn lock(
    session: &Mutex<ort::session::Session>,
) -> Result<std::sync::MutexGuard<'_, ort::session::Session>> {
    session.lock().map_err(|_| {
        Error::Runtime("the ONNX Runtime session was poisoned by a panic in another thread".into())
    })
}

/// Where a session's KV buffers are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KvMemory {
    Host,
    WebGpu,
    Cuda,
}

impl KvMemory {
    fn device(self) -> Option<AllocationDevice<'static>> {
        match self {
            KvMemory::Host => None,
            KvMemory::WebGpu => Some(AllocationDevice::WEBGPU_BUFFER),
            KvMemory::Cuda => Some(AllocationDevice::CUDA),
        }
    }
}

impl OrtSession {
    pub(crate) fn new(
        session: Arc<Mutex<ort::session::Session>>,
        config: ModelConfig,
        max_tokens: usize,
        kv: KvMemory,
        layout: KvLayout,
        live_kv: Arc<AtomicU64>,
    ) -> Result<Self> {
        let err = runtime_err("cannot allocate the KV cache");
        let sliding = layout
            .windowed
            .then(|| sliding_capacity(&config, max_tokens));
        let element = match layout.precision {
            KvPrecision::F32 => TensorElementType::Float32,
            KvPrecision::F16 => TensorElementType::Float16,
        };
        let (binding, cache, cpu) = {
            let guard = lock(&session)?;
            let mut binding = guard.create_binding().map_err(&err)?;
            let device_allocator = match kv.device() {
                None => None,
                Some(device) => {
                    let info =
                        MemoryInfo::new(device, 0, AllocatorType::Device, MemoryType::Default)
                            .map_err(&err)?;
                    Some(Allocator::new(&guard, info).map_err(|e| {
                        Error::Runtime(format!(
                            "ONNX Runtime cannot allocate the KV cache in {kv:?} device memory: {e}"
                        ))
                    })?)
                }
            };
            let allocator = device_allocator.as_ref().unwrap_or(guard.allocator());
            let mut cache = Vec::with_capacity(config.num_layers);
            for l in 0..config.num_layers {
                let positions = match (config.layer_kind(l), sliding) {
                    (LayerKind::Sliding, Some(s)) => s,
                    _ => max_tokens,
                };
                let shape = [1usize, config.num_kv_heads, positions, config.head_dim];
                let mut k = DynTensor::new(allocator, element, shape)
                    .map_err(&err)?
                    .into_dyn();
                let mut v = DynTensor::new(allocator, element, shape)
                    .map_err(&err)?
                    .into_dyn();
                binding.bind_input(past_key(l), &k).map_err(&err)?;
                binding.bind_input(past_value(l), &v).map_err(&err)?;
                binding.bind_output(present_key(l), &mut k).map_err(&err)?;
                binding
                    .bind_output(present_value(l), &mut v)
                    .map_err(&err)?;
                cache.push((k, v));
            }
            let cpu = MemoryInfo::new(
                AllocationDevice::CPU,
                0,
                AllocatorType::Device,
                MemoryType::Default,
            )
            .map_err(&err)?;
            (binding, cache, cpu)
        };
        let kv_bytes = session_memory(&config, max_tokens, layout, kv != KvMemory::Host).kv_bytes;
        live_kv.fetch_add(kv_bytes, Ordering::Relaxed);
        Ok(Self {
            session,
            binding,
            cpu,
            config,
            max_tokens,
            len: 0,
            sliding,
            _cache: cache,
            kv_bytes,
            live_kv,
        })
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        crate::check_step(&self.config, self.len, self.max_tokens, tokens)
    }
}

#[async_trait]
impl Session for OrtSession {
    async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Logits> {
        self.check_tokens(tokens)?;
        let total = self.len + tokens.len();
        let err = runtime_err("inference failed");
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::from_array(([1usize, tokens.len()], ids)).map_err(&err)?;
        let mask = Tensor::from_array(([1usize, total], vec![1i64; total])).map_err(&err)?;
        let keep = if want == Want::Last { 1i64 } else { 0 };
        let keep = Tensor::from_array(([1usize], vec![keep])).map_err(&err)?;
        let mut session = lock(&self.session)?;
        self.binding.bind_input(INPUT_IDS, &ids).map_err(&err)?;
        self.binding
            .bind_input(ATTENTION_MASK, &mask)
            .map_err(&err)?;
        self.binding
            .bind_input(LOGITS_TO_KEEP, &keep)
            .map_err(&err)?;
        // Re-bound every step: a bound output keeps the previous step's shape.
        self.binding
            .bind_output_to_device(LOGITS, &self.cpu)
            .map_err(&err)?;
        let outputs = session.run_binding(&self.binding).map_err(&err)?;
        let logits = outputs.get(LOGITS).ok_or_else(|| {
            let names: Vec<&str> = outputs.keys().collect();
            Error::Runtime(format!("the model returned no logits (outputs: {names:?})"))
        })?;
        let (_, data) = logits.try_extract_tensor::<f32>().map_err(&err)?;
        let logits = Logits::new(self.config.vocab_size, data.to_vec());
        drop(outputs);
        self.len = total;
        Ok(logits)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Positions past `len` stay in the buffers but are outside the attention mask, and
    /// the next step overwrites them. With window-sized buffers that holds only while no
    /// eviction happened between `len` and now: the op lays rows out by the total alone,
    /// so going back past an eviction would attend to the wrong rows.
    fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(Error::InvalidInput(format!(
                "cannot truncate a session of {} tokens to {len}",
                self.len
            )));
        }
        if let Some(cap) = self.sliding {
            let w = self.config.sliding_window;
            let back = self.len - len;
            if resident(len, cap, w) + back != resident(self.len, cap, w) {
                return Err(Error::InvalidInput(format!(
                    "cannot rewind the ONNX Runtime session from {} to {len} tokens: its sliding-window \
                     layers keep {cap} positions and have dropped rows that position {len} needs; start a \
                     new session and run the first {len} tokens again",
                    self.len
                )));
            }
        }
        self.len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_buffers_hold_window_plus_512_minus_1_and_never_more_than_needed() {
        let c = ModelConfig::gemma3_270m();
        assert_eq!(sliding_capacity(&c, 32_768), 1023);
        assert_eq!(sliding_capacity(&c, 800), 800);
        // The op's minimum is the window, even for a smaller budget.
        assert_eq!(sliding_capacity(&c, 100), 512);
    }

    #[test]
    fn resident_rows_follow_the_ops_contract() {
        // C = 1023, W = 512: eviction reclaims 512 rows at a time.
        assert_eq!(resident(1023, 1023, 512), 1023);
        assert_eq!(resident(1024, 1023, 512), 512);
        assert_eq!(resident(1535, 1023, 512), 1023);
        assert_eq!(resident(1536, 1023, 512), 512);
        // Never fewer than the window once full.
        for t in 512..5000 {
            let l = resident(t, 1023, 512);
            assert!((512..=1023).contains(&l), "{t}: {l}");
        }
    }
}
