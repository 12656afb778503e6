//! Speculative decoding that needs no backend code: a [`Drafter`] guesses the next tokens,
//! one `Session::forward(draft, Want::All)` scores them all, and the target model's own
//! picks decide how many are kept; rejected positions are truncated from the KV cache.
//!
//! The built-in drafter is prompt lookup ([`NgramDrafter`], as llama.cpp's lookup
//! decoding): the last few tokens are looked up earlier in the prompt and the text
//! generated so far, and what followed them there is the draft. It costs nothing to run
//! and pays off where the output copies its input (rewriting, extracting, editing code).
//!
//! The verification rule keeps the output distribution. Row `i` of the step's logits is
//! the target's distribution `p` after the tokens accepted so far; the loop's own
//! [`Sampler`](crate::Sampler) picks a token from it exactly as plain decoding would (the
//! same repetition penalty over every token before that position, the same temperature,
//! top-k, top-p and min-p, the next uniform draw of the same seeded stream). The draft
//! token is accepted when that pick equals it, and the pick replaces it otherwise. For a
//! deterministic drafter (a one-hot draft distribution) this is the standard speculative
//! sampling rule: the draft token `x` is accepted with probability `p(x)`, and on a
//! rejection the token is distributed as `p` with `x` removed and renormalized. Coupling
//! the accept test and the resample to the one draw plain sampling would make has a
//! further property: given the same logits, speculative decoding emits exactly the tokens
//! plain decoding emits for the same seed, greedy or sampled. What can still differ is
//! the logits themselves: a step over several positions may run other kernels than a
//! one-token step, and a near-tie can then flip (the conformance suite measures that).

use std::fmt;
use std::sync::Arc;

use lockstep_core::{Error, Result, Session, Want};

/// Guesses the tokens that follow a context. Called before each verification step.
pub trait Drafter: Send {
    /// At most `max` tokens likely to follow `context` (everything so far: the prompt,
    /// earlier turns when known, and every generated token, the last one included).
    /// An empty draft makes the step a plain one-token step.
    fn draft(&mut self, context: &[u32], max: usize) -> Vec<u32>;
}

/// Makes a fresh [`Drafter`] for each generation.
pub type DrafterFactory = Arc<dyn Fn() -> Box<dyn Drafter> + Send + Sync>;

/// Where drafts come from.
#[derive(Clone)]
pub enum DraftSource {
    /// Prompt lookup: the longest of the last `max_ngram` .. `min_ngram` tokens found
    /// earlier in the context (the most recent occurrence), and what followed it.
    Ngram { min_ngram: usize, max_ngram: usize },
    /// A drafter of the caller's.
    Custom(DrafterFactory),
}

impl fmt::Debug for DraftSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DraftSource::Ngram {
                min_ngram,
                max_ngram,
            } => write!(f, "Ngram({min_ngram}..={max_ngram})"),
            DraftSource::Custom(_) => write!(f, "Custom"),
        }
    }
}

impl PartialEq for DraftSource {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (
                DraftSource::Ngram {
                    min_ngram: a,
                    max_ngram: b,
                },
                DraftSource::Ngram {
                    min_ngram: c,
                    max_ngram: d,
                },
            ) => a == c && b == d,
            (DraftSource::Custom(a), DraftSource::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// How to speculate.
///
/// ```
/// use lockstep_generate::{GenerateOptions, Speculation};
/// let o = GenerateOptions::new().speculate(Speculation::default().max_draft(6).ngram(2, 3));
/// assert!(o.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Speculation {
    /// The most draft tokens one step verifies (the step feeds one more: the last token).
    pub max_draft: usize,
    /// Adapt the draft length: start at `initial_draft`, grow by 2 after a step that kept
    /// every draft token, shrink by 1 after one that did not (as Hugging Face's assisted
    /// generation does). Off: every draft is `max_draft` long when the drafter has that many.
    pub adaptive: bool,
    /// The first draft length when `adaptive`.
    pub initial_draft: usize,
    pub source: DraftSource,
}

impl Default for Speculation {
    /// Prompt lookup over 1- to 3-grams, drafts of up to 8 tokens, adaptive length from 4.
    fn default() -> Self {
        Self {
            max_draft: 8,
            adaptive: true,
            initial_draft: 4,
            source: DraftSource::Ngram {
                min_ngram: 1,
                max_ngram: 3,
            },
        }
    }
}

impl Speculation {
    pub fn max_draft(mut self, n: usize) -> Self {
        self.max_draft = n;
        self.initial_draft = self.initial_draft.min(n);
        self
    }

    pub fn adaptive(mut self, on: bool) -> Self {
        self.adaptive = on;
        self
    }

    pub fn initial_draft(mut self, n: usize) -> Self {
        self.initial_draft = n;
        self
    }

