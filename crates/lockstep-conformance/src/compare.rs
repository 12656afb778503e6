//! The two comparisons of a backend against the reference.
//!
//! Free-running greedy (vLLM's `check_logprobs_close`): both sides generate on their own;
//! at the first differing token the prompt's comparison stops, and the difference is a
//! near-tie when each side's token is in the other's top-5 and both margins are small,
//! else a failure. Teacher-forced (llama.cpp's perplexity KL statistics): both sides read
//! the same sequence and every position's logits are compared.

use lockstep_core::{Backend, Result, SessionOptions, Want};
use serde::Serialize;

use crate::trace::{log_sum_exp, top_k_indices, Trace};

/// How many candidates the near-tie rule looks at on each side.
pub const NEAR_TIE_TOP: usize = 5;

/// The first differing greedy token of a prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// Index among the generated tokens (0 = the first generated token).
    pub step: usize,
    /// Index in the whole sequence (prompt + generated) of the differing token.
    pub position: usize,
    pub reference_token: u32,
    pub test_token: u32,
    /// top1 - top2 logit of the reference at this step.
    pub reference_margin: f32,
    /// top1 - top2 logit of the backend under test at this step.
    pub test_margin: f32,
    /// Rank (0-based) of the test's token among the reference's candidates, if kept.
    pub test_token_rank_in_reference: Option<usize>,
    /// Rank (0-based) of the reference's token among the test's candidates, if kept.
    pub reference_token_rank_in_test: Option<usize>,
    pub near_tie: bool,
    /// The two tokens as text, filled in by the runner for reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_text: Option<String>,
}

/// The result of a free-running greedy comparison of one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FreeRunning {
    /// Generated tokens that agree before the first difference (or in all).
    pub matching: usize,
    pub reference_len: usize,
    pub test_len: usize,
    pub divergence: Option<Divergence>,
}

/// What a free-running comparison concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Identical,
    NearTie,
    Failure,
}

impl FreeRunning {
    pub fn outcome(&self) -> Outcome {
        match &self.divergence {
            Some(d) if d.near_tie => Outcome::NearTie,
            Some(_) => Outcome::Failure,
            // Same tokens but one side went on: only possible when the runs had
            // different budgets (a stale golden file); never call that identical.
            None if self.reference_len != self.test_len => Outcome::Failure,
            None => Outcome::Identical,
        }
    }
}

/// Compares two greedy traces of the same prompt (`prompt_len` tokens long).
/// `near_tie_margin` is the suite's tolerance; 0 makes every difference a failure.
pub fn compare_free_running(
    reference: &Trace,
    test: &Trace,
    prompt_len: usize,
    near_tie_margin: f64,
) -> FreeRunning {
    let n = reference.tokens.len().min(test.tokens.len());
    let first = (0..n).find(|&i| reference.tokens[i] != test.tokens[i]);
    let divergence = first.map(|step| {
        let (r, t) = (&reference.steps[step], &test.steps[step]);
        let (rt, tt) = (reference.tokens[step], test.tokens[step]);
        let test_token_rank_in_reference = r.rank(tt);
        let reference_token_rank_in_test = t.rank(rt);
        let in_top = |rank: Option<usize>| rank.is_some_and(|k| k < NEAR_TIE_TOP);
        let (rm, tm) = (r.margin(), t.margin());
        let near_tie = in_top(test_token_rank_in_reference)
            && in_top(reference_token_rank_in_test)
            && f64::from(rm) < near_tie_margin
            && f64::from(tm) < near_tie_margin;
        Divergence {
            step,
            position: prompt_len + step,
            reference_token: rt,
            test_token: tt,
            reference_margin: rm,
            test_margin: tm,
            test_token_rank_in_reference,
            reference_token_rank_in_test,
            near_tie,
            reference_text: None,
            test_text: None,
        }
    });
    FreeRunning {
        matching: first.unwrap_or(n),
        reference_len: reference.tokens.len(),
        test_len: test.tokens.len(),
        divergence,
    }
}

/// One position whose top-1 differs between the two sides, teacher-forced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopDisagreement {
    /// Index in the sequence of the token these logits predict.
    pub position: usize,
    pub reference_token: u32,
    pub test_token: u32,
    pub reference_margin: f32,
    pub test_margin: f32,
    pub near_tie: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_text: Option<String>,
}

/// Statistics of one row pair: what [`compare_teacher_forced`] accumulates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowComparison {
    pub max_abs_diff: f32,
    /// KL(reference || test), softmax in f64.
    pub kl: f64,
    pub reference_top1: u32,
    pub test_top1: u32,
    pub reference_margin: f32,
    pub test_margin: f32,
    /// Each side's top-1 is in the other's top-5.
    pub tops_cross: bool,
}

