//! INT4/INT8 weights read back out of a converted ONNX model.
//!
//! Every projection is a `com.microsoft::MatMulNBits` initializer pair: `B` with shape
//! `[N, K / block, block * bits / 8]` bytes and `scales` with `N * K / block` floats.
//! Symmetric: the value of a stored code `q` is `scale * (q - 2^(bits - 1))`. 4-bit codes
//! are packed two per byte, low nibble first (element `2j` in the low nibble of byte `j`).

use lockstep_core::ModelConfig;

/// One quantized matrix of `n` output rows by `k` inputs, in MatMulNBits layout.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    /// 4 for projections, 8 for the embedding / tied LM head.
    pub bits: u8,
    /// Output features (rows of the weight, as MatMulNBits stores it).
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Elements per block, sharing one scale (32).
    pub block_size: usize,
    /// `n * (k / block_size) * block_size * bits / 8` bytes.
    pub data: Vec<u8>,
    /// One scale per block: `n * (k / block_size)` values.
    pub scales: Vec<f32>,
}

impl QuantMatrix {
    pub fn blocks_per_row(&self) -> usize {
        self.k / self.block_size
    }

    pub fn bytes_per_block(&self) -> usize {
        self.block_size * self.bits as usize / 8
    }

    /// The implicit zero point of symmetric MatMulNBits: 8 for 4 bits, 128 for 8 bits.
    pub fn zero_point(&self) -> i32 {
        1 << (self.bits - 1)
    }

    /// Dequantized value of element (`row`, `col`): for CPU references and tests.
    pub fn value(&self, row: usize, col: usize) -> f32 {
        let block = row * self.blocks_per_row() + col / self.block_size;
        let within = col % self.block_size;
        let base = block * self.bytes_per_block();
        let q = match self.bits {
            4 => {
                let byte = self.data[base + within / 2];
                if within.is_multiple_of(2) {
                    byte & 0x0f
                } else {
                    byte >> 4
                }
            }
            8 => self.data[base + within],
            b => unreachable!("unsupported bit width {b}"),
        } as i32;
        self.scales[block] * (q - self.zero_point()) as f32
    }

    /// Dequantized row `row` (length `k`).
    pub fn row(&self, row: usize) -> Vec<f32> {
        (0..self.k).map(|c| self.value(row, c)).collect()
    }

    /// The rows of `parts` one after the other (same `k`, bits and block size): what
    /// one MatMulNBits over a shared input needs (Q, K, V; gate, up).
    pub fn concat_rows(parts: &[&QuantMatrix]) -> QuantMatrix {
        let first = parts[0];
        assert!(
            parts.iter().all(|p| p.k == first.k
                && p.bits == first.bits
                && p.block_size == first.block_size),
            "row-concatenated matrices must share k, bits and block size"
        );
        QuantMatrix {
            bits: first.bits,
            n: parts.iter().map(|p| p.n).sum(),
            k: first.k,
            block_size: first.block_size,
            data: parts.iter().flat_map(|p| p.data.iter().copied()).collect(),
            scales: parts
                .iter()
                .flat_map(|p| p.scales.iter().copied())
                .collect(),
        }
    }

    /// The inverse of [`QuantMatrix::concat_rows`]: consecutive row ranges of `rows` each.
    /// `None` unless the row counts add up to `n`.
    pub fn split_rows(&self, rows: &[usize]) -> Option<Vec<QuantMatrix>> {
        if rows.iter().try_fold(0usize, |a, &r| a.checked_add(r)) != Some(self.n) {
            return None;
        }
        let bpr = self.blocks_per_row();
        let row_bytes = bpr * self.bytes_per_block();
        let mut start = 0;
        Some(
            rows.iter()
                .map(|&r| {
                    let m = QuantMatrix {
                        bits: self.bits,
                        n: r,
                        k: self.k,
                        block_size: self.block_size,
                        data: self.data[start * row_bytes..(start + r) * row_bytes].to_vec(),
                        scales: self.scales[start * bpr..(start + r) * bpr].to_vec(),
                    };
                    start += r;
                    m
                })
                .collect(),
        )
    }
}

