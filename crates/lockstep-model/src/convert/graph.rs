//! The Gemma 3 decoder as an ONNX graph for ONNX Runtime's CPU provider.
//!
//! Inputs and outputs follow onnxruntime-genai's decoder conventions (`input_ids`,
//! `attention_mask`, `past_key_values.%d.key` -> `present.%d.key`, `logits`) so that the
//! same file runs under onnxruntime-genai through `genai_config.json`. Attention is
//! `com.microsoft::GroupQueryAttention`, which applies RoPE itself (after the Q/K norms,
//! as Gemma 3 wants) and, on sliding layers, `local_window_size` = the window: a query
//! sees exactly that many keys, itself included.
//!
//! A decode step runs every node once, and ONNX Runtime pays a fixed cost per node, so a
//! layer is as few nodes as computes the same values (19 with one KV head, 22 before):
//! Q/K/V as one MatMulNBits over their concatenated rows and a Split, gate/up likewise
//! (MLAS computes each output column on its own, so the values are bit for bit those of
//! the separate matmuls). The residual adds stay separate: ONNX Runtime 1.31.1's
//! SkipSimplifiedLayerNormalization normalizes with a different rounding than
//! SimplifiedLayerNormalization (up to ~4e-7 relative on the norm's output, 3.5e-4 on the
//! real model's logits), which is not the same values. `tests/graph_structure.rs` counts
//! the nodes.

use std::path::Path;

use lockstep_core::{LayerKind, Result};

use super::names;
use crate::onnx::{
    data_type, Attr, Dim, GraphBuilder, GraphProto, Initializers, ModelProto, OperatorSetIdProto,
};
use crate::package::DATA_FILE;
use crate::weights::{ModelWeights, QuantMatrix};

const MS: &str = "com.microsoft";

/// Graph inputs that are not the model's KV cache.
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
/// How many trailing positions get logits; 0 (the default) means all of them. Generation
/// passes 1 so that a 512-token prefill does not compute 512 x 262,144 logits.
pub const LOGITS_TO_KEEP: &str = "logits_to_keep";
pub const LOGITS: &str = "logits";

pub fn past_key(layer: usize) -> String {
    format!("past_key_values.{layer}.key")
}
pub fn past_value(layer: usize) -> String {
    format!("past_key_values.{layer}.value")
}
pub fn present_key(layer: usize) -> String {
    format!("present.{layer}.key")
}
pub fn present_value(layer: usize) -> String {
    format!("present.{layer}.value")
}

