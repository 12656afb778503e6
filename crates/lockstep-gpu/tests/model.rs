//! The whole tiny model on the GPU against the CPU reference: greedy tokens, logits,
//! prefill versus token-by-token, truncate, chunked embedding.

use lockstep_core::{Backend, Session, SessionOptions, Want};
use lockstep_gpu::testing::{random_weights, random_weights_with_bits, tiny_config, Rng};
use lockstep_gpu::{reference, GpuBackend, GpuOptions};
use lockstep_model::weights::ModelWeights;
use pollster::block_on;

/// A tight threshold: both sides compute in f32 from the same quantized weights; only the
/// order of summation differs.
const NMSE_LOGITS: f64 = 1e-8;

fn nmse(gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len());
    let err: f64 = gpu
        .iter()
        .zip(cpu)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let norm: f64 = cpu.iter().map(|b| (*b as f64).powi(2)).sum();
    err / norm
}

fn check(name: &str, gpu: &[f32], cpu: &[f32]) {
    let e = nmse(gpu, cpu);
    eprintln!("{name}: nmse {e:.3e}");
    assert!(e <= NMSE_LOGITS, "{name}: nmse {e:e} over {NMSE_LOGITS:e}");
}

fn weights() -> ModelWeights {
    random_weights(&tiny_config(), 42)
}

/// Small steps and a short ring, so that prefill takes several steps and the sliding
/// layers' ring wraps many times within a short test.
fn options() -> GpuOptions {
    GpuOptions {
        max_batch: 5,
        ring_history: 2,
        max_embed_chunk_rows: Some(200),
        ..Default::default()
    }
}

fn prompt(n: usize) -> Vec<u32> {
    let mut rng = Rng::new(7);
    (0..n).map(|_| (rng.next_u64() % 512) as u32).collect()
}

fn top2_margin(row: &[f32]) -> f32 {
    let mut v = row.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    v[0] - v[1]
}

fn cpu_greedy(w: &ModelWeights, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut cache = reference::KvCache::new(&w.config);
    let mut logits = reference::forward(w, &mut cache, prompt, Want::Last);
    let (mut tokens, mut rows) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let t = logits.argmax(0);
        tokens.push(t);
        rows.push(logits.last().to_vec());
        logits = reference::forward(w, &mut cache, &[t], Want::Last);
    }
    (tokens, rows)
}

#[test]
fn info_names_adapter_and_api() {
    let gpu = GpuBackend::load(weights(), options()).unwrap();
    let info = gpu.info();
    eprintln!("{info:?}");
    assert_eq!(info.id, "gpu");
    assert!(info.device.contains(" / "), "{}", info.device);
    assert_eq!(
        info.precision,
        "int4 weights (int8 embedding), f32 compute; KV cache f32, sliding layers in a ring"
    );
}

#[test]
fn greedy_tokens_match_cpu_reference_past_the_window() {
    let w = weights();
    let prompt = prompt(21); // longer than the window of 8, several steps of 5
    let steps = 24;
    let (cpu_tokens, cpu_rows) = cpu_greedy(&w, &prompt, steps);
    let gpu = GpuBackend::load(w, options()).unwrap();

    // Greedy with the GPU argmax.
    let mut s = block_on(gpu.session(SessionOptions::with_max_tokens(64))).unwrap();
    let mut tokens = vec![block_on(s.forward_greedy(&prompt)).unwrap()];
    while tokens.len() < steps {
        tokens.push(block_on(s.forward_greedy(&[*tokens.last().unwrap()])).unwrap());
    }
    eprintln!("cpu {cpu_tokens:?}\ngpu {tokens:?}");
    let margins: Vec<f32> = cpu_rows.iter().map(|r| top2_margin(r)).collect();
    eprintln!("reference top-1 minus top-2 logit per step: {margins:.2?}");
    let distinct = cpu_tokens
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(
        distinct >= steps / 3,
        "the test model repeats itself: {cpu_tokens:?}"
    );
    assert_eq!(tokens, cpu_tokens);
    assert_eq!(s.len(), prompt.len() + steps - 1);

    // The same run reading logits: every decode step's logits match the reference.
    let mut s = block_on(gpu.session(SessionOptions::with_max_tokens(64))).unwrap();
    let mut logits = block_on(s.forward(&prompt, Want::Last)).unwrap();
    let mut worst = 0f64;
    for (i, cpu_row) in cpu_rows.iter().enumerate() {
        assert_eq!(logits.rows(), 1);
        let e = nmse(logits.last(), cpu_row);
        worst = worst.max(e);
        assert!(e <= NMSE_LOGITS, "decode step {i}: nmse {e:e}");
        logits = block_on(s.forward(&[cpu_tokens[i]], Want::Last)).unwrap();
    }
    eprintln!("decode logits: worst nmse {worst:.3e} over {steps} steps");
}

