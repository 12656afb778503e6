//! Test doubles for code built on the loop: a scripted session whose logits are fixed by
//! a script, a backend that hands out such sessions, and a small Gemma-shaped tokenizer.
//! Nothing here runs a model.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lockstep_core::{
    Backend, BackendInfo, Error, Logits, ModelConfig, Result, Session, SessionOptions, Want,
};

use crate::Tokenizer;

/// Given every token in the cache (the step's tokens included), the logits of the next one.
pub type Script = Box<dyn FnMut(&[u32]) -> Vec<f32> + Send>;

/// The same logits at every step.
pub fn fixed(row: Vec<f32>) -> Script {
    let row = Arc::new(row);
    Box::new(move |_| row.as_ref().clone())
}

/// Step `i` returns `rows[i]`; the last row repeats.
pub fn rows(rows: Vec<Vec<f32>>) -> Script {
    let mut i = 0;
    Box::new(move |_| {
        let r = rows[i.min(rows.len() - 1)].clone();
        i += 1;
        r
    })
}

/// Step `i` makes `ids[i]` the clear favourite (logit 10, all others 0); the last repeats.
pub fn peaked(vocab: usize, ids: Vec<u32>) -> Script {
    rows(ids.iter().map(|&id| one_hot(vocab, id, 10.0)).collect())
}

/// A row of zeros with `value` at `id`.
pub fn one_hot(vocab: usize, id: u32, value: f32) -> Vec<f32> {
    let mut r = vec![0.0; vocab];
    r[id as usize] = value;
    r
}

/// One call the loop made on a [`ScriptedSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Forward { tokens: Vec<u32>, want: Want },
    Greedy { tokens: Vec<u32> },
    Truncate { len: usize },
}

/// The calls made on one or more sessions; clones share the record.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<Call>>>);

impl CallLog {
    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().expect("log poisoned").clone()
    }

    /// The tokens of each model step, in order.
    pub fn fed(&self) -> Vec<Vec<u32>> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Forward { tokens, .. } | Call::Greedy { tokens } => Some(tokens),
                Call::Truncate { .. } => None,
            })
            .collect()
    }

    pub fn clear(&self) {
        self.0.lock().expect("log poisoned").clear();
    }

    fn push(&self, c: Call) {
        self.0.lock().expect("log poisoned").push(c);
    }
}

/// A [`Session`] whose logits come from a [`Script`], with a real token budget.
pub struct ScriptedSession {
    vocab: usize,
    max_tokens: usize,
    tokens: Vec<u32>,
    script: Script,
    log: CallLog,
}

impl ScriptedSession {
    pub fn new(vocab: usize, max_tokens: usize, script: Script) -> Self {
        Self {
            vocab,
            max_tokens,
            tokens: Vec::new(),
            script,
            log: CallLog::default(),
        }
    }

    /// Shares a log, e.g. the backend's.
    pub fn with_log(mut self, log: CallLog) -> Self {
        self.log = log;
        self
    }

    pub fn log(&self) -> CallLog {
        self.log.clone()
    }

    /// Every token fed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    fn append(&mut self, tokens: &[u32]) -> Result<()> {
        if self.tokens.len() + tokens.len() > self.max_tokens {
            return Err(Error::ContextOverflow {
                needed: self.tokens.len() + tokens.len(),
                limit: self.max_tokens,
                limit_name: "the session's KV budget",
            });
        }
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    fn next_row(&mut self, upto: usize) -> Result<Vec<f32>> {
        let row = (self.script)(&self.tokens[..upto]);
        if row.len() != self.vocab {
            return Err(Error::Runtime(format!(
                "script returned {} logits, not {}",
                row.len(),
                self.vocab
            )));
        }
        Ok(row)
    }
}

#[async_trait]
impl Session for ScriptedSession {
    async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Logits> {
        self.log.push(Call::Forward {
            tokens: tokens.to_vec(),
            want,
        });
        let start = self.tokens.len();
        self.append(tokens)?;
        let data = match want {
            Want::Last => self.next_row(self.tokens.len())?,
            Want::All => {
                let mut d = Vec::with_capacity(tokens.len() * self.vocab);
                for p in start + 1..=self.tokens.len() {
                    d.extend(self.next_row(p)?);
                }
                d
            }
        };
        Ok(Logits::new(self.vocab, data))
    }

    /// Records the call as greedy, as a backend with a device argmax would serve it.
    async fn forward_greedy(&mut self, tokens: &[u32]) -> Result<u32> {
        self.log.push(Call::Greedy {
            tokens: tokens.to_vec(),
        });
        self.append(tokens)?;
        let row = self.next_row(self.tokens.len())?;
        lockstep_core::check_finite(&row)?;
        Ok(lockstep_core::argmax(&row))
    }