/// Writes `model.onnx` and `model.onnx.data` into `dir`.
pub fn write_model(
    weights: &ModelWeights,
    dir: &Path,
    accuracy_level: i64,
    doc: &str,
) -> Result<()> {
    let c = &weights.config;
    let mut init = Initializers::create(&dir.join(DATA_FILE), DATA_FILE)?;
    let mut g = GraphBuilder::default();

    g.input(
        INPUT_IDS,
        data_type::INT64,
        vec![Dim::Named("batch_size"), Dim::Named("sequence_length")],
    );
    g.input(
        ATTENTION_MASK,
        data_type::INT64,
        vec![
            Dim::Named("batch_size"),
            Dim::Named("total_sequence_length"),
        ],
    );
    let kv_dims = || {
        vec![
            Dim::Named("batch_size"),
            Dim::Fixed(c.num_kv_heads as i64),
            Dim::Named("past_sequence_length"),
            Dim::Fixed(c.head_dim as i64),
        ]
    };
    for l in 0..c.num_layers {
        g.input(&past_key(l), data_type::FLOAT, kv_dims());
        g.input(&past_value(l), data_type::FLOAT, kv_dims());
    }
    g.input(LOGITS_TO_KEEP, data_type::INT64, vec![Dim::Fixed(1)]);
    // An initializer with an input's name is that input's default (IR >= 4).
    init.add_i64(LOGITS_TO_KEEP, &[1], &[0])?;

    // Small constants.
    init.add_i64("const_axis1", &[1], &[1])?;
    init.add_i64("const_one_i64", &[], &[1])?;
    init.add_f32("const_embed_scale", &[], &[c.embed_scale])?;
    init.add_f32("const_128", &[], &[128.0])?;
    init.add_i64(
        "const_q_heads_shape",
        &[4],
        &[0, 0, c.num_heads as i64, c.head_dim as i64],
    )?;
    init.add_i64(
        "const_kv_heads_shape",
        &[4],
        &[0, 0, c.num_kv_heads as i64, c.head_dim as i64],
    )?;
    init.add_i64("const_flatten_heads", &[3], &[0, 0, -1])?;
    init.add_i64("const_max_i64", &[1], &[i64::MAX])?;

    // GroupQueryAttention wants seqlens_k = tokens in the cache after this step - 1, and
    // the total length, both int32; derived from the attention mask as genai exporters do.
    let mask_sum = g.op(
        "ReduceSum",
        &[ATTENTION_MASK, "const_axis1"],
        vec![("keepdims", Attr::Int(0))],
    );
    let seqlens = g.op("Sub", &[&mask_sum, "const_one_i64"], vec![]);
    let seqlens_k = g.op(
        "Cast",
        &[&seqlens],
        vec![("to", Attr::Int(data_type::INT32 as i64))],
    );
    let mask_shape = g.op("Shape", &[ATTENTION_MASK], vec![]);
    let total = g.op(
        "Gather",
        &[&mask_shape, "const_one_i64"],
        vec![("axis", Attr::Int(0))],
    );
    let total_len = g.op(
        "Cast",
        &[&total],
        vec![("to", Attr::Int(data_type::INT32 as i64))],
    );

    // RoPE tables, one per theta; built in the graph (ONNX Runtime folds them at load)
    // rather than stored, to keep the data file to weights.
    let half = c.head_dim / 2;
    init.add_f32(
        "const_rope_positions",
        &[c.context_length as i64, 1],
        &(0..c.context_length).map(|p| p as f32).collect::<Vec<_>>(),
    )?;
    let mut rope_tables =
        |theta: f32, tag: &str, g: &mut GraphBuilder| -> Result<(String, String)> {
            let inv: Vec<f32> = (0..half)
                .map(|i| (1.0 / (theta as f64).powf(2.0 * i as f64 / c.head_dim as f64)) as f32)
                .collect();
            let name = format!("const_inv_freq_{tag}");
            init.add_f32(&name, &[1, half as i64], &inv)?;
            let freqs = g.op("Mul", &["const_rope_positions", &name], vec![]);
            Ok((
                g.op("Cos", &[&freqs], vec![]),
                g.op("Sin", &[&freqs], vec![]),
            ))
        };
    let (cos_local, sin_local) = rope_tables(c.rope_theta_local, "local", &mut g)?;
    let (cos_global, sin_global) = rope_tables(c.rope_theta_global, "global", &mut g)?;

    // The tied 8-bit table. With accuracy_level 0 it is stored as two 4-bit halves of each
    // code, `q - 128 = 16 (hi - 8) + lo`: ONNX Runtime's CPU MatMulNBits has no fast f32
    // path for 8 bits (it dequantized all 262,144 x 640 weights on every step, 0.7 s),
    // while two 4-bit matmuls give the same f32 result at 4-bit speed. With int8
    // activations (accuracy_level 4) its 8-bit kernel is fast, and the table stays whole.
    let split = accuracy_level != 4;
    let halves = split.then(|| split_nibbles(&weights.embed));
    if let Some((hi, lo)) = &halves {
        add_quant(&mut init, names::EMBED_HI, hi)?;
        add_quant(&mut init, names::EMBED_LO, lo)?;
        let zp_bytes = lo.n * lo.blocks_per_row().div_ceil(2);
        init.add_raw(
            &names::zero_points(names::EMBED_LO),
            data_type::UINT8,
            &[zp_bytes as i64],
            &vec![0u8; zp_bytes],
        )?;
    } else {
        add_quant(&mut init, names::EMBED, &weights.embed)?;
    }

    // Embedding: gather both halves' rows, unpack the nibbles, rebuild the 8-bit codes,
    // dequantize and scale by sqrt(hidden).
    let e = &weights.embed;
    init.add_i64(
        "const_embed_scales_shape",
        &[3],
        &[e.n as i64, e.blocks_per_row() as i64, 1],
    )?;
    init.add_i64(
        "const_codes_shape",
        &[4],
        &[0, 0, e.blocks_per_row() as i64, e.block_size as i64],
    )?;
    init.add_i64("const_hidden_shape", &[3], &[0, 0, c.hidden_size as i64])?;
    init.add_i64("const_last_axis", &[1], &[-1])?;
    init.add_f32("const_16", &[], &[16.0])?;
    init.add_f32("const_one_16th", &[], &[0.0625])?;
    // The nibbles are split with float arithmetic, exact for bytes (x / 16 is a power-of-two
    // scaling, its floor and x - 16 * floor(x / 16) are integers below 256), rather than
    // BitShift/BitwiseAnd: OpenVINO 2025.4 lowers a uint8 BitShift after this Gather to a
    // rounded division (11 >> 4 gave 1), which corrupted every embedding row it computed.
    let unpack = |g: &mut GraphBuilder, table: &str| -> String {
        let rows = g.op(
            "Gather",
            &[&names::qweight(table), INPUT_IDS],
            vec![("axis", Attr::Int(0))],
        );
        let rows = g.op(
            "Cast",
            &[&rows],
            vec![("to", Attr::Int(data_type::FLOAT as i64))],
        );
        let scaled = g.op("Mul", &[&rows, "const_one_16th"], vec![]);
        let high = g.op("Floor", &[&scaled], vec![]);
        let high16 = g.op("Mul", &[&high, "const_16"], vec![]);
        let low = g.op("Sub", &[&rows, &high16], vec![]);
        let low = g.op("Unsqueeze", &[&low, "const_last_axis"], vec![]);
        let high = g.op("Unsqueeze", &[&high, "const_last_axis"], vec![]);
        // Low nibble first: element 2j, then 2j + 1.
        let pairs = g.op("Concat", &[&low, &high], vec![("axis", Attr::Int(-1))]);
        g.op("Reshape", &[&pairs, "const_codes_shape"], vec![])
    };
    let (code, scales) = if split {
        let hi_codes = unpack(&mut g, names::EMBED_HI);
        let lo_codes = unpack(&mut g, names::EMBED_LO);
        let hi16 = g.op("Mul", &[&hi_codes, "const_16"], vec![]);
        let code = g.op("Add", &[&hi16, &lo_codes], vec![]);
        (code, names::scales(names::EMBED_LO))
    } else {
        let rows = g.op(
            "Gather",
            &[&names::qweight(names::EMBED), INPUT_IDS],
            vec![("axis", Attr::Int(0))],
        );
        let code = g.op(
            "Cast",
            &[&rows],
            vec![("to", Attr::Int(data_type::FLOAT as i64))],
        );
        (code, names::scales(names::EMBED))
    };
    let centered = g.op("Sub", &[&code, "const_128"], vec![]);
    let scales_3d = g.op("Reshape", &[&scales, "const_embed_scales_shape"], vec![]);
    let row_scales = g.op(
        "Gather",
        &[&scales_3d, INPUT_IDS],
        vec![("axis", Attr::Int(0))],
    );
    let deq = g.op("Mul", &[&centered, &row_scales], vec![]);
    let flat = g.op("Reshape", &[&deq, "const_hidden_shape"], vec![]);
    let mut x = g.op("Mul", &[&flat, "const_embed_scale"], vec![]);

    init.add_i64(
        "const_qkv_split",
        &[3],
        &[c.q_size() as i64, c.kv_size() as i64, c.kv_size() as i64],
    )?;
    init.add_i64(
        "const_gate_up_split",
        &[2],
        &[c.intermediate_size as i64, c.intermediate_size as i64],
    )?;
    for (l, lw) in weights.layers.iter().enumerate() {
        let norm = |g: &mut GraphBuilder,
                    init: &mut Initializers,
                    input: &str,
                    tensor: &str,
                    w: &[f32]|
         -> Result<String> {
            let name = names::norm(l, tensor);
            init.add_f32(&name, &[w.len() as i64], w)?;
            Ok(rms_norm(g, input, &name, c.rms_norm_eps))
        };
        let matmul = |g: &mut GraphBuilder,
                      init: &mut Initializers,
                      input: &str,
                      tensor: &str,
                      m: &QuantMatrix|
         -> Result<String> {
            let name = names::proj(l, tensor);
            add_quant(init, &name, m)?;
            Ok(matmul_nbits(g, input, &name, m, accuracy_level, false))
        };

        let h_in = norm(&mut g, &mut init, &x, "input_layernorm", &lw.attn_norm)?;
        // Q, K and V share their input: one matmul over their concatenated rows, split.
        let qkv = QuantMatrix::concat_rows(&[&lw.q_proj, &lw.k_proj, &lw.v_proj]);
        let qkv = matmul(&mut g, &mut init, &h_in, names::QKV, &qkv)?;
        let (q, k, v) = (format!("q_{l}"), format!("k_{l}"), format!("v_{l}"));
        g.node(
            "Split",
            "",
            &[&qkv, "const_qkv_split"],
            &[&q, &k, &v],
            vec![("axis", Attr::Int(-1))],
        );
        // Per-head RMSNorm over head_dim: reshape to [b, s, heads, head_dim] and back,
        // unless there is one head, whose last axis is already head_dim.
        let head_norm = |g: &mut GraphBuilder,
                         init: &mut Initializers,
                         x: &str,
                         heads: usize,
                         shape: &str,
                         tensor: &str,
                         w: &[f32]|
         -> Result<String> {
            if heads == 1 {
                return norm(g, init, x, tensor, w);
            }
            let x4 = g.op("Reshape", &[x, shape], vec![]);
            let n = norm(g, init, &x4, tensor, w)?;
            Ok(g.op("Reshape", &[&n, "const_flatten_heads"], vec![]))
        };
        let q = head_norm(
            &mut g,
            &mut init,
            &q,
            c.num_heads,
            "const_q_heads_shape",
            "q_norm",
            &lw.q_norm,
        )?;
        let k = head_norm(
            &mut g,
            &mut init,
            &k,
            c.num_kv_heads,
            "const_kv_heads_shape",
            "k_norm",
            &lw.k_norm,
        )?;

        let (cos, sin, window) = match c.layer_kind(l) {
            LayerKind::Sliding => (&cos_local, &sin_local, c.sliding_window as i64),
            LayerKind::Global => (&cos_global, &sin_global, -1),
        };
        let attn_out = format!("attn_out_{l}");
        g.node(
            "GroupQueryAttention",
            MS,
            &[
                &q,
                &k,
                &v,
                &past_key(l),
                &past_value(l),
                &seqlens_k,
                &total_len,
                cos,
                sin,
            ],
            &[&attn_out, &present_key(l), &present_value(l)],
            vec![
                ("num_heads", Attr::Int(c.num_heads as i64)),
                ("kv_num_heads", Attr::Int(c.num_kv_heads as i64)),
                ("scale", Attr::Float(c.attn_scale)),
                ("local_window_size", Attr::Int(window)),
                ("do_rotary", Attr::Int(1)),
                ("rotary_interleaved", Attr::Int(0)),
            ],
        );
        let o = matmul(&mut g, &mut init, &attn_out, "o_proj", &lw.o_proj)?;
        let o = norm(
            &mut g,
            &mut init,
            &o,
            "post_attention_layernorm",
            &lw.post_attn_norm,
        )?;
        x = g.op("Add", &[&x, &o], vec![]);
        let h_ffn = norm(
            &mut g,
            &mut init,
            &x,
            "pre_feedforward_layernorm",
            &lw.pre_ffn_norm,
        )?;

        let gate_up = QuantMatrix::concat_rows(&[&lw.gate_proj, &lw.up_proj]);
        let gate_up = matmul(&mut g, &mut init, &h_ffn, names::GATE_UP, &gate_up)?;
        let (gate, up) = (format!("gate_{l}"), format!("up_{l}"));
        g.node(
            "Split",
            "",
            &[&gate_up, "const_gate_up_split"],
            &[&gate, &up],
            vec![("axis", Attr::Int(-1))],
        );
        let act = g.op(
            "Gelu",
            &[&gate],
            vec![("approximate", Attr::Str("tanh".into()))],
        );
        let prod = g.op("Mul", &[&act, &up], vec![]);
        let down = matmul(&mut g, &mut init, &prod, "down_proj", &lw.down_proj)?;
        let down = norm(
            &mut g,
            &mut init,
            &down,
            "post_feedforward_layernorm",
            &lw.post_ffn_norm,
        )?;
        x = g.op("Add", &[&x, &down], vec![]);
    }

    init.add_f32(
        names::FINAL_NORM,
        &[c.hidden_size as i64],
        &weights.final_norm,
    )?;
    let x = rms_norm(&mut g, &x, names::FINAL_NORM, c.rms_norm_eps);
    // Keep the last `logits_to_keep` positions (all of them when it is 0).
    let start = g.op("Neg", &[LOGITS_TO_KEEP], vec![]);
    let is_all = g.op("Equal", &[LOGITS_TO_KEEP, "const_zero_i64_1"], vec![]);
    init.add_i64("const_zero_i64_1", &[1], &[0])?;
    let start = g.op("Where", &[&is_all, "const_zero_i64_1", &start], vec![]);
    let kept = g.op(
        "Slice",
        &[&x, &start, "const_max_i64", "const_axis1"],
        vec![],
    );
    // The tied LM head: the same initializers as the embedding (both halves, summed).
    match &halves {
        Some((hi, lo)) => {
            let lm_hi = matmul_nbits(&mut g, &kept, names::EMBED_HI, hi, accuracy_level, false);
            let lm_lo = matmul_nbits(&mut g, &kept, names::EMBED_LO, lo, accuracy_level, true);
            g.node("Add", "", &[&lm_hi, &lm_lo], &[LOGITS], vec![]);
        }
        None => {
            let lm = matmul_nbits(
                &mut g,
                &kept,
                names::EMBED,
                &weights.embed,
                accuracy_level,
                false,
            );
            g.node("Identity", "", &[&lm], &[LOGITS], vec![]);
        }
    }

    g.output(
        LOGITS,
        data_type::FLOAT,
        vec![
            Dim::Named("batch_size"),
            Dim::Named("logits_length"),
            Dim::Fixed(c.vocab_size as i64),
        ],
    );
    let present_dims = || {
        vec![
            Dim::Named("batch_size"),
            Dim::Fixed(c.num_kv_heads as i64),
            Dim::Named("total_sequence_length"),
            Dim::Fixed(c.head_dim as i64),
        ]
    };
    for l in 0..c.num_layers {
        g.output(&present_key(l), data_type::FLOAT, present_dims());
        g.output(&present_value(l), data_type::FLOAT, present_dims());
    }

    let initializers = init.finish()?;
    let graph = g.finish("gemma3_text", initializers);
    // One graph file per KV layout and precision, all reading the same data file.
    for (windowed, kv) in super::kv_graph::VARIANTS {
        let variant = super::kv_graph::variant(&graph, windowed, kv);
        let model = model_proto(doc.into(), variant);
        lockstep_fetch::cache::atomic_write(
            dir.join(super::kv_graph::graph_file(windowed, kv)),
            &prost::Message::encode_to_vec(&model),
        )?;
    }
    Ok(())
}

