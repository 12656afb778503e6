//! Speculative decoding against plain decoding, on every backend: each prompt runs greedy
//! twice on the same backend, one token per step and with prompt-lookup speculation, and
//! the tokens must be identical. By construction they are, given the same logits; what
//! can differ is the logits of a step over several positions (other kernels, another
//! summation order), so a difference is classified as the suite classifies any other:
//! a near-tie (both tokens in each other's top-5, both margins under the suite's
//! `near_tie_margin`), reported with its margins, or a failure.

use std::time::{Duration, Instant};

use lockstep_core::{Backend, Error, Result, SessionOptions, Want};
use lockstep_generate::{Speculation, SpeculationStats, Speculator};
use serde::Serialize;

use crate::compare::{compare_free_running, FreeRunning, Outcome};
use crate::report::describe_divergence;
use crate::runner::Candidate;
use crate::suite::Suite;
use crate::trace::{trace_greedy, TopK, Trace, TRACE_TOP_K};

/// Greedy decoding with speculation: the same picks as [`trace_greedy`](crate::trace_greedy)
/// (host argmax, lowest id on a tie), each with the candidates of the row that chose it,
/// which for an accepted draft token is a row of a many-position verification step.
pub async fn trace_speculative_async(
    backend: &dyn Backend,
    prompt: &[u32],
    max_new: usize,
    spec: &Speculation,
) -> Result<(Trace, SpeculationStats, usize)> {
    if prompt.is_empty() || max_new == 0 {
        return Err(Error::InvalidInput(
            "a trace needs a prompt and at least one new token".into(),
        ));
    }
    let eos = backend.config().eos_token_ids.clone();
    let mut speculator = Speculator::new(spec)?;
    let mut session = backend
        .session(SessionOptions::with_max_tokens(prompt.len() + max_new))
        .await?;
    let mut trace = Trace::default();
    let mut history = prompt.to_vec();
    let mut steps = 0usize;
    let pick = |row: &mut [f32], steps: &mut Vec<TopK>| -> Result<u32> {
        let top = TopK::from_logits(row, TRACE_TOP_K);
        let Some(&(id, _)) = top.0.first() else {
            return Err(Error::Runtime(
                "the backend returned no finite logit".into(),
            ));
        };
        steps.push(top);
        Ok(id)
    };
    // The prefill: one plain step over the prompt.
    let t0 = Instant::now();
    let logits = session.forward(prompt, Want::Last).await?;
    let mut row = logits.last().to_vec();
    let first = pick(&mut row, &mut trace.steps)?;
    trace.prefill_time = t0.elapsed();
    trace.tokens.push(first);
    history.push(first);
    let mut last = first;
    while trace.tokens.len() < max_new && !eos.contains(&last) {
        let t0 = Instant::now();
        let limit = max_new - trace.tokens.len() - 1;
        let draft = speculator.draft(&history, limit);
        let picks = if draft.is_empty() {
            let logits = session.forward(&[last], Want::Last).await?;
            let mut row = logits.last().to_vec();
            vec![pick(&mut row, &mut trace.steps)?]
        } else {
            let steps_ref = &mut trace.steps;
            speculator
                .verify(session.as_mut(), last, &draft, |row| pick(row, steps_ref))
                .await?
        };
        trace.decode_time += t0.elapsed();
        steps += 1;
        for id in picks {
            trace.tokens.push(id);
            history.push(id);
            last = id;
            if eos.contains(&id) {
                break;
            }
        }
        // Picks after an EOS were never part of the output.
        trace.steps.truncate(trace.tokens.len());
    }
    Ok((trace, speculator.stats().clone(), steps))
}

/// One prompt on one backend: plain against speculative.
#[derive(Debug, Clone, Serialize)]
pub struct SpeculativePrompt {
    pub id: String,
    pub prompt_tokens: usize,
    /// Plain greedy as the reference, speculative as the test.
    pub free_running: Option<FreeRunning>,
    pub drafted: usize,
    pub accepted: usize,
    /// Generated tokens after the first per decode step of the speculative run.
    pub tokens_per_step: Option<f64>,
    pub plain_decode_seconds: f64,
    pub speculative_decode_seconds: f64,
    pub error: Option<String>,
}

impl SpeculativePrompt {
    pub fn outcome(&self) -> Option<Outcome> {
        self.free_running.as_ref().map(FreeRunning::outcome)
    }
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.outcome().is_some_and(|o| o != Outcome::Failure)
    }
}

/// One backend's prompts, or why it could not run.
#[derive(Debug, Clone, Serialize)]
pub struct SpeculativeBackend {
    pub id: String,
    pub unavailable: Option<String>,
    pub prompts: Vec<SpeculativePrompt>,
}

/// `lockstep conform --speculate`: every backend, every prompt, plain vs speculative.
#[derive(Debug, Clone, Serialize)]
pub struct SpeculativeReport {
    pub model: String,
    pub suite: String,
    pub max_new_tokens: usize,
    pub speculation: String,
    pub near_tie_margin: f64,
    pub backends: Vec<SpeculativeBackend>,
}

impl SpeculativeReport {
    /// Every available backend ran every prompt with no difference beyond a near-tie.
    pub fn passed(&self) -> bool {
        self.backends
            .iter()
            .filter(|b| b.unavailable.is_none())
            .all(|b| b.prompts.iter().all(SpeculativePrompt::passed))
            && self.backends.iter().any(|b| b.unavailable.is_none())
    }

