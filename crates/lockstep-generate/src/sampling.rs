//! Turning one row of logits into one token id, identically on every platform.
//!
//! The pipeline follows Hugging Face `generate`: repetition penalty, then temperature,
//! top-k, top-p and min-p, then one draw. Determinism rules:
//! - candidates are ordered by a total order (logit descending, id ascending), so ties
//!   never depend on a sort's stability or on the platform;
//! - probabilities are computed in f64 with `libm`'s pure-Rust `exp`/`ln` (the platform's
//!   libm may differ in the last ulp between glibc, macOS and MSVC);
//! - the random number is derived by hand from ChaCha8's raw output (see [`Sampler`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use lockstep_core::{Error, Result};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How to pick the next token. `temperature == 0` means greedy: every other field but
/// `repetition_penalty` is then ignored.
///
/// ```
/// use lockstep_generate::SamplingParams;
/// let p = SamplingParams::default().temperature(0.7).top_k(64).top_p(0.95).seed(42);
/// assert!(p.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy; otherwise logits are divided by it. Must be finite and >= 0.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens; `None` keeps all. `Some(0)` is invalid.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`;
    /// in (0, 1], 1 disables it.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; in [0, 1], 0 disables it.
    pub min_p: f32,
    /// The HF rule over tokens already in prompt + generated: positive logits are divided
    /// by it, negative ones multiplied. 1 disables it; must be > 0.
    pub repetition_penalty: f32,
    /// Seeds the ChaCha8 stream: same seed + same logits = same tokens, everywhere.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy, no penalty, seed 0.
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Always the most likely token (ties to the lowest id).
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Gemma 3's published `generation_config.json`: temperature 1, top-k 64, top-p 0.95.
    pub fn gemma() -> Self {
        Self::default().temperature(1.0).top_k(64).top_p(0.95)
    }

    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }

    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }

    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = p;
        self
    }

    pub fn min_p(mut self, p: f32) -> Self {
        self.min_p = p;
        self
    }

    pub fn repetition_penalty(mut self, penalty: f32) -> Self {
        self.repetition_penalty = penalty;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Rejects values that have no meaning, with a message that names the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature must be a finite number >= 0 (0 is greedy), got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!(
                "top-p must be in (0, 1] (1 disables it), got {}",
                self.top_p
            ));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return bad(format!(
                "min-p must be in [0, 1] (0 disables it), got {}",
                self.min_p
            ));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition penalty must be a finite number > 0 (1 disables it), got {}",
                self.repetition_penalty
            ));
        }
        if self.top_k == Some(0) && !self.is_greedy() {
            return bad(
                "top-k must be at least 1 when sampling (leave it unset to keep every token)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The set of token ids already in prompt + generated, for the repetition penalty.
/// Each id counts once, however often it occurs, as in HF's gather/scatter.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    bits: Vec<u64>,
    ids: Vec<u32>,
}

impl TokenSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, id: u32) {
        let (word, bit) = (id as usize / 64, id % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & (1 << bit) == 0 {
            self.bits[word] |= 1 << bit;
            self.ids.push(id);
        }
    }

    pub fn extend(&mut self, ids: impl IntoIterator<Item = u32>) {
        for id in ids {
            self.insert(id);
        }
    }

