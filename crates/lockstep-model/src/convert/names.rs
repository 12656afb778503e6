//! Initializer names in the converted graph, shared by the writer and the reader.

/// The tied embedding / LM head as one 8-bit table (models made for int8 activations)...
pub const EMBED: &str = "model.embed_tokens";
/// ...or as the high and low nibbles of its 8-bit codes (f32 compute).
pub const EMBED_HI: &str = "model.embed_tokens.hi";
pub const EMBED_LO: &str = "model.embed_tokens.lo";
pub const FINAL_NORM: &str = "model.norm.weight";

pub fn qweight(matrix: &str) -> String {
    format!("{matrix}.qweight")
}

pub fn scales(matrix: &str) -> String {
    format!("{matrix}.scales")
}

/// Q, K and V of one layer as one matrix (their rows concatenated in that order): one
/// MatMulNBits instead of three in the default graph.
pub const QKV: &str = "qkv_proj";
/// Gate and up of one layer as one matrix (gate rows, then up rows).
pub const GATE_UP: &str = "gate_up_proj";

/// A projection of layer `layer`, e.g. `o_proj` or [`QKV`].
pub fn proj(layer: usize, name: &str) -> String {
    format!("model.layers.{layer}.{name}")
}

/// A norm weight of layer `layer`, e.g. `input_layernorm`.
pub fn norm(layer: usize, name: &str) -> String {
    format!("model.layers.{layer}.{name}.weight")
}

pub fn zero_points(matrix: &str) -> String {
    format!("{matrix}.zero_points")
}
