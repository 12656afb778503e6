//! The tiny synthetic model through ONNX Runtime: the graph must compute what the plain
//! f32 reference computes from the very same weights, and the KV cache must not change
//! what a step sees.

use lockstep::{Model, SessionOptions, Want};
use lockstep_gpu::reference;
use lockstep_model::weights::ModelWeights;

fn nmse(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    num / den
}

/// Token ids from the middle of the vocabulary, long enough to cross the tiny model's
/// 16-token sliding window twice.
fn prompt(len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| 2 + (i * 7919) % 200_000).collect()
}

#[test]
fn onnx_graph_matches_the_f32_reference_across_the_sliding_window() {
    let model = Model::open("gemma3-tiny").unwrap();
    let backend = model.backend("ort-cpu").unwrap();
    let weights = ModelWeights::load(model.dir()).unwrap();
    let tokens = prompt(40);

    let mut session =
        pollster::block_on(backend.session(SessionOptions::with_max_tokens(64))).unwrap();
    let ort = pollster::block_on(session.forward(&tokens, Want::All)).unwrap();

    let mut cache = reference::KvCache::new(&weights.config);
    let reference = reference::forward(&weights, &mut cache, &tokens, Want::All);
    assert_eq!(ort.rows(), tokens.len());
    for pos in 0..tokens.len() {
        let e = nmse(ort.row(pos), reference.row(pos));
        assert!(
            e < 1e-6,
            "position {pos}: nmse {e:e} between ONNX Runtime and the reference"
        );
        assert_eq!(ort.argmax(pos), reference.argmax(pos), "position {pos}");
    }
}

#[test]
fn decoding_with_the_kv_cache_equals_one_full_forward() {
    let model = Model::open("gemma3-tiny").unwrap();
    let backend = model.backend("ort-cpu").unwrap();
    let tokens = prompt(36);
    let full = pollster::block_on(async {
        let mut s = backend
            .session(SessionOptions::with_max_tokens(64))
            .await
            .unwrap();
        s.forward(&tokens, Want::All).await.unwrap()
    });
    // Prefill 10 tokens, then one at a time: every step's logits must match the row of
    // the single full forward (sliding-window layers included).
    let mut s = pollster::block_on(backend.session(SessionOptions::with_max_tokens(64))).unwrap();
    let first = pollster::block_on(s.forward(&tokens[..10], Want::Last)).unwrap();
    assert!(nmse(first.last(), full.row(9)) < 1e-9);
    for (i, &t) in tokens.iter().enumerate().skip(10) {
        let step = pollster::block_on(s.forward(&[t], Want::Last)).unwrap();
        let e = nmse(step.last(), full.row(i));
        assert!(e < 1e-9, "position {i}: nmse {e:e}");
    }
    assert_eq!(s.len(), tokens.len());

    // Rewinding and replaying gives the same logits again.
    s.truncate(20).unwrap();
    let replay = pollster::block_on(s.forward(&tokens[20..24], Want::All)).unwrap();
    for (row, pos) in (20..24).enumerate() {
        assert!(
            nmse(replay.row(row), full.row(pos)) < 1e-9,
            "replayed position {pos}"
        );
    }
}

#[test]
fn greedy_generation_is_deterministic_and_respects_the_budget() {
    let model = Model::open("gemma3-tiny").unwrap();
    let generator = model.generator("ort-cpu").unwrap();
    let opts = lockstep::GenerateOptions::new().max_new_tokens(20);
    let run = || {
        let mut s = pollster::block_on(generator.session(64)).unwrap();
        generator
            .generate(s.as_mut(), "The three primary colors are", opts.clone())
            .unwrap()
    };
    let a = run();
    let b = run();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.tokens.len(), 20);
    // A budget too small for prompt + max tokens is refused before any work.
    let mut small = pollster::block_on(generator.session(8)).unwrap();
    let err = generator
        .generate(small.as_mut(), "The three primary colors are", opts)
        .unwrap_err();
    assert!(err.to_string().contains("do not fit"), "{err}");
    assert_eq!(small.len(), 0);
}

#[test]
fn int8_activation_models_keep_the_same_weights() {
    use lockstep_model::convert::{build_synthetic, tiny_config, ConvertOptions};
    let f32_model = Model::open("gemma3-tiny").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = ConvertOptions {
        name: "tiny-acc4".into(),
        accuracy_level: 4,
        projection_bits: 4,
        tokenizer_dir: f32_model.dir().to_path_buf(),
        progress: false,
        variant: Default::default(),
    };
    let seed = lockstep_model_seed(&f32_model);
    build_synthetic(tiny_config(), seed, &dir.path().join("m"), &opts).unwrap();
    // The 8-bit table is stored whole instead of in two halves; the codes are the same.
    let a = ModelWeights::load(f32_model.dir()).unwrap();
    let b = ModelWeights::load(&dir.path().join("m")).unwrap();
    assert_eq!(a, b);
    let m = Model::open(dir.path().join("m").to_str().unwrap()).unwrap();
    let generator = m.generator("ort-cpu").unwrap();
    let info = generator.backend().info();
    assert!(
        info.precision.contains("accuracy_level 4"),
        "{}",
        info.precision
    );
    let mut s = pollster::block_on(generator.session(64)).unwrap();
    let out = generator
        .generate(
            s.as_mut(),
            "Hello",
            lockstep::GenerateOptions::new().max_new_tokens(8),
        )
        .unwrap();
    assert_eq!(out.tokens.len(), 8);
}

fn lockstep_model_seed(model: &Model) -> u64 {
    model
        .package()
        .manifest
        .source
        .seed
        .expect("a synthetic model records its seed")
}

#[test]
fn seeded_sampling_through_onnx_runtime_is_reproducible() {
    let model = Model::open("gemma3-tiny").unwrap();
    let generator = model.generator("ort-cpu").unwrap();
    let sample = |seed: u64| {
        let opts = lockstep::GenerateOptions::new()
            .max_new_tokens(24)
            .temperature(1.5)
            .top_k(50)
            .top_p(0.95)
            .seed(seed);
        let mut s = pollster::block_on(generator.session(64)).unwrap();
        generator
            .generate(s.as_mut(), "Once upon a time", opts)
            .unwrap()
            .tokens
    };
    assert_eq!(sample(7), sample(7));
    assert_ne!(sample(7), sample(8));
}