/// A model around `graph` with lockstep's opsets (ONNX 21, com.microsoft 1) and producer.
pub(super) fn model_proto(doc_string: String, graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 10,
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: 21,
            },
            OperatorSetIdProto {
                domain: MS.into(),
                version: 1,
            },
        ],
        producer_name: "lockstep".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string,
        graph: Some(graph),
        ..Default::default()
    }
}

fn rms_norm(g: &mut GraphBuilder, input: &str, weight: &str, eps: f32) -> String {
    g.op(
        "SimplifiedLayerNormalization",
        &[input, weight],
        vec![
            ("axis", Attr::Int(-1)),
            ("epsilon", Attr::Float(eps)),
            ("stash_type", Attr::Int(1)),
        ],
    )
}

/// `zero_points` adds the `<name>.zero_points` initializer (the lower halves of the
/// split 8-bit table have zero point 0, not the implicit 8).
pub(super) fn matmul_nbits(
    g: &mut GraphBuilder,
    input: &str,
    name: &str,
    m: &QuantMatrix,
    accuracy_level: i64,
    zero_points: bool,
) -> String {
    let (qweight, scales, zp) = (
        names::qweight(name),
        names::scales(name),
        names::zero_points(name),
    );
    let mut inputs = vec![input, qweight.as_str(), scales.as_str()];
    if zero_points {
        inputs.push(&zp);
    }
    g.node(
        "MatMulNBits",
        MS,
        &inputs,
        &[],
        vec![
            ("K", Attr::Int(m.k as i64)),
            ("N", Attr::Int(m.n as i64)),
            ("bits", Attr::Int(m.bits as i64)),
            ("block_size", Attr::Int(m.block_size as i64)),
            ("accuracy_level", Attr::Int(accuracy_level)),
        ],
    )
}

