//! The suite can fail: faults injected into a scripted backend (no model files needed)
//! are caught, classified, and reported at the position where they happen.

use std::sync::Arc;

use lockstep_conformance::fault::{Fault, FaultyBackend};
use lockstep_conformance::{BackendStatus, Candidate, GoldenInput, Outcome, Runner, Suite};
use lockstep_core::Backend;
use lockstep_generate::testing::{toy_config, toy_tokenizer, ScriptedBackend};

const VOCAB: usize = 1024;

/// A deterministic "model": the next token is a hash of the context, with a clear margin
/// (logit 8 against a runner-up at 5), so any token difference is a real one.
fn scripted() -> Arc<dyn Backend> {
    Arc::new(ScriptedBackend::new(toy_config(VOCAB), || {
        Box::new(|ctx: &[u32]| {
            let h = ctx
                .iter()
                .fold(17u64, |h, &t| h.wrapping_mul(31).wrapping_add(u64::from(t)));
            let mut row = vec![0.0f32; VOCAB];
            row[600 + (h % 300) as usize] = 8.0;
            row[600 + ((h / 300) % 300) as usize] += 5.0;
            row
        })
    }))
}

fn suite() -> Suite {
    Suite::from_toml(
        r#"
name = "fault"
reference = "scripted"
max_new_tokens = 12
[tolerances]
near_tie_margin = { value = 0.5, why = "test" }
golden_logprob = { value = 1e-4, why = "test" }
max_abs_logit = { value = 1e-3, why = "test" }
mean_kl = { value = 1e-6, why = "test" }
max_kl = { value = 1e-5, why = "test" }
[[prompt]]
id = "a"
text = "Hello world"
[[prompt]]
id = "b"
text = "the end of the story"
"#,
    )
    .unwrap()
}

#[test]
fn a_correct_backend_passes() {
    let (suite, tok) = (suite(), toy_tokenizer(VOCAB));
    let runner = Runner::new(&suite, &tok, "toy").unwrap();
    let other: Arc<dyn Backend> = Arc::new(FaultyBackend::new(
        scripted(),
        // A fault far past every sequence never fires.
        Fault::Boost {
            position: 10_000,
            token: 3,
            amount: 100.0,
        },
    ));
    let report = runner
        .run(
            scripted(),
            vec![Candidate::Loaded(other)],
            GoldenInput::None,
        )
        .unwrap();
    assert!(report.passed(), "{}", report.to_markdown());
    let b = &report.backends[0];
    assert_eq!(b.status, BackendStatus::Passed);
    for p in &b.prompts {
        assert_eq!(p.outcome(), Some(Outcome::Identical));
        let tf = p.teacher_forced.as_ref().unwrap();
        assert_eq!(
            (tf.max_kl, tf.max_abs_logit_diff, tf.disagreements),
            (0.0, 0.0, 0)
        );
        assert_eq!(tf.positions, p.prompt_tokens + 12);
    }
}

#[test]
fn one_bad_step_is_caught_at_its_position() {
    let (suite, tok) = (suite(), toy_tokenizer(VOCAB));
    let runner = Runner::new(&suite, &tok, "toy").unwrap();
    let prompt_len = runner.prompts()[0].tokens.len();
    // The 6th generated token of prompt "a" (sequence position prompt_len + 5) is pushed
    // to token 3, which is nowhere near the reference's candidates.
    let position = prompt_len + 5;
    let faulty: Arc<dyn Backend> = Arc::new(FaultyBackend::new(
        scripted(),
        Fault::Boost {
            position,
            token: 3,
            amount: 100.0,
        },
    ));
    let report = runner
        .run(
            scripted(),
            vec![Candidate::Loaded(faulty)],
            GoldenInput::None,
        )
        .unwrap();
    assert!(!report.passed());
    let b = &report.backends[0];
    assert_eq!(b.status, BackendStatus::Failed);
    let a = &b.prompts[0];
    let d = a
        .free_running
        .as_ref()
        .unwrap()
        .divergence
        .as_ref()
        .unwrap();
    assert_eq!((d.step, d.position, d.test_token), (5, position, 3));
    assert!(!d.near_tie);
    assert_eq!(a.outcome(), Some(Outcome::Failure));
    let tf = a.teacher_forced.as_ref().unwrap();
    assert_eq!(tf.disagreements, 1);
    assert_eq!(tf.hard_disagreements, 1);
    assert_eq!(tf.first_disagreements[0].position, position);
    assert_eq!(tf.max_kl_position, position);
    assert_eq!(tf.max_abs_position, position);
    // Prompt "b" is longer, so the same absolute position falls inside its prompt: the
    // greedy run cannot see it, teacher forcing does.
    let bp = &b.prompts[1];
    assert!(bp.prompt_tokens > position);
    assert_eq!(bp.outcome(), Some(Outcome::Identical));
    assert_eq!(
        bp.teacher_forced.as_ref().unwrap().first_disagreements[0].position,
        position
    );
    let md = report.to_markdown();
    assert!(
        md.contains(&format!("at generated token 5 (position {position})")),
        "{md}"
    );
}