/// The weights of one decoder layer. Norm weights are the multipliers as stored in the
/// GGUF (Gemma's `1 + w` already applied): `x * rsqrt(mean(x^2) + eps) * w`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// `[num_heads * head_dim, hidden]`
    pub q_proj: QuantMatrix,
    /// `[num_kv_heads * head_dim, hidden]`
    pub k_proj: QuantMatrix,
    /// `[num_kv_heads * head_dim, hidden]`
    pub v_proj: QuantMatrix,
    /// `[hidden, num_heads * head_dim]`
    pub o_proj: QuantMatrix,
    /// RMSNorm over each head's `head_dim` values, before RoPE.
    pub q_norm: Vec<f32>,
    pub k_norm: Vec<f32>,
    pub post_attn_norm: Vec<f32>,
    pub pre_ffn_norm: Vec<f32>,
    /// `[intermediate, hidden]`
    pub gate_proj: QuantMatrix,
    /// `[intermediate, hidden]`
    pub up_proj: QuantMatrix,
    /// `[hidden, intermediate]`
    pub down_proj: QuantMatrix,
    pub post_ffn_norm: Vec<f32>,
}

/// Everything a native backend needs to run the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelWeights {
    pub config: ModelConfig,
    /// `[vocab, hidden]`, 8-bit: the embedding table and the tied LM head.
    pub embed: QuantMatrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
}