#[test]
fn all_logits_match_cpu_reference() {
    let w = weights();
    let prompt = prompt(23);
    let mut cache = reference::KvCache::new(&w.config);
    let cpu = reference::forward(&w, &mut cache, &prompt, Want::All);
    let gpu = GpuBackend::load(w, options()).unwrap();
    let mut s = block_on(gpu.session(SessionOptions::with_max_tokens(32))).unwrap();
    let logits = block_on(s.forward(&prompt, Want::All)).unwrap();
    assert_eq!(logits.rows(), prompt.len());
    check(
        "Want::All over 23 positions",
        logits.as_slice(),
        cpu.as_slice(),
    );
    for r in 0..prompt.len() {
        assert_eq!(logits.argmax(r), cpu.argmax(r), "position {r}");
    }
}

#[test]
fn prefill_then_decode_equals_token_by_token() {
    let w = weights();
    let prompt = prompt(19);
    let gpu = GpuBackend::load(w, options()).unwrap();
    let mut a = block_on(gpu.session(SessionOptions::with_max_tokens(40))).unwrap();
    let mut b = block_on(gpu.session(SessionOptions::with_max_tokens(40))).unwrap();
    let la = block_on(a.forward(&prompt, Want::All)).unwrap();
    let mut rows = Vec::new();
    for &t in &prompt {
        rows.extend_from_slice(block_on(b.forward(&[t], Want::Last)).unwrap().last());
    }
    check(
        "prefill (steps of 5) vs token by token",
        la.as_slice(),
        &rows,
    );
    // And decoding on from both gives the same next logits.
    let next = la.argmax(prompt.len() - 1);
    let da = block_on(a.forward(&[next], Want::Last)).unwrap();
    let db = block_on(b.forward(&[next], Want::Last)).unwrap();
    check(
        "decode after prefill vs after token by token",
        da.last(),
        db.last(),
    );
}

#[test]
fn truncate_rewinds_and_refuses_beyond_the_ring() {
    let w = weights();
    let prompt = prompt(30);
    let gpu = GpuBackend::load(w.clone(), options()).unwrap();
    let mut s = block_on(gpu.session(SessionOptions::with_max_tokens(64))).unwrap();
    block_on(s.forward(&prompt, Want::Last)).unwrap();

    // Rewind 4 tokens (the ring keeps window 8 + max_batch 5 - 1 + history 2 = 14 slots,
    // so rewinds of up to 7 are always possible), then take another branch.
    s.truncate(26).unwrap();
    assert_eq!(s.len(), 26);
    let branch = [5u32, 6, 7];
    let got = block_on(s.forward(&branch, Want::All)).unwrap();
    let mut cache = reference::KvCache::new(&w.config);
    reference::forward(&w, &mut cache, &prompt[..26], Want::Last);
    let want = reference::forward(&w, &mut cache, &branch, Want::All);
    check("after truncate(26)", got.as_slice(), want.as_slice());

    // Too far back for the sliding layers' ring: a clear error, the session unchanged.
    let err = s.truncate(10).unwrap_err().to_string();
    assert!(err.contains("start a new session"), "{err}");
    assert_eq!(s.len(), 29);
    assert!(s.truncate(30).is_err());
    // Rewinding to the very start always works: no earlier keys are needed.
    s.truncate(0).unwrap();
    let got = block_on(s.forward(&prompt[..3], Want::Last)).unwrap();
    let mut cache = reference::KvCache::new(&w.config);
    let want = reference::forward(&w, &mut cache, &prompt[..3], Want::Last);
    check("after truncate(0)", got.last(), want.last());
}

