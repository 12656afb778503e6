//! The loop driven by a scripted session: stop rules, streaming, budgets, errors.

use std::sync::Arc;

use futures::executor::block_on;
use futures::StreamExt;
use lockstep_core::{Error, Want};
use lockstep_generate::testing::{self, Call, ScriptedBackend, ScriptedSession};
use lockstep_generate::{CancelToken, Event, GenerateOptions, Generator, StopReason, Tokenizer};

const V: usize = 1024;

fn tok() -> Tokenizer {
    testing::toy_tokenizer(V)
}

fn id(t: &Tokenizer, s: &str) -> u32 {
    t.token_to_id(s).unwrap_or_else(|| panic!("no token {s}"))
}

/// A generator whose sessions answer `ids` in order (greedy picks each one).
fn setup(ids: Vec<u32>) -> (Generator, ScriptedSession) {
    let backend = ScriptedBackend::new(testing::toy_config(V), move || {
        testing::peaked(V, ids.clone())
    });
    let session = backend.scripted_session(1024);
    (Generator::new(Arc::new(backend), tok()), session)
}

fn events(
    g: &Generator,
    s: &mut ScriptedSession,
    prompt: Vec<u32>,
    o: GenerateOptions,
) -> Vec<Event> {
    block_on(
        g.generate_stream(s, prompt, o)
            .unwrap()
            .map(|e| e.unwrap())
            .collect(),
    )
}

fn texts(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Token { text, .. } => Some(text.clone()),
            Event::Done(_) => None,
        })
        .collect()
}

fn stop(ev: &[Event]) -> StopReason {
    match ev.last() {
        Some(Event::Done(s)) => s.stop.clone(),
        other => panic!("no final stats: {other:?}"),
    }
}

#[test]
fn greedy_prefills_once_then_one_token_per_step_on_the_device() {
    let t = tok();
    let (hello, world) = (id(&t, "▁Hello"), id(&t, "▁world"));
    let (g, mut s) = setup(vec![hello, world, 1]);
    let out = g
        .generate(&mut s, vec![2, 700, 701], GenerateOptions::new())
        .unwrap();
    assert_eq!(out.text, " Hello world");
    assert_eq!(out.tokens, [hello, world, 1]);
    assert_eq!(out.stats.stop, StopReason::Eos(1));
    assert_eq!(
        (out.stats.prompt_tokens, out.stats.generated_tokens),
        (3, 3)
    );
    assert_eq!(
        s.log().calls(),
        [
            Call::Greedy {
                tokens: vec![2, 700, 701]
            },
            Call::Greedy {
                tokens: vec![hello]
            },
            Call::Greedy {
                tokens: vec![world]
            },
        ]
    );
    // EOS is never fed.
    assert_eq!(s.tokens(), [2, 700, 701, hello, world]);
}

#[test]
fn sampling_and_penalty_read_the_logits() {
    let t = tok();
    let hello = id(&t, "▁Hello");
    for o in [
        GenerateOptions::new().temperature(0.5),
        GenerateOptions::new().repetition_penalty(1.3),
    ] {
        let (g, mut s) = setup(vec![hello, 106]);
        let out = g.generate(&mut s, vec![2], o).unwrap();
        assert_eq!(out.stats.stop, StopReason::Eos(106));
        assert_eq!(
            s.log().calls(),
            [
                Call::Forward {
                    tokens: vec![2],
                    want: Want::Last
                },
                Call::Forward {
                    tokens: vec![hello],
                    want: Want::Last
                },
            ]
        );
    }
}

#[test]
fn text_prompt_gets_one_bos_only_on_an_empty_session() {
    let (g, mut s) = setup(vec![106]);
    g.generate(&mut s, "Hi", GenerateOptions::new()).unwrap();
    g.generate(&mut s, "Hi", GenerateOptions::new()).unwrap();
    let hi: Vec<u32> = tok().encode_raw("Hi").unwrap();
    let mut first = vec![2];
    first.extend(&hi);
    assert_eq!(s.log().fed(), [first, hi]);
}

#[test]
fn max_tokens_stops_and_leaves_the_last_token_unfed() {
    let (g, mut s) = setup(vec![700, 701, 702, 703]);
    let out = g
        .generate(&mut s, vec![2], GenerateOptions::new().max_new_tokens(3))
        .unwrap();
    assert_eq!(out.tokens, [700, 701, 702]);
    assert_eq!(out.text, " w700 w701 w702");
    assert_eq!(out.stats.stop, StopReason::MaxTokens);
    assert_eq!(s.tokens(), [2, 700, 701]);
}