    fn len(&self) -> usize {
        self.tokens.len()
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        self.log.push(Call::Truncate { len });
        if len > self.tokens.len() {
            return Err(Error::InvalidInput(format!(
                "cannot truncate to {len} tokens: the session holds {}",
                self.tokens.len()
            )));
        }
        self.tokens.truncate(len);
        Ok(())
    }
}

/// A [`Backend`] whose sessions run a fresh script each and share one [`CallLog`].
pub struct ScriptedBackend {
    config: ModelConfig,
    make: Box<dyn Fn() -> Script + Send + Sync>,
    log: CallLog,
}

impl ScriptedBackend {
    pub fn new(config: ModelConfig, make: impl Fn() -> Script + Send + Sync + 'static) -> Self {
        Self {
            config,
            make: Box::new(make),
            log: CallLog::default(),
        }
    }

    pub fn log(&self) -> CallLog {
        self.log.clone()
    }

    /// A session right away, without an executor.
    pub fn scripted_session(&self, max_tokens: usize) -> ScriptedSession {
        ScriptedSession::new(self.config.vocab_size, max_tokens, (self.make)())
            .with_log(self.log.clone())
    }
}

#[async_trait]
impl Backend for ScriptedBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            id: "scripted".into(),
            runtime: "lockstep-generate test double".into(),
            device: "none".into(),
            precision: "scripted logits".into(),
            ..Default::default()
        }
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    async fn session(&self, opts: SessionOptions) -> Result<Box<dyn Session>> {
        Ok(Box::new(self.scripted_session(opts.max_tokens)))
    }
}

/// Gemma 3 270M's config with another vocabulary size.
pub fn toy_config(vocab: usize) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        ..ModelConfig::gemma3_270m()
    }
}

/// Words in the toy vocabulary, from id [`TOY_WORDS_START`] on.
pub const TOY_WORDS: &[&str] = &[
    "▁Hello", "▁world", "!", "▁the", "▁end", "</", "stop", ">", "user", "model", "Hi", "▁there",
    "▁caf", "é", "▁a", "▁b",
];
/// Where Gemma keeps its byte tokens `<0x00>..<0xFF>`: 238..=493, here too.
pub const BYTE_TOKENS_START: u32 = 238;
/// Single printable ASCII characters (space as `▁`) follow the byte tokens.
pub const TOY_CHARS_START: u32 = 494;
/// 95 printable characters later, the words.
pub const TOY_WORDS_START: u32 = TOY_CHARS_START + 95;

/// A tokenizer with Gemma's pipeline (spaces as `▁`, byte fallback, BOS 2, EOS 1,
/// `<start_of_turn>` 105, `<end_of_turn>` 106, `\n` 107, bytes at 238..=493) and
/// `vocab` ids (at least 1024), filled with `▁w{id}` tokens. It has no merges, so it
/// encodes text character by character; decoding works like Gemma's.
pub fn toy_tokenizer(vocab: usize) -> Tokenizer {
    assert!(vocab >= 1024, "the toy vocabulary needs at least 1024 ids");
    let mut names: Vec<String> = (0..vocab).map(|i| format!("▁w{i}")).collect();
    for (i, s) in ["<pad>", "<eos>", "<bos>", "<unk>"].iter().enumerate() {
        names[i] = s.to_string();
    }
    for (i, name) in names.iter_mut().enumerate().take(238).skip(4) {
        *name = format!("<unused{i}>");
    }
    names[105] = "<start_of_turn>".into();
    names[106] = "<end_of_turn>".into();
    names[107] = "\n".into();
    for b in 0..256u32 {
        names[(BYTE_TOKENS_START + b) as usize] = format!("<0x{b:02X}>");
    }
    for (i, c) in (0x20u8..0x7f).enumerate() {
        names[TOY_CHARS_START as usize + i] = if c == b' ' {
            "▁".into()
        } else {
            (c as char).to_string()
        };
    }
    for (i, w) in TOY_WORDS.iter().enumerate() {
        names[TOY_WORDS_START as usize + i] = w.to_string();
    }
    let vocab_map: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i.into()))
        .collect();
    let added: Vec<serde_json::Value> = [0u32, 1, 2, 3, 105, 106]
        .iter()
        .map(|&id| {
            serde_json::json!({"id": id, "content": names[id as usize], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab_map, "merges": []}
    });
    let inner = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&json).expect("serializable"))
        .expect("the toy tokenizer is valid");
    let config =
        serde_json::json!({"bos_token": "<bos>", "chat_template": "<start_of_turn>…<end_of_turn>"});
    Tokenizer::from_parts(inner, Some(&config)).expect("the toy tokenizer has a BOS")
}
