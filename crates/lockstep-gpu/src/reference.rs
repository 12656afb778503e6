//! A plain f32 CPU forward pass of the whole model, written to be read.
//!
//! It is the yardstick for the GPU kernels and for the whole GPU model, and a debugging aid
//! for the ONNX graph: it computes from the very same quantized weights (dequantized one
//! value at a time), one token at a time, with no fusion and no cleverness.
//!
//! ```
//! use lockstep_core::Want;
//! use lockstep_gpu::{reference, testing};
//!
//! let weights = testing::random_weights(&testing::tiny_config(), 1);
//! let mut cache = reference::KvCache::new(&weights.config);
//! let logits = reference::forward(&weights, &mut cache, &[2, 17, 99], Want::Last);
//! let next = logits.argmax(0);
//! let logits = reference::forward(&weights, &mut cache, &[next], Want::Last);
//! assert_eq!((cache.len(), logits.rows()), (4, 1));
//! ```

use lockstep_core::{LayerKind, Logits, ModelConfig, Want};
use lockstep_model::weights::{LayerWeights, ModelWeights, QuantMatrix};

/// Keys and values of every position seen so far, per layer (`num_kv_heads * head_dim`
/// floats per position). It keeps every position, also on sliding layers: the window is
/// applied when attending, which keeps this code obvious and makes `truncate` trivial.
#[derive(Debug, Clone)]
pub struct KvCache {
    kv_size: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(config: &ModelConfig) -> Self {
        Self {
            kv_size: config.kv_size(),
            keys: vec![Vec::new(); config.num_layers],
            values: vec![Vec::new(); config.num_layers],
        }
    }

    /// Positions in the cache; the next token is at this position.
    pub fn len(&self) -> usize {
        self.keys.first().map_or(0, |k| k.len() / self.kv_size)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        for (k, v) in self.keys.iter_mut().zip(&mut self.values) {
            k.truncate(len * self.kv_size);
            v.truncate(len * self.kv_size);
        }
    }
}

/// Runs `tokens` at positions `cache.len()..`, appends them to `cache` and returns the
/// logits `want` asks for (every position, or the last one).
pub fn forward(weights: &ModelWeights, cache: &mut KvCache, tokens: &[u32], want: Want) -> Logits {
    let c = &weights.config;
    let mut out = Vec::new();
    for (i, &token) in tokens.iter().enumerate() {
        let hidden = forward_hidden(weights, cache, token);
        if want == Want::All || i + 1 == tokens.len() {
            // Tied LM head: logits are the final hidden state against every embedding row.
            out.extend(matvec(&weights.embed, &hidden));
        }
    }
    Logits::new(c.vocab_size, out)
}

/// One token through every layer and the final norm: the hidden state before the LM head.
pub fn forward_hidden(weights: &ModelWeights, cache: &mut KvCache, token: u32) -> Vec<f32> {
    let c = &weights.config;
    let pos = cache.len();
    let mut x: Vec<f32> = weights
        .embed
        .row(token as usize)
        .iter()
        .map(|v| v * c.embed_scale)
        .collect();
    for (l, lw) in weights.layers.iter().enumerate() {
        let h = rms_norm(&x, &lw.attn_norm, c.rms_norm_eps);
        let a = attention_block(c, l, lw, cache, pos, &h);
        add_assign(&mut x, &rms_norm(&a, &lw.post_attn_norm, c.rms_norm_eps));
        let h = rms_norm(&x, &lw.pre_ffn_norm, c.rms_norm_eps);
        let m = mlp(lw, &h);
        add_assign(&mut x, &rms_norm(&m, &lw.post_ffn_norm, c.rms_norm_eps));
    }
    rms_norm(&x, &weights.final_norm, c.rms_norm_eps)
}

