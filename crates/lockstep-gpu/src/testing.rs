//! Tiny models with seeded random weights, for tests that need no model download.
//!
//! The weights go through the same quantization rules as the converter (4-bit projections
//! with the Q4_0 rule, 8-bit embedding), so the GPU sees the exact layout of a real model.
//! The LM head is given peaked logits (see DESIGN.md: flat logits make greedy comparisons
//! meaningless), so that a differing token means a bug, not a near-tie.

use lockstep_core::ModelConfig;
use lockstep_model::weights::{LayerWeights, ModelWeights, QuantMatrix};

/// A Gemma-3-shaped model small enough for a CPU Vulkan driver: 4 layers (layer 1 and 3
/// global), hidden 64, 4 query heads sharing 1 KV head of 32, FFN 128, vocab 512, window 8.
pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        num_layers: 4,
        hidden_size: 64,
        num_heads: 4,
        num_kv_heads: 1,
        head_dim: 32,
        intermediate_size: 128,
        vocab_size: 512,
        context_length: 1024,
        rms_norm_eps: 1e-6,
        sliding_window: 8,
        global_every: 2,
        rope_theta_local: 10_000.0,
        rope_theta_global: 1_000_000.0,
        attn_scale: 1.0 / (32f32).sqrt(),
        embed_scale: (64f32).sqrt(),
        bos_token_id: 2,
        eos_token_ids: vec![1],
        pad_token_id: 0,
    }
}

/// A small deterministic generator (SplitMix64), so that tests need no `rand` dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// Quantizes a row-major `n x k` matrix with the Q4_0 rule: per block of 32, scale = the
/// largest-magnitude value / -8, so that value is exact; codes are `round(x / scale) + 8`.
pub fn quantize_q4(n: usize, k: usize, values: &[f32]) -> QuantMatrix {
    quantize(n, k, values, 4)
}

/// Quantizes a row-major `n x k` matrix to symmetric 8-bit blocks of 32 (zero point 128).
pub fn quantize_q8(n: usize, k: usize, values: &[f32]) -> QuantMatrix {
    quantize(n, k, values, 8)
}

fn quantize(n: usize, k: usize, values: &[f32], bits: u8) -> QuantMatrix {
    const BLOCK: usize = 32;
    assert_eq!(values.len(), n * k);
    assert_eq!(k % BLOCK, 0, "k must be a multiple of {BLOCK}");
    let zero = 1i32 << (bits - 1);
    let max_code = (1i32 << bits) - 1;
    let mut data = Vec::with_capacity(n * k * bits as usize / 8);
    let mut scales = Vec::with_capacity(n * k / BLOCK);
    for block in values.chunks(BLOCK) {
        let extreme = block
            .iter()
            .cloned()
            .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        // 4-bit: -8 is the code with the largest magnitude; 8-bit: symmetric over +-127.
        let scale = if bits == 4 {
            extreme / -8.0
        } else {
            extreme.abs() / 127.0
        };
        let inv = if scale == 0.0 { 0.0 } else { 1.0 / scale };
        let codes: Vec<u8> = block
            .iter()
            .map(|v| ((v * inv).round() as i32 + zero).clamp(0, max_code) as u8)
            .collect();
        if bits == 4 {
            data.extend(codes.chunks(2).map(|p| p[0] | (p[1] << 4)));
        } else {
            data.extend(codes);
        }
        scales.push(scale);
    }
    QuantMatrix {
        bits,
        n,
        k,
        block_size: BLOCK,
        data,
        scales,
    }
}

/// Seeded random weights of the shapes `config` describes, 4-bit projections.
pub fn random_weights(config: &ModelConfig, seed: u64) -> ModelWeights {
    random_weights_with_bits(config, seed, 4)
}

/// Seeded random weights with 4- or 8-bit projections (the embedding is always 8-bit).
pub fn random_weights_with_bits(
    config: &ModelConfig,
    seed: u64,
    projection_bits: u8,
) -> ModelWeights {
    let c = config;
    let mut rng = Rng::new(seed);
    let proj = |n: usize, k: usize, rng: &mut Rng| {
        // Uniform with unit-ish output variance: 1/sqrt(k) * sqrt(3).
        let values = rng.vec(n * k, 1.7 / (k as f32).sqrt());
        if projection_bits == 8 {
            quantize_q8(n, k, &values)
        } else {
            quantize_q4(n, k, &values)
        }
    };
    let norm =
        |n: usize, rng: &mut Rng| -> Vec<f32> { rng.vec(n, 0.2).iter().map(|v| 1.0 + v).collect() };
    let layers = (0..c.num_layers)
        .map(|_| LayerWeights {
            attn_norm: norm(c.hidden_size, &mut rng),
            q_proj: proj(c.q_size(), c.hidden_size, &mut rng),
            k_proj: proj(c.kv_size(), c.hidden_size, &mut rng),
            v_proj: proj(c.kv_size(), c.hidden_size, &mut rng),
            o_proj: proj(c.hidden_size, c.q_size(), &mut rng),
            q_norm: norm(c.head_dim, &mut rng),
            k_norm: norm(c.head_dim, &mut rng),
            // Large post norms: the layers, not the input embedding, steer the output.
            post_attn_norm: norm(c.hidden_size, &mut rng)
                .iter()
                .map(|v| 4.0 * v)
                .collect(),
            pre_ffn_norm: norm(c.hidden_size, &mut rng),
            gate_proj: proj(c.intermediate_size, c.hidden_size, &mut rng),
            up_proj: proj(c.intermediate_size, c.hidden_size, &mut rng),
            down_proj: proj(c.hidden_size, c.intermediate_size, &mut rng),
            post_ffn_norm: norm(c.hidden_size, &mut rng)
                .iter()
                .map(|v| 4.0 * v)
                .collect(),
        })
        .collect();
    // A small embedding keeps the input token from dominating the residual stream (with a
    // tied LM head, that would make every greedy step repeat its input); a final norm of
    // ~12 then makes logits peaked (std ~ 14 over a vocabulary of 512): few near-ties.
    let embed = quantize_q8(
        c.vocab_size,
        c.hidden_size,
        &rng.vec(c.vocab_size * c.hidden_size, 0.25),
    );
    let final_norm = norm(c.hidden_size, &mut rng)
        .iter()
        .map(|v| 12.0 * v)
        .collect();
    ModelWeights {
        config: c.clone(),
        embed,
        layers,
        final_norm,
    }
}
