//! A finished generation as plain data: what the C ABI and the Python package hand to
//! their callers (as JSON), so that every binding reports the same fields with the same names.

use lockstep_core::BackendInfo;
use lockstep_generate::{Output, StopReason};
use serde::Serialize;

/// Why generation ended, as data (`{"reason": "eos", "token": 1}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Stop {
    /// The model emitted this end-of-sequence id.
    Eos { token: u32 },
    /// This stop string appeared; it is not part of `text`.
    StopString { text: String },
    /// The token limit was reached.
    MaxTokens,
    /// A cancel token (or a callback asking to stop) ended it.
    Cancelled,
}

impl From<&StopReason> for Stop {
    fn from(r: &StopReason) -> Self {
        match r {
            StopReason::Eos(token) => Stop::Eos { token: *token },
            StopReason::StopString(text) => Stop::StopString { text: text.clone() },
            StopReason::MaxTokens => Stop::MaxTokens,
            StopReason::Cancelled => Stop::Cancelled,
        }
    }
}

/// What speculative decoding did in one generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeculationSummary {
    /// Steps that verified a draft.
    pub draft_steps: usize,
    /// Draft tokens fed to the model.
    pub drafted: usize,
    /// Draft tokens the model kept.
    pub accepted: usize,
    /// accepted / drafted; null before any draft.
    pub acceptance_rate: Option<f64>,
}

/// The text, the tokens, the counts and timings of one generation, and the backend it ran on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Everything streamed, concatenated.
    pub text: String,
    /// Every sampled id, EOS included.
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub time_to_first_token_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub prefill_tokens_per_second: Option<f64>,
    pub decode_tokens_per_second: Option<f64>,
    /// Model steps after the prefill (fewer than the tokens when speculation kept drafts).
    pub decode_steps: usize,
    pub tokens_per_step: Option<f64>,
    /// Speculative decoding's counts, when it was on.
    pub speculation: Option<SpeculationSummary>,
    pub stop: Stop,
    pub backend: BackendInfo,
}

impl Summary {
    pub fn new(output: &Output, backend: BackendInfo) -> Self {
        let s = &output.stats;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        Self {
            text: output.text.clone(),
            tokens: output.tokens.clone(),
            prompt_tokens: s.prompt_tokens,
            generated_tokens: s.generated_tokens,
            time_to_first_token_ms: ms(s.time_to_first_token),
            prefill_ms: ms(s.prefill_time),
            decode_ms: ms(s.decode_time),
            prefill_tokens_per_second: s.prefill_tokens_per_second(),
            decode_tokens_per_second: s.decode_tokens_per_second(),
            decode_steps: s.decode_steps,
            tokens_per_step: s.tokens_per_step(),
            speculation: s.speculation.as_ref().map(|sp| SpeculationSummary {
                draft_steps: sp.draft_steps,
                drafted: sp.drafted,
                accepted: sp.accepted,
                acceptance_rate: sp.acceptance_rate(),
            }),
            stop: Stop::from(&s.stop),
            backend,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a summary always serializes")
    }
}