/// Q/K/V projections, per-head Q/K norm, RoPE, cache append, attention, output projection.
fn attention_block(
    c: &ModelConfig,
    layer: usize,
    lw: &LayerWeights,
    cache: &mut KvCache,
    pos: usize,
    h: &[f32],
) -> Vec<f32> {
    let hd = c.head_dim;
    let inv_freq = rope_inv_freq(c.rope_theta(layer), hd);
    let mut q = matvec(&lw.q_proj, h);
    let mut k = matvec(&lw.k_proj, h);
    let v = matvec(&lw.v_proj, h);
    for head in q.chunks_mut(hd) {
        let normed = rms_norm(head, &lw.q_norm, c.rms_norm_eps);
        head.copy_from_slice(&normed);
        rope(head, pos, &inv_freq);
    }
    for head in k.chunks_mut(hd) {
        let normed = rms_norm(head, &lw.k_norm, c.rms_norm_eps);
        head.copy_from_slice(&normed);
        rope(head, pos, &inv_freq);
    }
    cache.keys[layer].extend_from_slice(&k);
    cache.values[layer].extend_from_slice(&v);

    let first = match c.layer_kind(layer) {
        LayerKind::Sliding => (pos + 1).saturating_sub(c.sliding_window),
        LayerKind::Global => 0,
    };
    let group = c.num_heads / c.num_kv_heads;
    let mut out = vec![0f32; c.q_size()];
    for head in 0..c.num_heads {
        let kv_head = head / group;
        let o = attend(
            &q[head * hd..(head + 1) * hd],
            &cache.keys[layer],
            &cache.values[layer],
            c.kv_size(),
            kv_head * hd,
            first..=pos,
            c.attn_scale,
        );
        out[head * hd..(head + 1) * hd].copy_from_slice(&o);
    }
    matvec(&lw.o_proj, &out)
}

/// Softmax attention of one query head over the positions `keys_at`; `keys` and `values`
/// hold `stride` floats per position, this head's `q.len()` of them starting at `offset`.
pub fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    offset: usize,
    keys_at: std::ops::RangeInclusive<usize>,
    scale: f32,
) -> Vec<f32> {
    let hd = q.len();
    let at = |buf: &'_ [f32], p: usize| -> Vec<f32> {
        buf[p * stride + offset..p * stride + offset + hd].to_vec()
    };
    let scores: Vec<f32> = keys_at
        .clone()
        .map(|p| dot(q, &at(keys, p)) * scale)
        .collect();
    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = weights.iter().sum();
    let mut out = vec![0f32; hd];
    for (p, w) in keys_at.zip(&weights) {
        for (o, v) in out.iter_mut().zip(at(values, p)) {
            *o += w / sum * v;
        }
    }
    out
}

/// `down(gelu_tanh(gate(x)) * up(x))`
pub fn mlp(lw: &LayerWeights, x: &[f32]) -> Vec<f32> {
    let gate = matvec(&lw.gate_proj, x);
    let up = matvec(&lw.up_proj, x);
    let h: Vec<f32> = gate
        .iter()
        .zip(&up)
        .map(|(g, u)| gelu_tanh(*g) * u)
        .collect();
    matvec(&lw.down_proj, &h)
}

/// `x * rsqrt(mean(x^2) + eps) * w`, in f32.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (mean_sq + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * r * w).collect()
}

/// RoPE's inverse frequencies `theta^(-2i/d)` for `i < d/2`; the GPU uploads this very table.
pub fn rope_inv_freq(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| (theta as f64).powf(-2.0 * i as f64 / head_dim as f64) as f32)
        .collect()
}

/// NeoX-style (non-interleaved) rotary embedding of one head in place: element `i` pairs
/// with `i + d/2`, rotated by `pos * inv_freq[i]`.
pub fn rope(head: &mut [f32], pos: usize, inv_freq: &[f32]) {
    let half = head.len() / 2;
    for (i, f) in inv_freq.iter().enumerate() {
        let angle = pos as f32 * f;
        let (sin, cos) = angle.sin_cos();
        let (a, b) = (head[i], head[i + half]);
        head[i] = a * cos - b * sin;
        head[i + half] = b * cos + a * sin;
    }
}

/// The tanh approximation of GELU, as Gemma uses it.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// `y = W x` for a quantized `W` of `n` rows by `k` columns.
pub fn matvec(w: &QuantMatrix, x: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), w.k, "matvec input length");
    (0..w.n).map(|r| dot(&w.row(r), x)).collect()
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
