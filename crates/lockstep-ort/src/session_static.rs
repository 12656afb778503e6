//! One sequence on the static-shape `coreml` variant (see
//! `lockstep_model::convert::graph_coreml` for the I/O contract).
//!
//! The package holds two graphs over one set of weights: `model.onnx` runs one token per
//! step, `model_prefill.onnx` a fixed chunk of tokens (the last chunk of a prompt is
//! padded). Both read a KV cache of a fixed number of positions that this session owns
//! as plain buffers (keys transposed, one column per position), passed by reference
//! on every step; the graphs return only the step's new K/V rows, which are written
//! into the buffers at their positions. The attention mask (causal, plus the sliding
//! window on sliding layers) is built here, so the graphs need no dynamic shapes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lockstep_core::{Error, Logits, ModelConfig, Result, Session, Want};
use lockstep_model::convert::graph_coreml::{
    new_keys, new_values, past_keys, past_values, BIAS_GLOBAL, BIAS_SLIDING, INPUT_IDS, LAST_INDEX,
    LOGITS, LOGITS_LAST, MASKED, POSITION_IDS, PREFILL_MODEL_FILE,
};
use lockstep_model::package::ModelPackage;
use ort::session::{OutputSelector, RunOptions, SessionInputValue};
use ort::value::{Tensor, TensorRef};

use crate::runtime_err;

/// The manifest's `variant` for packages this module runs.
pub(crate) const VARIANT: &str = "coreml";

/// Fewer tokens than this left in a prompt go through the one-token graph: a padded
/// prefill chunk would cost more.
const MIN_PREFILL: usize = 4;

type OrtSessionRef = Arc<Mutex<ort::session::Session>>;

/// The prefill graph of a `coreml` package, to be loaded with the same options as the
/// decode graph (`model.onnx`); `None` for other variants.
pub(crate) fn prefill_path(package: &ModelPackage) -> Option<PathBuf> {
    (package.manifest.variant == VARIANT).then(|| package.dir.join(PREFILL_MODEL_FILE))
}

/// Whether a loaded `model.onnx` is the static-shape decode graph.
pub(crate) fn is_static(session: &OrtSessionRef) -> bool {
    lock(session)
        .map(|s| s.inputs().iter().any(|o| o.name() == past_keys(0)))
        .unwrap_or(false)
}

/// A fixed dimension of one of a session's inputs.
fn input_dim(session: &OrtSessionRef, input: &str, axis: usize) -> Result<usize> {
    let s = lock(session)?;
    s.inputs()
        .iter()
        .find(|o| o.name() == input)
        .and_then(|o| o.dtype().tensor_shape())
        .and_then(|shape| shape.get(axis).copied())
        .filter(|&d| d > 0)
        .map(|d| d as usize)
        .ok_or_else(|| {
            Error::Model(format!(
                "the static-shape model has no fixed input '{input}' (axis {axis}); re-run `lockstep convert --variant coreml`"
            ))
        })
}

fn lock(session: &OrtSessionRef) -> Result<std::sync::MutexGuard<'_, ort::session::Session>> {
    session.lock().map_err(|_| {
        Error::Runtime("the ONNX Runtime session was poisoned by a panic in another thread".into())
    })
}

/// One sequence on the static-shape graphs.
pub(crate) struct StaticSession {
    decode: OrtSessionRef,
    /// Without it (placement measurement), every token goes through the decode graph.
    prefill: Option<OrtSessionRef>,
    config: ModelConfig,
    max_tokens: usize,
    len: usize,
    /// Cache positions (the graphs' fixed `C`).
    cache: usize,
    /// Tokens per prefill step (the prefill graph's fixed `S`).
    chunk: usize,
    /// Per layer `[kv_heads, head_dim, C]`: keys, transposed.
    keys: Vec<Vec<f32>>,
    /// Per layer `[kv_heads, C, head_dim]`.
    values: Vec<Vec<f32>>,
}

