//! One sequence on the GPU: its KV cache, its activation buffers, its bind groups (built
//! once, at session creation) and the encoding of a step.
//!
//! A step is up to `max_batch` tokens: one command encoder, one compute pass, one submit,
//! and one read-back of exactly what the caller wants (one u32 for a greedy step, the last
//! row of logits for a sampling step, every row for teacher forcing). Longer inputs are cut
//! into steps.
//!
//! KV cache: global layers keep `max_tokens` positions; sliding layers keep a ring of
//! `window + max_batch - 1 + ring_history` slots (position p in slot p % cap). The
//! `max_batch - 1` extra slots let one step write all its keys before any of its queries
//! attends without clobbering a key an earlier query of the step still needs. `truncate`
//! can rewind as long as the window before the new end is still in the ring (at least
//! `max_batch + ring_history` tokens back); further back it returns an error, and the
//! caller re-runs the prompt in a new session.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use lockstep_core::{
    Error, HostTime, KernelTime, LayerKind, Logits, Result, Session, StepProfile, Want,
};

use crate::backend::Inner;
use crate::kernels::{
    attention_split, bind, ARGMAX_GROUPS, ATTN_MIN_SLOTS, GEGLU_WG, MATMUL_ROWS, MATMUL_TOKENS,
    MATVEC_ROWS, MAX_LOGIT_ROWS, TILED_ROWS, TILED_TOKENS,
};
use crate::upload::{uniform, GpuMatrix};

/// The step's dynamic values (every kernel's `Batch`): tokens, first position, first row.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Batch {
    m: u32,
    pos0: u32,
    row0: u32,
    pad: u32,
}

/// qk_norm_rope.wgsl and attention.wgsl `Params` (rope ignores `window` and `scale`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttnParams {
    nh: u32,
    nkv: u32,
    hd: u32,
    cap: u32,
    /// rope: eps; attention: window (0 = global), as bits.
    eps_or_window: u32,
    scale: f32,
    /// attention: partial results per query head the scratch buffers hold.
    slots: u32,
    /// attention: fewest key tiles per split-K chunk.
    min_tiles: u32,
}

/// GPU time per kernel class, from timestamps written around every dispatch.
struct Profiler {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period: f64,
    totals: Vec<KernelTime>,
}

impl Profiler {
    fn new(device: &wgpu::Device, queue: &wgpu::Queue, max_dispatches: usize) -> Self {
        let count = 2 * max_dispatches as u32;
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: count as u64 * 8,
                usage,
                mapped_at_creation: false,
            })
        };
        Self {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolved: buffer(
                "timestamps",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            staging: buffer(
                "timestamps staging",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            period: queue.get_timestamp_period() as f64,
            totals: Vec::new(),
        }
    }

    fn record(
        &mut self,
        device: &wgpu::Device,
        index: &wgpu::SubmissionIndex,
        labels: &[&'static str],
        host: &mut HostTime,
    ) -> Result<()> {
        let bytes = read_back(device, &self.staging, labels.len() as u64 * 16, index, host)?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        for (i, &label) in labels.iter().enumerate() {
            let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * self.period;
            let entry = match self.totals.iter_mut().position(|t| t.kernel == label) {
                Some(j) => &mut self.totals[j],
                None => {
                    self.totals.push(KernelTime {
                        kernel: label.to_string(),
                        dispatches: 0,
                        total: Default::default(),
                    });
                    self.totals.last_mut().unwrap()
                }
            };
            entry.dispatches += 1;
            entry.total += std::time::Duration::from_nanos(ns as u64);
        }
        Ok(())
    }
}

/// argmax.wgsl's NON_FINITE: the row held a NaN or an infinity.
const NON_FINITE: u32 = 0xffff_fffe;

/// What a step reads back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Readout {
    Nothing,
    Logits,
    Argmax,
}

/// A submitted step whose results are not read yet.
struct Submitted {
    index: wgpu::SubmissionIndex,
    readout: Readout,
    read_bytes: u64,
    /// Which of `argmax_staging` holds the id (argmax readouts only).
    argmax_slot: usize,
    labels: Vec<&'static str>,
}

