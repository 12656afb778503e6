//! Models with real Gemma 3 structure and seeded random weights.
//!
//! Random weights give nearly flat logits, so greedy comparisons between backends would
//! hit near-ties everywhere; the final norm is scaled up so that logits are peaked and a
//! token difference between backends means a bug, not a coin flip.

use lockstep_core::ModelConfig;

use super::quantize::{quantize_q4, quantize_q8};
use crate::weights::{LayerWeights, ModelWeights, QuantMatrix};

/// A Gemma-3-shaped model small enough for every CI run: 4 layers (two sliding, two
/// global), hidden 64, a 16-token sliding window so short prompts already cross it, and
/// the real 262,144-entry vocabulary so the real tokenizer works with it.
pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        num_layers: 4,
        hidden_size: 64,
        num_heads: 4,
        num_kv_heads: 1,
        head_dim: 32,
        intermediate_size: 128,
        vocab_size: 262_144,
        context_length: 4096,
        rms_norm_eps: 1e-6,
        sliding_window: 16,
        global_every: 2,
        rope_theta_local: 10_000.0,
        rope_theta_global: 1_000_000.0,
        attn_scale: 1.0 / (32f32).sqrt(),
        embed_scale: (64f32).sqrt(),
        bos_token_id: 2,
        eos_token_ids: vec![1, 106],
        pad_token_id: 0,
    }
}

/// Gemma 3 1B's shapes (HF `google/gemma-3-1b-pt` config): for measuring how cost grows
/// past 270M without its weights. Only shapes matter for speed.
pub fn gemma3_1b_config() -> ModelConfig {
    ModelConfig {
        num_layers: 26,
        hidden_size: 1152,
        num_heads: 4,
        num_kv_heads: 1,
        head_dim: 256,
        intermediate_size: 6912,
        sliding_window: 512,
        embed_scale: (1152f32).sqrt(),
        ..ModelConfig::gemma3_270m()
    }
}

/// Gemma 3 4B's text decoder shapes (HF `google/gemma-3-4b-pt` text_config). Its global
/// layers use linear RoPE scaling (factor 8), which `ModelConfig` cannot express; that
/// changes values, not cost.
pub fn gemma3_4b_config() -> ModelConfig {
    ModelConfig {
        num_layers: 34,
        hidden_size: 2560,
        num_heads: 8,
        num_kv_heads: 4,
        head_dim: 256,
        intermediate_size: 10240,
        context_length: 131_072,
        sliding_window: 1024,
        embed_scale: (2560f32).sqrt(),
        ..ModelConfig::gemma3_270m()
    }
}

/// SplitMix64: tiny, seedable and identical on every platform.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, len: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..len).map(|_| offset + scale * self.uniform()).collect()
    }
}

pub fn synthetic_weights(config: ModelConfig, seed: u64) -> ModelWeights {
    let mut rng = Rng(seed);
    let c = &config;
    // Uniform(-a, a) has variance a^2/3: a = sqrt(3/k) keeps activations near unit scale.
    let mut proj = |n: usize, k: usize| -> QuantMatrix {
        let a = (3.0 / k as f32).sqrt();
        quantize_q4(&rng.vec(n * k, a, 0.0), n, k)
    };
    let mut layers = Vec::with_capacity(c.num_layers);
    for _ in 0..c.num_layers {
        layers.push(LayerWeights {
            attn_norm: Vec::new(),
            q_proj: proj(c.q_size(), c.hidden_size),
            k_proj: proj(c.kv_size(), c.hidden_size),
            v_proj: proj(c.kv_size(), c.hidden_size),
            o_proj: proj(c.hidden_size, c.q_size()),
            q_norm: Vec::new(),
            k_norm: Vec::new(),
            post_attn_norm: Vec::new(),
            pre_ffn_norm: Vec::new(),
            gate_proj: proj(c.intermediate_size, c.hidden_size),
            up_proj: proj(c.intermediate_size, c.hidden_size),
            down_proj: proj(c.hidden_size, c.intermediate_size),
            post_ffn_norm: Vec::new(),
        });
    }
    for l in layers.iter_mut() {
        l.attn_norm = rng.vec(c.hidden_size, 0.2, 1.0);
        l.q_norm = rng.vec(c.head_dim, 0.2, 1.0);
        l.k_norm = rng.vec(c.head_dim, 0.2, 1.0);
        l.post_attn_norm = rng.vec(c.hidden_size, 1.0, 6.0);
        l.pre_ffn_norm = rng.vec(c.hidden_size, 0.2, 1.0);
        l.post_ffn_norm = rng.vec(c.hidden_size, 1.0, 6.0);
    }
    let embed = quantize_q8(
        &rng.vec(c.vocab_size * c.hidden_size, 1.0, 0.0),
        c.vocab_size,
        c.hidden_size,
    );
    // Peaked logits: logit std is about |norm| * sqrt(hidden / 3).
    let final_norm = rng.vec(c.hidden_size, 0.2, 3.0);
    ModelWeights {
        config,
        embed,
        layers,
        final_norm,
    }
}
