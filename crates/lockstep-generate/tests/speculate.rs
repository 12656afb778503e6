//! Speculative decoding in the shared loop, on scripted sessions whose logits depend on
//! what the session really holds: greedy and sampled output equal plain decoding's, the
//! KV cache stays exactly consistent, and the sampled distribution is the target's
//! (chi-square against the exact probabilities, with a test that it catches a biased rule).

use std::sync::Arc;

use futures::executor::block_on;
use futures::StreamExt;
use lockstep_core::{Session, Want};
use lockstep_generate::testing::{self, Call, ScriptedBackend, ScriptedSession};
use lockstep_generate::{
    Event, GenerateOptions, Generator, Output, Sampler, SamplingParams, Speculation, Speculator,
    StopReason, TokenSet,
};

const V: usize = 1024;
const BUG: u32 = 999;

/// The "model" copies `text` one token per position after a prompt of `prompt_len`
/// tokens, and checks its own input: if the token before a position is not what it would
/// have produced there (a rejected draft left in the cache, a position off by one), it
/// answers BUG, so a cache inconsistency shows in the output.
fn copier(prompt_len: usize, text: Vec<u32>) -> impl Fn() -> testing::Script {
    move || {
        let text = text.clone();
        Box::new(move |ctx: &[u32]| {
            let g = ctx.len() - prompt_len; // tokens generated and fed so far
            let ok = g == 0 || text.get(g - 1) == Some(&ctx[ctx.len() - 1]);
            let next = if !ok {
                BUG
            } else {
                text.get(g).copied().unwrap_or(1)
            };
            testing::one_hot(V, next, 10.0)
        })
    }
}

fn generator(backend: ScriptedBackend) -> (Generator, Arc<ScriptedBackend>) {
    let b = Arc::new(backend);
    (Generator::new(b.clone(), testing::toy_tokenizer(V)), b)
}

/// A prompt that holds a passage, and an output that copies it with a few edits: drafts
/// from prompt lookup are right for a while, then wrong at each edit.
fn passage() -> (Vec<u32>, Vec<u32>) {
    let words: Vec<u32> = (600..640).collect();
    let mut prompt = vec![2, 700, 701];
    prompt.extend(&words);
    prompt.extend([702, 703]);
    let mut out = words[..12].to_vec();
    out.push(800); // an edit the drafter cannot know
    out.extend(&words[12..25]);
    out.extend([801, 802]);
    out.extend(&words[25..]);
    out.push(1);
    (prompt, out)
}

fn run(g: &Generator, s: &mut ScriptedSession, prompt: &[u32], opts: GenerateOptions) -> Output {
    g.generate(s, prompt.to_vec(), opts).unwrap()
}

#[test]
fn greedy_speculation_emits_plain_greedy_tokens_in_fewer_steps() {
    let (prompt, text) = passage();
    let (g, b) = generator(ScriptedBackend::new(
        testing::toy_config(V),
        copier(prompt.len(), text.clone()),
    ));
    let budget = prompt.len() + 64;
    let mut plain_s = b.scripted_session(budget);
    let plain = run(
        &g,
        &mut plain_s,
        &prompt,
        GenerateOptions::new().max_new_tokens(64),
    );
    assert_eq!(plain.tokens, text, "the script's own output");
    assert_eq!(plain.stats.decode_steps, text.len() - 1);
    assert_eq!(plain.stats.tokens_per_step(), Some(1.0));
    assert!(plain.stats.speculation.is_none());

    b.log().clear();
    let mut spec_s = b.scripted_session(budget);
    let spec = run(
        &g,
        &mut spec_s,
        &prompt,
        GenerateOptions::new()
            .max_new_tokens(64)
            .speculate(Speculation::default()),
    );
    assert_eq!(spec.tokens, plain.tokens);
    assert_eq!(spec.text, plain.text);
    assert_eq!(spec.stats.stop, StopReason::Eos(1));
    // The session holds the prompt and every emitted token but the last, nothing else.
    let mut held = prompt.clone();
    held.extend(&spec.tokens[..spec.tokens.len() - 1]);
    assert_eq!(spec_s.tokens(), held.as_slice());

    let st = spec.stats.speculation.clone().unwrap();
    assert!(st.accepted > 20, "{st:?}");
    assert!(
        st.accepted < st.drafted,
        "the edits must reject drafts: {st:?}"
    );
    assert!(spec.stats.decode_steps < text.len() / 2, "{:?}", spec.stats);
    assert!(spec.stats.tokens_per_step().unwrap() > 2.0);
    // Verification steps ask for every row and truncate what they rejected.
    let calls = b.log().calls();
    assert!(calls.iter().any(|c| matches!(
        c,
        Call::Forward {
            want: Want::All,
            tokens
        } if tokens.len() > 2
    )));
    assert!(calls.iter().any(|c| matches!(c, Call::Truncate { .. })));
}

