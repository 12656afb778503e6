//! A converted model's weights written back as a Gemma 3 GGUF, so that llama.cpp can run
//! a model that has no GGUF of its own (the synthetic ones) on exactly the weights ONNX
//! Runtime runs.
//!
//! Every tensor is written as F32: the dequantized values of the ONNX initializers, bit
//! for bit. A ggml quantized type could not carry them (Q4_0 and Q8_0 hold f16 scales, ours
//! are f32), and F32 makes llama.cpp multiply in f32, so that a comparison with ONNX Runtime
//! tests llama.cpp's graph of the architecture (norms, RoPE, masks, the KV cache) rather
//! than its 8-bit activation quantization, which the real model's GGUF exercises.

use std::path::{Path, PathBuf};

use lockstep_core::{Error, ModelConfig, Result};

use crate::gguf::{GgufWriter, MetaArray, MetaValue};
use crate::package::{ModelPackage, TOKENIZER_FILE};
use crate::weights::{ModelWeights, QuantMatrix};

/// The GGUF written into a converted model directory by [`package_gguf`].
pub const PACKAGE_GGUF_FILE: &str = "model.gguf";

/// The package's own weights as a GGUF beside its ONNX files (`model.gguf`), written the
/// first time it is asked for (atomically: a reader never sees half of it). It goes
/// with the directory when a conversion replaces it.
pub fn package_gguf(package: &ModelPackage) -> Result<PathBuf> {
    let path = package.dir.join(PACKAGE_GGUF_FILE);
    if path.is_file() {
        return Ok(path);
    }
    let weights = ModelWeights::load(&package.dir)?;
    let gguf = gguf_from_weights(
        &weights,
        &package.dir.join(TOKENIZER_FILE),
        &package.manifest.name,
    )?;
    gguf.write(&path)?;
    Ok(path)
}

/// ggml token types (llama.cpp's `llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_BYTE: i32 = 6;