#[test]
fn noise_is_caught_from_where_it_starts() {
    let (suite, tok) = (suite(), toy_tokenizer(VOCAB));
    let runner = Runner::new(&suite, &tok, "toy").unwrap();
    let from = runner.prompts()[0].tokens.len() + 3;
    let noisy: Arc<dyn Backend> = Arc::new(FaultyBackend::new(
        scripted(),
        Fault::Noise {
            from,
            amplitude: 0.05,
            seed: 1,
        },
    ));
    let report = runner
        .run(
            scripted(),
            vec![Candidate::Loaded(noisy)],
            GoldenInput::None,
        )
        .unwrap();
    assert!(!report.passed());
    let a = &report.backends[0].prompts[0];
    // Small noise keeps the greedy tokens (margin 3), but the logits tell.
    assert_eq!(a.outcome(), Some(Outcome::Identical));
    let tf = a.teacher_forced.as_ref().unwrap();
    assert!(tf.max_abs_logit_diff > 0.01 && tf.max_abs_logit_diff <= 0.1);
    assert!(tf.max_kl > 0.0);
    assert!(tf.max_abs_position >= from && tf.max_kl_position >= from);
    assert!(
        a.failures.iter().any(|f| f.contains("max |Δlogit|")),
        "{:?}",
        a.failures
    );
}

#[test]
fn a_near_tie_is_reported_not_failed() {
    // Two tokens 0.2 apart: a fault that swaps them is a near-tie at the suite's 0.5.
    let tie = || -> Arc<dyn Backend> {
        Arc::new(ScriptedBackend::new(toy_config(VOCAB), || {
            Box::new(|ctx: &[u32]| {
                let mut row = vec![0.0f32; VOCAB];
                row[700] = 4.0;
                row[701] = 3.8;
                row[702 + ctx.len() % 50] = 1.0;
                row
            })
        }))
    };
    let (suite, tok) = (suite(), toy_tokenizer(VOCAB));
    let runner = Runner::new(&suite, &tok, "toy")
        .unwrap()
        .teacher_forced(false);
    let position = runner.prompts()[0].tokens.len() + 2;
    let swapped: Arc<dyn Backend> = Arc::new(FaultyBackend::new(
        tie(),
        Fault::Boost {
            position,
            token: 701,
            amount: 0.3,
        },
    ));
    let report = runner
        .run(tie(), vec![Candidate::Loaded(swapped)], GoldenInput::None)
        .unwrap();
    let a = &report.backends[0].prompts[0];
    assert_eq!(a.outcome(), Some(Outcome::NearTie));
    let d = a
        .free_running
        .as_ref()
        .unwrap()
        .divergence
        .as_ref()
        .unwrap();
    assert_eq!(
        (d.position, d.reference_token, d.test_token),
        (position, 700, 701)
    );
    assert!((d.reference_margin - 0.2).abs() < 1e-4 && (d.test_margin - 0.1).abs() < 1e-4);
    assert!(report.passed(), "a near-tie is shown, not failed");
    assert!(report
        .to_markdown()
        .contains("near-tie at generated token 2"));
}