    pub fn contains(&self, id: u32) -> bool {
        self.bits
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The distinct ids, in first-seen order.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// HF's `RepetitionPenaltyLogitsProcessor`: a seen token's positive logit is divided by
/// `penalty`, a negative one multiplied, so that it always becomes less likely.
pub fn apply_repetition_penalty(row: &mut [f32], seen: &TokenSet, penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    for &id in seen.ids() {
        if let Some(l) = row.get_mut(id as usize) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// A token kept by the filters, with its probability among the kept ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub prob: f64,
}

#[derive(Debug, Clone, Copy)]
struct Cand {
    id: u32,
    logit: f32,
}

/// The total order: higher logit first, lower id first on a tie. NaN is excluded earlier.
fn order(a: &Cand, b: &Cand) -> Ordering {
    b.logit
        .partial_cmp(&a.logit)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

/// Heap entry whose maximum is the worst kept candidate, so it can be evicted.
struct Worst(Cand);
impl PartialEq for Worst {
    fn eq(&self, o: &Self) -> bool {
        order(&self.0, &o.0) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    fn cmp(&self, o: &Self) -> Ordering {
        order(&self.0, &o.0)
    }
}

/// The `m` best entries of `row` in the total order, best first. O(n log m): most entries
/// are rejected by one comparison with the worst kept one.
fn top_m(row: &[f32], m: usize) -> Vec<Cand> {
    let all = || {
        row.iter().enumerate().map(|(i, &l)| Cand {
            id: i as u32,
            logit: l,
        })
    };
    if m >= row.len() / 4 {
        let mut v: Vec<Cand> = all().collect();
        v.sort_unstable_by(order);
        v.truncate(m);
        return v;
    }
    let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(m + 1);
    for c in all() {
        if heap.len() < m {
            heap.push(Worst(c));
        } else if let Some(mut worst) = heap.peek_mut() {
            // Strictly better than the worst kept: a larger logit (ties keep the lower id,
            // which was seen first).
            if c.logit > worst.0.logit {
                *worst = Worst(c);
            }
        }
    }
    heap.into_sorted_vec().into_iter().map(|w| w.0).collect()
}

/// Draws token ids from logits.
///
/// The random stream is ChaCha8 keyed with the seed's little-endian bytes, and each draw
/// takes one raw `u64` and keeps its top 53 bits as a uniform f64 in [0, 1). We do not use
/// `rand`'s `Standard`/`Uniform` distributions or `seed_from_u64`, because their
/// bit-to-float mapping and seed expansion are implementation details that changed
/// between `rand` versions; ChaCha's keystream is fixed by its specification, so a seed
/// gives the same tokens on every platform and every future build.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// Validates `params`.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&params.seed.to_le_bytes());
        Ok(Self {
            rng: ChaCha8Rng::from_seed(key),
            params,
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// A uniform f64 in [0, 1) from the top 53 bits of one raw ChaCha8 `u64`.
    pub fn next_uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Picks the next token from one row of logits. `row` is modified in place (the
    /// repetition penalty); `seen` holds the ids of prompt + generated so far.
    /// Non-finite logits are an error: a backend bug must not become text.
    pub fn sample(&mut self, row: &mut [f32], seen: &TokenSet) -> Result<u32> {
        check_finite(row)?;
        apply_repetition_penalty(row, seen, self.params.repetition_penalty);
        if self.params.is_greedy() {
            return Ok(lockstep_core::argmax(row));
        }
        // One draw per sampled token, whatever the number of candidates, so that the
        // random stream stays aligned with the step count.
        if self.unfiltered(row.len()) {
            let u = self.next_uniform();
            return Ok(self.walk_unfiltered(row, u));
        }
        let cands = self.filter(row);
        let u = self.next_uniform();
        let s_max = scaled(cands[0].logit, self.params.temperature);
        let weights: Vec<f64> = cands
            .iter()
            .map(|c| libm::exp(scaled(c.logit, self.params.temperature) - s_max))
            .collect();
        let target = u * weights.iter().sum::<f64>();
        let mut acc = 0.0;
        for (c, w) in cands.iter().zip(&weights) {
            acc += w;
            if target < acc {
                return Ok(c.id);
            }
        }
        // Rounding can leave `target` a hair above the last partial sum.
        Ok(cands[cands.len() - 1].id)
    }

    /// The candidates the filters keep for this row (after the penalty, which the caller
    /// applies), best first, with their renormalized probabilities. For tests and for
    /// explaining a pick; `sample` draws from exactly this list.
    pub fn candidates(&self, row: &[f32]) -> Result<Vec<Candidate>> {
        check_finite(row)?;
        if self.params.is_greedy() {
            let id = lockstep_core::argmax(row);
            return Ok(vec![Candidate { id, prob: 1.0 }]);
        }
        let cands = self.filter(row);
        let s_max = scaled(cands[0].logit, self.params.temperature);
        let w: Vec<f64> = cands
            .iter()
            .map(|c| libm::exp(scaled(c.logit, self.params.temperature) - s_max))
            .collect();
        let total: f64 = w.iter().sum();
        Ok(cands
            .iter()
            .zip(&w)
            .map(|(c, w)| Candidate {
                id: c.id,
                prob: w / total,
            })
            .collect())
    }

    fn unfiltered(&self, n: usize) -> bool {
        let p = &self.params;
        p.top_k.is_none_or(|k| k >= n) && p.top_p >= 1.0 && p.min_p <= 0.0
    }

    /// Plain temperature sampling without sorting 262,144 entries: the normalizer takes
    /// one pass (in id order), then a sorted prefix grows until it passes the draw. The
    /// walk visits candidates in the same total order as the filtered case.
    fn walk_unfiltered(&self, row: &[f32], u: f64) -> u32 {
        let t = self.params.temperature;
        let s_max = scaled(max_value(row), t);
        let z: f64 = row.iter().map(|&l| libm::exp(scaled(l, t) - s_max)).sum();
        let target = u * z;
        let n = row.len();
        let mut m = 256.min(n);
        loop {
            let c = top_m(row, m);
            let mut acc = 0.0;
            for x in &c {
                acc += libm::exp(scaled(x.logit, t) - s_max);
                if target < acc {
                    return x.id;
                }
            }
            if m == n {
                return c[n - 1].id;
            }
            m = (m * 8).min(n);
        }
    }

    /// Top-k, then top-p, then min-p (HF's order). Returns a non-empty sorted prefix of
    /// the total order.
    fn filter(&self, row: &[f32]) -> Vec<Cand> {
        let p = &self.params;
        let t = p.temperature;
        let n = row.len();
        let k = p.top_k.unwrap_or(n).min(n);
        let top_p = p.top_p as f64;
        let s_max = scaled(max_value(row), t);

        let mut cands: Vec<Cand> = if top_p < 1.0 {
            if k < n {
                let mut c = top_m(row, k);
                let z: f64 = c
                    .iter()
                    .map(|c| libm::exp(scaled(c.logit, t) - s_max))
                    .sum();
                let keep = nucleus_len(&c, z * top_p, t, s_max);
                c.truncate(keep.unwrap_or(c.len()));
                c
            } else {
                // Nucleus over the whole vocabulary: the normalizer needs every entry,
                // but the kept prefix is usually short, so grow a sorted prefix until it
                // holds enough mass instead of sorting 262,144 entries.
                let z: f64 = row.iter().map(|&l| libm::exp(scaled(l, t) - s_max)).sum();
                let mut m = 256.min(n);
                loop {
                    let mut c = top_m(row, m);
                    match nucleus_len(&c, z * top_p, t, s_max) {
                        Some(keep) => {
                            c.truncate(keep);
                            break c;
                        }
                        None if m == n => break c,
                        None => m = (m * 8).min(n),
                    }
                }
            }
        } else if k < n {
            top_m(row, k)
        } else if p.min_p > 0.0 {
            // min-p alone: a threshold, so only the survivors need sorting.
            let floor = s_max + libm::log(p.min_p as f64);
            let mut c: Vec<Cand> = row
                .iter()
                .enumerate()
                .filter(|(_, &l)| scaled(l, t) >= floor)
                .map(|(i, &l)| Cand {
                    id: i as u32,
                    logit: l,
                })
                .collect();
            c.sort_unstable_by(order);
            c
        } else {
            top_m(row, n)
        };

        if p.min_p > 0.0 {
            // The most likely token always survives top-k and top-p, so the threshold is
            // relative to the global maximum: p_i / p_max = exp(s_i - s_max).
            let floor = s_max + libm::log(p.min_p as f64);
            let keep = cands
                .iter()
                .take_while(|c| scaled(c.logit, t) >= floor)
                .count()
                .max(1);
            cands.truncate(keep);
        }
        cands
    }
}

/// Logit divided by temperature, in f64.
fn scaled(logit: f32, t: f32) -> f64 {
    logit as f64 / t as f64
}

/// How many of the sorted `c` to keep so that the mass before the last kept one is below
/// `mass` (HF: drop the tail whose cumulative probability is <= 1 - top_p). `None` when
/// `c` does not reach `mass`.
fn nucleus_len(c: &[Cand], mass: f64, t: f32, s_max: f64) -> Option<usize> {
    let mut acc = 0.0;
    for (i, x) in c.iter().enumerate() {
        acc += libm::exp(scaled(x.logit, t) - s_max);
        if acc >= mass {
            return Some(i + 1);
        }
    }
    None
}

/// NaN or an infinity in the logits is an error, never a token.
fn check_finite(row: &[f32]) -> Result<()> {
    lockstep_core::check_finite(row)
}

/// The largest value of a NaN-free row, over eight lanes so that it vectorizes.
fn max_value(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    lanes
        .into_iter()
        .chain(rest.iter().copied())
        .fold(f32::NEG_INFINITY, |m, x| if x > m { x } else { m })
}