#[test]
fn no_draft_means_a_plain_device_greedy_step() {
    // Nothing in the context repeats: the drafter finds nothing, every step is plain.
    let prompt = vec![2, 700, 701, 702];
    let text: Vec<u32> = (600..610).chain([1]).collect();
    let (g, b) = generator(ScriptedBackend::new(
        testing::toy_config(V),
        copier(prompt.len(), text.clone()),
    ));
    let mut s = b.scripted_session(64);
    let out = run(
        &g,
        &mut s,
        &prompt,
        GenerateOptions::new()
            .max_new_tokens(20)
            .speculate(Speculation::default().ngram(1, 3)),
    );
    assert_eq!(out.tokens, text);
    assert!(b
        .log()
        .calls()
        .iter()
        .all(|c| matches!(c, Call::Greedy { .. })));
    let st = out.stats.speculation.unwrap();
    assert_eq!((st.draft_steps, st.drafted), (0, 0));
    assert_eq!(st.acceptance_rate(), None);
}

#[test]
fn speculation_never_feeds_past_the_budget_or_picks_past_the_limit() {
    let (prompt, text) = passage();
    for max_new in [1, 2, 3, 9, 13, 14, 30] {
        let (g, b) = generator(ScriptedBackend::new(
            testing::toy_config(V),
            copier(prompt.len(), text.clone()),
        ));
        // The exact budget plain decoding needs: a speculative step must not exceed it.
        let mut s = b.scripted_session(prompt.len() + max_new);
        let out = run(
            &g,
            &mut s,
            &prompt,
            GenerateOptions::new()
                .max_new_tokens(max_new)
                .speculate(Speculation::default().max_draft(16).adaptive(false)),
        );
        assert_eq!(out.tokens, text[..max_new], "max_new {max_new}");
        assert_eq!(out.stats.stop, StopReason::MaxTokens);
        assert_eq!(s.len(), prompt.len() + max_new - 1);
    }
}

#[test]
fn a_stop_inside_an_accepted_run_truncates_the_picks_after_it() {
    let (prompt, text) = passage();
    let t = testing::toy_tokenizer(V);
    // EOS in the middle of a stretch the drafter gets right.
    let mut eos_text = text[..8].to_vec();
    eos_text.push(1);
    let (g, b) = generator(ScriptedBackend::new(
        testing::toy_config(V),
        copier(prompt.len(), eos_text.clone()),
    ));
    let mut s = b.scripted_session(prompt.len() + 64);
    let spec = Speculation::default().adaptive(false).max_draft(12);
    let out = run(
        &g,
        &mut s,
        &prompt,
        GenerateOptions::new()
            .max_new_tokens(64)
            .speculate(spec.clone()),
    );
    assert_eq!(out.tokens, eos_text);
    assert_eq!(s.len(), prompt.len() + eos_text.len() - 1);

    // A stop string completed by the 5th generated token.
    let stop = t.decode(&text[3..5]).unwrap();
    let (g, b) = generator(ScriptedBackend::new(
        testing::toy_config(V),
        copier(prompt.len(), text.clone()),
    ));
    let mut s = b.scripted_session(prompt.len() + 64);
    let out = run(
        &g,
        &mut s,
        &prompt,
        GenerateOptions::new()
            .max_new_tokens(64)
            .stop(stop.clone())
            .speculate(spec),
    );
    assert_eq!(out.stats.stop, StopReason::StopString(stop));
    assert_eq!(out.tokens, text[..5]);
    assert_eq!(s.len(), prompt.len() + 4);
    assert!(b
        .log()
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Forward { want: Want::All, tokens } if tokens.len() > 5)));
}