    pub fn unavailable(&self) -> Vec<&str> {
        self.backends
            .iter()
            .filter(|b| b.unavailable.is_some())
            .map(|b| b.id.as_str())
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# Speculative decoding vs plain decoding: {} / suite {}\n\n{} greedy tokens per prompt; {}; a difference is a near-tie when both tokens are in each other's top-5 and both margins are under {}.\n\n",
            self.model, self.suite, self.max_new_tokens, self.speculation, self.near_tie_margin
        );
        out += "| backend | prompt | result | drafted | accepted | tokens/step | decode s plain / speculative |\n";
        out += "|---|---|---|---:|---:|---:|---:|\n";
        let mut notes = Vec::new();
        for b in &self.backends {
            if let Some(why) = &b.unavailable {
                out += &format!("| {} | - | unavailable | | | | |\n", b.id);
                notes.push(format!("- {}: unavailable: {why}", b.id));
                continue;
            }
            for p in &b.prompts {
                let result = match (&p.error, p.outcome()) {
                    (Some(_), _) => "**error**".to_string(),
                    (None, Some(Outcome::Identical)) => format!(
                        "identical ({} tokens)",
                        p.free_running.as_ref().map_or(0, |f| f.reference_len)
                    ),
                    (None, Some(Outcome::NearTie)) => "near-tie".into(),
                    (None, Some(Outcome::Failure)) => "**differs**".into(),
                    (None, None) => "-".into(),
                };
                out += &format!(
                    "| {} | {} | {} | {} | {} | {} | {:.2} / {:.2} |\n",
                    b.id,
                    p.id,
                    result,
                    p.drafted,
                    p.accepted,
                    p.tokens_per_step.map_or("-".into(), |t| format!("{t:.2}")),
                    p.plain_decode_seconds,
                    p.speculative_decode_seconds
                );
                if let Some(e) = &p.error {
                    notes.push(format!("- {} / {}: {e}", b.id, p.id));
                }
                if let Some(d) = p.free_running.as_ref().and_then(|f| f.divergence.as_ref()) {
                    notes.push(format!(
                        "- {} / {}: plain vs speculative: {}",
                        b.id,
                        p.id,
                        describe_divergence(d, "speculative")
                    ));
                }
            }
        }
        if !notes.is_empty() {
            out += "\n";
            out += &notes.join("\n");
            out += "\n";
        }
        out += &format!(
            "\n{}\n",
            if self.passed() {
                "PASSED: speculative greedy tokens equal plain greedy tokens (differences, if any, are near-ties)"
            } else {
                "FAILED"
            }
        );
        out
    }
}

/// Runs `suite`'s prompts on each of `backends`, plain and speculative, and compares.
pub fn run_speculative(
    model: &lockstep::Model,
    model_name: &str,
    suite: &Suite,
    backends: &[String],
    spec: &Speculation,
    progress: bool,
) -> Result<SpeculativeReport> {
    let prompts = suite.encode(model.tokenizer())?;
    let tokenizer = model.tokenizer();
    let text = |id: u32| tokenizer.decode(&[id]).ok();
    let note = |m: String| {
        if progress {
            eprintln!("conform --speculate: {m}");
        }
    };
    let margin = suite.tolerances.near_tie_margin.value;
    let mut out = Vec::new();
    for id in backends {
        let backend = match Candidate::load(model, id) {
            Candidate::Loaded(b) => b,
            Candidate::Unavailable { id, reason } => {
                note(format!("{id}: unavailable: {reason}"));
                out.push(SpeculativeBackend {
                    id,
                    unavailable: Some(reason),
                    prompts: Vec::new(),
                });
                continue;
            }
        };
        let mut results = Vec::new();
        for p in &prompts {
            let mut r = SpeculativePrompt {
                id: p.id.clone(),
                prompt_tokens: p.tokens.len(),
                free_running: None,
                drafted: 0,
                accepted: 0,
                tokens_per_step: None,
                plain_decode_seconds: 0.0,
                speculative_decode_seconds: 0.0,
                error: None,
            };
            let plain = trace_greedy(backend.as_ref(), &p.tokens, suite.max_new_tokens);
            let specd = pollster::block_on(trace_speculative_async(
                backend.as_ref(),
                &p.tokens,
                suite.max_new_tokens,
                spec,
            ));
            match (plain, specd) {
                (Ok(plain), Ok((st, stats, steps))) => {
                    let mut fr = compare_free_running(&plain, &st, p.tokens.len(), margin);
                    if let Some(d) = &mut fr.divergence {
                        d.reference_text = text(d.reference_token);
                        d.test_text = text(d.test_token);
                    }
                    r.drafted = stats.drafted;
                    r.accepted = stats.accepted;
                    r.tokens_per_step = (steps > 0)
                        .then(|| st.tokens.len().saturating_sub(1) as f64 / steps as f64);
                    r.plain_decode_seconds = secs(plain.decode_time);
                    r.speculative_decode_seconds = secs(st.decode_time);
                    r.free_running = Some(fr);
                }
                (Err(e), _) => r.error = Some(format!("plain greedy run failed: {e}")),
                (_, Err(e)) => r.error = Some(format!("speculative run failed: {e}")),
            }
            note(format!(
                "{id}: {}: {}",
                p.id,
                match (&r.error, r.outcome()) {
                    (Some(e), _) => e.clone(),
                    (None, o) => format!(
                        "{o:?}, {}/{} drafted tokens accepted",
                        r.accepted, r.drafted
                    ),
                }
            ));
            results.push(r);
        }
        out.push(SpeculativeBackend {
            id: id.clone(),
            unavailable: None,
            prompts: results,
        });
    }
    Ok(SpeculativeReport {
        model: model_name.to_string(),
        suite: suite.name.clone(),
        max_new_tokens: suite.max_new_tokens,
        speculation: format!(
            "prompt lookup ({:?}), drafts of up to {} tokens{}",
            spec.source,
            spec.max_draft,
            if spec.adaptive { ", adaptive" } else { "" }
        ),
        near_tie_margin: margin,
        backends: out,
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
