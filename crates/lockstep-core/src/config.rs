use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Architecture facts of a Gemma 3 text model: everything a backend needs to run it.
///
/// Written into the converted model's manifest, so that every backend reads the same
/// numbers from the same place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    /// The most positions the model was trained for.
    pub context_length: usize,
    pub rms_norm_eps: f32,
    /// Keys a query sees on a sliding layer, itself included.
    pub sliding_window: usize,
    /// Layer `i` is global when `(i + 1) % global_every == 0`.
    pub global_every: usize,
    pub rope_theta_local: f32,
    pub rope_theta_global: f32,
    /// The attention score scale, 1/sqrt(query_pre_attn_scalar).
    pub attn_scale: f32,
    /// The embedding is multiplied by sqrt(hidden_size) (exactly, not rounded).
    pub embed_scale: f32,
    pub bos_token_id: u32,
    /// Ids that end generation: `<eos>` and `<end_of_turn>`.
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: u32,
}

/// Whether a layer attends to everything before it or only to a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Sliding,
    Global,
}

impl ModelConfig {
    /// Gemma 3 270M, as in Hugging Face's `modeling_gemma3.py` and llama.cpp's graph.
    pub fn gemma3_270m() -> Self {
        Self {
            num_layers: 18,
            hidden_size: 640,
            num_heads: 4,
            num_kv_heads: 1,
            head_dim: 256,
            intermediate_size: 2048,
            vocab_size: 262_144,
            context_length: 32_768,
            rms_norm_eps: 1e-6,
            sliding_window: 512,
            global_every: 6,
            rope_theta_local: 10_000.0,
            rope_theta_global: 1_000_000.0,
            attn_scale: 1.0 / 16.0,
            embed_scale: (640f32).sqrt(),
            bos_token_id: 2,
            eos_token_ids: vec![1, 106],
            pad_token_id: 0,
        }
    }

    pub fn layer_kind(&self, layer: usize) -> LayerKind {
        if (layer + 1).is_multiple_of(self.global_every) {
            LayerKind::Global
        } else {
            LayerKind::Sliding
        }
    }

    pub fn rope_theta(&self, layer: usize) -> f32 {
        match self.layer_kind(layer) {
            LayerKind::Global => self.rope_theta_global,
            LayerKind::Sliding => self.rope_theta_local,
        }
    }

    /// Checks the sizes every reader multiplies: each at least 1, and the attention
    /// widths (`num_heads * head_dim`, `num_kv_heads * head_dim`) representable. A config
    /// read from a file (GGUF metadata, a manifest) must pass before anything is sized by
    /// it; `what` names the source in the message.
    pub fn validate(&self, what: &str) -> Result<()> {
        for (name, v) in [
            ("num_layers", self.num_layers),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                return Err(Error::Model(format!(
                    "{what}: {name} is 0; every size of the model must be at least 1"
                )));
            }
        }
        for (name, heads) in [
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
        ] {
            if heads.checked_mul(self.head_dim).is_none() {
                return Err(Error::Model(format!(
                    "{what}: {name} {heads} x head_dim {} overflows; the sizes are not a real model's",
                    self.head_dim
                )));
            }
        }
        Ok(())
    }

    /// `num_heads * head_dim`; [`validate`](Self::validate) rules out an overflow.
    pub fn q_size(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_size(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma3_270m_global_layers_are_5_11_17() {
        let c = ModelConfig::gemma3_270m();
        let global: Vec<usize> = (0..c.num_layers)
            .filter(|&i| c.layer_kind(i) == LayerKind::Global)
            .collect();
        assert_eq!(global, vec![5, 11, 17]);
        assert_eq!(c.rope_theta(5), 1_000_000.0);
        assert_eq!(c.rope_theta(4), 10_000.0);
        assert!((c.embed_scale - 25.298_222).abs() < 1e-5);
    }
}