/// Compares one position's logits.
pub fn compare_rows(reference: &[f32], test: &[f32]) -> RowComparison {
    assert_eq!(
        reference.len(),
        test.len(),
        "rows of different vocabularies"
    );
    let (lr, lt) = (log_sum_exp(reference), log_sum_exp(test));
    let mut kl = 0.0f64;
    let mut max_abs = 0.0f32;
    for (&r, &t) in reference.iter().zip(test) {
        let d = (r - t).abs();
        // NaN must show, not vanish in a max.
        if d > max_abs || d.is_nan() {
            max_abs = if max_abs.is_nan() { max_abs } else { d };
        }
        let lpr = f64::from(r) - lr;
        let p = lpr.exp();
        if p > 0.0 {
            kl += p * (lpr - (f64::from(t) - lt));
        }
    }
    let rt = top_k_indices(reference, NEAR_TIE_TOP);
    let tt = top_k_indices(test, NEAR_TIE_TOP);
    let margin = |row: &[f32], top: &[usize]| match top {
        [a, b, ..] => row[*a] - row[*b],
        _ => f32::INFINITY,
    };
    let (r1, t1) = (
        rt.first().copied().unwrap_or(0),
        tt.first().copied().unwrap_or(0),
    );
    RowComparison {
        max_abs_diff: max_abs,
        // Rounding can make a tiny KL negative; it is a distance.
        kl: kl.max(0.0),
        reference_top1: r1 as u32,
        test_top1: t1 as u32,
        reference_margin: margin(reference, &rt),
        test_margin: margin(test, &tt),
        tops_cross: rt.contains(&t1) && tt.contains(&r1),
    }
}

/// Teacher-forced statistics of one sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeacherForced {
    /// Positions compared: one per token of the sequence (the last predicts past its end).
    pub positions: usize,
    pub max_abs_logit_diff: f32,
    /// Where the largest logit difference is (index of the predicted token).
    pub max_abs_position: usize,
    /// Positions whose top-1 agree.
    pub top1_agree: usize,
    pub mean_kl: f64,
    pub max_kl: f64,
    pub max_kl_position: usize,
    /// Top-1 disagreements, near-ties or not (the first few are listed).
    pub disagreements: usize,
    /// Top-1 disagreements that are not near-ties.
    pub hard_disagreements: usize,
    pub first_disagreements: Vec<TopDisagreement>,
}

impl TeacherForced {
    pub fn top1_agreement(&self) -> f64 {
        if self.positions == 0 {
            1.0
        } else {
            self.top1_agree as f64 / self.positions as f64
        }
    }
}

/// Disagreements listed in full per sequence; the rest are only counted.
const LISTED_DISAGREEMENTS: usize = 5;
/// Positions per forward: bounds the logits held at once (a row is the whole vocabulary).
const TEACHER_CHUNK: usize = 64;

/// Feeds `sequence` to both backends, `Want::All`, and compares every position's logits.
/// Both read the sequence in the same chunks of positions (the logits of 1,000 positions
/// of a 262k vocabulary would not fit in memory at once), so both see the same steps.
pub async fn compare_teacher_forced_async(
    reference: &dyn Backend,
    test: &dyn Backend,
    sequence: &[u32],
    near_tie_margin: f64,
) -> Result<TeacherForced> {
    let opts = SessionOptions::with_max_tokens(sequence.len());
    let mut rs = reference.session(opts.clone()).await?;
    let mut ts = test.session(opts).await?;
    let mut tf = TeacherForced {
        positions: 0,
        max_abs_logit_diff: 0.0,
        max_abs_position: 0,
        top1_agree: 0,
        mean_kl: 0.0,
        max_kl: 0.0,
        max_kl_position: 0,
        disagreements: 0,
        hard_disagreements: 0,
        first_disagreements: Vec::new(),
    };
    let mut kl_sum = 0.0f64;
    for (c, chunk) in sequence.chunks(TEACHER_CHUNK).enumerate() {
        let rl = rs.forward(chunk, Want::All).await?;
        let tl = ts.forward(chunk, Want::All).await?;
        if rl.rows() != chunk.len() || tl.rows() != chunk.len() || rl.vocab() != tl.vocab() {
            return Err(lockstep_core::Error::Runtime(format!(
                "teacher forcing {} tokens returned {} rows of {} (reference) and {} rows of {} (test)",
                chunk.len(),
                rl.rows(),
                rl.vocab(),
                tl.rows(),
                tl.vocab()
            )));
        }
        for i in 0..chunk.len() {
            let position = c * TEACHER_CHUNK + i + 1;
            let row = compare_rows(rl.row(i), tl.row(i));
            tf.positions += 1;
            kl_sum += row.kl;
            if row.max_abs_diff > tf.max_abs_logit_diff || row.max_abs_diff.is_nan() {
                tf.max_abs_logit_diff = row.max_abs_diff;
                tf.max_abs_position = position;
            }
            if row.kl > tf.max_kl || row.kl.is_nan() {
                tf.max_kl = row.kl;
                tf.max_kl_position = position;
            }
            if row.reference_top1 == row.test_top1 {
                tf.top1_agree += 1;
                continue;
            }
            let near_tie = row.tops_cross
                && f64::from(row.reference_margin) < near_tie_margin
                && f64::from(row.test_margin) < near_tie_margin;
            tf.disagreements += 1;
            tf.hard_disagreements += usize::from(!near_tie);
            if tf.first_disagreements.len() < LISTED_DISAGREEMENTS {
                tf.first_disagreements.push(TopDisagreement {
                    position,
                    reference_token: row.reference_top1,
                    test_token: row.test_top1,
                    reference_margin: row.reference_margin,
                    test_margin: row.test_margin,
                    near_tie,
                    reference_text: None,
                    test_text: None,
                });
            }
        }
    }
    tf.mean_kl = if tf.positions > 0 {
        kl_sum / tf.positions as f64
    } else {
        0.0
    };
    Ok(tf)
}

