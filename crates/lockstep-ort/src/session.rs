//! One sequence on an ONNX Runtime session: its KV cache and the step that extends it.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lockstep_core::{Error, Logits, ModelConfig, Result, Session, Want};
use lockstep_model::convert::{
    past_key, past_value, present_key, present_value, ATTENTION_MASK, INPUT_IDS, LOGITS,
    LOGITS_TO_KEEP,
};
use ort::value::{DynValue, Tensor};

use crate::runtime_err;

/// One sequence: the KV cache lives in ONNX Runtime values that are fed straight back
/// as the next step's inputs, never copied through Rust buffers.
pub(crate) struct OrtSession {
    session: Arc<Mutex<ort::session::Session>>,
    config: ModelConfig,
    max_tokens: usize,
    len: usize,
    /// Per layer: key, value, each `[1, kv_heads, len, head_dim]`.
    past: Vec<(DynValue, DynValue)>,
}

impl OrtSession {
    pub(crate) fn new(
        session: Arc<Mutex<ort::session::Session>>,
        config: ModelConfig,
        max_tokens: usize,
    ) -> Result<Self> {
        let mut s = Self {
            session,
            config,
            max_tokens,
            len: 0,
            past: Vec::new(),
        };
        s.reset_cache()?;
        Ok(s)
    }

    fn kv_tensor(&self, len: usize, data: Vec<f32>) -> Result<DynValue> {
        let shape = [1usize, self.config.num_kv_heads, len, self.config.head_dim];
        Ok(Tensor::from_array((shape, data))
            .map_err(runtime_err("cannot create a KV tensor"))?
            .into_dyn())
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.past = (0..self.config.num_layers)
            .map(|_| {
                Ok((
                    self.kv_tensor(0, Vec::new())?,
                    self.kv_tensor(0, Vec::new())?,
                ))
            })
            .collect::<Result<_>>()?;
        self.len = 0;
        Ok(())
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidInput(
                "forward needs at least one token".into(),
            ));
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is out of range: the vocabulary has {} ids",
                self.config.vocab_size
            )));
        }
        let needed = self.len + tokens.len();
        if needed > self.max_tokens {
            return Err(Error::ContextOverflow {
                needed,
                limit: self.max_tokens,
                limit_name: "the session's KV budget",
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Session for OrtSession {
    async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Logits> {
        self.check_tokens(tokens)?;
        let total = self.len + tokens.len();
        let err = runtime_err("inference failed");
        let ids = Tensor::from_array((
            [1usize, tokens.len()],
            tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(),
        ))
        .map_err(&err)?;
        let mask = Tensor::from_array(([1usize, total], vec![1i64; total])).map_err(&err)?;
        let keep = Tensor::from_array(([1usize], vec![if want == Want::Last { 1i64 } else { 0 }]))
            .map_err(&err)?;
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![
            (INPUT_IDS.into(), ids.into_dyn().into()),
            (ATTENTION_MASK.into(), mask.into_dyn().into()),
            (LOGITS_TO_KEEP.into(), keep.into_dyn().into()),
        ];
        for (l, (k, v)) in self.past.iter().enumerate() {
            inputs.push((past_key(l), k.view().into()));
            inputs.push((past_value(l), v.view().into()));
        }
        let mut session = self.session.lock().map_err(|_| {
            Error::Runtime(
                "the ONNX Runtime session was poisoned by a panic in another thread".into(),
            )
        })?;
        let mut outputs = session.run(inputs).map_err(&err)?;
        let logits = outputs
            .remove(LOGITS)
            .ok_or_else(|| Error::Runtime("the model returned no logits".into()))?;
        let (_, data) = logits.try_extract_tensor::<f32>().map_err(&err)?;
        let logits = Logits::new(self.config.vocab_size, data.to_vec());
        let mut past = Vec::with_capacity(self.config.num_layers);
        for l in 0..self.config.num_layers {
            let k = outputs.remove(present_key(l).as_str());
            let v = outputs.remove(present_value(l).as_str());
            match (k, v) {
                (Some(k), Some(v)) => past.push((k, v)),
                _ => {
                    return Err(Error::Runtime(format!(
                        "the model returned no KV cache for layer {l}"
                    )))
                }
            }
        }
        drop(outputs);
        drop(session);
        self.past = past;
        self.len = total;
        Ok(logits)
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
        if len == self.len {
            return Ok(());
        }
        let row = self.config.num_kv_heads * self.config.head_dim;
        // [1, heads, len, dim] with one KV head is `len` contiguous rows; more heads
        // need a per-head copy.
        let heads = self.config.num_kv_heads;
        let dim = self.config.head_dim;
        let old_len = self.len;
        let cut = |v: &DynValue| -> Result<Vec<f32>> {
            let (_, data) = v
                .try_extract_tensor::<f32>()
                .map_err(runtime_err("cannot read the KV cache"))?;
            let mut out = Vec::with_capacity(len * row);
            for h in 0..heads {
                out.extend_from_slice(&data[h * old_len * dim..h * old_len * dim + len * dim]);
            }
            Ok(out)
        };
        let mut past = Vec::with_capacity(self.past.len());
        for (k, v) in &self.past {
            past.push((self.kv_tensor(len, cut(k)?)?, self.kv_tensor(len, cut(v)?)?));
        }
        self.past = past;
        self.len = len;
        Ok(())
    }
}