/// The GGUF of `weights`, with the vocabulary of `tokenizer_json` (a Hugging Face
/// tokenizer file whose ids are the model's). `name` goes into `general.name`.
pub fn gguf_from_weights(
    weights: &ModelWeights,
    tokenizer_json: &Path,
    name: &str,
) -> Result<GgufWriter> {
    let c = &weights.config;
    check_expressible(c)?;
    let mut w = GgufWriter::new();
    let u32_of = |what: &str, v: usize| {
        u32::try_from(v).map_err(|_| {
            Error::Model(format!(
                "the model's {what} {v} does not fit a GGUF u32 field"
            ))
        })
    };
    let arch = "gemma3";
    let key = |k: &str| format!("{arch}.{k}");
    w.set("general.architecture", MetaValue::String(arch.into()))
        .set("general.name", MetaValue::String(name.into()))
        // LLAMA_FTYPE_ALL_F32
        .set("general.file_type", MetaValue::U32(0))
        .set(
            key("context_length"),
            MetaValue::U32(u32_of("context length", c.context_length)?),
        )
        .set(
            key("embedding_length"),
            MetaValue::U32(u32_of("hidden size", c.hidden_size)?),
        )
        .set(
            key("block_count"),
            MetaValue::U32(u32_of("layer count", c.num_layers)?),
        )
        .set(
            key("feed_forward_length"),
            MetaValue::U32(u32_of("intermediate size", c.intermediate_size)?),
        )
        .set(
            key("attention.head_count"),
            MetaValue::U32(u32_of("head count", c.num_heads)?),
        )
        .set(
            key("attention.head_count_kv"),
            MetaValue::U32(u32_of("KV head count", c.num_kv_heads)?),
        )
        .set(
            key("attention.key_length"),
            MetaValue::U32(u32_of("head dim", c.head_dim)?),
        )
        .set(
            key("attention.value_length"),
            MetaValue::U32(u32_of("head dim", c.head_dim)?),
        )
        .set(
            key("attention.layer_norm_rms_epsilon"),
            MetaValue::F32(c.rms_norm_eps),
        )
        .set(key("rope.freq_base"), MetaValue::F32(c.rope_theta_global))
        .set(
            key("rope.freq_base_swa"),
            MetaValue::F32(c.rope_theta_local),
        )
        .set(
            key("attention.sliding_window"),
            MetaValue::U32(u32_of("sliding window", c.sliding_window)?),
        )
        // llama.cpp: layer il slides when il % pattern < pattern - 1, i.e. the last of
        // every `global_every` layers is global, as in ModelConfig::layer_kind.
        .set(
            key("attention.sliding_window_pattern"),
            MetaValue::U32(u32_of("global layer period", c.global_every)?),
        );

    let vocab = Vocabulary::from_tokenizer_json(tokenizer_json, c.vocab_size)?;
    w.set("tokenizer.ggml.model", MetaValue::String("llama".into()))
        .set("tokenizer.ggml.pre", MetaValue::String("default".into()))
        .set(
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::String(vocab.tokens)),
        )
        .set(
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(vocab.scores)),
        )
        .set(
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(vocab.types)),
        )
        .set(
            "tokenizer.ggml.bos_token_id",
            MetaValue::U32(c.bos_token_id),
        )
        .set(
            "tokenizer.ggml.eos_token_id",
            MetaValue::U32(c.eos_token_ids.first().copied().unwrap_or(1)),
        )
        .set(
            "tokenizer.ggml.padding_token_id",
            MetaValue::U32(c.pad_token_id),
        )
        .set("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))
        .set("tokenizer.ggml.add_eos_token", MetaValue::Bool(false))
        .set("tokenizer.ggml.add_space_prefix", MetaValue::Bool(false));
    if let Some(unk) = vocab.unk {
        w.set("tokenizer.ggml.unknown_token_id", MetaValue::U32(unk));
    }

    // Tensors in the real Gemma 3 GGUF's order and names; no `output.weight`: the LM
    // head is the embedding, as llama.cpp does when the file has none.
    w.add_f32(
        "output_norm.weight",
        &[c.hidden_size as u64],
        &weights.final_norm,
    )?;
    add_matrix(&mut w, "token_embd.weight", &weights.embed)?;
    for (l, layer) in weights.layers.iter().enumerate() {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        let vector = |w: &mut GgufWriter, s: &str, v: &[f32]| w.add_f32(n(s), &[v.len() as u64], v);
        add_matrix(&mut w, &n("attn_k"), &layer.k_proj)?;
        vector(&mut w, "attn_k_norm", &layer.k_norm)?;
        vector(&mut w, "attn_norm", &layer.attn_norm)?;
        add_matrix(&mut w, &n("attn_output"), &layer.o_proj)?;
        add_matrix(&mut w, &n("attn_q"), &layer.q_proj)?;
        vector(&mut w, "attn_q_norm", &layer.q_norm)?;
        add_matrix(&mut w, &n("attn_v"), &layer.v_proj)?;
        add_matrix(&mut w, &n("ffn_down"), &layer.down_proj)?;
        add_matrix(&mut w, &n("ffn_gate"), &layer.gate_proj)?;
        vector(&mut w, "ffn_norm", &layer.pre_ffn_norm)?;
        add_matrix(&mut w, &n("ffn_up"), &layer.up_proj)?;
        vector(&mut w, "post_attention_norm", &layer.post_attn_norm)?;
        vector(&mut w, "post_ffw_norm", &layer.post_ffn_norm)?;
    }
    Ok(w)
}

/// llama.cpp's Gemma 3 graph fixes what `ModelConfig` leaves free: the attention scale
/// is 1/sqrt(head_dim) (below 27B) and the embedding scale sqrt(hidden). A config that
/// differs cannot be written as a GGUF llama.cpp would run the same way.
fn check_expressible(c: &ModelConfig) -> Result<()> {
    let attn = 1.0 / (c.head_dim as f32).sqrt();
    let embed = (c.hidden_size as f32).sqrt();
    if c.attn_scale != attn || c.embed_scale != embed {
        return Err(Error::Model(format!(
            "llama.cpp's Gemma 3 graph scales attention by 1/sqrt(head_dim) = {attn} and the embedding by sqrt(hidden) = {embed}; this model uses {} and {}, so it cannot be written as a GGUF that llama.cpp runs the same way",
            c.attn_scale, c.embed_scale
        )));
    }
    Ok(())
}

/// `[n, k]` in MatMulNBits terms is ggml dims `[k, n]`: `k` contiguous.
fn add_matrix(w: &mut GgufWriter, name: &str, m: &QuantMatrix) -> Result<()> {
    let mut values = Vec::with_capacity(m.n * m.k);
    for row in 0..m.n {
        values.extend((0..m.k).map(|col| m.value(row, col)));
    }
    w.add_f32(name, &[m.k as u64, m.n as u64], &values)
}

/// A sentencepiece-style vocabulary for `tokenizer.ggml.*`.
struct Vocabulary {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    unk: Option<u32>,
}

