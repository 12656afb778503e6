//! The Gemma tokenizer and chat template.

use std::path::Path;
use std::sync::Arc;

use lockstep_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// A `tokenizers` tokenizer plus what `tokenizer_config.json` says about BOS and chat.
///
/// Cloning is cheap: clones share one tokenizer (Gemma's holds about 100 MB).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    bos_id: u32,
    bos_text: String,
    chat_template: Option<String>,
    /// `inner.get_vocab_size(true)`, which rebuilds the whole vocabulary map per call.
    vocab_size: usize,
}

impl Tokenizer {
    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` from `dir`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        let bytes =
            std::fs::read(&json).map_err(|e| Error::io("reading the tokenizer", &json, e))?;
        let invalid = |e: String| {
            Error::Model(format!(
                "{}: not a valid tokenizer.json: {e}",
                json.display()
            ))
        };
        let inner = match crate::tokenizer_file::parse_bpe(bytes).map_err(invalid)? {
            Ok(t) => t,
            Err(bytes) => {
                tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| invalid(e.to_string()))?
            }
        };
        let cfg_path = dir.join("tokenizer_config.json");
        let config = match std::fs::read(&cfg_path) {
            Ok(b) => Some(
                serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| {
                    Error::Model(format!("{}: not valid JSON: {e}", cfg_path.display()))
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("reading the tokenizer config", &cfg_path, e)),
        };
        Self::from_parts(inner, config.as_ref())
    }

    /// Wraps a tokenizer built in memory; `config` is the parsed `tokenizer_config.json`.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        config: Option<&serde_json::Value>,
    ) -> Result<Self> {
        // `bos_token` is either a string or an AddedToken object with `content`.
        let bos_text = config
            .and_then(|c| c.get("bos_token"))
            .and_then(|b| {
                b.as_str()
                    .or_else(|| b.get("content").and_then(|c| c.as_str()))
            })
            .unwrap_or("<bos>")
            .to_string();
        let bos_id = inner
            .token_to_id(&bos_text)
            .ok_or_else(|| Error::Model(format!("the tokenizer has no BOS token '{bos_text}'")))?;
        let chat_template = config
            .and_then(|c| c.get("chat_template"))
            .and_then(|t| t.as_str())
            .map(str::to_string);
        if let Some(t) = &chat_template {
            // We render the Gemma template in Rust rather than run Jinja; refuse a
            // template that is not Gemma's instead of silently formatting it wrongly.
            if !t.contains("<start_of_turn>") || !t.contains("<end_of_turn>") {
                return Err(Error::Model(
                    "tokenizer_config.json's chat template is not Gemma's; lockstep renders only the Gemma turn format".into(),
                ));
            }
        }
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self {
            inner: Arc::new(inner),
            bos_id,
            bos_text,
            chat_template,
            vocab_size,
        })
    }

    /// Text to ids, starting with exactly one BOS.
    ///
    /// Gemma's `tokenizer.json` post-processor prepends `<bos>` unconditionally, which
    /// would double it on chat-template text (that starts with the literal `<bos>`). So we
    /// encode without the post-processor and add BOS ourselves unless the text has it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_raw(text)?;
        if ids.first() != Some(&self.bos_id) {
            ids.insert(0, self.bos_id);
        }
        Ok(ids)
    }

    /// Text to ids with no BOS: for text that continues a sequence. Special tokens
    /// written in the text (`<start_of_turn>`) become their ids.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::InvalidInput(format!("cannot tokenize the text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids to text. Special tokens are kept (`<start_of_turn>` shows as itself): the
    /// loop never decodes EOS, and nothing else is hidden.
    /// An id outside the vocabulary is an error (`tokenizers` would drop it silently).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some((i, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= self.vocab_size)
        {
            return Err(Error::InvalidInput(format!(
                "cannot decode id {id} (position {i}): outside the tokenizer's vocabulary of {} ids",
                self.vocab_size
            )));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::InvalidInput(format!("cannot decode ids: {e}")))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Ids the tokenizer knows, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The Jinja source from `tokenizer_config.json`, if it had one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Renders `messages` as Gemma's chat template does: BOS, then
    /// `<start_of_turn>{user|model}\n{content, trimmed}<end_of_turn>\n` per message, a
    /// leading system message folded into the first user turn followed by a blank line,
    /// and `<start_of_turn>model\n` when `add_generation_prompt`.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let (prefix, rest) = match messages.first() {
            Some(m) if m.role == Role::System => (format!("{}\n\n", m.content), &messages[1..]),
            _ => (String::new(), messages),
        };
        let mut out = self.bos_text.clone();
        for (i, m) in rest.iter().enumerate() {
            let expected = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            if m.role != expected {
                return Err(Error::InvalidInput(
                    "chat roles must alternate user/assistant/user/assistant/... after an optional first system message".into(),
                ));
            }
            let role = if m.role == Role::Assistant {
                "model"
            } else {
                "user"
            };
            out += &format!("<start_of_turn>{role}\n");
            if i == 0 {
                out += &prefix;
            }
            out += m.content.trim();
            out += "<end_of_turn>\n";
        }
        if add_generation_prompt {
            out += "<start_of_turn>model\n";
        }
        Ok(out)
    }
}
