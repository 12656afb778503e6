//! The `coreml` variant: the Gemma 3 decoder as static-shape graphs built from standard
//! ONNX ops, so that ONNX Runtime's CoreML execution provider can take most of it.
//!
//! # What differs from the default graph
//!
//! - RMSNorm is `Mul(x, x)` -> `ReduceMean` -> `Add(eps)` -> `Sqrt` -> `Div` -> `Mul(w)`
//!   (f32; `Div` rather than `Reciprocal`, which the CoreML EP lowers to MIL `inverse`
//!   with an added epsilon of 1e-4).
//! - RoPE is `Gather` of precomputed `[cos | cos]` and `[-sin | sin]` tables by position,
//!   then `x * cos + Concat(x2, x1) * sin_signed` (NeoX halves; no `Neg` op needed).
//! - Attention is `MatMul` / `Concat` / `Add(mask)` / `Softmax` / `Slice` / `MatMul`, with
//!   an explicit additive mask the session builds (causal + sliding window), and the one
//!   KV head broadcast to the query heads by `MatMul` broadcasting over a 5-D layout
//!   `[1, kv_heads, group, seq, head_dim]` (no copy of the cache).
//! - The GELU is ONNX `Gelu` (opset 20) with `approximate = "tanh"`, as in the default.
//! - The embedding is `Gather` of the same 8-bit table, with the nibbles unpacked by
//!   `Cast` / `Mul` / `Sub` / `Round` instead of `BitwiseAnd` / `BitShift`.
//! - Shapes are static: a decode graph (`model.onnx`, 1 token per step) and a prefill
//!   graph (`model_prefill.onnx`, [`PREFILL_LEN`] tokens per step, padded), both over a
//!   fixed KV cache of [`CACHE_LEN`] positions owned by the caller. Both graphs read the
//!   same `model.onnx.data`.
//!
//! # What still runs on the CPU under the CoreML EP, and why
//!
//! - **The projections and the LM head stay `com.microsoft::MatMulNBits`** (4-bit, and the
//!   8-bit tied embedding split into two 4-bit halves), exactly the initializers of the
//!   default variant. The CoreML EP has no builder for `DequantizeLinear` (blocked INT4
//!   or otherwise) nor for any contrib op, so a standard `DequantizeLinear -> MatMul`
//!   would still put the dequantization on the CPU and ship f32 weights to CoreML on
//!   every step. Keeping MatMulNBits keeps the numbers identical to the default variant
//!   and lets [`crate::weights::ModelWeights::load`] read this package unchanged. These
//!   nodes run on the CPU in a "CoreML" session.
//! - **The embedding `Gather`s** index tables of 262,144 rows, over CoreML's 16,384
//!   limit on any dimension; so does the LM head's N. CPU.
//! - The `Cast` of the gathered uint8 rows (CoreML's cast takes no uint8). CPU.
//!
//! Everything else (norms, RoPE, attention, mask, softmax, GELU, residuals, reshapes,
//! transposes) is a standard op with static shapes that the CoreML EP declares support for.
//!
//! # I/O contract (both graphs; `S` = 1 or [`PREFILL_LEN`], `C` = [`CACHE_LEN`])
//!
//! Inputs:
//! - `input_ids` int64 `[1, S]`; padding slots may hold any valid id (the pad id).
//! - `position_ids` int64 `[1, S]`: the absolute position of each token (< `C`).
//! - `attention_bias_sliding`, `attention_bias_global` f32 `[S, C + S]`: 0 where query `i`
//!   may see the key, [`MASKED`] where not. Columns `0..C` are the cache slots (slot = the
//!   key's position), columns `C..C+S` the step's own keys. Sliding layers use the first,
//!   global layers the second. Every row must leave at least one key visible (a padded
//!   query sees itself).
//! - `past_keys.{l}` f32 `[1, kv_heads, head_dim, C]`: the key cache, *transposed* (one
//!   column per position), so that scores are a plain `MatMul`.
//! - `past_values.{l}` f32 `[1, kv_heads, C, head_dim]`.
//! - prefill only: `last_index` int64 `[1]`: which of the `S` rows `logits_last` is for.
//!
//! Outputs:
//! - decode only: `logits` f32 `[1, 1, vocab]`.
//! - prefill only: `logits_last` f32 `[1, 1, vocab]`: the row `last_index` only (ONNX
//!   Runtime runs every node whatever outputs are fetched, and the LM head costs over
//!   three times the rest of the model per row, so the prefill graph has it on one row;
//!   a caller wanting every position's logits runs the decode graph token by token).
//! - `new_keys.{l}`, `new_values.{l}` f32 `[1, kv_heads, S, head_dim]`: the step's keys
//!   (normed, rotated) and values; the caller writes the real rows into its cache at
//!   their positions (keys transposed).