#[test]
fn stop_string_split_across_tokens_is_not_emitted() {
    let t = tok();
    let ids = vec![
        id(&t, "▁Hello"),
        id(&t, "</"),
        id(&t, "stop"),
        id(&t, ">"),
        id(&t, "▁world"),
    ];
    let (g, mut s) = setup(ids.clone());
    let ev = events(&g, &mut s, vec![2], GenerateOptions::new().stop("</stop>"));
    assert_eq!(texts(&ev), [" Hello", "", "", ""]);
    assert_eq!(stop(&ev), StopReason::StopString("</stop>".into()));

    // Text matching only the start of a stop string is released when generation ends.
    let (g, mut s) = setup(ids[..3].to_vec());
    let ev = events(
        &g,
        &mut s,
        vec![2],
        GenerateOptions::new().stop("</stop>").max_new_tokens(3),
    );
    assert_eq!(texts(&ev), [" Hello", "", "</stop"]);
    assert_eq!(stop(&ev), StopReason::MaxTokens);

    // A stop string inside one token's text cuts that token's text.
    let (g, mut s) = setup(ids.clone());
    let ev = events(&g, &mut s, vec![2], GenerateOptions::new().stop("llo"));
    assert_eq!(texts(&ev), [" He"]);
}

#[test]
fn split_characters_are_emitted_whole() {
    // "€" is E2 82 AC: three byte tokens, one character.
    let b = |x: u32| testing::BYTE_TOKENS_START + x;
    let t = tok();
    let caf = id(&t, "▁caf");
    let (g, mut s) = setup(vec![caf, b(0xE2), b(0x82), b(0xAC), id(&t, "!"), 106]);
    let ev = events(&g, &mut s, vec![2], GenerateOptions::new());
    assert_eq!(texts(&ev), [" caf", "", "", "€", "!", ""]);

    // Bytes that never complete a character come out at the end as U+FFFD.
    let (g, mut s) = setup(vec![caf, b(0xE2), b(0x82)]);
    let ev = events(
        &g,
        &mut s,
        vec![2],
        GenerateOptions::new().max_new_tokens(3),
    );
    let whole = t.decode(&[b(0xE2), b(0x82)]).unwrap();
    assert!(whole.chars().all(|c| c == '\u{FFFD}'), "{whole:?}");
    assert_eq!(texts(&ev), [" caf".to_string(), String::new(), whole]);
}

#[test]
fn overflow_and_bad_prompts_fail_before_any_work() {
    let (g, _) = setup(vec![700]);
    let mut small = ScriptedSession::new(V, 10, testing::peaked(V, vec![700]));
    let err = g
        .generate_stream(
            &mut small,
            vec![2; 5],
            GenerateOptions::new().max_new_tokens(6),
        )
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::ContextOverflow {
                needed: 11,
                limit: 10,
                ..
            }
        ),
        "{err}"
    );
    // Exactly at the budget is fine.
    assert!(g
        .generate_stream(
            &mut small,
            vec![2; 5],
            GenerateOptions::new().max_new_tokens(5)
        )
        .is_ok());

    let tiny_ctx = lockstep_core::ModelConfig {
        context_length: 8,
        ..testing::toy_config(V)
    };
    let g2 = Generator::new(
        Arc::new(ScriptedBackend::new(tiny_ctx, || {
            testing::peaked(V, vec![700])
        })),
        tok(),
    );
    let mut s = ScriptedSession::new(V, 100, testing::peaked(V, vec![700]));
    let err = g2
        .generate_stream(&mut s, vec![2; 5], GenerateOptions::new().max_new_tokens(4))
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::ContextOverflow { limit: 8, limit_name, .. } if limit_name.contains("context"))
    );

    for (prompt, opts, word) in [
        (vec![], GenerateOptions::new(), "empty"),
        (vec![2, V as u32], GenerateOptions::new(), "vocabulary"),
        (
            vec![2],
            GenerateOptions::new().max_new_tokens(0),
            "max new tokens",
        ),
        (vec![2], GenerateOptions::new().stop(""), "stop string"),
        (
            vec![2],
            GenerateOptions::new().temperature(f32::NAN),
            "temperature",
        ),
        (
            vec![2],
            GenerateOptions::new().temperature(1.0).top_k(0),
            "top-k",
        ),
        (vec![2], GenerateOptions::new().top_p(0.0), "top-p"),
        (vec![2], GenerateOptions::new().min_p(2.0), "min-p"),
        (
            vec![2],
            GenerateOptions::new().repetition_penalty(0.0),
            "penalty",
        ),
    ] {
        match g.generate_stream(&mut small, prompt, opts) {
            Err(Error::InvalidInput(m)) => assert!(m.contains(word), "{m}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("accepted an invalid request ({word})"),
        }
    }
    assert!(small.log().calls().is_empty(), "no model work may happen");
}