pub(super) fn add_quant(init: &mut Initializers, name: &str, m: &QuantMatrix) -> Result<()> {
    init.add_raw(
        &names::qweight(name),
        data_type::UINT8,
        &[
            m.n as i64,
            m.blocks_per_row() as i64,
            m.bytes_per_block() as i64,
        ],
        &m.data,
    )?;
    init.add_f32(
        &names::scales(name),
        &[(m.n * m.blocks_per_row()) as i64],
        &m.scales,
    )
}

/// Splits 8-bit codes `q` into 4-bit `hi = q >> 4` (scales x16, implicit zero point 8)
/// and `lo = q & 15` (zero point 0), so that `s (q - 128) = 16 s (hi - 8) + s lo`.
pub fn split_nibbles(m: &QuantMatrix) -> (QuantMatrix, QuantMatrix) {
    assert_eq!(m.bits, 8);
    let pack = |f: fn(u8) -> u8| -> Vec<u8> {
        m.data
            .chunks_exact(2)
            .map(|p| f(p[0]) | (f(p[1]) << 4))
            .collect()
    };
    let half = |data: Vec<u8>, scales: Vec<f32>| QuantMatrix {
        bits: 4,
        n: m.n,
        k: m.k,
        block_size: m.block_size,
        data,
        scales,
    };
    (
        half(
            pack(|q| q >> 4),
            m.scales.iter().map(|s| s * 16.0).collect(),
        ),
        half(pack(|q| q & 15), m.scales.clone()),
    )
}

/// The inverse of [`split_nibbles`].
pub fn join_nibbles(hi: &QuantMatrix, lo: &QuantMatrix) -> QuantMatrix {
    let data = hi
        .data
        .iter()
        .zip(&lo.data)
        .flat_map(|(&h, &l)| [((h & 15) << 4) | (l & 15), (h & 0xf0) | (l >> 4)])
        .collect();
    QuantMatrix {
        bits: 8,
        n: lo.n,
        k: lo.k,
        block_size: lo.block_size,
        data,
        scales: lo.scales.clone(),
    }
}