/// Blocking [`compare_teacher_forced_async`].
pub fn compare_teacher_forced(
    reference: &dyn Backend,
    test: &dyn Backend,
    sequence: &[u32],
    near_tie_margin: f64,
) -> Result<TeacherForced> {
    pollster::block_on(compare_teacher_forced_async(
        reference,
        test,
        sequence,
        near_tie_margin,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TopK;

    fn trace(tokens: &[u32], steps: Vec<Vec<(u32, f32)>>) -> Trace {
        Trace {
            tokens: tokens.to_vec(),
            steps: steps.into_iter().map(TopK).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn identical_traces() {
        let a = trace(
            &[5, 6],
            vec![vec![(5, -0.1), (1, -3.0)], vec![(6, -0.2), (1, -2.0)]],
        );
        let fr = compare_free_running(&a, &a.clone(), 10, 0.5);
        assert_eq!(fr.outcome(), Outcome::Identical);
        assert_eq!(fr.matching, 2);
    }

    #[test]
    fn near_tie_needs_small_margins_and_crossed_top5() {
        let r = trace(
            &[5, 7],
            vec![vec![(5, -0.1), (1, -3.0)], vec![(7, -0.60), (8, -0.65)]],
        );
        let t = trace(
            &[5, 8],
            vec![vec![(5, -0.1), (1, -3.0)], vec![(8, -0.62), (7, -0.64)]],
        );
        let fr = compare_free_running(&r, &t, 10, 0.5);
        let d = fr.divergence.as_ref().unwrap();
        assert_eq!(
            (d.step, d.position, d.reference_token, d.test_token),
            (1, 11, 7, 8)
        );
        assert!((d.reference_margin - 0.05).abs() < 1e-6);
        assert_eq!(fr.outcome(), Outcome::NearTie);
        // The same difference with a zero tolerance fails.
        assert_eq!(
            compare_free_running(&r, &t, 10, 0.0).outcome(),
            Outcome::Failure
        );
        // A token outside the other's candidates fails whatever the margin.
        let t2 = trace(&[5, 9], vec![vec![(5, -0.1)], vec![(9, -0.62), (7, -0.64)]]);
        assert_eq!(
            compare_free_running(&r, &t2, 10, 0.5).outcome(),
            Outcome::Failure
        );
    }

    #[test]
    fn kl_of_identical_rows_is_zero_and_of_shifted_rows_is_not() {
        let a = [1.0f32, 2.0, 3.0, -1.0];
        let same = compare_rows(&a, &a);
        assert_eq!(same.kl, 0.0);
        assert_eq!(same.max_abs_diff, 0.0);
        // Adding a constant changes no probability.
        let shifted: Vec<f32> = a.iter().map(|x| x + 4.0).collect();
        assert!(compare_rows(&a, &shifted).kl < 1e-12);
        // KL of two-point distributions, by hand: p = (0.5, 0.5), q = (0.2, 0.8).
        let (p, q) = ([0.0f32, 0.0], [0.0f32, (4.0f32).ln()]);
        let want = 0.5 * (0.5f64 / 0.2).ln() + 0.5 * (0.5f64 / 0.8).ln();
        assert!((compare_rows(&p, &q).kl - want).abs() < 1e-7);
    }
}
