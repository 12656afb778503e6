//! Suites as data: prompts and tolerances, read from a TOML file.

use std::path::Path;

use lockstep_core::{Error, Result};
use lockstep_generate::{Message, Tokenizer};
use serde::{Deserialize, Serialize};

/// One tolerance and the reason for its value: a number nobody can explain is a number
/// nobody dares to change, so the suite file must say why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub value: f64,
    pub why: String,
}

/// What a suite allows a backend to differ from the reference by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerances {
    /// A differing greedy token is a near-tie (reported, not failed) when each side's
    /// token is in the other's top-5 and both sides' top1 - top2 logit margins are below this.
    pub near_tie_margin: Tolerance,
    /// Largest |logprob difference| of the golden file's top-5 entries that the reference
    /// backend may show on a later run.
    pub golden_logprob: Tolerance,
    /// Teacher-forced: largest |logit difference| at any position and vocabulary entry.
    pub max_abs_logit: Tolerance,
    /// Teacher-forced: mean KL(reference || backend) over every position of a prompt.
    pub mean_kl: Tolerance,
    /// Teacher-forced: largest KL(reference || backend) at any one position.
    pub max_kl: Tolerance,
}

impl Tolerances {
    fn check(&self) -> Result<()> {
        for (name, t) in [
            ("near_tie_margin", &self.near_tie_margin),
            ("golden_logprob", &self.golden_logprob),
            ("max_abs_logit", &self.max_abs_logit),
            ("mean_kl", &self.mean_kl),
            ("max_kl", &self.max_kl),
        ] {
            if t.why.trim().is_empty() {
                return Err(Error::InvalidInput(format!(
                    "tolerance '{name}' has no reason: write down in 'why' why the value is what it is"
                )));
            }
            if !(t.value >= 0.0 && t.value.is_finite()) {
                return Err(Error::InvalidInput(format!(
                    "tolerance '{name}' must be a finite number >= 0, not {}",
                    t.value
                )));
            }
        }
        Ok(())
    }
}

/// A long prompt written compactly: `head`, then `line` repeated `count` times (each `{n}`
/// replaced by 1, 2, ...), joined by `separator`, then `tail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generated {
    #[serde(default)]
    pub head: String,
    pub line: String,
    pub count: usize,
    #[serde(default = "newline")]
    pub separator: String,
    #[serde(default)]
    pub tail: String,
}

fn newline() -> String {
    "\n".into()
}

impl Generated {
    pub fn render(&self) -> String {
        let lines: Vec<String> = (1..=self.count)
            .map(|n| self.line.replace("{n}", &n.to_string()))
            .collect();
        format!("{}{}{}", self.head, lines.join(&self.separator), self.tail)
    }
}

/// One prompt of a suite: exactly one of `text`, `messages` (rendered with the
/// tokenizer's chat template, ready for the model's turn) or `generate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    pub id: String,
    /// What the prompt covers, for people reading the suite or a report.
    #[serde(default)]
    pub about: String,
    pub text: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub generate: Option<Generated>,
    /// The prompt must tokenize to at least this many tokens (e.g. to cross the sliding
    /// window); checked, so that a tokenizer or text change cannot silently shorten it.
    pub min_tokens: Option<usize>,
}

impl PromptSpec {
    /// The prompt as the text the tokenizer sees.
    pub fn render(&self, tokenizer: &Tokenizer) -> Result<String> {
        match (&self.text, &self.messages, &self.generate) {
            (Some(t), None, None) => Ok(t.clone()),
            (None, Some(m), None) => tokenizer.apply_chat_template(m, true),
            (None, None, Some(g)) => Ok(g.render()),
            _ => Err(Error::InvalidInput(format!(
                "suite prompt '{}' must have exactly one of 'text', 'messages', 'generate'",
                self.id
            ))),
        }
    }

    /// The prompt's token ids (BOS first), checked against `min_tokens`.
    pub fn encode(&self, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
        let ids = tokenizer.encode(&self.render(tokenizer)?)?;
        if let Some(min) = self.min_tokens {
            if ids.len() < min {
                return Err(Error::InvalidInput(format!(
                    "suite prompt '{}' tokenizes to {} tokens, the suite requires at least {min}; lengthen it",
                    self.id,
                    ids.len()
                )));
            }
        }
        Ok(ids)
    }
}