/// Run-ahead greedy decoding. A greedy step ends by copying its argmax id into the
/// `tokens` buffer, so the next one-token step can be submitted before the host has even
/// read that id: the GPU computes step t+1 while the host reads step t's id, returns it,
/// and the loop detokenizes it and checks its stop rules. When the loop then asks for
/// exactly that token (greedy always does), the step is already running; anything else
/// (another token, a sampling step, truncate) discards it. Discarding costs nothing but
/// the GPU time: the step wrote only position `pos` of the KV cache, which the session
/// does not count as held, and which the next step at that position overwrites.
struct RunAhead {
    submitted: Submitted,
    /// Its position: the session's `len` when it was submitted.
    pos: usize,
    /// The token it runs (the previous step's argmax), once the host has read that id.
    input: Option<u32>,
}

struct LayerGroups {
    attn_norm: wgpu::BindGroup,
    qkv: wgpu::BindGroup,
    rope: wgpu::BindGroup,
    attention: wgpu::BindGroup,
    o: wgpu::BindGroup,
    /// Post-attention norm + residual + pre-FFN norm (add_norm.wgsl).
    post_attn: wgpu::BindGroup,
    gate_up: wgpu::BindGroup,
    /// gate|up straight into the activation (one-token steps: matvec_geglu).
    gate_up_act: wgpu::BindGroup,
    geglu: wgpu::BindGroup,
    down: wgpu::BindGroup,
    /// Post-FFN norm + residual, fused with the next layer's input norm (add_norm.wgsl)
    /// except on the last layer (rmsnorm_add).
    post_ffn: wgpu::BindGroup,
}

/// A sequence's KV cache and working buffers on the GPU.
pub struct GpuSession {
    inner: Arc<Inner>,
    max_tokens: usize,
    len: usize,
    max_batch: usize,
    logit_rows: usize,
    ring_cap: usize,
    /// The position each ring slot of the sliding layers holds (`usize::MAX`: none).
    ring_owner: Vec<usize>,
    tokens: wgpu::Buffer,
    batch: wgpu::Buffer,
    lm_batch: wgpu::Buffer,
    logits: wgpu::Buffer,
    argmax: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// Two small read-back buffers for argmax ids, so that the id of one greedy step can be
    /// read while the next step, already submitted, still needs the other.
    argmax_staging: [wgpu::Buffer; 2],
    /// The `argmax_staging` buffer the next argmax read-back uses.
    argmax_slot: usize,
    /// A greedy step submitted ahead of the caller's request (see [`RunAhead`]).
    ahead: Option<RunAhead>,
    /// Whether greedy steps may be submitted ahead (off while profiling: the profiler reads
    /// each step's timestamps as it completes).
    run_ahead: bool,
    embed_groups: Vec<wgpu::BindGroup>,
    layer_groups: Vec<LayerGroups>,
    final_norm_group: wgpu::BindGroup,
    lm_groups: Vec<wgpu::BindGroup>,
    argmax_group: wgpu::BindGroup,
    /// Partial attention results per query head the split-K scratch holds.
    attn_slots: usize,
    profiler: Option<Profiler>,
    /// Host time, steps and tokens since the session began or its profile was reset.
    host: HostTime,
    steps: u64,
    tokens_run: u64,
    /// Bytes of the buffers this session allocated (KV cache, working buffers), counted in
    /// the backend's device total while it lives.
    device_bytes: u64,
}