#[test]
fn dropping_the_stream_with_picks_queued_leaves_only_delivered_tokens_fed() {
    let (prompt, text) = passage();
    let (g, b) = generator(ScriptedBackend::new(
        testing::toy_config(V),
        copier(prompt.len(), text.clone()),
    ));
    let mut s = b.scripted_session(prompt.len() + 64);
    {
        let opts = GenerateOptions::new()
            .max_new_tokens(64)
            .speculate(Speculation::default().adaptive(false));
        let mut stream = g.generate_stream(&mut s, prompt.clone(), opts).unwrap();
        // The prefill's token, then the first of a verification step's several picks.
        for _ in 0..2 {
            assert!(matches!(
                block_on(stream.next()),
                Some(Ok(Event::Token { .. }))
            ));
        }
    }
    // Delivered: text[0], text[1]; fed: the prompt and text[0].
    let mut held = prompt.clone();
    held.push(text[0]);
    assert_eq!(s.tokens(), held.as_slice());
    assert!(b
        .log()
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Forward { want: Want::All, tokens } if tokens.len() == 9)));
}

#[test]
fn chat_turns_speculate_over_the_whole_conversation() {
    // A cycle of four tokens: prompt lookup learns it within the first turn.
    let cycle = || -> testing::Script {
        Box::new(|ctx: &[u32]| {
            let last = ctx[ctx.len() - 1];
            testing::one_hot(V, 600 + (last + 1) % 4, 10.0)
        })
    };
    let (g, _) = generator(ScriptedBackend::new(testing::toy_config(V), cycle));
    let opts = GenerateOptions::new()
        .max_new_tokens(12)
        .speculate(Speculation::default());
    let session = block_on(g.session(512)).unwrap();
    let mut chat = g.chat(session).unwrap();
    let first = chat.send("Hi there", opts.clone()).unwrap();
    let second = chat.send("Hi there", opts).unwrap();
    for out in [&first, &second] {
        assert_eq!(out.tokens.len(), 12);
        assert!(out.tokens.windows(2).all(|w| w[1] == 600 + (w[0] + 1) % 4));
    }
    assert!(second.stats.speculation.as_ref().unwrap().accepted > 4);
    // The cache holds the conversation but its last picked token.
    assert_eq!(chat.session().len(), chat.tokens().len() - 1);
}

/// A scripted "language model" with soft, context-dependent logits over a few tokens.
fn soft(prompt_len: usize) -> impl Fn() -> testing::Script {
    move || {
        Box::new(move |ctx: &[u32]| {
            let mut row = vec![-30.0f32; V];
            let prev = ctx[ctx.len() - 1];
            let g = (ctx.len() - prompt_len) as f32;
            // Mostly repeats the pattern the drafter will propose, with real alternatives.
            for (i, id) in [600u32, 601, 602, 603].iter().enumerate() {
                let bonus = if *id == prev + 1 || (prev == 603 && *id == 600) {
                    2.0
                } else {
                    0.0
                };
                row[*id as usize] = bonus + 0.3 * i as f32 - 0.1 * g;
            }
            row[1] = -2.0; // EOS, rarely
            row
        })
    }
}

fn sampling_prompt() -> Vec<u32> {
    vec![2, 600, 601, 602, 603, 600, 601, 602, 603, 600]
}