    /// Prompt lookup over n-grams of `min` to `max` tokens.
    pub fn ngram(mut self, min: usize, max: usize) -> Self {
        self.source = DraftSource::Ngram {
            min_ngram: min,
            max_ngram: max,
        };
        self
    }

    /// Drafts from the caller's drafter, made fresh for each generation.
    pub fn drafter(mut self, make: impl Fn() -> Box<dyn Drafter> + Send + Sync + 'static) -> Self {
        self.source = DraftSource::Custom(Arc::new(make));
        self
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        if self.max_draft == 0 {
            return bad("the draft length must be at least 1 token".into());
        }
        if self.adaptive && !(1..=self.max_draft).contains(&self.initial_draft) {
            return bad(format!(
                "the initial draft length must be between 1 and the maximum draft length {}, got {}",
                self.max_draft, self.initial_draft
            ));
        }
        if let DraftSource::Ngram {
            min_ngram,
            max_ngram,
        } = self.source
        {
            if min_ngram == 0 || min_ngram > max_ngram {
                return bad(format!(
                    "the n-gram sizes must satisfy 1 <= min <= max, got min {min_ngram}, max {max_ngram}"
                ));
            }
        }
        Ok(())
    }

    fn make_drafter(&self) -> Box<dyn Drafter> {
        match &self.source {
            DraftSource::Ngram {
                min_ngram,
                max_ngram,
            } => Box::new(NgramDrafter::new(*min_ngram, *max_ngram)),
            DraftSource::Custom(make) => make(),
        }
    }
}

/// Prompt lookup: finds the last `n` tokens of the context earlier in it, longest `n`
/// first and the most recent occurrence first, and drafts what followed.
#[derive(Debug, Clone)]
pub struct NgramDrafter {
    min_ngram: usize,
    max_ngram: usize,
}

impl NgramDrafter {
    /// Panics unless `1 <= min_ngram <= max_ngram` ([`Speculation::validate`] checks it).
    pub fn new(min_ngram: usize, max_ngram: usize) -> Self {
        assert!(min_ngram >= 1 && min_ngram <= max_ngram, "bad n-gram sizes");
        Self {
            min_ngram,
            max_ngram,
        }
    }
}

impl Drafter for NgramDrafter {
    fn draft(&mut self, context: &[u32], max: usize) -> Vec<u32> {
        let len = context.len();
        if max == 0 {
            return Vec::new();
        }
        for n in (self.min_ngram..=self.max_ngram.min(len.saturating_sub(1))).rev() {
            let tail = &context[len - n..];
            // An occurrence starting at `s` must end before the tail starts, so that
            // something follows it; the continuation may run into the tail itself, which
            // is how a repeating pattern extends.
            for s in (0..len - n).rev() {
                if &context[s..s + n] == tail {
                    let from = s + n;
                    return context[from..(from + max).min(len)].to_vec();
                }
            }
        }
        Vec::new()
    }
}

/// What speculation did during one generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpeculationStats {
    /// Verification steps: steps that fed a draft.
    pub draft_steps: usize,
    /// Draft tokens fed to the model.
    pub drafted: usize,
    /// Draft tokens the target model kept.
    pub accepted: usize,
}

impl SpeculationStats {
    /// Kept draft tokens over drafted ones; `None` before any draft.
    pub fn acceptance_rate(&self) -> Option<f64> {
        (self.drafted > 0).then(|| self.accepted as f64 / self.drafted as f64)
    }
}

/// Drafting and verification, with the adaptive draft length; shared by the generation
/// loop and the conformance suite's speculative traces.
pub struct Speculator {
    drafter: Box<dyn Drafter>,
    max_draft: usize,
    adaptive: bool,
    /// The current draft length.
    length: usize,
    stats: SpeculationStats,
}