impl Drop for GpuSession {
    fn drop(&mut self) {
        self.inner
            .live_session_bytes
            .fetch_sub(self.device_bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a session of `max_tokens` allocates, computed as [`GpuSession::new`] sizes its
/// buffers (a test holds the two equal).
pub(crate) fn plan(inner: &Inner, max_tokens: usize) -> lockstep_core::SessionMemory {
    let c = &inner.config;
    let max_binding = inner.ctx.max_binding_bytes();
    let max_batch = inner.opts.max_batch.clamp(1, max_tokens.max(1));
    let logit_rows = max_batch
        .min(MAX_LOGIT_ROWS)
        .min((max_binding / (4 * c.vocab_size as u64)) as usize)
        .max(1);
    let ring_cap = (c.sliding_window + max_batch - 1 + inner.opts.ring_history).min(max_tokens);
    let b = max_batch;
    let (h, q, kv, f) = (c.hidden_size, c.q_size(), c.kv_size(), c.intermediate_size);
    let attn_slots = max_batch.max(ATTN_MIN_SLOTS);
    let f32s = |n: usize| (n.max(1) * 4) as u64;
    let working: u64 = [
        b,
        b * h,
        b * h,
        b * (q + 2 * kv),
        b * q,
        b * q,
        b * h,
        b * 2 * f,
        b * f,
        logit_rows * h,
        logit_rows * c.vocab_size,
        1,
        2 * ARGMAX_GROUPS as usize,
        attn_slots * c.num_heads * c.head_dim,
        attn_slots * c.num_heads * 2,
    ]
    .into_iter()
    .map(f32s)
    .sum::<u64>()
        + f32s(logit_rows * c.vocab_size) // staging
        + 2 * 4 // the two argmax read-back buffers
        + 2 * std::mem::size_of::<Batch>() as u64
        + (2 * c.num_layers * std::mem::size_of::<AttnParams>()) as u64;
    let mut m = lockstep_core::kv_layout(c, max_tokens, Some(ring_cap), inner.opts.kv);
    m.working_bytes = working;
    m.device = true;
    m
}

impl GpuSession {
    pub(crate) fn new(inner: Arc<Inner>, max_tokens: usize) -> Result<Self> {
        let c = &inner.config;
        if max_tokens == 0 {
            return Err(Error::InvalidInput(
                "a session needs a KV budget of at least 1 token".into(),
            ));
        }
        if max_tokens > c.context_length {
            return Err(Error::ContextOverflow {
                needed: max_tokens,
                limit: c.context_length,
                limit_name: "the model's context length",
            });
        }
        let ctx = &inner.ctx;
        let device = &ctx.device;
        let max_binding = ctx.max_binding_bytes();
        let max_batch = inner.opts.max_batch.clamp(1, max_tokens);
        let logit_rows = max_batch
            .min(MAX_LOGIT_ROWS)
            .min((max_binding / (4 * c.vocab_size as u64)) as usize)
            .max(1);
        let ring_cap = (c.sliding_window + max_batch - 1 + inner.opts.ring_history).min(max_tokens);
        let kv_bytes = (max_tokens * c.kv_size() * inner.opts.kv.bytes()) as u64;
        if kv_bytes > max_binding {
            return Err(Error::InvalidInput(format!(
                "a KV budget of {max_tokens} tokens needs {kv_bytes} bytes per layer, over this GPU's \
                 {max_binding}-byte binding limit; lower --max-tokens"
            )));
        }

        device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        // Every buffer this session creates, for the backend's device-memory report.
        let tally = std::cell::Cell::new(0u64);
        let counted = |b: wgpu::Buffer| {
            tally.set(tally.get() + b.size());
            b
        };
        let f32s = |label: &str, n: usize| {
            counted(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (n.max(1) * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }))
        };
        let b = max_batch;
        let (h, q, kv, f) = (c.hidden_size, c.q_size(), c.kv_size(), c.intermediate_size);
        let tokens = f32s("tokens", b);
        let x = f32s("x", b * h);
        let xn = f32s("xn", b * h);
        let qkv = f32s("qkv", b * (q + 2 * kv));
        let q_rot = f32s("q", b * q);
        let att = f32s("att", b * q);
        let proj = f32s("proj", b * h);
        let gu = f32s("gate_up", b * 2 * f);
        let act = f32s("act", b * f);
        let xf = f32s("xf", logit_rows * h);
        let logits = f32s("logits", logit_rows * c.vocab_size);
        let argmax = f32s("argmax", 1);
        let argmax_part = f32s("argmax partials", 2 * ARGMAX_GROUPS as usize);
        // Split-K attention scratch: partial (max, sum, output) per chunk and query head.
        let attn_slots = max_batch.max(ATTN_MIN_SLOTS);
        let part_acc = f32s("attention partials", attn_slots * c.num_heads * c.head_dim);
        let part_ml = f32s("attention partial max/sum", attn_slots * c.num_heads * 2);
        let staging = counted(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: logits.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }));
        let batch_buffer = |label| {
            counted(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: std::mem::size_of::<Batch>() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }))
        };
        let batch = batch_buffer("batch");
        let lm_batch = batch_buffer("lm batch");
        let id_staging = |label| {
            counted(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 4,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }))
        };
        let argmax_staging = [
            id_staging("argmax staging 0"),
            id_staging("argmax staging 1"),
        ];

        let w = &inner.weights;
        let k = &inner.kernels;
        let attn_params = |kind: LayerKind, rope: bool| {
            let (cap, window) = match kind {
                LayerKind::Sliding => (ring_cap, c.sliding_window),
                LayerKind::Global => (max_tokens, 0),
            };
            let p = AttnParams {
                nh: c.num_heads as u32,
                nkv: c.num_kv_heads as u32,
                hd: c.head_dim as u32,
                cap: cap as u32,
                eps_or_window: if rope {
                    c.rms_norm_eps.to_bits()
                } else {
                    window as u32
                },
                scale: c.attn_scale,
                slots: attn_slots as u32,
                min_tiles: inner.opts.attention_min_tiles as u32,
            };
            counted(uniform(device, "attention params", &p))
        };
        let add_norm = |w_post: &wgpu::Buffer, w_next: &wgpu::Buffer| {
            bind(
                device,
                &k.add_norm,
                "add_norm",
                &[&w.norm_params, &batch, &proj, w_post, &x, w_next, &xn],
            )
        };
        let mut layer_groups = Vec::new();
        for (i, lw) in w.layers.iter().enumerate() {
            let cap = match lw.kind {
                LayerKind::Sliding => ring_cap,
                LayerKind::Global => max_tokens,
            };
            // f16: two values a word (qk_norm_rope.wgsl's pairs).
            let kv_words = cap * kv * inner.opts.kv.bytes() / 4;
            let k_cache = f32s("k cache", kv_words);
            let v_cache = f32s("v cache", kv_words);
            let inv_freq = match lw.kind {
                LayerKind::Sliding => &w.inv_freq_local,
                LayerKind::Global => &w.inv_freq_global,
            };
            let rope_params = attn_params(lw.kind, true);
            let att_params = attn_params(lw.kind, false);
            let mm = |m: &GpuMatrix, input: &wgpu::Buffer, out: &wgpu::Buffer| {
                bind(
                    device,
                    &k.matmul,
                    "matmul",
                    &[&m.params, &batch, &m.data, &m.scales, input, out],
                )
            };
            let norm = |weight: &wgpu::Buffer, input: &wgpu::Buffer, out: &wgpu::Buffer| {
                bind(
                    device,
                    &k.rmsnorm,
                    "rmsnorm",
                    &[&w.norm_params, &batch, input, weight, out],
                )
            };
            layer_groups.push(LayerGroups {
                attn_norm: norm(&lw.attn_norm, &x, &xn),
                qkv: mm(&lw.qkv, &xn, &qkv),
                rope: bind(
                    device,
                    &k.rope,
                    "rope",
                    &[
                        &rope_params,
                        &batch,
                        &qkv,
                        &lw.q_norm,
                        &lw.k_norm,
                        inv_freq,
                        &q_rot,
                        &k_cache,
                        &v_cache,
                    ],
                ),
                attention: bind(
                    device,
                    &k.attention,
                    "attention",
                    &[
                        &att_params,
                        &batch,
                        &q_rot,
                        &k_cache,
                        &v_cache,
                        &part_acc,
                        &part_ml,
                        &att,
                    ],
                ),
                o: mm(&lw.o, &att, &proj),
                post_attn: add_norm(&lw.post_attn_norm, &lw.pre_ffn_norm),
                gate_up: mm(&lw.gate_up, &xn, &gu),
                gate_up_act: mm(&lw.gate_up, &xn, &act),
                geglu: bind(
                    device,
                    &k.geglu,
                    "geglu",
                    &[&w.geglu_params, &batch, &gu, &act],
                ),
                down: mm(&lw.down, &act, &proj),
                post_ffn: match w.layers.get(i + 1) {
                    Some(next) => add_norm(&lw.post_ffn_norm, &next.attn_norm),
                    None => norm(&lw.post_ffn_norm, &proj, &x),
                },
            });
        }
        let embed_groups = w
            .embed
            .iter()
            .map(|ch| {
                let m = &ch.matrix;
                bind(
                    device,
                    &k.embed,
                    "embed",
                    &[&ch.embed_params, &batch, &tokens, &m.data, &m.scales, &x],
                )
            })
            .collect();
        let lm_groups = w
            .embed
            .iter()
            .map(|ch| {
                let m = &ch.matrix;
                bind(
                    device,
                    &k.matmul,
                    "lm head",
                    &[&m.params, &lm_batch, &m.data, &m.scales, &xf, &logits],
                )
            })
            .collect();
        let final_norm_group = bind(
            device,
            &k.rmsnorm,
            "final norm",
            &[&w.norm_params, &lm_batch, &x, &w.final_norm, &xf],
        );
        let argmax_group = bind(
            device,
            &k.argmax,
            "argmax",
            &[&w.argmax_params, &lm_batch, &logits, &argmax, &argmax_part],
        );
        if let Some(e) = pollster::block_on(device.pop_error_scope()) {
            return Err(Error::Runtime(format!(
                "could not allocate a {max_tokens}-token session on the GPU: {e}"
            )));
        }
        let device_bytes = tally.get();
        inner
            .live_session_bytes
            .fetch_add(device_bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            device_bytes,
            max_tokens,
            len: 0,
            max_batch,
            logit_rows,
            ring_cap,
            ring_owner: vec![usize::MAX; ring_cap],
            tokens,
            batch,
            lm_batch,
            logits,
            argmax,
            staging,
            argmax_staging,
            argmax_slot: 0,
            ahead: None,
            run_ahead: inner.opts.run_ahead && !ctx.timestamps,
            embed_groups,
            layer_groups,
            final_norm_group,
            lm_groups,
            argmax_group,
            attn_slots,
            profiler: ctx.timestamps.then(|| {
                // Every dispatch a step can make: embedding and LM head chunks, 12 per layer,
                // the final norm and the argmax's two stages.
                let dispatches = 2 * w.embed.len() + 12 * w.layers.len() + 3;
                Profiler::new(device, &ctx.queue, dispatches)
            }),
            host: HostTime::default(),
            steps: 0,
            tokens_run: 0,
            inner,
        })
    }

    /// Runs `tokens` in steps; returns the logits `want` asks for, or with `greedy` only the
    /// argmax of the last position (as a one-value "row").
    fn run(&mut self, tokens: &[u32], want: Want, greedy: bool) -> Result<Vec<f32>> {
        self.discard_ahead();
        let c = &self.inner.config;
        if tokens.is_empty() {
            return Err(Error::InvalidInput(
                "forward needs at least one token".into(),
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let needed = self.len + tokens.len();
        if needed > self.max_tokens {
            return Err(Error::ContextOverflow {
                needed,
                limit: self.max_tokens,
                limit_name: "the session's KV budget",
            });
        }
        let step = if want == Want::All {
            self.logit_rows.min(self.max_batch)
        } else {
            self.max_batch
        };
        let mut out = Vec::new();
        let steps = tokens.chunks(step).count();
        for (i, chunk) in tokens.chunks(step).enumerate() {
            let last = i + 1 == steps;
            let (lm_rows, readout) = match (want, last, greedy) {
                (_, true, true) => (1, Readout::Argmax),
                (Want::All, _, _) => (chunk.len(), Readout::Logits),
                (Want::Last, true, false) => (1, Readout::Logits),
                (Want::Last, false, _) => (0, Readout::Nothing),
            };
            let submitted = self.submit(Some(chunk), chunk.len(), lm_rows, readout)?;
            self.commit(chunk.len());
            if readout == Readout::Argmax {
                self.submit_ahead()?;
            }
            out.extend(self.collect(submitted)?);
        }
        if greedy {
            self.ahead_knows(out[0].to_bits());
        }
        Ok(out)
    }

    /// A greedy one-token step that the run-ahead step already computes, if `tokens` is
    /// exactly what it runs: commits it, submits the next one, and returns its id.
    fn greedy_ahead(&mut self, tokens: &[u32]) -> Result<Option<u32>> {
        let hit = matches!(&self.ahead, Some(a) if a.pos == self.len && tokens.len() == 1
            && a.input == Some(tokens[0]));
        if !hit {
            return Ok(None);
        }
        let ahead = self.ahead.take().expect("checked above");
        self.commit(1);
        self.submit_ahead()?;
        let id = self.collect(ahead.submitted)?[0].to_bits();
        self.ahead_knows(id);
        Ok(Some(id))
    }

    /// Submits a one-token greedy step at the current end whose input is the previous
    /// step's argmax, still on the device; nothing when the budget has no room for it.
    fn submit_ahead(&mut self) -> Result<()> {
        if self.run_ahead && self.len < self.max_tokens {
            let submitted = self.submit(None, 1, 1, Readout::Argmax)?;
            self.ahead = Some(RunAhead {
                submitted,
                pos: self.len,
                input: None,
            });
        }
        Ok(())
    }

    /// The host now knows the id the run-ahead step runs; a non-finite marker means the
    /// step ran garbage, so it is dropped.
    fn ahead_knows(&mut self, id: u32) {
        if id == NON_FINITE {
            self.discard_ahead();
        } else if let Some(a) = &mut self.ahead {
            a.input = Some(id);
        }
    }

    /// Forgets a run-ahead step. It wrote position `pos` of the KV cache; in a sliding
    /// layer's ring that slot held an older position, which is gone now.
    fn discard_ahead(&mut self) {
        if let Some(a) = self.ahead.take() {
            let slot = a.pos % self.ring_cap;
            if self.ring_owner[slot] != a.pos {
                self.ring_owner[slot] = usize::MAX;
            }
        }
    }

    /// Counts `m` tokens computed by the last submitted step as held by the session.
    fn commit(&mut self, m: usize) {
        for p in self.len..self.len + m {
            self.ring_owner[p % self.ring_cap] = p;
        }
        self.len += m;
    }

    /// Encodes and submits one step of `m` tokens at positions `len..` (the next run-ahead
    /// step when one is in flight), the LM head on the last `lm_rows` of them. `tokens`:
    /// the ids, or `None` for a one-token step whose id the previous step left in the
    /// `tokens` buffer.
    fn submit(
        &mut self,
        tokens: Option<&[u32]>,
        m: usize,
        lm_rows: usize,
        readout: Readout,
    ) -> Result<Submitted> {
        let started = std::time::Instant::now();
        let inner = self.inner.clone();
        let (c, k, queue) = (&inner.config, &inner.kernels, &inner.ctx.queue);
        let pos0 = self.len;
        if let Some(tokens) = tokens {
            queue.write_buffer(&self.tokens, 0, bytemuck::cast_slice(tokens));
        }
        let batch = Batch {
            m: m as u32,
            pos0: pos0 as u32,
            row0: 0,
            pad: 0,
        };
        queue.write_buffer(&self.batch, 0, bytemuck::bytes_of(&batch));
        let lm = Batch {
            m: lm_rows as u32,
            pos0: pos0 as u32,
            row0: (m - lm_rows) as u32,
            pad: 0,
        };
        queue.write_buffer(&self.lm_batch, 0, bytemuck::bytes_of(&lm));

        let mut enc = inner.ctx.device.create_command_encoder(&Default::default());
        // Kernel class of each dispatch, in order: for the profiler.
        let mut labels: Vec<&'static str> = Vec::new();
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step"),
                timestamp_writes: None,
            });
            let timer = self.profiler.as_ref().map(|p| &p.queries);
            let mut run = |label: &'static str,
                           pipeline: &wgpu::ComputePipeline,
                           group: &wgpu::BindGroup,
                           x: usize,
                           y: usize| {
                let i = labels.len() as u32;
                labels.push(label);
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, group, &[]);
                if let Some(q) = timer {
                    pass.write_timestamp(q, 2 * i);
                }
                pass.dispatch_workgroups(x as u32, y as u32, 1);
                if let Some(q) = timer {
                    pass.write_timestamp(q, 2 * i + 1);
                }
            };
            let matmul = |mat: &GpuMatrix, rows: usize| {
                let tiled = rows >= inner.opts.tiled_min_tokens;
                let entry = match (mat.bits, rows, tiled) {
                    (4, 1, _) => "matvec_q4",
                    (4, _, false) => "matmul_q4",
                    (4, _, true) => "matmul_tiled_q4",
                    (_, 1, _) => "matvec_q8",
                    (_, _, false) => "matmul_q8",
                    (_, _, true) => "matmul_tiled_q8",
                };
                let (rows_per_group, tokens_per_group) = match (rows, tiled) {
                    (1, _) => (MATVEC_ROWS, 1),
                    (_, false) => (MATMUL_ROWS, MATMUL_TOKENS),
                    (_, true) => (TILED_ROWS, TILED_TOKENS),
                };
                (
                    entry,
                    k.matmul.pipeline(entry),
                    mat.n.div_ceil(rows_per_group as usize),
                    rows.div_ceil(tokens_per_group as usize),
                )
            };
            let embed = k.embed.pipeline("embed_q8");
            for g in &self.embed_groups {
                run("embed", embed, g, m, 1);
            }
            let (norm, norm_add) = (
                k.rmsnorm.pipeline("rmsnorm"),
                k.rmsnorm.pipeline("rmsnorm_add"),
            );
            let heads = c.num_heads;
            let add_norm = k.add_norm.pipeline("add_norm");
            let layers = inner.weights.layers.len();
            for (i, (lw, g)) in inner
                .weights
                .layers
                .iter()
                .zip(&self.layer_groups)
                .enumerate()
            {
                if i == 0 {
                    // Later layers' input norms are fused into the previous post-FFN join.
                    run("rmsnorm", norm, &g.attn_norm, m, 1);
                }
                let (e, p, x, y) = matmul(&lw.qkv, m);
                run(e, p, &g.qkv, x, y);
                let rope = k.rope.pipeline("qk_norm_rope");
                run("qk_norm_rope", rope, &g.rope, heads + c.num_kv_heads, m);
                let window = match lw.kind {
                    LayerKind::Sliding => c.sliding_window,
                    LayerKind::Global => 0,
                };
                let (_, chunks) = attention_split(
                    m,
                    pos0,
                    window,
                    self.attn_slots,
                    inner.opts.attention_min_tiles,
                );
                let partial = k.attention.pipeline("attention_partial");
                run(
                    "attention",
                    partial,
                    &g.attention,
                    chunks,
                    m * c.num_kv_heads,
                );
                if chunks > 1 {
                    let combine = k.attention.pipeline("attention_combine");
                    run("attention_combine", combine, &g.attention, heads, m);
                }
                let (e, p, x, y) = matmul(&lw.o, m);
                run(e, p, &g.o, x, y);
                run("add_norm", add_norm, &g.post_attn, m, 1);
                if m == 1 {
                    let entry = match lw.gate_up.bits {
                        4 => "matvec_geglu_q4",
                        _ => "matvec_geglu_q8",
                    };
                    let groups = c.intermediate_size.div_ceil(MATVEC_ROWS as usize / 2);
                    run(entry, k.matmul.pipeline(entry), &g.gate_up_act, groups, 1);
                } else {
                    let (e, p, x, y) = matmul(&lw.gate_up, m);
                    run(e, p, &g.gate_up, x, y);
                    let geglu_groups = c.intermediate_size.div_ceil(GEGLU_WG as usize);
                    run(
                        "geglu",
                        k.geglu.pipeline("geglu"),
                        &g.geglu,
                        geglu_groups,
                        m,
                    );
                }
                let (e, p, x, y) = matmul(&lw.down, m);
                run(e, p, &g.down, x, y);
                if i + 1 < layers {
                    run("add_norm", add_norm, &g.post_ffn, m, 1);
                } else {
                    run("rmsnorm", norm_add, &g.post_ffn, m, 1);
                }
            }
            if lm_rows > 0 {
                run("rmsnorm", norm, &self.final_norm_group, lm_rows, 1);
                for (ch, g) in inner.weights.embed.iter().zip(&self.lm_groups) {
                    let (e, p, x, y) = matmul(&ch.matrix, lm_rows);
                    let label = match e {
                        "matvec_q8" => "lm_head (matvec_q8)",
                        "matmul_q8" => "lm_head (matmul_q8)",
                        _ => "lm_head (matmul_tiled_q8)",
                    };
                    run(label, p, g, x, y);
                }
                if readout == Readout::Argmax {
                    let partial = k.argmax.pipeline("argmax_partial");
                    run(
                        "argmax_partial",
                        partial,
                        &self.argmax_group,
                        ARGMAX_GROUPS as usize,
                        1,
                    );
                    let argmax = k.argmax.pipeline("argmax");
                    run("argmax", argmax, &self.argmax_group, 1, 1);
                }
            }
        }
        let read_bytes = match readout {
            Readout::Nothing => 0,
            Readout::Logits => (lm_rows * c.vocab_size * 4) as u64,
            Readout::Argmax => 4,
        };
        let argmax_slot = self.argmax_slot;
        match readout {
            Readout::Nothing => {}
            Readout::Logits => {
                enc.copy_buffer_to_buffer(&self.logits, 0, &self.staging, 0, read_bytes)
            }
            Readout::Argmax => {
                self.argmax_slot ^= 1;
                enc.copy_buffer_to_buffer(&self.argmax, 0, &self.argmax_staging[argmax_slot], 0, 4);
                // The next one-token step may start from this id without the host.
                enc.copy_buffer_to_buffer(&self.argmax, 0, &self.tokens, 0, 4);
            }
        }
        if let Some(p) = &self.profiler {
            let n = 2 * labels.len() as u32;
            enc.resolve_query_set(&p.queries, 0..n, &p.resolved, 0);
            enc.copy_buffer_to_buffer(&p.resolved, 0, &p.staging, 0, n as u64 * 8);
        }
        let command = enc.finish();
        let submitting = std::time::Instant::now();
        self.host.encode += submitting - started;
        let index = queue.submit([command]);
        self.host.submit += submitting.elapsed();
        self.steps += 1;
        self.tokens_run += m as u64;
        Ok(Submitted {
            index,
            readout,
            read_bytes,
            argmax_slot,
            labels,
        })
    }

    /// Waits for a submitted step and reads back what it was asked for.
    fn collect(&mut self, s: Submitted) -> Result<Vec<f32>> {
        let device = &self.inner.ctx.device;
        let host = &mut self.host;
        if let Some(p) = &mut self.profiler {
            p.record(device, &s.index, &s.labels, host)?;
        }
        Ok(match s.readout {
            Readout::Nothing => Vec::new(),
            Readout::Argmax => {
                let staging = &self.argmax_staging[s.argmax_slot];
                let bytes = read_back(device, staging, 4, &s.index, host)?;
                vec![f32::from_bits(u32::from_le_bytes(
                    bytes[..4].try_into().unwrap(),
                ))]
            }
            Readout::Logits => {
                let bytes = read_back(device, &self.staging, s.read_bytes, &s.index, host)?;
                bytemuck::cast_slice(&bytes).to_vec()
            }
        })
    }

    /// Whether positions `len - window + 1 .. len` are all still in the sliding ring.
    fn can_rewind_to(&self, len: usize) -> bool {
        let c = &self.inner.config;
        let has_sliding = (0..c.num_layers).any(|l| c.layer_kind(l) == LayerKind::Sliding);
        !has_sliding
            || (len.saturating_sub(c.sliding_window - 1)..len)
                .all(|p| self.ring_owner[p % self.ring_cap] == p)
    }
}