impl StaticSession {
    pub(crate) fn new(
        decode: OrtSessionRef,
        prefill: Option<OrtSessionRef>,
        config: ModelConfig,
        max_tokens: usize,
    ) -> Result<Self> {
        let cache = input_dim(&decode, &past_values(0), 2)?;
        let chunk = match &prefill {
            Some(p) => input_dim(p, INPUT_IDS, 1)?,
            None => 1,
        };
        if max_tokens > cache {
            return Err(Error::InvalidInput(format!(
                "a KV budget of {max_tokens} tokens exceeds this static-shape (coreml) model's fixed cache of {cache} positions; use a smaller budget or the default variant"
            )));
        }
        let per_layer = config.num_kv_heads * config.head_dim * cache;
        Ok(Self {
            decode,
            prefill,
            keys: vec![vec![0.0; per_layer]; config.num_layers],
            values: vec![vec![0.0; per_layer]; config.num_layers],
            config,
            max_tokens,
            len: 0,
            cache,
            chunk,
        })
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        crate::check_step(&self.config, self.len, self.max_tokens, tokens)
    }

    /// The additive mask `[S, C + S]` for a step of `seq` slots starting at `self.len`;
    /// `window` is `None` on global layers.
    fn bias(&self, seq: usize, window: Option<usize>) -> Vec<f32> {
        let (c, len) = (self.cache, self.len);
        let width = c + seq;
        let mut bias = vec![MASKED; seq * width];
        for i in 0..seq {
            let row = &mut bias[i * width..(i + 1) * width];
            let pos = len + i;
            // Cached keys: positions 0..len, within the window.
            let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            for v in &mut row[first.min(len)..len] {
                *v = 0.0;
            }
            // The step's own keys: causal, within the window.
            let first = window.map_or(0, |w| (i + 1).saturating_sub(w));
            for v in &mut row[c + first..c + i + 1] {
                *v = 0.0;
            }
        }
        bias
    }