use std::path::Path;

use lockstep_core::{LayerKind, ModelConfig, Result};

use super::graph::{add_quant, matmul_nbits, model_proto, split_nibbles};
use super::names;
use crate::onnx::{data_type, Attr, Dim, GraphBuilder, Initializers};
use crate::package::{DATA_FILE, MODEL_FILE};
use crate::weights::{ModelWeights, QuantMatrix};

/// The prefill graph's file, beside `model.onnx` (the decode graph).
pub const PREFILL_MODEL_FILE: &str = "model_prefill.onnx";
/// Tokens per prefill step (the last chunk of a prompt is padded).
pub const PREFILL_LEN: usize = 32;
/// KV cache positions (the most tokens a session can hold), unless the model's context
/// is shorter. Attention reads all of them on every step, so this is a speed/size trade.
pub const CACHE_LEN: usize = 1024;
/// The additive mask value for a hidden key: finite and representable in f16 (CoreML
/// may compute in f16), and `exp` of it underflows to exactly 0 in f32.
pub const MASKED: f32 = -30_000.0;

pub const INPUT_IDS: &str = "input_ids";
pub const POSITION_IDS: &str = "position_ids";
pub const BIAS_SLIDING: &str = "attention_bias_sliding";
pub const BIAS_GLOBAL: &str = "attention_bias_global";
pub const LAST_INDEX: &str = "last_index";
pub const LOGITS: &str = "logits";
pub const LOGITS_LAST: &str = "logits_last";

pub fn past_keys(layer: usize) -> String {
    format!("past_keys.{layer}")
}
pub fn past_values(layer: usize) -> String {
    format!("past_values.{layer}")
}
pub fn new_keys(layer: usize) -> String {
    format!("new_keys.{layer}")
}
pub fn new_values(layer: usize) -> String {
    format!("new_values.{layer}")
}

/// The cache length this variant uses for a model: [`CACHE_LEN`], capped by the context.
pub fn cache_len(c: &ModelConfig) -> usize {
    CACHE_LEN.min(c.context_length)
}

/// Writes `model.onnx` (decode, 1 token), `model_prefill.onnx` ([`PREFILL_LEN`] tokens)
/// and their shared `model.onnx.data` into `dir`.
pub fn write_model(
    weights: &ModelWeights,
    dir: &Path,
    accuracy_level: i64,
    doc: &str,
) -> Result<()> {
    let c = &weights.config;
    let cache = cache_len(c);
    let mut init = Initializers::create(&dir.join(DATA_FILE), DATA_FILE)?;
    let (hi, lo) = split_nibbles(&weights.embed);
    add_initializers(weights, &hi, &lo, cache, &mut init)?;
    let initializers = init.finish()?;
    for (file, seq) in [(MODEL_FILE, 1), (PREFILL_MODEL_FILE, PREFILL_LEN)] {
        let g = build_graph(weights, &hi, &lo, cache, seq, accuracy_level);
        let model = model_proto(
            format!("{doc} (coreml variant, {seq} token(s) per step, {cache}-position cache)"),
            g.finish("gemma3_text_static", initializers.clone()),
        );
        lockstep_fetch::cache::atomic_write(
            dir.join(file),
            &prost::Message::encode_to_vec(&model),
        )?;
    }
    Ok(())
}

