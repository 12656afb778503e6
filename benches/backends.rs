//! Criterion: one decode step and one prefill per backend, on the tiny model and the real
//! Gemma 3 270M. `LOCKSTEP_BENCH_MODELS` picks others (e.g. `gemma3-1b-synthetic`),
//! `LOCKSTEP_BENCH_BACKENDS` the backends (default: all), `LOCKSTEP_BENCH_THREADS` the ORT
//! threads, `LOCKSTEP_BENCH_PREFILL` the prefill length.
//!
//! ```text
//! cargo bench -p lockstep-bench --bench backends
//! ```
//! A backend this machine cannot run is reported on stderr and left out.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lockstep::{load_backend, resolve_model, BackendKind, LoadOptions, SessionOptions, Want};
use lockstep_bench::prompt_ids;
use pollster::block_on;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn backends(c: &mut Criterion) {
    let prefill: usize = env_or("LOCKSTEP_BENCH_PREFILL", "64")
        .parse()
        .expect("a number");
    let opts = LoadOptions {
        threads: std::env::var("LOCKSTEP_BENCH_THREADS")
            .ok()
            .and_then(|t| t.parse().ok()),
        ..Default::default()
    };
    for model in env_or("LOCKSTEP_BENCH_MODELS", "gemma3-tiny,gemma3-270m").split(',') {
        let dir = match resolve_model(model, true) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{model}: skipped: {e}");
                continue;
            }
        };
        let kinds = env_or("LOCKSTEP_BENCH_BACKENDS", "ort-cpu,gpu");
        for kind in kinds
            .split(',')
            .map(|k| k.parse::<BackendKind>().expect("a backend id"))
        {
            let backend = match load_backend(kind, &dir, &opts) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{model}/{kind}: unavailable: {e}");
                    continue;
                }
            };
            let prompt = prompt_ids(prefill, backend.config().bos_token_id);
            let session = || {
                block_on(backend.session(SessionOptions::with_max_tokens(prefill + 1)))
                    .expect("session")
            };
            let mut g = c.benchmark_group(format!("{model}/{kind}"));
            // Real-shape steps take tens of milliseconds: few samples keep a run short.
            g.sample_size(10);

            g.throughput(Throughput::Elements(prefill as u64));
            let mut s = session();
            g.bench_function(format!("prefill{prefill}"), |b| {
                b.iter(|| {
                    s.truncate(0).expect("truncate");
                    block_on(s.forward(&prompt, Want::Last)).expect("forward")
                })
            });

            // One decode step after `prefill` cached tokens, rewound after each step so
            // that every step sees the same context length.
            g.throughput(Throughput::Elements(1));
            let mut s = session();
            let tok = block_on(s.forward_greedy(&prompt)).expect("prefill");
            g.bench_function(format!("decode@{prefill}"), |b| {
                b.iter(|| {
                    s.truncate(prefill).expect("truncate");
                    block_on(s.forward_greedy(&[tok])).expect("decode")
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, backends);
criterion_main!(benches);