    /// Runs one step of `tokens` (1 on the decode graph, up to a chunk on the prefill
    /// graph) at positions `len..`, writes their K/V into the cache and returns the
    /// last row's logits when asked for.
    fn step(&mut self, tokens: &[u32], logits: StepLogits) -> Result<Option<Vec<f32>>> {
        let prefill = tokens.len() > 1;
        let seq = if prefill { self.chunk } else { 1 };
        debug_assert!(tokens.len() <= seq);
        let c = &self.config;
        let err = runtime_err("inference failed");
        let pad = c.pad_token_id as i64;
        let ids: Vec<i64> = (0..seq)
            .map(|i| tokens.get(i).map_or(pad, |&t| t as i64))
            .collect();
        // Padding slots get in-range positions (their rows are discarded).
        let positions: Vec<i64> = (0..seq)
            .map(|i| (self.len + i).min(self.cache - 1) as i64)
            .collect();
        let sliding = self.bias(seq, Some(c.sliding_window));
        let global = self.bias(seq, None);
        let width = self.cache + seq;
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![
            (
                INPUT_IDS.into(),
                Tensor::from_array(([1usize, seq], ids))
                    .map_err(&err)?
                    .into_dyn()
                    .into(),
            ),
            (
                POSITION_IDS.into(),
                Tensor::from_array(([1usize, seq], positions))
                    .map_err(&err)?
                    .into_dyn()
                    .into(),
            ),
            (
                BIAS_SLIDING.into(),
                Tensor::from_array(([seq, width], sliding))
                    .map_err(&err)?
                    .into_dyn()
                    .into(),
            ),
            (
                BIAS_GLOBAL.into(),
                Tensor::from_array(([seq, width], global))
                    .map_err(&err)?
                    .into_dyn()
                    .into(),
            ),
        ];
        let (kv, d) = (c.num_kv_heads, c.head_dim);
        for l in 0..c.num_layers {
            let k = TensorRef::from_array_view(([1usize, kv, d, self.cache], &*self.keys[l]))
                .map_err(&err)?;
            let v = TensorRef::from_array_view(([1usize, kv, self.cache, d], &*self.values[l]))
                .map_err(&err)?;
            inputs.push((past_keys(l), k.into()));
            inputs.push((past_values(l), v.into()));
        }
        let mut selector = OutputSelector::no_default();
        for l in 0..c.num_layers {
            selector = selector.with(new_keys(l)).with(new_values(l));
        }
        let wanted = match (prefill, logits) {
            (_, StepLogits::None) => None,
            (false, _) => Some(LOGITS),
            (true, _) => Some(LOGITS_LAST),
        };
        if let Some(name) = wanted {
            selector = selector.with(name);
        }
        if prefill {
            let last = tokens.len() as i64 - 1;
            inputs.push((
                LAST_INDEX.into(),
                Tensor::from_array(([1usize], vec![last]))
                    .map_err(&err)?
                    .into_dyn()
                    .into(),
            ));
        }
        let options = RunOptions::new().map_err(&err)?.with_outputs(selector);
        let session = match (&self.prefill, prefill) {
            (Some(p), true) => p,
            _ => &self.decode,
        };
        let mut session = lock(session)?;
        let outputs = session.run_with_options(inputs, &options).map_err(&err)?;

        let vocab = c.vocab_size;
        let result = match wanted {
            None => None,
            Some(name) => {
                let value = outputs
                    .get(name)
                    .ok_or_else(|| Error::Runtime("the model returned no logits".into()))?;
                let (_, data) = value.try_extract_tensor::<f32>().map_err(&err)?;
                Some(data[..vocab].to_vec())
            }
        };
        // Write the real rows' K/V at their positions.
        let mut rows: Vec<(Vec<f32>, Vec<f32>)> = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let get = |name: String| -> Result<Vec<f32>> {
                let value = outputs
                    .get(name.as_str())
                    .ok_or_else(|| Error::Runtime(format!("the model returned no '{name}'")))?;
                let (_, data) = value.try_extract_tensor::<f32>().map_err(&err)?;
                Ok(data.to_vec())
            };
            rows.push((get(new_keys(l))?, get(new_values(l))?));
        }
        drop(outputs);
        drop(session);
        let cache = self.cache;
        for (l, (nk, nv)) in rows.iter().enumerate() {
            for h in 0..kv {
                for (s, pos) in (self.len..self.len + tokens.len()).enumerate() {
                    let src = (h * seq + s) * d;
                    let keys = &mut self.keys[l];
                    for (j, &x) in nk[src..src + d].iter().enumerate() {
                        keys[(h * d + j) * cache + pos] = x;
                    }
                    let dst = (h * cache + pos) * d;
                    self.values[l][dst..dst + d].copy_from_slice(&nv[src..src + d]);
                }
            }
        }
        self.len += tokens.len();
        Ok(result)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepLogits {
    /// Computed anyway (ONNX Runtime runs every node) but not read back.
    None,
    /// The step's last row.
    Wanted,
}

#[async_trait]
impl Session for StaticSession {
    async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Logits> {
        self.check_tokens(tokens)?;
        let start = self.len;
        let vocab = self.config.vocab_size;
        let mut all = Vec::new();
        let mut last = Vec::new();
        let mut done = 0;
        let result = (|| -> Result<()> {
            while done < tokens.len() {
                let left = tokens.len() - done;
                // Every position's logits come from the one-token graph: the prefill
                // graph has the LM head on its last row only.
                let n = if want == Want::Last && left >= MIN_PREFILL && self.chunk > 1 {
                    left.min(self.chunk)
                } else {
                    1
                };
                let final_step = done + n == tokens.len();
                let logits = if final_step || want == Want::All {
                    StepLogits::Wanted
                } else {
                    StepLogits::None
                };
                let out = self.step(&tokens[done..done + n], logits)?;
                if let Some(out) = out {
                    match want {
                        Want::All => all.extend_from_slice(&out),
                        Want::Last => last = out,
                    }
                }
                done += n;
            }
            Ok(())
        })();
        if let Err(e) = result {
            // A failed step leaves the cache as it was before this call.
            self.len = start;
            return Err(e);
        }
        let data = match want {
            Want::All => all,
            Want::Last => last,
        };
        debug_assert_eq!(data.len() % vocab, 0);
        Ok(Logits::new(vocab, data))
    }

    fn len(&self) -> usize {
        self.len
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(Error::InvalidInput(format!(
                "cannot truncate a session of {} tokens to {len}",
                self.len
            )));
        }
        // Slots from `len` on are masked out until they are overwritten.
        self.len = len;
        Ok(())
    }
}