/// Every initializer of both graphs: the weights under the default variant's names and
/// layouts, the RoPE tables and small constants.
fn add_initializers(
    weights: &ModelWeights,
    hi: &QuantMatrix,
    lo: &QuantMatrix,
    cache: usize,
    init: &mut Initializers,
) -> Result<()> {
    let c = &weights.config;
    add_quant(init, names::EMBED_HI, hi)?;
    add_quant(init, names::EMBED_LO, lo)?;
    let zp_bytes = lo.n * lo.blocks_per_row().div_ceil(2);
    init.add_raw(
        &names::zero_points(names::EMBED_LO),
        data_type::UINT8,
        &[zp_bytes as i64],
        &vec![0u8; zp_bytes],
    )?;
    for (l, lw) in weights.layers.iter().enumerate() {
        for (tensor, w) in [
            ("input_layernorm", &lw.attn_norm),
            ("q_norm", &lw.q_norm),
            ("k_norm", &lw.k_norm),
            ("post_attention_layernorm", &lw.post_attn_norm),
            ("pre_feedforward_layernorm", &lw.pre_ffn_norm),
            ("post_feedforward_layernorm", &lw.post_ffn_norm),
        ] {
            init.add_f32(&names::norm(l, tensor), &[w.len() as i64], w)?;
        }
        for (tensor, m) in [
            ("q_proj", &lw.q_proj),
            ("k_proj", &lw.k_proj),
            ("v_proj", &lw.v_proj),
            ("o_proj", &lw.o_proj),
            ("gate_proj", &lw.gate_proj),
            ("up_proj", &lw.up_proj),
            ("down_proj", &lw.down_proj),
        ] {
            add_quant(init, &names::proj(l, tensor), m)?;
        }
    }
    init.add_f32(
        names::FINAL_NORM,
        &[c.hidden_size as i64],
        &weights.final_norm,
    )?;

    // RoPE tables over the cache's positions, full head width: [cos | cos] and
    // [-sin | sin], so that rope(x) = x * cos + [x2 | x1] * sin_signed. The angles are
    // computed as the default graph computes them (f32 position times f32 inverse
    // frequency), the trigonometry in f64 then rounded.
    let d = c.head_dim;
    let half = d / 2;
    for (theta, tag) in [
        (c.rope_theta_local, "local"),
        (c.rope_theta_global, "global"),
    ] {
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / (theta as f64).powf(2.0 * i as f64 / d as f64)) as f32)
            .collect();
        let mut cos = Vec::with_capacity(cache * d);
        let mut sin = Vec::with_capacity(cache * d);
        for p in 0..cache {
            let angles: Vec<f64> = inv.iter().map(|&f| (p as f32 * f) as f64).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos() as f32));
            }
            sin.extend(angles.iter().map(|a| -a.sin() as f32));
            sin.extend(angles.iter().map(|a| a.sin() as f32));
        }
        init.add_f32(&format!("rope_cos_{tag}"), &[cache as i64, d as i64], &cos)?;
        init.add_f32(&format!("rope_sin_{tag}"), &[cache as i64, d as i64], &sin)?;
    }

    // Small constants.
    let e = &weights.embed;
    let kv = c.num_kv_heads as i64;
    let group = (c.num_heads / c.num_kv_heads) as i64;
    init.add_f32("const_embed_scale", &[], &[c.embed_scale])?;
    init.add_f32("const_16", &[], &[16.0])?;
    init.add_f32("const_1_16", &[], &[1.0 / 16.0])?;
    init.add_f32("const_15_32", &[], &[15.0 / 32.0])?;
    init.add_f32("const_128", &[], &[128.0])?;
    init.add_f32("const_eps", &[], &[c.rms_norm_eps])?;
    init.add_f32("const_attn_scale", &[], &[c.attn_scale])?;
    init.add_i64("const_last_axis", &[1], &[-1])?;
    init.add_i64("const_axis2", &[1], &[2])?;
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
    init.add_i64(
        "const_q_heads_shape",
        &[4],
        &[0, 0, c.num_heads as i64, d as i64],
    )?;
    init.add_i64("const_kv_heads_shape", &[4], &[0, 0, kv, d as i64])?;
    init.add_i64("const_flatten_heads", &[3], &[0, 0, -1])?;
    // [1, heads, S, D] <-> [1, kv, group, S, D]; 0 copies the dimension.
    init.add_i64("const_q5_shape", &[5], &[1, kv, group, -1, d as i64])?;
    init.add_i64(
        "const_q4_shape",
        &[4],
        &[1, c.num_heads as i64, -1, d as i64],
    )?;
    // Caches and the step's K/V with a broadcast group axis.
    init.add_i64("const_kT5_shape", &[5], &[1, kv, 1, d as i64, -1])?;
    init.add_i64("const_v5_shape", &[5], &[1, kv, 1, -1, d as i64])?;
    init.add_i64("const_half_start", &[1], &[0])?;
    init.add_i64("const_half_mid", &[1], &[half as i64])?;
    init.add_i64("const_half_end", &[1], &[d as i64])?;
    init.add_i64("const_zero_1", &[1], &[0])?;
    init.add_i64("const_cache_len", &[1], &[cache as i64])?;
    for seq in [1, PREFILL_LEN] {
        init.add_i64(
            &format!("const_scores_end_{seq}"),
            &[1],
            &[(cache + seq) as i64],
        )?;
    }
    Ok(())
}

