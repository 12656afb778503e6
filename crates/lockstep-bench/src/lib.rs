//! `lockstep bench`: prefill (pp) and generation (tg) speed of each backend, measured the
//! way llama-bench does (pp512 / tg128, mean ± sd over repetitions), plus time to first
//! token, load time and peak memory. Output: a table, `--json`, and an SVG chart.
//!
//! Every runtime sees the same token ids ([`prompt_ids`]): a deterministic sequence, not
//! tokenized text, so that peers (onnxruntime-genai, llama.cpp) can be fed the very same ids.

pub mod cli;
mod measure;
mod mem;
mod report;
mod stats;
mod svg;
pub mod workload;

pub use measure::{bench_backend, BenchSpec};
pub use report::{BackendResult, BenchReport, Machine};
pub use stats::Stats;
pub use svg::chart;

/// `n` prompt ids: BOS, then ordinary vocabulary ids from a fixed SplitMix64 stream.
/// Ids 1000..200000 avoid Gemma's control, unused, byte and image tokens.
pub fn prompt_ids(n: usize, bos: u32) -> Vec<u32> {
    let mut state: u64 = 0x6265_6e63_6821;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    std::iter::once(bos)
        .chain((1..n).map(|_| 1000 + (next() % 199_000) as u32))
        .take(n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_deterministic_and_exact_length() {
        let a = prompt_ids(512, 2);
        assert_eq!(a.len(), 512);
        assert_eq!(a[0], 2);
        assert_eq!(a, prompt_ids(512, 2));
        assert_eq!(&prompt_ids(8, 2)[..], &a[..8]);
        assert!(a[1..].iter().all(|&t| (1000..200_000).contains(&t)));
        assert!(prompt_ids(0, 2).is_empty());
    }
}