impl fmt::Debug for Speculator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Speculator")
            .field("max_draft", &self.max_draft)
            .field("length", &self.length)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Speculator {
    /// Validates `spec`.
    pub fn new(spec: &Speculation) -> Result<Self> {
        spec.validate()?;
        Ok(Self {
            drafter: spec.make_drafter(),
            max_draft: spec.max_draft,
            adaptive: spec.adaptive,
            length: if spec.adaptive {
                spec.initial_draft
            } else {
                spec.max_draft
            },
            stats: SpeculationStats::default(),
        })
    }

    pub fn stats(&self) -> &SpeculationStats {
        &self.stats
    }

    /// The draft length the next step may use.
    pub fn draft_length(&self) -> usize {
        self.length
    }

    /// A draft for `context` of at most `limit` tokens (and the current draft length).
    pub fn draft(&mut self, context: &[u32], limit: usize) -> Vec<u32> {
        let max = self.length.min(limit);
        let mut d = self.drafter.draft(context, max);
        d.truncate(max);
        d
    }

    /// One verification step: feeds `last` (the last picked token, not yet in the
    /// session) and `draft`, then calls `pick` on each row of logits in order, the row
    /// given mutably so that a sampler can apply its penalty in place. Picking stops at
    /// the first pick that differs from the draft, or after the row past the draft's end
    /// (the bonus token). Returns the picks (the accepted draft tokens, then the target's
    /// own next token); the session is left holding `last` and the accepted draft tokens,
    /// the rejected positions truncated.
    pub async fn verify(
        &mut self,
        session: &mut dyn Session,
        last: u32,
        draft: &[u32],
        mut pick: impl FnMut(&mut [f32]) -> Result<u32>,
    ) -> Result<Vec<u32>> {
        let base = session.len();
        let mut feed = Vec::with_capacity(draft.len() + 1);
        feed.push(last);
        feed.extend_from_slice(draft);
        let logits = session.forward(&feed, Want::All).await?;
        if logits.rows() != feed.len() {
            return Err(Error::Runtime(format!(
                "the backend returned {} rows of logits for a step of {} tokens that asked for all of them",
                logits.rows(),
                feed.len()
            )));
        }
        let vocab = logits.vocab();
        let mut data = logits.into_vec();
        let mut picks = Vec::with_capacity(feed.len());
        for (i, row) in data.chunks_exact_mut(vocab).enumerate() {
            let id = pick(row)?;
            picks.push(id);
            if draft.get(i) != Some(&id) {
                break;
            }
        }
        let accepted = picks.len() - 1;
        // Positions after the last accepted draft token hold rejected guesses.
        session.truncate(base + picks.len())?;
        self.record(draft.len(), accepted);
        Ok(picks)
    }

    fn record(&mut self, drafted: usize, accepted: usize) {
        self.stats.draft_steps += 1;
        self.stats.drafted += drafted;
        self.stats.accepted += accepted;
        if self.adaptive {
            self.length = if accepted == drafted {
                (self.length + 2).min(self.max_draft)
            } else {
                self.length.saturating_sub(1).max(1)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(min: usize, max: usize, ctx: &[u32], n: usize) -> Vec<u32> {
        NgramDrafter::new(min, max).draft(ctx, n)
    }

    #[test]
    fn lookup_prefers_the_longest_ngram_then_the_latest_occurrence() {
        // The 2-gram [1, 2] occurs at 0 (then 3) and at 4 (then 5); the latest wins.
        assert_eq!(draft(1, 2, &[1, 2, 3, 9, 1, 2, 5, 7, 1, 2], 2), vec![5, 7]);
        // A 3-gram match beats a later 2-gram match.
        assert_eq!(
            draft(1, 3, &[8, 1, 2, 3, 4, 0, 1, 2, 6, 8, 1, 2], 3),
            vec![3, 4, 0]
        );
        // No 2-gram match: the 1-gram [2] found at 1 gives what followed it.
        assert_eq!(draft(1, 2, &[5, 2, 7, 9, 4, 2], 4), vec![7, 9, 4, 2]);
        // min 2 refuses that 1-gram match.
        assert!(draft(2, 2, &[5, 2, 7, 9, 4, 2], 4).is_empty());
        // A repeating pattern extends into the tail itself.
        assert_eq!(draft(1, 2, &[4, 5, 4, 5], 5), vec![4, 5]);
        assert!(draft(1, 3, &[1], 4).is_empty());
        assert!(draft(1, 3, &[1, 2, 3], 0).is_empty());
    }

    #[test]
    fn adaptive_length_grows_on_full_acceptance_and_shrinks_otherwise() {
        let mut s = Speculator::new(&Speculation::default().max_draft(8)).unwrap();
        assert_eq!(s.draft_length(), 4);
        s.record(4, 4);
        assert_eq!(s.draft_length(), 6);
        s.record(6, 6);
        s.record(8, 8);
        assert_eq!(s.draft_length(), 8);
        s.record(8, 3);
        assert_eq!(s.draft_length(), 7);
        for _ in 0..10 {
            s.record(1, 0);
        }
        assert_eq!(s.draft_length(), 1);
        assert_eq!(s.stats().drafted, 4 + 6 + 8 + 8 + 10);
        assert_eq!(s.stats().accepted, 4 + 6 + 8 + 3);
        let fixed = Speculator::new(&Speculation::default().adaptive(false)).unwrap();
        assert_eq!(fixed.draft_length(), 8);
    }

    #[test]
    fn bad_settings_get_one_clear_error() {
        for (s, needle) in [
            (Speculation::default().max_draft(0), "at least 1"),
            (Speculation::default().ngram(0, 2), "1 <= min <= max"),
            (Speculation::default().ngram(3, 2), "1 <= min <= max"),
            (Speculation::default().initial_draft(9), "initial draft"),
        ] {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
