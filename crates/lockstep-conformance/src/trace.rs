//! Greedy generation that keeps what a comparison needs: each step's best candidates.

use std::time::{Duration, Instant};

use lockstep_core::{Backend, Error, Result, SessionOptions, Want};
use serde::{Deserialize, Serialize};

/// Candidates a live trace keeps per step. More than the 5 a comparison looks at, so that
/// a golden top-5 entry that slipped to 6th place can still be looked up.
pub const TRACE_TOP_K: usize = 8;

/// The best candidates of one step as `(id, logprob)`, best first; equal logits put the
/// lower id first, as `argmax` does, so `top1` is always the greedy choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TopK(pub Vec<(u32, f32)>);

impl TopK {
    /// The `k` best of one row of logits, with log-probabilities from a log-softmax in f64.
    pub fn from_logits(row: &[f32], k: usize) -> Self {
        let lse = log_sum_exp(row);
        let best = top_k_indices(row, k);
        TopK(
            best.into_iter()
                .map(|i| (i as u32, (f64::from(row[i]) - lse) as f32))
                .collect(),
        )
    }

    pub fn top1(&self) -> u32 {
        self.0[0].0
    }

    /// top1 - top2: the same in logits as in log-probabilities.
    pub fn margin(&self) -> f32 {
        match self.0.as_slice() {
            [a, b, ..] => a.1 - b.1,
            _ => f32::INFINITY,
        }
    }

    /// 0-based rank of `id` among the kept candidates.
    pub fn rank(&self, id: u32) -> Option<usize> {
        self.0.iter().position(|&(i, _)| i == id)
    }

    pub fn logprob(&self, id: u32) -> Option<f32> {
        self.0.iter().find(|&&(i, _)| i == id).map(|&(_, lp)| lp)
    }

    /// The first `k` entries.
    pub fn truncated(&self, k: usize) -> Self {
        TopK(self.0.iter().take(k).copied().collect())
    }
}

/// ln(sum(exp(row))) in f64; NaN and -inf entries count as zero probability.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return f64::from(max);
    }
    let m = f64::from(max);
    let mut sum = 0.0f64;
    for &x in row {
        sum += (f64::from(x) - m).exp();
    }
    m + sum.ln()
}

/// Indices of the `k` largest values, largest first, lower index first among equals;
/// NaN never qualifies.
pub fn top_k_indices(row: &[f32], k: usize) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        // Strictly greater than the current k-th: an equal later index ranks below it.
        if best.len() == k && v <= row[best[k - 1]] {
            continue;
        }
        let at = best.iter().position(|&j| v > row[j]).unwrap_or(best.len());
        best.insert(at, i);
        best.truncate(k);
    }
    best
}

/// A greedy generation: the tokens and each step's candidates (`steps[i]` chose `tokens[i]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    pub tokens: Vec<u32>,
    pub steps: Vec<TopK>,
    /// The prompt step (one forward over the whole prompt).
    pub prefill_time: Duration,
    /// Every later step.
    pub decode_time: Duration,
}

impl Trace {
    /// Generated tokens after the first, per second of decode steps.
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        let n = self.tokens.len().saturating_sub(1);
        (n > 0 && !self.decode_time.is_zero()).then(|| n as f64 / self.decode_time.as_secs_f64())
    }
}

/// Greedy decoding of up to `max_new` tokens after `prompt`, stopping after an EOS id.
///
/// Every step reads back the whole last row of logits (`Want::Last`), through the same
/// incremental path as the generation loop, so that a step's margins are those of the
/// very computation that chose its token. The choice is the host argmax (lowest id wins
/// a tie), as the loop's `forward_greedy` default makes it.
pub async fn trace_greedy_async(
    backend: &dyn Backend,
    prompt: &[u32],
    max_new: usize,
) -> Result<Trace> {
    if prompt.is_empty() || max_new == 0 {
        return Err(Error::InvalidInput(
            "a trace needs a prompt and at least one new token".into(),
        ));
    }
    let eos = backend.config().eos_token_ids.clone();
    let mut session = backend
        .session(SessionOptions::with_max_tokens(prompt.len() + max_new))
        .await?;
    let mut trace = Trace::default();
    let mut feed = prompt.to_vec();
    for step in 0..max_new {
        let t0 = Instant::now();
        let logits = session.forward(&feed, Want::Last).await?;
        let top = TopK::from_logits(logits.last(), TRACE_TOP_K);
        if step == 0 {
            trace.prefill_time = t0.elapsed();
        } else {
            trace.decode_time += t0.elapsed();
        }
        let Some(&(id, _)) = top.0.first() else {
            return Err(Error::Runtime(format!(
                "the backend returned no finite logit at generated token {step}"
            )));
        };
        trace.tokens.push(id);
        trace.steps.push(top);
        if eos.contains(&id) {
            break;
        }
        feed = vec![id];
    }
    Ok(trace)
}

/// Blocking [`trace_greedy_async`].
pub fn trace_greedy(backend: &dyn Backend, prompt: &[u32], max_new: usize) -> Result<Trace> {
    pollster::block_on(trace_greedy_async(backend, prompt, max_new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_value_then_lower_index() {
        let row = [1.0, 3.0, f32::NAN, 3.0, 2.0, -1.0];
        assert_eq!(top_k_indices(&row, 3), vec![1, 3, 4]);
        assert_eq!(top_k_indices(&row, 10), vec![1, 3, 4, 0, 5]);
        assert_eq!(top_k_indices(&[0.0; 4], 2), vec![0, 1]);
    }

    #[test]
    fn logprobs_are_a_log_softmax() {
        let row = [0.0f32, (2.0f32).ln(), 0.0, 0.0];
        let top = TopK::from_logits(&row, 2);
        assert_eq!(top.top1(), 1);
        assert!((top.0[0].1 - (2.0f32 / 5.0).ln()).abs() < 1e-6);
        assert!((top.margin() - (2.0f32).ln()).abs() < 1e-6);
        assert_eq!(top.rank(0), Some(1));
        assert_eq!(top.rank(2), None);
    }
}