#[test]
fn sampled_speculation_emits_plain_sampling_tokens_for_every_seed() {
    let prompt = sampling_prompt();
    let (g, b) = generator(ScriptedBackend::new(
        testing::toy_config(V),
        soft(prompt.len()),
    ));
    let params = [
        SamplingParams::default().temperature(1.0),
        SamplingParams::default()
            .temperature(0.8)
            .top_k(3)
            .repetition_penalty(1.3),
        SamplingParams::default()
            .temperature(1.2)
            .top_p(0.9)
            .min_p(0.05),
    ];
    let mut accepted = 0;
    for p in params {
        for seed in 0..60 {
            let opts = GenerateOptions::new()
                .max_new_tokens(12)
                .sampling(p.clone().seed(seed));
            let mut s1 = b.scripted_session(64);
            let plain = run(&g, &mut s1, &prompt, opts.clone());
            let mut s2 = b.scripted_session(64);
            let spec = run(
                &g,
                &mut s2,
                &prompt,
                opts.speculate(Speculation::default().ngram(1, 2)),
            );
            assert_eq!(spec.tokens, plain.tokens, "{p:?} seed {seed}");
            let mut held = prompt.clone();
            held.extend(&spec.tokens[..spec.tokens.len() - 1]);
            assert_eq!(s2.tokens(), held.as_slice());
            accepted += spec.stats.speculation.unwrap().accepted;
        }
    }
    assert!(
        accepted > 100,
        "the drafts must be tested: {accepted} accepted"
    );
}

/// Exact probability of each 3-token continuation under plain sampling with `params`.
fn exact_joint(prompt: &[u32], params: &SamplingParams) -> Vec<(Vec<u32>, f64)> {
    let script = soft(prompt.len());
    let mut out = vec![(Vec::new(), 1.0)];
    for _ in 0..3 {
        let mut next = Vec::new();
        for (seq, p) in out {
            let ctx: Vec<u32> = prompt.iter().chain(&seq).copied().collect();
            let mut row = (script())(&ctx);
            let mut seen = TokenSet::new();
            seen.extend(ctx.iter().copied());
            lockstep_generate::apply_repetition_penalty(&mut row, &seen, params.repetition_penalty);
            let sampler = Sampler::new(params.clone()).unwrap();
            for c in sampler.candidates(&row).unwrap() {
                let mut s = seq.clone();
                s.push(c.id);
                next.push((s, p * c.prob));
            }
        }
        out = next;
    }
    out
}

/// Pearson's chi-square statistic of `counts` against `expected` probabilities, cells
/// with an expected count under 5 pooled into one; returns (statistic, degrees of freedom).
fn chi_square(
    counts: &[(Vec<u32>, usize)],
    expected: &[(Vec<u32>, f64)],
    n: usize,
) -> (f64, usize) {
    let count = |s: &Vec<u32>| counts.iter().find(|(c, _)| c == s).map_or(0, |c| c.1);
    let (mut stat, mut cells) = (0.0, 0);
    let (mut pooled_o, mut pooled_e) = (0.0, 0.0);
    for (seq, p) in expected {
        let e = p * n as f64;
        let o = count(seq) as f64;
        if e < 5.0 {
            pooled_o += o;
            pooled_e += e;
        } else {
            stat += (o - e).powi(2) / e;
            cells += 1;
        }
    }
    if pooled_e > 0.0 {
        stat += (pooled_o - pooled_e).powi(2) / pooled_e;
        cells += 1;
    }
    // Every observed sequence must have a nonzero probability.
    for (c, _) in counts {
        assert!(expected.iter().any(|(e, _)| e == c), "impossible {c:?}");
    }
    (stat, cells - 1)
}

/// Chi-square critical values at p = 0.001 for 1..=40 degrees of freedom.
fn critical_0001(df: usize) -> f64 {
    const T: [f64; 40] = [
        10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26, 32.91, 34.53,
        36.12, 37.70, 39.25, 40.79, 42.31, 43.82, 45.31, 46.80, 48.27, 49.73, 51.18, 52.62, 54.05,
        55.48, 56.89, 58.30, 59.70, 61.10, 62.49, 63.87, 65.25, 66.62, 67.99, 69.35, 70.70, 72.06,
        73.40,
    ];
    T[df - 1]
}

fn tally(samples: impl Iterator<Item = Vec<u32>>) -> Vec<(Vec<u32>, usize)> {
    let mut counts: Vec<(Vec<u32>, usize)> = Vec::new();
    for s in samples {
        match counts.iter_mut().find(|(c, _)| *c == s) {
            Some(c) => c.1 += 1,
            None => counts.push((s, 1)),
        }
    }
    counts
}