/// A prompt ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    pub id: String,
    pub tokens: Vec<u32>,
}

/// A conformance suite: prompts, how many tokens to generate from each, the reference
/// backend and the tolerances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The backend every other one is compared with, and whose outputs are golden.
    pub reference: String,
    /// Greedy tokens generated per prompt (fewer when the model emits EOS).
    pub max_new_tokens: usize,
    pub tolerances: Tolerances,
    /// Another suite in the same directory whose prompts (and golden files) this one uses,
    /// for a numeric mode that needs its own tolerances on the same prompts.
    pub prompts_from: Option<String>,
    /// The suite name golden files are kept under when it is not `prompts_from`'s: a suite
    /// with another reference backend has golden files of its own (`golden = "<name>"`).
    #[serde(default)]
    pub golden: Option<String>,
    #[serde(rename = "prompt", default)]
    pub prompts: Vec<PromptSpec>,
}

impl Suite {
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("reading the conformance suite", path, e))?;
        let mut suite = Self::from_toml_unchecked(&text)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
        if let Some(base) = suite.prompts_from.clone() {
            if !suite.prompts.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{}: a suite with prompts_from takes its prompts from '{base}' and has none of its own",
                    path.display()
                )));
            }
            let base_path = path.with_file_name(format!("{base}.toml"));
            let base_suite = Self::load(&base_path)?;
            suite.prompts = base_suite.prompts;
        }
        suite
            .check()
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
        Ok(suite)
    }

    /// The suite whose golden files this one checks against: `golden` if set, else its
    /// `prompts_from` suite's (same prompts, same reference), else its own.
    pub fn golden_suite(&self) -> &str {
        self.golden
            .as_deref()
            .or(self.prompts_from.as_deref())
            .unwrap_or(&self.name)
    }

    fn from_toml_unchecked(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::InvalidInput(format!("not a valid suite: {e}")))
    }

    /// A suite from TOML text; `prompts_from` needs [`Suite::load`] (it names a file).
    pub fn from_toml(text: &str) -> Result<Self> {
        let suite = Self::from_toml_unchecked(text)?;
        if suite.prompts_from.is_some() {
            return Err(Error::InvalidInput(
                "a suite with prompts_from must be loaded from its file".into(),
            ));
        }
        suite.check()?;
        Ok(suite)
    }

    fn check(&self) -> Result<()> {
        self.tolerances.check()?;
        if self.max_new_tokens == 0 {
            return Err(Error::InvalidInput(
                "max_new_tokens must be at least 1".into(),
            ));
        }
        if self.prompts.is_empty() {
            return Err(Error::InvalidInput("the suite has no prompts".into()));
        }
        let mut ids = std::collections::HashSet::new();
        for p in &self.prompts {
            if !ids.insert(p.id.as_str()) {
                return Err(Error::InvalidInput(format!(
                    "prompt id '{}' appears twice",
                    p.id
                )));
            }
            let given = [p.text.is_some(), p.messages.is_some(), p.generate.is_some()];
            if given.iter().filter(|&&g| g).count() != 1 {
                return Err(Error::InvalidInput(format!(
                    "prompt '{}' must have exactly one of 'text', 'messages', 'generate'",
                    p.id
                )));
            }
        }
        Ok(())
    }

    /// Keeps only the prompts named in `ids`; an unknown id is an error.
    pub fn select(&mut self, ids: &[String]) -> Result<()> {
        if let Some(bad) = ids
            .iter()
            .find(|id| !self.prompts.iter().any(|p| &p.id == *id))
        {
            let known: Vec<&str> = self.prompts.iter().map(|p| p.id.as_str()).collect();
            return Err(Error::InvalidInput(format!(
                "the suite has no prompt '{bad}'; its prompts: {}",
                known.join(", ")
            )));
        }
        self.prompts.retain(|p| ids.contains(&p.id));
        Ok(())
    }

    /// Every prompt tokenized, in suite order.
    pub fn encode(&self, tokenizer: &Tokenizer) -> Result<Vec<EncodedPrompt>> {
        self.prompts
            .iter()
            .map(|p| {
                Ok(EncodedPrompt {
                    id: p.id.clone(),
                    tokens: p.encode(tokenizer)?,
                })
            })
            .collect()
    }
}