#[test]
fn budget_overflow_is_an_error() {
    let gpu = GpuBackend::load(weights(), options()).unwrap();
    let mut s = block_on(gpu.session(SessionOptions::with_max_tokens(8))).unwrap();
    let err = block_on(s.forward(&prompt(9), Want::Last)).unwrap_err();
    assert!(
        matches!(
            err,
            lockstep_core::Error::ContextOverflow {
                needed: 9,
                limit: 8,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.len(), 0);
    assert!(
        block_on(s.forward(&[600], Want::Last)).is_err(),
        "id outside the vocabulary"
    );
}

#[test]
fn default_options_one_embedding_chunk_same_logits() {
    // Big steps, one embedding chunk, a ring that never wraps: same numbers.
    let w = weights();
    let prompt = prompt(20);
    let gpu = GpuBackend::load(w.clone(), GpuOptions::default()).unwrap();
    let mut s = block_on(gpu.session(SessionOptions::with_max_tokens(100))).unwrap();
    let got = block_on(s.forward(&prompt, Want::All)).unwrap();
    let mut cache = reference::KvCache::new(&w.config);
    let want = reference::forward(&w, &mut cache, &prompt, Want::All);
    check(
        "default options, one step of 20",
        got.as_slice(),
        want.as_slice(),
    );
}

#[test]
fn profile_reports_time_per_kernel_class() {
    let opts = GpuOptions {
        profile: true,
        ..options()
    };
    let gpu = GpuBackend::load(weights(), opts).unwrap();
    let mut s = gpu
        .new_session(SessionOptions::with_max_tokens(32))
        .unwrap();
    let first = block_on(s.forward_greedy(&prompt(12))).unwrap();
    s.reset_profile();
    block_on(s.forward_greedy(&[first])).unwrap();
    let profile = s.profile().expect("the GPU session profiles");
    eprintln!("{}", profile.table());
    assert_eq!(profile.steps, 1, "one decode step");
    assert_eq!(profile.tokens, 1);
    assert!(profile.host.encode > std::time::Duration::ZERO);
    let profile = profile.kernels;
    if profile.is_empty() {
        eprintln!("{}: no timestamps inside compute passes", gpu.info().device);
        return;
    }
    let count = |k: &str| {
        profile
            .iter()
            .find(|t| t.kernel == k)
            .map_or(0, |t| t.dispatches)
    };
    // One decode step of the 4-layer model: 4 attention dispatches, one argmax; per layer
    // Q|K|V, O and down as matvecs and gate|up fused with its activation.
    assert_eq!(count("attention"), 4);
    assert_eq!(count("argmax"), 1);
    assert_eq!(count("matvec_q4"), 12);
    assert_eq!(count("matvec_geglu_q4"), 4);
    assert_eq!(count("geglu"), 0);
}

#[test]
fn eight_bit_projections_match_cpu_reference() {
    let w = random_weights_with_bits(&tiny_config(), 5, 8);
    let prompt = prompt(12);
    let mut cache = reference::KvCache::new(&w.config);
    let want = reference::forward(&w, &mut cache, &prompt, Want::All);
    let gpu = GpuBackend::load(w, options()).unwrap();
    assert_eq!(
        gpu.info().precision,
        "int8 weights, f32 compute; KV cache f32, sliding layers in a ring"
    );
    let mut s = gpu
        .new_session(SessionOptions::with_max_tokens(16))
        .unwrap();
    let got = block_on(s.forward(&prompt, Want::All)).unwrap();
    check(
        "8-bit projections, Want::All",
        got.as_slice(),
        want.as_slice(),
    );
}

#[test]
fn missing_adapter_is_unavailable() {
    let opts = GpuOptions {
        adapter: Some("no such gpu".into()),
        ..options()
    };
    match GpuBackend::load(weights(), opts) {
        Err(lockstep_core::Error::Unavailable { backend, reason }) => {
            assert_eq!(backend, "gpu");
            assert!(reason.contains("no such gpu"), "{reason}");
        }
        other => panic!("expected Unavailable, got {:?}", other.map(|b| b.info())),
    }
}

/// Run-ahead greedy decoding (the next one-token step submitted before the host reads the
/// current id) gives the ids of plain step-by-step decoding, also when the caller does
/// something else than take the run-ahead step: sample (forward), feed another token,
/// truncate, or run past the end of the budget.
#[test]
fn run_ahead_gives_the_ids_of_plain_steps() {
    let load = |run_ahead| {
        GpuBackend::load(
            weights(),
            GpuOptions {
                run_ahead,
                ..options()
            },
        )
        .unwrap()
    };
    let (fast, plain) = (load(true), load(false));
    let budget = 40;
    let script = |gpu: &GpuBackend| -> Vec<u32> {
        let mut s = gpu
            .new_session(SessionOptions::with_max_tokens(budget))
            .unwrap();
        let mut ids = vec![block_on(s.forward_greedy(&prompt(7))).unwrap()];
        for _ in 0..10 {
            let last = *ids.last().unwrap();
            ids.push(block_on(s.forward_greedy(&[last])).unwrap());
        }
        // Another token than the one the run-ahead step took.
        ids.push(block_on(s.forward_greedy(&[3])).unwrap());
        // A sampling step in between, then greedy again.
        let logits = block_on(s.forward(&[ids[ids.len() - 1]], Want::Last)).unwrap();
        ids.push(logits.argmax(0));
        ids.push(block_on(s.forward_greedy(&[5])).unwrap());
        // Rewind over the run-ahead step, then continue.
        s.truncate(s.len() - 3).unwrap();
        ids.push(block_on(s.forward_greedy(&[7])).unwrap());
        // To the end of the budget: the last steps have no room to run ahead.
        while s.len() < budget {
            let last = *ids.last().unwrap();
            ids.push(block_on(s.forward_greedy(&[last])).unwrap());
        }
        assert!(block_on(s.forward_greedy(&[1])).is_err());
        ids
    };
    let (a, b) = (script(&fast), script(&plain));
    assert_eq!(a, b);
    assert!(a.len() > 30, "{a:?}");
}

#[test]
fn device_buffers_are_reported_and_a_session_allocates_what_it_announced() {
    let gpu = GpuBackend::load(weights(), options()).unwrap();
    let weights_only = gpu.memory().device_bytes().unwrap();
    assert!(weights_only > 0);
    let opts = SessionOptions::with_max_tokens(64);
    let plan = gpu.session_memory(&opts).unwrap();
    assert!(plan.device);
    let s = block_on(gpu.session(opts)).unwrap();
    // Every buffer the session created, counted as it was created, is what the plan said.
    assert_eq!(
        gpu.memory().device_bytes().unwrap(),
        weights_only + plan.total()
    );
    drop(s);
    assert_eq!(gpu.memory().device_bytes().unwrap(), weights_only);
}

/// The f16 KV cache (`GpuOptions::kv`): keys and values rounded to f16 when written, the
/// rest f32. Same greedy tokens as the f32 reference past the window on the test model,
/// whose logits are peaked; the logits move by f16 rounding of the cache, measured here.
#[test]
fn f16_kv_cache_keeps_greedy_tokens_and_halves_the_cache() {
    let w = weights();
    let prompt = prompt(21);
    let steps = 24;
    let (cpu_tokens, cpu_rows) = cpu_greedy(&w, &prompt, steps);
    let f32_gpu = GpuBackend::load(w.clone(), options()).unwrap();
    let gpu = GpuBackend::load(
        w,
        GpuOptions {
            kv: lockstep_core::KvPrecision::F16,
            ..options()
        },
    )
    .unwrap();
    assert!(
        gpu.info().precision.contains("KV cache f16"),
        "{}",
        gpu.info().precision
    );
    let opts = SessionOptions::with_max_tokens(64);
    let (plan16, plan32) = (
        gpu.session_memory(&opts).unwrap(),
        f32_gpu.session_memory(&opts).unwrap(),
    );
    assert_eq!(2 * plan16.kv_bytes, plan32.kv_bytes);

    let mut s = block_on(gpu.session(opts.clone())).unwrap();
    let mut tokens = vec![block_on(s.forward_greedy(&prompt)).unwrap()];
    while tokens.len() < steps {
        tokens.push(block_on(s.forward_greedy(&[*tokens.last().unwrap()])).unwrap());
    }
    assert_eq!(tokens, cpu_tokens);

    let mut s = block_on(gpu.session(opts)).unwrap();
    let mut logits = block_on(s.forward(&prompt, Want::Last)).unwrap();
    let mut worst = 0f64;
    for (i, cpu_row) in cpu_rows.iter().enumerate() {
        worst = worst.max(nmse(logits.last(), cpu_row));
        logits = block_on(s.forward(&[cpu_tokens[i]], Want::Last)).unwrap();
    }
    eprintln!("f16 KV cache: decode logits worst nmse {worst:.3e} against the f32 reference");
    // f16 keeps 11 significant bits: a relative error of up to 2^-12 per cached value,
    // which moves logits by ~1e-4 relative (nmse 2.1e-7 measured on lavapipe); a wrong
    // pair layout or position scrambles them (nmse of order 1).
    assert!(worst < 1e-5, "f16 KV cache: nmse {worst:e}");
}

/// Subgroup reductions (where the adapter has them; lavapipe does) and the workgroup-memory
/// path give the same greedy tokens and logits equal up to the order of an 8-term sum.
#[test]
fn subgroup_reductions_match_the_plain_path() {
    let w = weights();
    let load = |subgroups| {
        GpuBackend::load(
            w.clone(),
            GpuOptions {
                subgroups,
                ..options()
            },
        )
        .unwrap()
    };
    let (sg, plain) = (load(true), load(false));
    assert!(!plain.uses_subgroups());
    if !sg.uses_subgroups() {
        // Then both run the plain path: nothing to compare (Mesa lavapipe has subgroups).
        eprintln!(
            "{}: no subgroups of at least 8 invocations",
            sg.info().device
        );
        return;
    }
    let run = |gpu: &GpuBackend| {
        let mut s = gpu
            .new_session(SessionOptions::with_max_tokens(48))
            .unwrap();
        let mut rows = vec![block_on(s.forward(&prompt(21), Want::Last)).unwrap()];
        for i in 0..8 {
            let next = rows[i].argmax(0);
            rows.push(block_on(s.forward(&[next], Want::Last)).unwrap());
        }
        rows
    };
    let (a, b) = (run(&sg), run(&plain));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.argmax(0), y.argmax(0));
        check("subgroups vs plain", x.last(), y.last());
    }
}
