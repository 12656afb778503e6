//! The default graph's structure: nodes per decoder layer by op type, measured as the
//! difference between a 4-layer and a 2-layer conversion of the same shapes (so the
//! embedding, RoPE tables and LM head cancel out). `cargo test -p lockstep-model --test
//! graph_structure -- --nocapture` prints the table.
//!
//! Before the lean graph (converter v2) a layer was 22 nodes: 7 MatMulNBits, 6
//! SimplifiedLayerNormalization, 4 Reshape, 2 Add, GroupQueryAttention, Gelu, Mul.

use std::collections::BTreeMap;
use std::path::Path;

use lockstep_model::convert::{build_synthetic, tiny_config, ConvertOptions, Variant};
use lockstep_model::onnx::OnnxFile;
use lockstep_model::package::MODEL_FILE;
use lockstep_model::weights::ModelWeights;
use lockstep_model::ModelConfig;

fn convert(config: ModelConfig, dir: &Path, accuracy_level: i64) {
    let tok = dir.join("tokenizer");
    std::fs::create_dir_all(&tok).unwrap();
    // The converter copies the tokenizer files; nothing here parses them.
    std::fs::write(tok.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(tok.join("tokenizer_config.json"), "{}").unwrap();
    let opts = ConvertOptions {
        name: "structure".into(),
        accuracy_level,
        tokenizer_dir: tok,
        projection_bits: 4,
        progress: false,
        variant: Variant::Default,
    };
    build_synthetic(config, 11, &dir.join("model"), &opts).unwrap();
}

fn op_counts(dir: &Path) -> BTreeMap<String, i64> {
    let onnx = OnnxFile::open(&dir.join("model").join(MODEL_FILE)).unwrap();
    let mut counts = BTreeMap::new();
    for n in &onnx.graph().node {
        *counts.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    counts
}

/// Nodes per layer by op type for `config`'s shapes.
fn per_layer(config: &ModelConfig, accuracy_level: i64) -> BTreeMap<String, i64> {
    let root = tempfile::tempdir().unwrap();
    let with = |layers: usize, tag: &str| {
        let dir = root.path().join(tag);
        convert(
            ModelConfig {
                num_layers: layers,
                ..config.clone()
            },
            &dir,
            accuracy_level,
        );
        op_counts(&dir)
    };
    let (two, four) = (with(2, "two"), with(4, "four"));
    let mut diff = BTreeMap::new();
    for (op, &n) in &four {
        let d = n - two.get(op).copied().unwrap_or(0);
        assert_eq!(d % 2, 0, "{op}: {d} nodes over two layers");
        if d != 0 {
            diff.insert(op.clone(), d / 2);
        }
    }
    diff
}

fn small(kv_heads: usize) -> ModelConfig {
    ModelConfig {
        vocab_size: 512,
        num_kv_heads: kv_heads,
        ..tiny_config()
    }
}

fn expected(reshapes: i64) -> BTreeMap<String, i64> {
    [
        ("MatMulNBits", 4),
        ("Split", 2),
        ("SimplifiedLayerNormalization", 6),
        ("Add", 2),
        ("GroupQueryAttention", 1),
        ("Gelu", 1),
        ("Mul", 1),
        ("Reshape", reshapes),
    ]
    .into_iter()
    .map(|(op, n)| (op.to_string(), n))
    .collect()
}

#[test]
fn a_layer_is_nineteen_nodes_with_one_kv_head() {
    let per_layer = per_layer(&small(1), 0);
    let total: i64 = per_layer.values().sum();
    println!("nodes per layer (Gemma 3 shapes, 1 KV head): {total}");
    for (op, n) in &per_layer {
        println!("  {op:34} {n}");
    }
    // Q/K/V one matmul, gate/up one matmul; o and down; q is reshaped to heads around its
    // norm, k (one head) needs none.
    assert_eq!(per_layer, expected(2));
    assert_eq!(total, 19);
    // int8 activations: the same structure, another accuracy_level.
    assert_eq!(self::per_layer(&small(1), 4), expected(2));
}

#[test]
fn several_kv_heads_reshape_k_around_its_norm() {
    assert_eq!(per_layer(&small(2), 0), expected(4));
}

/// The fused initializers read back as the separate projections the writer was given,
/// byte for byte: the GPU backend and the GGUF export see the weights they always saw.
#[test]
fn fused_projections_read_back_as_the_separate_matrices() {
    let root = tempfile::tempdir().unwrap();
    let config = ModelConfig {
        num_layers: 2,
        ..small(1)
    };
    let weights = lockstep_model::convert::synthetic_weights(config.clone(), 11);
    convert(config, root.path(), 0);
    let onnx = OnnxFile::open(&root.path().join("model").join(MODEL_FILE)).unwrap();
    let names: Vec<&str> = onnx
        .graph()
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert!(names.contains(&"model.layers.0.qkv_proj.qweight"));
    assert!(names.contains(&"model.layers.0.gate_up_proj.qweight"));
    assert!(!names
        .iter()
        .any(|n| n.contains("q_proj.") || n.contains("gate_proj.")));
    let read = ModelWeights::load(&root.path().join("model")).unwrap();
    assert_eq!(read, weights);
}
