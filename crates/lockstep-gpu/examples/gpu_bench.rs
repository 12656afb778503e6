//! Prefill and decode speed of the GPU backend, optionally checked against the CPU reference.
//!
//! ```text
//! cargo run --release -p lockstep-gpu --example gpu_bench -- --model /path/to/model_dir
//! cargo run --release -p lockstep-gpu --example gpu_bench -- --random [--shape 270m|1b|4b]   # real shapes, random weights
//!     [--prompt-tokens 512] [--gen 128] [--profile] [--check] [--adapter NAME] [--no-run-ahead]
//!     [--max-batch N] [--min-tiles N] [--tiled-min N]
//! ```
//! Speed does not depend on weight values, so `--random` measures the real model's cost on
//! a machine without the model files. `--check` compares a short greedy run and its logits
//! with the CPU reference (slow: the reference is plain Rust).

use std::path::PathBuf;
use std::time::Instant;

use lockstep_core::{Backend, ModelConfig, Session, SessionOptions, Want};
use lockstep_gpu::testing::{random_weights, Rng};
use lockstep_gpu::{reference, GpuBackend, GpuOptions};
use lockstep_model::weights::ModelWeights;
use pollster::block_on;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .map(|i| args[i + 1].clone())
    };
    let prompt_tokens: usize = value("--prompt-tokens").map_or(512, |v| v.parse().unwrap());
    let gen: usize = value("--gen").map_or(128, |v| v.parse().unwrap());

    let t = Instant::now();
    let weights = match value("--model") {
        Some(dir) => ModelWeights::load(&PathBuf::from(dir))?,
        None if flag("--random") => {
            let config = match value("--shape").as_deref() {
                None | Some("270m") => ModelConfig::gemma3_270m(),
                Some("1b") => lockstep_model::convert::gemma3_1b_config(),
                Some("4b") => lockstep_model::convert::gemma3_4b_config(),
                Some(other) => return Err(format!("--shape {other}: use 270m, 1b or 4b").into()),
            };
            random_weights(&config, 1)
        }
        None => return Err("pass --model DIR or --random".into()),
    };
    eprintln!("weights ready in {:.1?}", t.elapsed());
    let reference_weights = flag("--check").then(|| weights.clone());
    let opts = GpuOptions {
        profile: flag("--profile"),
        adapter: value("--adapter"),
        run_ahead: !flag("--no-run-ahead"),
        max_batch: value("--max-batch").map_or(512, |v| v.parse().unwrap()),
        attention_min_tiles: value("--min-tiles").map_or(1, |v| v.parse().unwrap()),
        tiled_min_tokens: value("--tiled-min").map_or(16, |v| v.parse().unwrap()),
        ..Default::default()
    };
    let t = Instant::now();
    let gpu = GpuBackend::load(weights, opts)?;
    let info = gpu.info();
    eprintln!(
        "{} on {} ({}), loaded in {:.1?}",
        info.runtime,
        info.device,
        info.precision,
        t.elapsed()
    );
    let vocab = gpu.config().vocab_size as u64;

    // A prompt of ordinary token ids after BOS.
    let mut rng = Rng::new(3);
    let mut prompt = vec![gpu.config().bos_token_id];
    prompt.extend((1..prompt_tokens).map(|_| 1000 + (rng.next_u64() % (vocab - 2000)) as u32));

    let mut s = gpu.new_session(SessionOptions::with_max_tokens(prompt_tokens + gen + 1))?;
    // Warm-up step (pipeline caches, first-use allocations), then rewind.
    block_on(s.forward_greedy(&prompt[..1]))?;
    s.truncate(0)?;

    let t = Instant::now();
    let mut next = block_on(s.forward_greedy(&prompt))?;
    let prefill = t.elapsed();
    let prefill_profile = s.profile();
    s.reset_profile();
    let t = Instant::now();
    let mut generated = vec![next];
    for _ in 1..gen {
        next = block_on(s.forward_greedy(&[next]))?;
        generated.push(next);
    }
    let decode = t.elapsed();
    println!(
        "pp{prompt_tokens}: {:8.1} tok/s ({:.1?})\ntg{gen}: {:8.1} tok/s ({:.2?} per token)",
        prompt_tokens as f64 / prefill.as_secs_f64(),
        prefill,
        (gen - 1) as f64 / decode.as_secs_f64(),
        decode / (gen - 1).max(1) as u32
    );
    println!(
        "first generated ids: {:?}",
        &generated[..generated.len().min(8)]
    );
    for (name, profile) in [("prefill", prefill_profile), ("decode", s.profile())] {
        if let Some(profile) = profile {
            println!("{name}:\n{}", profile.table());
        }
    }

    if let Some(w) = reference_weights {
        // Short run: 6 prompt tokens, 4 greedy steps, on both sides.
        let short = &prompt[..6.min(prompt.len())];
        let mut cache = reference::KvCache::new(&w.config);
        let mut s = gpu.new_session(SessionOptions::with_max_tokens(16))?;
        let mut cpu = reference::forward(&w, &mut cache, short, Want::Last);
        let mut gpu_logits = block_on(s.forward(short, Want::Last))?;
        for step in 0..4 {
            let (a, b) = (gpu_logits.last(), cpu.last());
            let err: f64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum();
            let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
            println!(
                "check step {step}: gpu argmax {} cpu argmax {} nmse {:.3e}",
                gpu_logits.argmax(0),
                cpu.argmax(0),
                err / norm
            );
            let t = cpu.argmax(0);
            cpu = reference::forward(&w, &mut cache, &[t], Want::Last);
            gpu_logits = block_on(s.forward(&[t], Want::Last))?;
        }
    }
    Ok(())
}