/// One static-shape graph of `seq` tokens per step.
fn build_graph(
    weights: &ModelWeights,
    hi: &QuantMatrix,
    lo: &QuantMatrix,
    cache: usize,
    seq: usize,
    accuracy_level: i64,
) -> GraphBuilder {
    let c = &weights.config;
    let s = seq as i64;
    let d = c.head_dim as i64;
    let kv = c.num_kv_heads as i64;
    let mut g = GraphBuilder::default();
    let prefill = seq > 1;
    let scores_end = format!("const_scores_end_{seq}");

    g.input(
        INPUT_IDS,
        data_type::INT64,
        vec![Dim::Fixed(1), Dim::Fixed(s)],
    );
    g.input(
        POSITION_IDS,
        data_type::INT64,
        vec![Dim::Fixed(1), Dim::Fixed(s)],
    );
    for name in [BIAS_SLIDING, BIAS_GLOBAL] {
        g.input(
            name,
            data_type::FLOAT,
            vec![Dim::Fixed(s), Dim::Fixed(cache as i64 + s)],
        );
    }
    for l in 0..c.num_layers {
        g.input(
            &past_keys(l),
            data_type::FLOAT,
            vec![
                Dim::Fixed(1),
                Dim::Fixed(kv),
                Dim::Fixed(d),
                Dim::Fixed(cache as i64),
            ],
        );
        g.input(
            &past_values(l),
            data_type::FLOAT,
            vec![
                Dim::Fixed(1),
                Dim::Fixed(kv),
                Dim::Fixed(cache as i64),
                Dim::Fixed(d),
            ],
        );
    }
    if prefill {
        g.input(LAST_INDEX, data_type::INT64, vec![Dim::Fixed(1)]);
    }

    // Embedding: gather both 4-bit halves' rows, unpack each byte's two nibbles with
    // float arithmetic (hi = round(b / 16 - 15/32) is exact: b / 16 lies within
    // [hi, hi + 15/16]), rebuild the 8-bit codes, dequantize, scale by sqrt(hidden).
    let unpack = |g: &mut GraphBuilder, table: &str| -> String {
        let rows = g.op(
            "Gather",
            &[&names::qweight(table), INPUT_IDS],
            vec![("axis", Attr::Int(0))],
        );
        let bytes = g.op(
            "Cast",
            &[&rows],
            vec![("to", Attr::Int(data_type::FLOAT as i64))],
        );
        let scaled = g.op("Mul", &[&bytes, "const_1_16"], vec![]);
        let shifted = g.op("Sub", &[&scaled, "const_15_32"], vec![]);
        let high = g.op("Round", &[&shifted], vec![]);
        let high16 = g.op("Mul", &[&high, "const_16"], vec![]);
        let low = g.op("Sub", &[&bytes, &high16], vec![]);
        let low = g.op("Unsqueeze", &[&low, "const_last_axis"], vec![]);
        let high = g.op("Unsqueeze", &[&high, "const_last_axis"], vec![]);
        // Low nibble first: element 2j, then 2j + 1.
        let pairs = g.op("Concat", &[&low, &high], vec![("axis", Attr::Int(-1))]);
        g.op("Reshape", &[&pairs, "const_codes_shape"], vec![])
    };
    let hi_codes = unpack(&mut g, names::EMBED_HI);
    let lo_codes = unpack(&mut g, names::EMBED_LO);
    let hi16 = g.op("Mul", &[&hi_codes, "const_16"], vec![]);
    let code = g.op("Add", &[&hi16, &lo_codes], vec![]);
    let centered = g.op("Sub", &[&code, "const_128"], vec![]);
    let scales_3d = g.op(
        "Reshape",
        &[&names::scales(names::EMBED_LO), "const_embed_scales_shape"],
        vec![],
    );
    let row_scales = g.op(
        "Gather",
        &[&scales_3d, INPUT_IDS],
        vec![("axis", Attr::Int(0))],
    );
    let deq = g.op("Mul", &[&centered, &row_scales], vec![]);
    let flat = g.op("Reshape", &[&deq, "const_hidden_shape"], vec![]);
    let mut x = g.op("Mul", &[&flat, "const_embed_scale"], vec![]);

    // RoPE rows for this step's positions, [1, S, 1, D] to broadcast over heads.
    let mut rope_rows = |tag: &str| -> (String, String) {
        let mut row = |table: String| {
            let r = g.op(
                "Gather",
                &[&table, POSITION_IDS],
                vec![("axis", Attr::Int(0))],
            );
            g.op("Unsqueeze", &[&r, "const_axis2"], vec![])
        };
        (
            row(format!("rope_cos_{tag}")),
            row(format!("rope_sin_{tag}")),
        )
    };
    let rope_local = rope_rows("local");
    let rope_global = rope_rows("global");

    for l in 0..c.num_layers {
        let norm = |g: &mut GraphBuilder, input: &str, tensor: &str| -> String {
            rms_norm(g, input, &names::norm(l, tensor))
        };
        let matmul = |g: &mut GraphBuilder, input: &str, tensor: &str, m: &QuantMatrix| {
            matmul_nbits(g, input, &names::proj(l, tensor), m, accuracy_level, false)
        };
        let lw = &weights.layers[l];
        let (rope, bias) = match c.layer_kind(l) {
            LayerKind::Sliding => (&rope_local, BIAS_SLIDING),
            LayerKind::Global => (&rope_global, BIAS_GLOBAL),
        };

        let h = norm(&mut g, &x, "input_layernorm");
        let q = matmul(&mut g, &h, "q_proj", &lw.q_proj);
        let k = matmul(&mut g, &h, "k_proj", &lw.k_proj);
        let v = matmul(&mut g, &h, "v_proj", &lw.v_proj);
        // [1, S, heads, D]: per-head RMSNorm over D, then RoPE.
        let q4 = g.op("Reshape", &[&q, "const_q_heads_shape"], vec![]);
        let q4 = norm(&mut g, &q4, "q_norm");
        let q4 = apply_rope(&mut g, &q4, rope);
        let k4 = g.op("Reshape", &[&k, "const_kv_heads_shape"], vec![]);
        let k4 = norm(&mut g, &k4, "k_norm");
        let k4 = apply_rope(&mut g, &k4, rope);
        let v4 = g.op("Reshape", &[&v, "const_kv_heads_shape"], vec![]);

        // The step's K/V rows, [1, kv, S, D], returned for the caller's cache.
        let perm = |p: &[i64]| vec![("perm", Attr::Ints(p.to_vec()))];
        g.node(
            "Transpose",
            "",
            &[&k4],
            &[&new_keys(l)],
            perm(&[0, 2, 1, 3]),
        );
        let nv = g.node(
            "Transpose",
            "",
            &[&v4],
            &[&new_values(l)],
            perm(&[0, 2, 1, 3]),
        );

        // Queries as [1, kv, group, S, D], scaled; keys as [1, kv, 1, D, keys].
        let qt = g.op("Transpose", &[&q4], perm(&[0, 2, 1, 3]));
        let q5 = g.op("Reshape", &[&qt, "const_q5_shape"], vec![]);
        let q5 = g.op("Mul", &[&q5, "const_attn_scale"], vec![]);
        let past_k = g.op("Reshape", &[&past_keys(l), "const_kT5_shape"], vec![]);
        let past_v = g.op("Reshape", &[&past_values(l), "const_v5_shape"], vec![]);
        let new_kt = g.op("Transpose", &[&k4], perm(&[0, 2, 3, 1]));
        let new_kt = g.op("Reshape", &[&new_kt, "const_kT5_shape"], vec![]);
        let new_v5 = g.op("Reshape", &[&nv, "const_v5_shape"], vec![]);
        let s_past = g.op("MatMul", &[&q5, &past_k], vec![]);
        let s_new = g.op("MatMul", &[&q5, &new_kt], vec![]);
        let scores = g.op("Concat", &[&s_past, &s_new], vec![("axis", Attr::Int(-1))]);
        let scores = g.op("Add", &[&scores, bias], vec![]);
        let probs = g.op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
        let p_past = g.op(
            "Slice",
            &[&probs, "const_zero_1", "const_cache_len", "const_last_axis"],
            vec![],
        );
        let p_new = g.op(
            "Slice",
            &[&probs, "const_cache_len", &scores_end, "const_last_axis"],
            vec![],
        );
        let o_past = g.op("MatMul", &[&p_past, &past_v], vec![]);
        let o_new = g.op("MatMul", &[&p_new, &new_v5], vec![]);
        let o = g.op("Add", &[&o_past, &o_new], vec![]);
        // [1, kv, group, S, D] -> [1, heads, S, D] -> [1, S, heads, D] -> [1, S, heads * D]
        let o = g.op("Reshape", &[&o, "const_q4_shape"], vec![]);
        let o = g.op("Transpose", &[&o], perm(&[0, 2, 1, 3]));
        let o = g.op("Reshape", &[&o, "const_flatten_heads"], vec![]);

        let o = matmul(&mut g, &o, "o_proj", &lw.o_proj);
        let o = norm(&mut g, &o, "post_attention_layernorm");
        x = g.op("Add", &[&x, &o], vec![]);

        let h = norm(&mut g, &x, "pre_feedforward_layernorm");
        let gate = matmul(&mut g, &h, "gate_proj", &lw.gate_proj);
        let up = matmul(&mut g, &h, "up_proj", &lw.up_proj);
        let act = g.op(
            "Gelu",
            &[&gate],
            vec![("approximate", Attr::Str("tanh".into()))],
        );
        let prod = g.op("Mul", &[&act, &up], vec![]);
        let down = matmul(&mut g, &prod, "down_proj", &lw.down_proj);
        let down = norm(&mut g, &down, "post_feedforward_layernorm");
        x = g.op("Add", &[&x, &down], vec![]);
    }

    let x = rms_norm(&mut g, &x, names::FINAL_NORM);
    // The tied LM head: the embedding's two 4-bit halves, summed.
    let lm_head = |g: &mut GraphBuilder, input: &str, out: &str| {
        let a = matmul_nbits(g, input, names::EMBED_HI, hi, accuracy_level, false);
        let b = matmul_nbits(g, input, names::EMBED_LO, lo, accuracy_level, true);
        g.node("Add", "", &[&a, &b], &[out], vec![]);
    };
    // ONNX Runtime computes every node whatever outputs are asked for, so the prefill
    // graph has the LM head on one row only: 262,144 x 640 per row is over three times
    // the whole decoder's per-token cost.
    let vocab = Dim::Fixed(c.vocab_size as i64);
    if prefill {
        let last = g.op("Gather", &[&x, LAST_INDEX], vec![("axis", Attr::Int(1))]);
        lm_head(&mut g, &last, LOGITS_LAST);
        g.output(
            LOGITS_LAST,
            data_type::FLOAT,
            vec![Dim::Fixed(1), Dim::Fixed(1), vocab],
        );
    } else {
        lm_head(&mut g, &x, LOGITS);
        g.output(
            LOGITS,
            data_type::FLOAT,
            vec![Dim::Fixed(1), Dim::Fixed(1), vocab],
        );
    }
    for l in 0..c.num_layers {
        for name in [new_keys(l), new_values(l)] {
            g.output(
                &name,
                data_type::FLOAT,
                vec![Dim::Fixed(1), Dim::Fixed(kv), Dim::Fixed(s), Dim::Fixed(d)],
            );
        }
    }
    g
}