/// Copies the first `bytes` of a mapped-readable buffer to the host, once submission
/// `index` is done (not later ones: a run-ahead step may still be running).
fn read_back(
    device: &wgpu::Device,
    staging: &wgpu::Buffer,
    bytes: u64,
    index: &wgpu::SubmissionIndex,
    host: &mut HostTime,
) -> Result<Vec<u8>> {
    let waiting = std::time::Instant::now();
    let slice = staging.slice(..bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index.clone()),
            timeout: None,
        })
        .map_err(|e| Error::Runtime(format!("waiting for the GPU failed: {e}")))?;
    let reading = std::time::Instant::now();
    host.wait += reading - waiting;
    rx.recv()
        .map_err(|_| Error::Runtime("the GPU read-back was dropped".into()))?
        .map_err(|e| Error::Runtime(format!("reading GPU results failed: {e}")))?;
    let data = slice.get_mapped_range().to_vec();
    staging.unmap();
    host.readback += reading.elapsed();
    Ok(data)
}

#[async_trait::async_trait]
impl Session for GpuSession {
    async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Logits> {
        let data = self.run(tokens, want, false)?;
        Ok(Logits::new(self.inner.config.vocab_size, data))
    }

    /// The argmax is taken on the GPU: the step reads back one u32.
    async fn forward_greedy(&mut self, tokens: &[u32]) -> Result<u32> {
        let id = match self.greedy_ahead(tokens)? {
            Some(id) => id,
            None => self.run(tokens, Want::Last, true)?[0].to_bits(),
        };
        match id {
            NON_FINITE => Err(Error::Runtime(
                "the GPU backend computed a non-finite logit (NaN or infinity); its output cannot be trusted"
                    .into(),
            )),
            id => Ok(id),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Host phases always; device time per kernel class when the backend was loaded with
    /// `GpuOptions::profile` on a device with timestamps inside compute passes.
    fn profile(&self) -> Option<StepProfile> {
        let mut kernels = self
            .profiler
            .as_ref()
            .map(|p| p.totals.clone())
            .unwrap_or_default();
        kernels.sort_by_key(|t| std::cmp::Reverse(t.total));
        Some(StepProfile {
            steps: self.steps,
            tokens: self.tokens_run,
            kernels,
            host: self.host,
        })
    }

    fn reset_profile(&mut self) {
        if let Some(p) = &mut self.profiler {
            p.totals.clear();
        }
        self.host = HostTime::default();
        self.steps = 0;
        self.tokens_run = 0;
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        self.discard_ahead();
        if len > self.len {
            return Err(Error::InvalidInput(format!(
                "cannot truncate a session of {} tokens to {len}",
                self.len
            )));
        }
        if !self.can_rewind_to(len) {
            return Err(Error::InvalidInput(format!(
                "cannot rewind the GPU session from {} to {len} tokens: the sliding-window layers keep \
                 only the last {} positions; start a new session and run the first {len} tokens again \
                 (or raise GpuOptions::ring_history)",
                self.len, self.ring_cap
            )));
        }
        self.len = len;
        Ok(())
    }
}
