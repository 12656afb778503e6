//! Weights on the GPU, in their quantized form: 4-bit blocks plus f32 scales for the
//! projections, 8-bit blocks plus scales for the embedding / tied LM head. Nothing is
//! expanded to f32 on the device.
//!
//! Q, K and V are stored as one matrix (their rows concatenated: they share the input), and
//! so are gate and up: one dispatch each instead of three and two. The embedding is cut
//! into chunks of rows, each its own buffer, so that no binding exceeds the device's
//! storage binding limit (lavapipe: 128 MiB; the real table is 160 MiB).

use bytemuck::{Pod, Zeroable};
use lockstep_core::{Error, LayerKind, ModelConfig, Result};
use lockstep_model::weights::{ModelWeights, QuantMatrix};
use wgpu::util::DeviceExt;

use crate::context::GpuContext;
use crate::kernels::{MATMUL_ROWS, MAX_GROUP, MAX_HEAD_DIM};
use crate::reference::rope_inv_freq;

/// Static parameters of one matmul dispatch (matmul.wgsl `Params`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct MatmulParams {
    pub n: u32,
    pub k: u32,
    pub out_stride: u32,
    pub out_offset: u32,
}

/// embed.wgsl `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct EmbedParams {
    pub row_start: u32,
    pub rows: u32,
    pub k: u32,
    pub embed_scale: f32,
}

/// rmsnorm.wgsl `Params`; geglu.wgsl and argmax.wgsl use the first field only.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct SizeParams {
    pub n: u32,
    pub eps: f32,
    pub pad: [u32; 2],
}

pub(crate) fn uniform<T: Pod>(device: &wgpu::Device, label: &str, value: &T) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

fn storage(device: &wgpu::Device, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytes,
        usage: wgpu::BufferUsages::STORAGE,
    })
}

/// A quantized matrix on the device, with the parameters of the dispatch that computes
/// `y[t * out_stride + out_offset + r]`.
pub(crate) struct GpuMatrix {
    pub data: wgpu::Buffer,
    pub scales: wgpu::Buffer,
    pub params: wgpu::Buffer,
    pub n: usize,
    pub bits: u8,
}

impl GpuMatrix {
    /// Uploads the row-concatenation of `parts` (same `k`, same bit width).
    fn upload(
        device: &wgpu::Device,
        label: &str,
        parts: &[&QuantMatrix],
        out_stride: usize,
        out_offset: usize,
    ) -> Self {
        let (k, bits) = (parts[0].k, parts[0].bits);
        let n = parts.iter().map(|p| p.n).sum::<usize>();
        let data: Vec<u8> = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        let scales: Vec<f32> = parts
            .iter()
            .flat_map(|p| p.scales.iter().copied())
            .collect();
        Self {
            data: storage(device, label, &data),
            scales: storage(device, label, bytemuck::cast_slice(&scales)),
            params: uniform(
                device,
                label,
                &MatmulParams {
                    n: n as u32,
                    k: k as u32,
                    out_stride: out_stride as u32,
                    out_offset: out_offset as u32,
                },
            ),
            n,
            bits,
        }
    }
}

/// Rows `row_start..row_start + rows` of the 8-bit embedding: a gather source and a slice
/// of the LM head writing logits `row_start..`.
pub(crate) struct EmbedChunk {
    pub matrix: GpuMatrix,
    pub embed_params: wgpu::Buffer,
}

pub(crate) struct GpuLayer {
    pub kind: LayerKind,
    pub attn_norm: wgpu::Buffer,
    pub qkv: GpuMatrix,
    pub q_norm: wgpu::Buffer,
    pub k_norm: wgpu::Buffer,
    pub o: GpuMatrix,
    pub post_attn_norm: wgpu::Buffer,
    pub pre_ffn_norm: wgpu::Buffer,
    pub gate_up: GpuMatrix,
    pub down: GpuMatrix,
    pub post_ffn_norm: wgpu::Buffer,
}

pub(crate) struct GpuWeights {
    pub embed: Vec<EmbedChunk>,
    pub layers: Vec<GpuLayer>,
    pub final_norm: wgpu::Buffer,
    /// RoPE inverse frequencies of sliding and of global layers.
    pub inv_freq_local: wgpu::Buffer,
    pub inv_freq_global: wgpu::Buffer,
    /// `SizeParams` for norms over hidden_size, for geglu and for argmax.
    pub norm_params: wgpu::Buffer,
    pub geglu_params: wgpu::Buffer,
    pub argmax_params: wgpu::Buffer,
    /// Bytes uploaded, for the log.
    pub bytes: u64,
}