#[test]
fn nan_logits_are_an_error_not_text() {
    let mut row = vec![0.0; V];
    row[5] = f32::NAN;
    let backend = ScriptedBackend::new(testing::toy_config(V), move || testing::fixed(row.clone()));
    let g = Generator::new(Arc::new(backend), tok());
    let mut s = ScriptedSession::new(
        V,
        1024,
        testing::rows(vec![testing::one_hot(V, 700, 50.0), {
            let mut r = vec![0.0; V];
            r[3] = f32::INFINITY;
            r
        }]),
    );
    let items: Vec<_> = block_on(
        g.generate_stream(&mut s, vec![2], GenerateOptions::new().temperature(1.0))
            .unwrap()
            .collect(),
    );
    assert_eq!(
        items.len(),
        2,
        "one token, then the error, then the end: {items:?}"
    );
    assert!(matches!(&items[0], Ok(Event::Token { id: 700, .. })));
    assert!(matches!(&items[1], Err(Error::Runtime(m)) if m.contains("non-finite")));
}

#[test]
fn dropping_the_stream_stops_and_leaves_the_session_usable() {
    let (g, mut s) = setup(vec![700, 701, 702, 703, 704]);
    {
        let mut stream = g
            .generate_stream(&mut s, vec![2, 3], GenerateOptions::new())
            .unwrap();
        let first: Vec<_> = block_on((&mut stream).take(2).collect::<Vec<_>>());
        assert_eq!(first.len(), 2);
    }
    // Fed: the prompt and the first token; the second was sampled but never fed.
    assert_eq!(s.tokens(), [2, 3, 700]);
    assert_eq!(s.log().fed().len(), 2);
    let out = g
        .generate(&mut s, vec![701], GenerateOptions::new().max_new_tokens(2))
        .unwrap();
    assert_eq!(out.tokens, [702, 703]);
    assert_eq!(s.tokens(), [2, 3, 700, 701, 702]);
}

#[test]
fn cancel_token_ends_with_cancelled() {
    let (g, mut s) = setup(vec![700, 701, 702]);
    let cancel = CancelToken::new();
    let mut stream = g
        .generate_stream(
            &mut s,
            vec![2],
            GenerateOptions::new().cancel_token(cancel.clone()),
        )
        .unwrap();
    let first = block_on(stream.next()).unwrap().unwrap();
    assert!(matches!(first, Event::Token { id: 700, .. }));
    cancel.cancel();
    match block_on(stream.next()) {
        Some(Ok(Event::Done(st))) => {
            assert_eq!(st.stop, StopReason::Cancelled);
            assert_eq!(st.generated_tokens, 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(block_on(stream.next()).is_none());
}

#[test]
fn same_seed_same_tokens_through_the_loop() {
    let row: Vec<f32> = (0..V).map(|i| (i % 13) as f32 * 0.2).collect();
    let backend = Arc::new(ScriptedBackend::new(testing::toy_config(V), move || {
        testing::fixed(row.clone())
    }));
    let g = Generator::new(backend.clone(), tok());
    let run = |seed| {
        let mut s = backend.scripted_session(1024);
        let o = GenerateOptions::new()
            .temperature(1.0)
            .top_k(200)
            .top_p(0.9)
            .seed(seed)
            .max_new_tokens(16);
        g.generate(&mut s, vec![2], o).unwrap().tokens
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn stats_are_filled() {
    let (g, mut s) = setup(vec![700, 701, 702, 106]);
    let out = g
        .generate(&mut s, vec![2, 3, 4, 5], GenerateOptions::new())
        .unwrap();
    let st = out.stats;
    assert_eq!(
        (st.prompt_tokens, st.generated_tokens, st.stop.clone()),
        (4, 4, StopReason::Eos(106))
    );
    assert!(st.time_to_first_token >= st.prefill_time);
    assert!(st.prefill_tokens_per_second().is_some());
}