impl ModelWeights {
    /// Reads the weights back out of a converted model directory (`model.onnx` and its
    /// external data), so that native backends run exactly the bytes ONNX Runtime runs.
    pub fn load(model_dir: &std::path::Path) -> lockstep_core::Result<Self> {
        use crate::convert::names;
        let package = crate::package::ModelPackage::open(model_dir)?;
        let onnx = crate::onnx::OnnxFile::open(&package.model_path())?;
        let config = package.manifest.config.clone();
        let c = &config;
        let block = crate::convert::BLOCK;
        let bad_config = |what: String| {
            lockstep_core::Error::Model(format!(
                "{}: the manifest's config {what}; re-run `lockstep convert`",
                model_dir.display()
            ))
        };
        // The manifest's sizes are checked before anything is sized by them: each at
        // least 1, the products representable, every matrix width a whole number of
        // blocks, and every layer present in the graph.
        c.validate(&format!("{}: manifest.json", model_dir.display()))?;
        for (name, k) in [
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            ("num_heads x head_dim", c.q_size()),
        ] {
            if !k.is_multiple_of(block) {
                return Err(bad_config(format!(
                    "has {name} {k}, which is not a multiple of the quantization block size {block}"
                )));
            }
        }
        // The last layer must be in the graph: a num_layers larger than the graph's fails
        // here, before the layers are read.
        onnx.initializer(&names::norm(c.num_layers - 1, "input_layernorm"))?;
        let vector = |name: &str, len: usize| -> lockstep_core::Result<Vec<f32>> {
            let (_, v) = onnx.tensor_f32(name)?;
            if v.len() != len {
                return Err(lockstep_core::Error::Model(format!(
                    "{}: initializer '{name}' has {} values, the manifest's config needs {len}; re-run `lockstep convert`",
                    model_dir.display(),
                    v.len()
                )));
            }
            Ok(v)
        };
        let matrix = |name: &str, n: usize, k: usize| -> lockstep_core::Result<QuantMatrix> {
            let (dims, data) = onnx.tensor_u8(&names::qweight(name))?;
            let (_, scales) = onnx.tensor_f32(&names::scales(name))?;
            let bad = |what: &str| {
                lockstep_core::Error::Model(format!(
                    "{}: '{name}' {what}; re-run `lockstep convert`",
                    model_dir.display()
                ))
            };
            if !k.is_multiple_of(block) {
                return Err(bad(&format!(
                    "needs {k} inputs, which is not a multiple of the quantization block size {block}"
                )));
            }
            let blocks = k / block;
            let as_size = |d: i64| usize::try_from(d).ok();
            if dims.len() != 3 || as_size(dims[0]) != Some(n) || as_size(dims[1]) != Some(blocks) {
                return Err(bad(&format!(
                    "has dims {dims:?}, expected [{n}, {blocks}, _]"
                )));
            }
            let bits = match as_size(dims[2])
                .and_then(|b| b.checked_mul(8))
                .map(|b| b / block)
            {
                Some(b @ (4 | 8)) => b as u8,
                _ => return Err(bad(&format!("has {} bytes per block", dims[2]))),
            };
            if n.checked_mul(blocks) != Some(scales.len()) {
                return Err(bad("has the wrong number of scales"));
            }
            Ok(QuantMatrix {
                bits,
                n,
                k,
                block_size: block,
                data,
                scales,
            })
        };
        let embed = if onnx.initializer(&names::qweight(names::EMBED)).is_ok() {
            matrix(names::EMBED, c.vocab_size, c.hidden_size)?
        } else {
            crate::convert::join_nibbles(
                &matrix(names::EMBED_HI, c.vocab_size, c.hidden_size)?,
                &matrix(names::EMBED_LO, c.vocab_size, c.hidden_size)?,
            )
        };
        // Not preallocated from the manifest's count: the layers' initializers bound it.
        let mut layers = Vec::new();
        for l in 0..c.num_layers {
            let norm = |s: &str, len: usize| vector(&names::norm(l, s), len);
            let proj = |s: &str, n: usize, k: usize| matrix(&names::proj(l, s), n, k);
            // The default graph stores Q/K/V and gate/up row-concatenated (one matmul
            // each); the CoreML graph and older conversions store them one by one.
            let fused = |s: &str, parts: &[(&str, usize)], k: usize| {
                let name = names::proj(l, s);
                if let Err(missing) = onnx.initializer(&names::qweight(&name)) {
                    // Neither layout: name the one this converter writes.
                    let separate = names::qweight(&names::proj(l, parts[0].0));
                    if onnx.initializer(&separate).is_err() {
                        return Err(missing);
                    }
                    return parts
                        .iter()
                        .map(|&(p, n)| proj(p, n, k))
                        .collect::<lockstep_core::Result<Vec<_>>>();
                }
                let rows: Vec<usize> = parts.iter().map(|p| p.1).collect();
                let total = rows
                    .iter()
                    .try_fold(0usize, |a, &r| a.checked_add(r))
                    .ok_or_else(|| bad_config(format!("overflows the rows of '{name}'")))?;
                Ok(matrix(&name, total, k)?
                    .split_rows(&rows)
                    .expect("the rows add up to the matrix's"))
            };
            let [q_proj, k_proj, v_proj]: [QuantMatrix; 3] = fused(
                names::QKV,
                &[
                    ("q_proj", c.q_size()),
                    ("k_proj", c.kv_size()),
                    ("v_proj", c.kv_size()),
                ],
                c.hidden_size,
            )?
            .try_into()
            .expect("three parts");
            let [gate_proj, up_proj]: [QuantMatrix; 2] = fused(
                names::GATE_UP,
                &[
                    ("gate_proj", c.intermediate_size),
                    ("up_proj", c.intermediate_size),
                ],
                c.hidden_size,
            )?
            .try_into()
            .expect("two parts");
            layers.push(LayerWeights {
                attn_norm: norm("input_layernorm", c.hidden_size)?,
                q_proj,
                k_proj,
                v_proj,
                o_proj: proj("o_proj", c.hidden_size, c.q_size())?,
                q_norm: norm("q_norm", c.head_dim)?,
                k_norm: norm("k_norm", c.head_dim)?,
                post_attn_norm: norm("post_attention_layernorm", c.hidden_size)?,
                pre_ffn_norm: norm("pre_feedforward_layernorm", c.hidden_size)?,
                gate_proj,
                up_proj,
                down_proj: proj("down_proj", c.hidden_size, c.intermediate_size)?,
                post_ffn_norm: norm("post_feedforward_layernorm", c.hidden_size)?,
            });
        }
        let final_norm = vector(names::FINAL_NORM, c.hidden_size)?;
        Ok(ModelWeights {
            config,
            embed,
            layers,
            final_norm,
        })
    }
}