impl GpuWeights {
    pub fn upload(
        ctx: &GpuContext,
        w: &ModelWeights,
        max_chunk_rows: Option<usize>,
    ) -> Result<Self> {
        check(w)?;
        let device = &ctx.device;
        let c = &w.config;
        let f32s = |label: &str, v: &[f32]| storage(device, label, bytemuck::cast_slice(v));

        // Embedding chunks: as many rows as one binding holds, and few enough that the LM
        // head's dispatch stays under the workgroup-count limit.
        let row_bytes = (w.embed.k * w.embed.bits as usize / 8) as u64;
        let by_binding = (ctx.max_binding_bytes() / row_bytes) as usize;
        let by_dispatch =
            ctx.limits.max_compute_workgroups_per_dimension as usize * MATMUL_ROWS as usize;
        let chunk_rows = by_binding
            .min(by_dispatch)
            .min(max_chunk_rows.unwrap_or(usize::MAX))
            .max(1);
        let mut embed = Vec::new();
        for row_start in (0..c.vocab_size).step_by(chunk_rows) {
            let rows = chunk_rows.min(c.vocab_size - row_start);
            let part = slice_rows(&w.embed, row_start, rows);
            embed.push(EmbedChunk {
                matrix: GpuMatrix::upload(device, "embed", &[&part], c.vocab_size, row_start),
                embed_params: uniform(
                    device,
                    "embed params",
                    &EmbedParams {
                        row_start: row_start as u32,
                        rows: rows as u32,
                        k: c.hidden_size as u32,
                        embed_scale: c.embed_scale,
                    },
                ),
            });
        }

        let layers = w
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| GpuLayer {
                kind: c.layer_kind(i),
                attn_norm: f32s("attn_norm", &l.attn_norm),
                qkv: GpuMatrix::upload(
                    device,
                    "qkv",
                    &[&l.q_proj, &l.k_proj, &l.v_proj],
                    c.q_size() + 2 * c.kv_size(),
                    0,
                ),
                q_norm: f32s("q_norm", &l.q_norm),
                k_norm: f32s("k_norm", &l.k_norm),
                o: GpuMatrix::upload(device, "o_proj", &[&l.o_proj], c.hidden_size, 0),
                post_attn_norm: f32s("post_attn_norm", &l.post_attn_norm),
                pre_ffn_norm: f32s("pre_ffn_norm", &l.pre_ffn_norm),
                gate_up: GpuMatrix::upload(
                    device,
                    "gate_up",
                    &[&l.gate_proj, &l.up_proj],
                    2 * c.intermediate_size,
                    0,
                ),
                down: GpuMatrix::upload(device, "down_proj", &[&l.down_proj], c.hidden_size, 0),
                post_ffn_norm: f32s("post_ffn_norm", &l.post_ffn_norm),
            })
            .collect();

        let size = |n: usize| SizeParams {
            n: n as u32,
            eps: c.rms_norm_eps,
            pad: [0; 2],
        };
        let bytes = (w.embed.data.len() + 4 * w.embed.scales.len()) as u64
            + w.layers
                .iter()
                .flat_map(|l| {
                    [
                        &l.q_proj,
                        &l.k_proj,
                        &l.v_proj,
                        &l.o_proj,
                        &l.gate_proj,
                        &l.up_proj,
                        &l.down_proj,
                    ]
                })
                .map(|m| (m.data.len() + 4 * m.scales.len()) as u64)
                .sum::<u64>();
        Ok(Self {
            embed,
            layers,
            final_norm: f32s("final_norm", &w.final_norm),
            inv_freq_local: f32s(
                "inv_freq_local",
                &rope_inv_freq(c.rope_theta_local, c.head_dim),
            ),
            inv_freq_global: f32s(
                "inv_freq_global",
                &rope_inv_freq(c.rope_theta_global, c.head_dim),
            ),
            norm_params: uniform(device, "norm params", &size(c.hidden_size)),
            geglu_params: uniform(device, "geglu params", &size(c.intermediate_size)),
            argmax_params: uniform(device, "argmax params", &size(c.vocab_size)),
            bytes,
        })
    }
}

impl GpuMatrix {
    fn device_bytes(&self) -> u64 {
        self.data.size() + self.scales.size() + self.params.size()
    }
}

impl GpuWeights {
    /// Bytes of every buffer the weights occupy on the device (codes, scales, norms, RoPE
    /// tables, dispatch parameters), as allocated.
    pub fn device_bytes(&self) -> u64 {
        let embed: u64 = self
            .embed
            .iter()
            .map(|e| e.matrix.device_bytes() + e.embed_params.size())
            .sum();
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                [&l.qkv, &l.o, &l.gate_up, &l.down]
                    .iter()
                    .map(|m| m.device_bytes())
                    .sum::<u64>()
                    + [
                        &l.attn_norm,
                        &l.q_norm,
                        &l.k_norm,
                        &l.post_attn_norm,
                        &l.pre_ffn_norm,
                        &l.post_ffn_norm,
                    ]
                    .iter()
                    .map(|b| b.size())
                    .sum::<u64>()
            })
            .sum();
        embed
            + layers
            + [
                &self.final_norm,
                &self.inv_freq_local,
                &self.inv_freq_global,
                &self.norm_params,
                &self.geglu_params,
                &self.argmax_params,
            ]
            .iter()
            .map(|b| b.size())
            .sum::<u64>()
    }
}