impl Vocabulary {
    /// Every id's piece from the tokenizer's BPE vocabulary and added tokens. Types: an
    /// added special token is a control token, another added token user-defined,
    /// `<0xNN>` a byte-fallback token, anything else normal. Scores: -1000 for added
    /// tokens and 0 for bytes, as in the real Gemma 3 GGUF, and -id for normal pieces,
    /// which keeps the order of the real file's scores (they fall by one per id);
    /// llama.cpp's tokenizer would read them, but lockstep gives it token ids.
    fn from_tokenizer_json(path: &Path, vocab_size: usize) -> Result<Self> {
        let bad = |what: String| {
            Error::Model(format!(
                "{}: {what}; is it a Hugging Face tokenizer.json?",
                path.display()
            ))
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("cannot read the tokenizer", path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e})")))?;
        let vocab = json
            .pointer("/model/vocab")
            .and_then(|v| v.as_object())
            .ok_or_else(|| bad("no model.vocab object".into()))?;
        let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
        let mut types = vec![TOKEN_NORMAL; vocab_size];
        let mut put = |piece: &str, id: Option<u64>| -> Result<usize> {
            let id = id
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < vocab_size)
                .ok_or_else(|| {
                    bad(format!(
                        "token {piece:?} has an id outside the model's {vocab_size} ids"
                    ))
                })?;
            tokens[id] = Some(piece.to_string());
            Ok(id)
        };
        for (piece, id) in vocab {
            let id = put(piece, id.as_u64())?;
            if is_byte_piece(piece) {
                types[id] = TOKEN_BYTE;
            }
        }
        for added in json
            .get("added_tokens")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            let piece = added
                .get("content")
                .and_then(|c| c.as_str())
                .ok_or_else(|| bad("an added token has no content".into()))?;
            let id = added.get("id").and_then(|i| i.as_u64());
            // Gemma 3's tokenizer adds `<image_soft_token>` at 262144, past the text
            // model's embedding: not one of the model's ids.
            if id.is_some_and(|i| i >= vocab_size as u64) {
                continue;
            }
            let id = put(piece, id)?;
            let special = added.get("special").and_then(|s| s.as_bool()) == Some(true);
            types[id] = if special {
                TOKEN_CONTROL
            } else {
                TOKEN_USER_DEFINED
            };
        }
        let tokens: Vec<String> = tokens
            .into_iter()
            .enumerate()
            .map(|(id, t)| t.ok_or_else(|| bad(format!("no token has id {id}"))))
            .collect::<Result<_>>()?;
        let scores = types
            .iter()
            .enumerate()
            .map(|(id, &t)| match t {
                TOKEN_NORMAL => -(id as f32),
                TOKEN_BYTE => 0.0,
                _ => -1000.0,
            })
            .collect();
        let unk = json
            .pointer("/model/unk_token")
            .and_then(|u| u.as_str())
            .and_then(|u| tokens.iter().position(|t| t == u))
            .map(|i| i as u32);
        Ok(Self {
            tokens,
            scores,
            types,
            unk,
        })
    }
}

