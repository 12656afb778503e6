//! The KV-cache variants of the default graph: the same nodes and initializers, with the
//! sliding-window layers' cache kept at a window-sized buffer and/or the cache in f16.
//!
//! - Windowed: GroupQueryAttention's `sliding_window_cache = 1` (ONNX Runtime >= 1.30 CPU)
//!   on the sliding layers. The op then takes the past/present buffers' length as a
//!   capacity C >= window, keeps the most recent positions at rows [0, L) and evicts
//!   internally; `seqlens_k` and `total_sequence_length` stay absolute, RoPE uses
//!   absolute positions. `model.onnx` keeps full-length buffers: onnxruntime-genai (which
//!   grows its cache step by step, C < window) and the runtimes whose GroupQueryAttention
//!   lacks the attribute (OpenVINO, WebGPU, CUDA, ORT < 1.30) run that one.
//! - f16: ONNX Runtime's GroupQueryAttention has one element type for its inputs, cache
//!   and output, so the f16 cache comes with q, k, v, the RoPE tables and the attention
//!   output cast to f16 around the op; everything else stays f32.

use lockstep_core::KvPrecision;

use crate::onnx::{attribute_type, data_type, AttributeProto, GraphProto, NodeProto};

const GQA: &str = "GroupQueryAttention";

/// The graph file of a default-variant package for a cache layout and precision.
pub fn graph_file(windowed: bool, kv: KvPrecision) -> &'static str {
    match (windowed, kv) {
        (false, KvPrecision::F32) => crate::package::MODEL_FILE,
        (true, KvPrecision::F32) => "model.window.onnx",
        (false, KvPrecision::F16) => "model.kv-f16.onnx",
        (true, KvPrecision::F16) => "model.window.kv-f16.onnx",
    }
}

/// Every (windowed, precision) variant a default-variant package carries.
pub const VARIANTS: [(bool, KvPrecision); 4] = [
    (false, KvPrecision::F32),
    (true, KvPrecision::F32),
    (false, KvPrecision::F16),
    (true, KvPrecision::F16),
];

/// The symbolic length of the sliding layers' buffers in the windowed graph.
pub const SLIDING_CACHE_DIM: &str = "sliding_cache_length";

fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// `base` (the full-length f32 graph) turned into the `windowed` / `kv` variant.
pub fn variant(base: &GraphProto, windowed: bool, kv: KvPrecision) -> GraphProto {
    let mut g = base.clone();
    // past/present names of the sliding layers, whose buffers become window-sized.
    let mut sliding_io: Vec<String> = Vec::new();
    let mut nodes = Vec::with_capacity(g.node.len() + 64);
    let mut cast_tables: Vec<String> = Vec::new();
    for mut node in std::mem::take(&mut g.node) {
        if node.op_type != GQA {
            nodes.push(node);
            continue;
        }
        let sliding = attr_int(&node, "local_window_size").is_some_and(|w| w > 0);
        if windowed && sliding {
            node.attribute.push(AttributeProto {
                name: "sliding_window_cache".into(),
                r#type: attribute_type::INT,
                i: 1,
                ..Default::default()
            });
            sliding_io.extend(node.input[3..5].iter().cloned());
            sliding_io.extend(node.output[1..3].iter().cloned());
        }
        if kv == KvPrecision::F16 {
            // q, k, v (0..3, k and v empty when q is packed) and the RoPE tables (7, 8).
            for i in [0usize, 1, 2, 7, 8] {
                let Some(name) = node.input.get(i).filter(|n| !n.is_empty()).cloned() else {
                    continue;
                };
                let half = format!("{name}_f16");
                let shared = i >= 7;
                if !shared || !cast_tables.contains(&name) {
                    nodes.push(cast(&name, &half, data_type::FLOAT16));
                    if shared {
                        cast_tables.push(name.clone());
                    }
                }
                node.input[i] = half;
            }
            let out = node.output[0].clone();
            let half = format!("{out}_f16");
            node.output[0] = half.clone();
            nodes.push(node);
            nodes.push(cast(&half, &out, data_type::FLOAT));
        } else {
            nodes.push(node);
        }
    }
    g.node = nodes;
    for vi in g.input.iter_mut().chain(g.output.iter_mut()) {
        let is_kv = vi.name.starts_with("past_key_values.") || vi.name.starts_with("present.");
        if !is_kv {
            continue;
        }
        let Some(t) = vi.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()) else {
            continue;
        };
        if kv == KvPrecision::F16 {
            t.elem_type = data_type::FLOAT16;
        }
        if sliding_io.contains(&vi.name) {
            if let Some(d) = t.shape.as_mut().and_then(|s| s.dim.get_mut(2)) {
                d.dim_value = None;
                d.dim_param = Some(SLIDING_CACHE_DIM.into());
            }
        }
    }
    g
}

fn cast(input: &str, output: &str, to: i32) -> NodeProto {
    NodeProto {
        input: vec![input.into()],
        output: vec![output.into()],
        name: format!("Cast_{output}"),
        op_type: "Cast".into(),
        domain: String::new(),
        attribute: vec![AttributeProto {
            name: "to".into(),
            r#type: attribute_type::INT,
            i: to as i64,
            ..Default::default()
        }],
    }
}