/// Rows `start..start + rows` of a quantized matrix, as a matrix of its own.
fn slice_rows(m: &QuantMatrix, start: usize, rows: usize) -> QuantMatrix {
    let row_bytes = m.k * m.bits as usize / 8;
    let bpr = m.blocks_per_row();
    QuantMatrix {
        bits: m.bits,
        n: rows,
        k: m.k,
        block_size: m.block_size,
        data: m.data[start * row_bytes..(start + rows) * row_bytes].to_vec(),
        scales: m.scales[start * bpr..(start + rows) * bpr].to_vec(),
    }
}

/// Bit width of the projections (layer 0's Q; `check` makes sure all agree).
pub(crate) fn projection_bits(w: &ModelWeights) -> u8 {
    w.layers.first().map_or(4, |l| l.q_proj.bits)
}

/// The shapes and layouts the kernels rely on; a mismatch is a broken model file.
fn check(w: &ModelWeights) -> Result<()> {
    let c: &ModelConfig = &w.config;
    let bad = |what: String| {
        Err(Error::Model(format!(
            "GPU backend cannot run this model: {what}"
        )))
    };
    if c.head_dim > MAX_HEAD_DIM || !c.head_dim.is_multiple_of(8) {
        return bad(format!(
            "head_dim {} must be a multiple of 8 and at most {MAX_HEAD_DIM}",
            c.head_dim
        ));
    }
    if c.num_kv_heads == 0 || !c.num_heads.is_multiple_of(c.num_kv_heads) {
        return bad(format!(
            "{} query heads do not share {} KV heads evenly",
            c.num_heads, c.num_kv_heads
        ));
    }
    if c.num_heads / c.num_kv_heads > MAX_GROUP {
        return bad(format!(
            "{} query heads per KV head (at most {MAX_GROUP})",
            c.num_heads / c.num_kv_heads
        ));
    }
    if w.layers.len() != c.num_layers {
        return bad(format!(
            "{} layers, config says {}",
            w.layers.len(),
            c.num_layers
        ));
    }
    let matrix = |name: &str, m: &QuantMatrix, bits: u8, n: usize, k: usize| -> Result<()> {
        let blocks = n * k / 32;
        if m.bits != bits || m.block_size != 32 || m.n != n || m.k != k || !k.is_multiple_of(32) {
            return bad(format!(
                "{name} is {}-bit {}x{} in blocks of {}, expected {bits}-bit {n}x{k} in blocks of 32",
                m.bits, m.n, m.k, m.block_size
            ));
        }
        if m.data.len() != blocks * 32 * bits as usize / 8 || m.scales.len() != blocks {
            return bad(format!(
                "{name} holds {} bytes and {} scales for {n}x{k}",
                m.data.len(),
                m.scales.len()
            ));
        }
        Ok(())
    };
    let vector = |name: &str, v: &[f32], n: usize| -> Result<()> {
        if v.len() != n {
            return bad(format!("{name} has {} values, expected {n}", v.len()));
        }
        Ok(())
    };
    let (h, q, kv, f) = (c.hidden_size, c.q_size(), c.kv_size(), c.intermediate_size);
    matrix("embedding", &w.embed, 8, c.vocab_size, h)?;
    // Projections: 4-bit (the default conversion) or 8-bit, the same everywhere.
    let pb = projection_bits(w);
    if pb != 4 && pb != 8 {
        return bad(format!("{pb}-bit projections (4 or 8 expected)"));
    }
    vector("final norm", &w.final_norm, h)?;
    for (i, l) in w.layers.iter().enumerate() {
        let n = |s: &str| format!("layer {i} {s}");
        matrix(&n("q_proj"), &l.q_proj, pb, q, h)?;
        matrix(&n("k_proj"), &l.k_proj, pb, kv, h)?;
        matrix(&n("v_proj"), &l.v_proj, pb, kv, h)?;
        matrix(&n("o_proj"), &l.o_proj, pb, h, q)?;
        matrix(&n("gate_proj"), &l.gate_proj, pb, f, h)?;
        matrix(&n("up_proj"), &l.up_proj, pb, f, h)?;
        matrix(&n("down_proj"), &l.down_proj, pb, h, f)?;
        for (name, v, len) in [
            ("attn_norm", &l.attn_norm, h),
            ("post_attn_norm", &l.post_attn_norm, h),
            ("pre_ffn_norm", &l.pre_ffn_norm, h),
            ("post_ffn_norm", &l.post_ffn_norm, h),
            ("q_norm", &l.q_norm, c.head_dim),
            ("k_norm", &l.k_norm, c.head_dim),
        ] {
            vector(&n(name), v, len)?;
        }
    }
    Ok(())
}