/// `<0x0A>`: sentencepiece's byte-fallback pieces.
fn is_byte_piece(piece: &str) -> bool {
    piece.len() == 6
        && piece.starts_with("<0x")
        && piece.ends_with('>')
        && piece[3..5].chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{synthetic_weights, tiny_config};
    use crate::gguf::GgufFile;

    fn tokenizer(dir: &Path, vocab: usize) -> std::path::PathBuf {
        let mut v = serde_json::Map::new();
        for i in 4..vocab {
            let piece = if i == 4 {
                "<0x0A>".to_string()
            } else {
                format!("▁w{i}")
            };
            v.insert(piece, serde_json::json!(i));
        }
        let json = serde_json::json!({
            "added_tokens": [
                {"id": 0, "content": "<pad>", "special": true},
                {"id": 1, "content": "<eos>", "special": true},
                {"id": 2, "content": "<bos>", "special": true},
                {"id": 3, "content": "<b>", "special": false},
                // Past the 64 ids of the test models, as Gemma 3's image token is.
                {"id": 64, "content": "<image_soft_token>", "special": true},
            ],
            "model": {"type": "BPE", "unk_token": "<pad>", "vocab": v},
        });
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        path
    }

    fn small_config() -> ModelConfig {
        ModelConfig {
            vocab_size: 64,
            ..tiny_config()
        }
    }

    #[test]
    fn every_tensor_carries_the_onnx_values_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let tok = tokenizer(dir.path(), 64);
        let weights = synthetic_weights(small_config(), 7);
        let g = GgufFile::from_bytes(gguf_from_weights(&weights, &tok, "t").unwrap().to_bytes())
            .unwrap();
        // The reader the converter uses reads back every architecture fact (the test
        // vocabulary has no <end_of_turn>, the second end-of-generation id).
        let c = &weights.config;
        let expected = ModelConfig {
            eos_token_ids: vec![1],
            ..c.clone()
        };
        assert_eq!(crate::convert::config_from_gguf(&g).unwrap(), expected);
        let embd = g
            .dequantize(g.tensor("token_embd.weight").unwrap())
            .unwrap();
        assert_eq!(&embd[..c.hidden_size], &weights.embed.row(0)[..]);
        assert_eq!(embd[5 * c.hidden_size + 3], weights.embed.value(5, 3));
        let o = g.tensor("blk.3.attn_output.weight").unwrap();
        assert_eq!(o.dims, [c.q_size() as u64, c.hidden_size as u64]);
        let ov = g.dequantize(o).unwrap();
        let m = &weights.layers[3].o_proj;
        for (row, col) in [(0, 0), (1, 5), (c.hidden_size - 1, c.q_size() - 1)] {
            assert_eq!(ov[row * m.k + col], m.value(row, col), "({row}, {col})");
        }
        let norm = g
            .dequantize(g.tensor("blk.2.post_ffw_norm.weight").unwrap())
            .unwrap();
        assert_eq!(norm, weights.layers[2].post_ffn_norm);
        assert!(g.tensor("output.weight").is_none());
    }

    #[test]
    fn the_vocabulary_keeps_ids_and_token_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let tok = tokenizer(dir.path(), 64);
        let g = GgufFile::from_bytes(
            gguf_from_weights(&synthetic_weights(small_config(), 1), &tok, "t")
                .unwrap()
                .to_bytes(),
        )
        .unwrap();
        let arr = |k: &str| g.get(k).and_then(MetaValue::as_array).unwrap().clone();
        let tokens = arr("tokenizer.ggml.tokens");
        let tokens = tokens.as_strings().unwrap();
        assert_eq!(tokens.len(), 64);
        assert_eq!(&tokens[..5], ["<pad>", "<eos>", "<bos>", "<b>", "<0x0A>"]);
        assert_eq!(tokens[63], "▁w63");
        let types = arr("tokenizer.ggml.token_type");
        assert_eq!(&types.as_i32s().unwrap()[..6], [3, 3, 3, 4, 6, 1]);
        let scores = arr("tokenizer.ggml.scores");
        assert_eq!(&scores.as_f32s().unwrap()[3..6], [-1000.0, 0.0, -5.0]);
        assert_eq!(
            g.get("tokenizer.ggml.unknown_token_id"),
            Some(&MetaValue::U32(0))
        );
    }

    #[test]
    fn a_vocabulary_with_a_gap_or_a_scale_llama_cpp_cannot_express_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tok = tokenizer(dir.path(), 63);
        let e = gguf_from_weights(&synthetic_weights(small_config(), 1), &tok, "t")
            .err()
            .unwrap();
        assert!(e.to_string().contains("no token has id 63"), "{e}");
        let tok = tokenizer(dir.path(), 64);
        let mut weights = synthetic_weights(small_config(), 1);
        weights.config.attn_scale = 0.1;
        let e = gguf_from_weights(&weights, &tok, "t").err().unwrap();
        assert!(e.to_string().contains("1/sqrt(head_dim)"), "{e}");
    }

    #[test]
    fn a_package_gets_its_gguf_once_beside_its_onnx_files() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("tok");
        std::fs::create_dir_all(&tok).unwrap();
        tokenizer(&tok, 64);
        std::fs::write(tok.join("tokenizer_config.json"), "{}").unwrap();
        let out = dir.path().join("model");
        let opts = crate::convert::ConvertOptions {
            name: "small".into(),
            accuracy_level: 0,
            tokenizer_dir: tok,
            projection_bits: 4,
            progress: false,
            variant: Default::default(),
        };
        crate::convert::build_synthetic(small_config(), 3, &out, &opts).unwrap();
        let package = ModelPackage::open(&out).unwrap();
        let path = package_gguf(&package).unwrap();
        assert_eq!(path, out.join(PACKAGE_GGUF_FILE));
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(
            g.get("general.name"),
            Some(&MetaValue::String("small".into()))
        );
        let onnx = ModelWeights::load(&out).unwrap();
        let q = g
            .dequantize(g.tensor("blk.1.ffn_up.weight").unwrap())
            .unwrap();
        let m = &onnx.layers[1].up_proj;
        assert_eq!(q, (0..m.n).flat_map(|r| m.row(r)).collect::<Vec<_>>());
        // Asked again, the file is reused, not rewritten.
        let written = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(package_gguf(&package).unwrap(), path);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            written
        );
    }
}
