//! What a backend holds in memory, and what a session will take before it is created.

use serde::{Deserialize, Serialize};

use crate::{Error, LayerKind, ModelConfig, Result};

/// The element type of a session's KV cache. A numeric mode like the weights' format:
/// f32 is the reference; f16 halves the cache and rounds every cached key and value (and,
/// where the runtime's attention op has one element type, its inputs and output) to f16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvPrecision {
    #[default]
    F32,
    F16,
}

impl KvPrecision {
    pub fn bytes(self) -> usize {
        match self {
            KvPrecision::F32 => 4,
            KvPrecision::F16 => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KvPrecision::F32 => "f32",
            KvPrecision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for KvPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KvPrecision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(KvPrecision::F32),
            "f16" | "fp16" | "float16" => Ok(KvPrecision::F16),
            other => Err(Error::InvalidInput(format!(
                "unknown KV cache precision '{other}'; known: f32 (the reference), f16"
            ))),
        }
    }
}

/// One part of what a backend or session holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryPart {
    /// e.g. `weights`, `KV cache (2 sessions)`, `working buffers`.
    pub what: String,
    pub bytes: u64,
    /// In device (GPU) memory rather than the process's host memory.
    pub device: bool,
}

/// What a backend has allocated now, as far as it can tell; host memory as a whole is the
/// process's RSS, which benchmarks measure from outside.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryReport {
    pub parts: Vec<MemoryPart>,
}

impl MemoryReport {
    /// Bytes of device buffers, `None` when the backend allocates none (a CPU backend).
    pub fn device_bytes(&self) -> Option<u64> {
        let parts: Vec<u64> = self
            .parts
            .iter()
            .filter(|p| p.device)
            .map(|p| p.bytes)
            .collect();
        (!parts.is_empty()).then(|| parts.iter().sum())
    }

    /// Bytes the backend itself counted in host memory (KV buffers it allocated, ...).
    pub fn host_bytes(&self) -> u64 {
        self.parts
            .iter()
            .filter(|p| !p.device)
            .map(|p| p.bytes)
            .sum()
    }
}

/// What a session with a given budget will allocate, known before it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMemory {
    /// The KV cache's bytes.
    pub kv_bytes: u64,
    /// Per-session working buffers beyond the KV cache (activations, logits); 0 where the
    /// runtime allocates them itself and does not say.
    pub working_bytes: u64,
    /// In device memory rather than host memory.
    pub device: bool,
    /// How the cache is laid out, e.g. `3 global layers x 32768 + 15 sliding layers x 1023
    /// positions, f32`.
    pub layout: String,
}

impl SessionMemory {
    pub fn total(&self) -> u64 {
        self.kv_bytes + self.working_bytes
    }

    /// `KV cache 213.6 MiB (...) + working buffers 12.0 MiB, host memory`: the line
    /// commands print before they allocate.
    pub fn describe(&self) -> String {
        let working = if self.working_bytes > 0 {
            format!(" + working buffers {}", mib(self.working_bytes))
        } else {
            String::new()
        };
        format!(
            "KV cache {} ({}){working}, {} memory",
            mib(self.kv_bytes),
            self.layout,
            if self.device { "device" } else { "host" }
        )
    }
}

/// `12.3 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Positions each layer's KV buffer holds: the budget on global layers, `sliding` (when
/// given) on sliding-window layers.
pub fn kv_layout(
    config: &ModelConfig,
    max_tokens: usize,
    sliding: Option<usize>,
    precision: KvPrecision,
) -> SessionMemory {
    let (mut global, mut local) = (0usize, 0usize);
    for l in 0..config.num_layers {
        match config.layer_kind(l) {
            LayerKind::Global => global += 1,
            LayerKind::Sliding => local += 1,
        }
    }
    let per_position = 2 * config.kv_size() as u64 * precision.bytes() as u64;
    let (positions, layout) = match sliding {
        Some(s) => (
            global as u64 * max_tokens as u64 + local as u64 * s as u64,
            format!(
                "{global} global layers x {max_tokens} + {local} sliding layers x {s} positions, {precision}"
            ),
        ),
        None => (
            (global + local) as u64 * max_tokens as u64,
            format!("{} layers x {max_tokens} positions, {precision}", global + local),
        ),
    };
    SessionMemory {
        kv_bytes: positions * per_position,
        working_bytes: 0,
        device: false,
        layout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma3_270m_kv_at_32k() {
        let c = ModelConfig::gemma3_270m();
        // What the issue computes: (3 x 32768 + 15 x 512) x 2 x 256 x 4 bytes.
        let m = kv_layout(&c, 32_768, Some(512), KvPrecision::F32);
        assert_eq!(m.kv_bytes, (3 * 32_768 + 15 * 512) * 2 * 256 * 4);
        let full = kv_layout(&c, 32_768, None, KvPrecision::F16);
        assert_eq!(full.kv_bytes, 18 * 32_768 * 2 * 256 * 2);
        assert_eq!("F16".parse::<KvPrecision>().unwrap(), KvPrecision::F16);
        assert!("bf16".parse::<KvPrecision>().is_err());
    }
}
