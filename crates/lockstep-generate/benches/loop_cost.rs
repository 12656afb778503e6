//! The loop's own cost per token, with no model: sampling over Gemma's 262,144-entry
//! vocabulary, incremental detokenizing, and streaming through the whole loop with a
//! scripted session. Model steps (the ORT decode step) get their own bench next to this.

use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::executor::block_on;
use lockstep_core::{Logits, Result, Session, Want};
use lockstep_generate::testing::{self, ScriptedBackend, ScriptedSession};
use lockstep_generate::{
    Detokenizer, GenerateOptions, Generator, Sampler, SamplingParams, TokenSet,
};
use rand_chacha::rand_core::{RngCore, SeedableRng};

const V: usize = 262_144;
const TOKENS: usize = 128;

/// Logits shaped like a language model's: a broad low floor and a few dozen plausible
/// tokens, fixed by a seed.
fn realistic_row() -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut u = || (rng.next_u32() >> 8) as f32 / (1 << 24) as f32;
    let mut row: Vec<f32> = (0..V).map(|_| -4.0 + 8.0 * u()).collect();
    for _ in 0..40 {
        let i = (u() * V as f32) as usize;
        row[i] = 10.0 + 8.0 * u();
    }
    row
}

fn sampling(c: &mut Criterion) {
    let row = realistic_row();
    let mut g = c.benchmark_group("sample_262k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("copy_row (baseline: a Logits row)", |b| {
        b.iter(|| black_box(row.clone()))
    });
    g.bench_function("greedy_argmax", |b| {
        b.iter(|| lockstep_core::argmax(black_box(&row)))
    });
    let cases = [
        (
            "greedy_penalty_1.1_512_seen",
            SamplingParams::greedy().repetition_penalty(1.1),
        ),
        ("top_k64_top_p0.95 (gemma)", SamplingParams::gemma()),
        (
            "top_k64_top_p0.95_min_p0.05_penalty1.1",
            SamplingParams::gemma().min_p(0.05).repetition_penalty(1.1),
        ),
        (
            "top_p0.9_only",
            SamplingParams::default().temperature(0.8).top_p(0.9),
        ),
        (
            "min_p0.1_only",
            SamplingParams::default().temperature(0.8).min_p(0.1),
        ),
        (
            "temperature_only",
            SamplingParams::default().temperature(0.8),
        ),
    ];
    let mut seen = TokenSet::new();
    seen.extend((0..512).map(|i| i * 97));
    for (name, p) in cases {
        let mut s = Sampler::new(p).unwrap();
        // The copy is part of each sample (penalty works in place); subtract copy_row.
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || row.clone(),
                |r| s.sample(r, &seen).unwrap(),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn detokenize(c: &mut Criterion) {
    let tok = testing::toy_tokenizer(V);
    // Words, and a character spelled in byte tokens every few ids.
    let ids: Vec<u32> = (0..TOKENS as u32)
        .map(|i| {
            if i % 8 < 3 {
                testing::BYTE_TOKENS_START + [0xE2, 0x82, 0xAC][i as usize % 8]
            } else {
                1000 + i * 31
            }
        })
        .collect();
    let mut g = c.benchmark_group("detokenize");
    g.throughput(Throughput::Elements(TOKENS as u64));
    g.bench_function("push_128_ids", |b| {
        b.iter(|| {
            let mut d = Detokenizer::new();
            for &id in &ids {
                black_box(d.push(&tok, id).unwrap());
            }
        })
    });
    g.finish();
}

/// A session whose steps cost nothing: the device argmax is a precomputed id, so the
/// measurement is the loop alone (events, detokenizing, stop matching, bookkeeping).
struct FreeGreedy {
    len: usize,
}

#[async_trait]
impl Session for FreeGreedy {
    async fn forward(&mut self, _: &[u32], _: Want) -> Result<Logits> {
        unreachable!("the greedy loop asks for the argmax only")
    }
    async fn forward_greedy(&mut self, tokens: &[u32]) -> Result<u32> {
        self.len += tokens.len();
        Ok(1000 + (self.len as u32 * 7919) % 200_000)
    }
    fn len(&self) -> usize {
        self.len
    }
    fn max_tokens(&self) -> usize {
        usize::MAX
    }
    fn truncate(&mut self, len: usize) -> Result<()> {
        self.len = len;
        Ok(())
    }
}

fn streaming(c: &mut Criterion) {
    let row = realistic_row();
    let backend = Arc::new(ScriptedBackend::new(testing::toy_config(V), move || {
        testing::fixed(row.clone())
    }));
    let gen = Generator::new(backend.clone(), testing::toy_tokenizer(V));
    let mut g = c.benchmark_group("stream_per_token");
    g.throughput(Throughput::Elements(TOKENS as u64));
    let opts = GenerateOptions::new()
        .max_new_tokens(TOKENS)
        .stop("</stop>");
    g.bench_function("greedy_free_session (loop only)", |b| {
        b.iter(|| {
            let mut s = FreeGreedy { len: 0 };
            block_on(gen.generate_async(&mut s, vec![2, 3, 4], opts.clone())).unwrap()
        })
    });
    g.bench_function("greedy_scripted_262k (session argmax)", |b| {
        b.iter_batched_ref(
            || backend.scripted_session(4096),
            |s: &mut ScriptedSession| {
                block_on(gen.generate_async(s, vec![2, 3, 4], opts.clone())).unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    let sampled = opts.clone().sampling(SamplingParams::gemma().seed(5));
    g.bench_function("gemma_sampling_scripted_262k (logits copy + sample)", |b| {
        b.iter_batched_ref(
            || backend.scripted_session(4096),
            |s: &mut ScriptedSession| {
                block_on(gen.generate_async(s, vec![2, 3, 4], sampled.clone())).unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = sampling, detokenize, streaming
}
criterion_main!(benches);