/// RMSNorm over the last axis from standard ops, in f32:
/// `x / sqrt(mean(x * x) + eps) * w`.
fn rms_norm(g: &mut GraphBuilder, input: &str, weight: &str) -> String {
    let sq = g.op("Mul", &[input, input], vec![]);
    let mean = g.op(
        "ReduceMean",
        &[&sq, "const_last_axis"],
        vec![("keepdims", Attr::Int(1))],
    );
    let var = g.op("Add", &[&mean, "const_eps"], vec![]);
    let rms = g.op("Sqrt", &[&var], vec![]);
    let normed = g.op("Div", &[input, &rms], vec![]);
    g.op("Mul", &[&normed, weight], vec![])
}

/// NeoX RoPE on `[1, S, heads, D]` with gathered `[1, S, 1, D]` tables:
/// `x * [cos | cos] + [x2 | x1] * [-sin | sin]`.
fn apply_rope(g: &mut GraphBuilder, x: &str, (cos, sin): &(String, String)) -> String {
    let x1 = g.op(
        "Slice",
        &[x, "const_half_start", "const_half_mid", "const_last_axis"],
        vec![],
    );
    let x2 = g.op(
        "Slice",
        &[x, "const_half_mid", "const_half_end", "const_last_axis"],
        vec![],
    );
    let swapped = g.op("Concat", &[&x2, &x1], vec![("axis", Attr::Int(-1))]);
    let a = g.op("Mul", &[x, cos], vec![]);
    let b = g.op("Mul", &[&swapped, sin], vec![]);
    g.op("Add", &[&a, &b], vec![])
}