/// One 3-token continuation drawn with a verification rule that accepts the draft token
/// `x` with probability p(x) but resamples from p itself (x not removed) on a rejection:
/// the classic mistake, which over-weights drafted tokens.
fn biased_sample(prompt: &[u32], params: &SamplingParams, seed: u64) -> Vec<u32> {
    let script = soft(prompt.len());
    let mut s = ScriptedSession::new(V, 64, script());
    let mut sampler = Sampler::new(params.clone().seed(seed)).unwrap();
    let mut seen = TokenSet::new();
    seen.extend(prompt.iter().copied());
    let mut row = block_on(s.forward(prompt, Want::Last)).unwrap().into_vec();
    let first = sampler.sample(&mut row, &seen).unwrap();
    seen.insert(first);
    let mut out = vec![first];
    let draft = [600 + (first - 600 + 1) % 4, 600 + (first - 600 + 2) % 4];
    let mut spec = Speculator::new(&Speculation::default()).unwrap();
    let picks = block_on(spec.verify(&mut s, first, &draft, |row| {
        let i = out.len() - 1;
        lockstep_generate::apply_repetition_penalty(row, &seen, params.repetition_penalty);
        let cands = sampler.candidates(row)?;
        let u = sampler.next_uniform();
        let p_x = cands
            .iter()
            .find(|c| Some(&c.id) == draft.get(i))
            .map_or(0.0, |c| c.prob);
        let id = if u < p_x {
            draft[i]
        } else {
            let v = sampler.next_uniform();
            let mut acc = 0.0;
            cands
                .iter()
                .find(|c| {
                    acc += c.prob;
                    v < acc
                })
                .map_or(cands[cands.len() - 1].id, |c| c.id)
        };
        seen.insert(id);
        out.push(id);
        Ok(id)
    }))
    .unwrap();
    let mut seq = vec![first];
    seq.extend(picks);
    if seq.len() < 3 {
        // The draft's first token was rejected: one plain step for the third token.
        let mut row = block_on(s.forward(&seq[1..], Want::Last))
            .unwrap()
            .into_vec();
        seq.push(sampler.sample(&mut row, &seen).unwrap());
    }
    seq.truncate(3);
    seq
}

#[test]
fn sampled_speculation_keeps_the_target_distribution_chi_square() {
    let prompt = sampling_prompt();
    let (g, b) = generator(ScriptedBackend::new(
        testing::toy_config(V),
        soft(prompt.len()),
    ));
    let params = SamplingParams::default()
        .temperature(1.0)
        .top_k(3)
        .repetition_penalty(1.1);
    let expected = exact_joint(&prompt, &params);
    let n = 3000;
    let spec_counts = tally((0..n as u64).map(|seed| {
        let mut s = b.scripted_session(64);
        let out = run(
            &g,
            &mut s,
            &prompt,
            GenerateOptions::new()
                .max_new_tokens(3)
                .sampling(params.clone().seed(seed))
                .speculate(
                    Speculation::default()
                        .ngram(1, 2)
                        .adaptive(false)
                        .max_draft(2),
                ),
        );
        assert_eq!(out.stats.speculation.unwrap().draft_steps, 1);
        out.tokens
    }));
    let (stat, df) = chi_square(&spec_counts, &expected, n);
    assert!(
        stat < critical_0001(df),
        "speculative sampling departs from the target distribution: chi-square {stat:.1} with {df} degrees of freedom"
    );

    // The same test rejects a biased rule: it has the power to catch that mistake.
    let biased = tally((0..n as u64).map(|seed| biased_sample(&prompt, &params, seed)));
    let (bstat, bdf) = chi_square(&biased, &expected, n);
    println!("chi-square: speculative {stat:.1} ({df} df), biased rule {bstat:.1} ({bdf} df), critical {:.1} / {:.1}", critical_0001(df), critical_0001(bdf));
    assert!(
        bstat > critical_0001(bdf),
        "the chi-square test did not catch a biased rule: {bstat:.1} with {bdf} degrees of freedom"
    );
}
