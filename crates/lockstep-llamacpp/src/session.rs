//! One sequence in a llama.cpp context: its KV cache and the step that extends it.

use std::sync::Arc;

use async_trait::async_trait;
use lockstep_core::{check_step, Error, Logits, ModelConfig, Result, Session, Want};

use crate::ffi::{Batch, Context, Model};

/// The only sequence of a session's context.
const SEQ: i32 = 0;

pub(crate) struct LlamaCppSession {
    // Declared before `_model`: fields drop in order, and the context must go first.
    context: Context,
    batch: Batch,
    /// Keeps the model the context points into alive.
    _model: Arc<Model>,
    config: ModelConfig,
    max_tokens: usize,
    /// Tokens per `llama_decode` call (the context's n_batch).
    batch_size: usize,
    len: usize,
}

impl LlamaCppSession {
    /// `context` must have been created on `model`.
    pub(crate) fn new(
        context: Context,
        model: Arc<Model>,
        config: ModelConfig,
        max_tokens: usize,
        batch_size: usize,
    ) -> Self {
        Self {
            context,
            batch: Batch::new(batch_size),
            _model: model,
            config,
            max_tokens,
            batch_size,
            len: 0,
        }
    }

    /// Decodes `tokens` at positions `len..`; returns the rows `want` asks for.
    fn decode(&mut self, tokens: &[u32], want: Want) -> Result<Vec<f32>> {
        let vocab = self.config.vocab_size;
        let rows = if want == Want::All { tokens.len() } else { 1 };
        let mut out = Vec::new();
        out.try_reserve_exact(rows * vocab).map_err(|_| {
            Error::Runtime(format!(
                "cannot allocate {rows} rows of logits; ask for fewer positions at once"
            ))
        })?;
        let mut pos = self.len;
        let chunks = tokens.len().div_ceil(self.batch_size);
        for (c, chunk) in tokens.chunks(self.batch_size).enumerate() {
            self.batch.clear();
            let last_chunk = c + 1 == chunks;
            for (i, &t) in chunk.iter().enumerate() {
                let logits = want == Want::All || (last_chunk && i + 1 == chunk.len());
                self.batch.push(t as i32, pos as i32, SEQ, logits);
                pos += 1;
            }
            self.context.decode(&self.batch).map_err(|code| {
                Error::Runtime(format!(
                    "llama.cpp failed to decode {} tokens at position {} (llama_decode returned {code})",
                    chunk.len(),
                    pos - chunk.len()
                ))
            })?;
            let first = if want == Want::All {
                0
            } else {
                chunk.len() - 1
            };
            if want == Want::All || last_chunk {
                for i in first..chunk.len() {
                    let row = self.context.logits(i as i32, vocab).ok_or_else(|| {
                        Error::Runtime(format!("llama.cpp returned no logits for batch entry {i}"))
                    })?;
                    out.extend_from_slice(row);
                }
            }
        }
        Ok(out)
    }

    /// Forgets positions from `len` on in llama.cpp's cache.
    fn remove_from(&mut self, len: usize) -> Result<()> {
        if self.context.remove_from(SEQ, len as i32) {
            Ok(())
        } else {
            Err(Error::Runtime(format!(
                "llama.cpp cannot remove positions {len}.. from its KV cache"
            )))
        }
    }
}

#[async_trait]
impl Session for LlamaCppSession {
    async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Logits> {
        check_step(&self.config, self.len, self.max_tokens, tokens)?;
        match self.decode(tokens, want) {
            Ok(data) => {
                self.len += tokens.len();
                Ok(Logits::new(self.config.vocab_size, data))
            }
            Err(e) => {
                // A failed step may have cached some of its chunks: drop them, so that
                // the session holds exactly `len` tokens again.
                self.remove_from(self.len)?;
                Err(e)
            }
        }
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
        self.remove_from(len)?;
        self.len = len;
        Ok(())
    }
}
