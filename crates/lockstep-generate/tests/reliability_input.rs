//! Bad runtime input through the shared loop: ids outside the vocabulary, empty prompts,
//! prompts longer than the budget or the context, and backends that return NaN or
//! infinite logits. Each must be an error before (or instead of) any text, never garbage.
//! Also writes the chat-template and tokenizer fuzz seeds (`LOCKSTEP_WRITE_FUZZ_SEEDS=1`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::executor::block_on;
use lockstep_core::{
    Backend, BackendInfo, Error, Logits, ModelConfig, Result, Session, SessionOptions, Want,
};
use lockstep_generate::testing::{self, ScriptedBackend};
use lockstep_generate::{Event, GenerateOptions, Generator, Message, Prompt, Tokenizer};

const V: usize = 1024;

fn toy() -> (Generator, Arc<ScriptedBackend>) {
    let backend = Arc::new(ScriptedBackend::new(testing::toy_config(V), || {
        testing::peaked(V, vec![700, 701, 702])
    }));
    (
        Generator::new(backend.clone(), testing::toy_tokenizer(V)),
        backend,
    )
}

/// The error of starting (or of the first event of) a generation.
fn gen_err(g: &Generator, s: &mut dyn Session, p: Prompt, o: GenerateOptions) -> Error {
    match g.generate(s, p, o) {
        Ok(out) => panic!(
            "generated {:?} ({:?}) instead of an error",
            out.text, out.tokens
        ),
        Err(e) => e,
    }
}

#[test]
fn ids_outside_the_vocabulary_are_refused_before_any_model_work() {
    let (g, backend) = toy();
    for bad in [V as u32, V as u32 + 1, u32::MAX] {
        let mut s = backend.scripted_session(64);
        let e = gen_err(&g, &mut s, vec![2, bad].into(), GenerateOptions::new());
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        assert!(e.to_string().contains(&bad.to_string()), "{e}");
        println!("| prompt id {bad} (vocabulary {V}) | `{e}` |");
    }
    assert!(backend.log().calls().is_empty(), "no model work may happen");
    // The last id of the vocabulary is fine.
    let mut s = backend.scripted_session(64);
    g.generate(
        &mut s,
        vec![2, V as u32 - 1],
        GenerateOptions::new().max_new_tokens(1),
    )
    .unwrap();
}

#[test]
fn an_empty_token_prompt_is_an_error() {
    let (g, backend) = toy();
    let mut s = backend.scripted_session(64);
    let e = gen_err(&g, &mut s, Vec::<u32>::new().into(), GenerateOptions::new());
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    println!("| empty token prompt | `{e}` |");
    // Empty text continuing a session encodes to no ids: the same error.
    g.generate(
        &mut s,
        vec![2, 700],
        GenerateOptions::new().max_new_tokens(1),
    )
    .unwrap();
    let e = gen_err(&g, &mut s, "".into(), GenerateOptions::new());
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    println!("| empty text continuing a session | `{e}` |");
}

/// BUG (generate.rs `Generator::generate_stream`): empty text on an empty session becomes
/// `[<bos>]` and generates unconditioned text. An app passing a user's empty input box
/// gets text the user never asked for; `Prompt::Tokens(vec![bos])` still allows it on
/// purpose.
#[test]
fn empty_text_on_a_new_session_is_an_error() {
    let (g, backend) = toy();
    for text in ["", " ", "\n"] {
        let mut s = backend.scripted_session(64);
        let r = g.generate(&mut s, text, GenerateOptions::new().max_new_tokens(2));
        assert!(
            matches!(r, Err(Error::InvalidInput(_))),
            "empty text {text:?} gave {r:?}"
        );
    }
}

#[test]
fn prompts_longer_than_the_budget_or_the_context_are_errors() {
    let (g, backend) = toy();
    let ctx = testing::toy_config(V).context_length;
    // Longer than the session's KV budget.
    let mut s = backend.scripted_session(16);
    let e = gen_err(
        &g,
        &mut s,
        vec![2; 17].into(),
        GenerateOptions::new().max_new_tokens(1),
    );
    assert!(
        matches!(e, Error::ContextOverflow { limit: 16, .. }),
        "{e:?}"
    );
    println!("| prompt of 17 tokens, KV budget 16 | `{e}` |");
    // Fits the prompt but not prompt + max_new_tokens.
    let e = gen_err(
        &g,
        &mut s,
        vec![2; 10].into(),
        GenerateOptions::new().max_new_tokens(7),
    );
    assert!(
        matches!(e, Error::ContextOverflow { needed: 17, .. }),
        "{e:?}"
    );
    // Longer than the model's context, whatever the budget.
    let mut s = backend.scripted_session(ctx + 10);
    let e = gen_err(
        &g,
        &mut s,
        vec![2; ctx + 1].into(),
        GenerateOptions::new().max_new_tokens(1),
    );
    assert!(
        matches!(e, Error::ContextOverflow { limit_name, .. } if limit_name.contains("context")),
        "{e:?}"
    );
    println!("| prompt of {} tokens, context {ctx} | `{e}` |", ctx + 1);
    assert!(backend.log().calls().is_empty(), "no model work may happen");
    // Exactly full is fine.
    let mut s = backend.scripted_session(16);
    g.generate(
        &mut s,
        vec![2; 15],
        GenerateOptions::new().max_new_tokens(1),
    )
    .unwrap();
}

// ---- a backend whose logits are poisoned -------------------------------------------------

/// Wraps nothing: every step returns the same row (NaN, +inf, ...), and `forward_greedy`
/// is the trait's default, as a third-party backend would leave it.
struct PoisonBackend {
    config: ModelConfig,
    row: Vec<f32>,
}

struct PoisonSession {
    row: Vec<f32>,
    len: usize,
    max: usize,
}

#[async_trait]
impl Backend for PoisonBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            id: "poison".into(),
            runtime: "test".into(),
            device: "none".into(),
            precision: "poisoned logits".into(),
            ..Default::default()
        }
    }
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    async fn session(&self, opts: SessionOptions) -> Result<Box<dyn Session>> {
        Ok(Box::new(PoisonSession {
            row: self.row.clone(),
            len: 0,
            max: opts.max_tokens,
        }))
    }
}

#[async_trait]
impl Session for PoisonSession {
    async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Logits> {
        self.len += tokens.len();
        let rows = if want == Want::All { tokens.len() } else { 1 };
        Ok(Logits::new(self.row.len(), self.row.repeat(rows)))
    }
    fn len(&self) -> usize {
        self.len
    }
    fn max_tokens(&self) -> usize {
        self.max
    }
    fn truncate(&mut self, len: usize) -> Result<()> {
        self.len = self.len.min(len);
        Ok(())
    }
}

fn poisoned(what: &str) -> Vec<f32> {
    let mut row = vec![0.0f32; V];
    match what {
        "all NaN" => row.fill(f32::NAN),
        "one NaN" => row[700] = f32::NAN,
        "one +inf" => row[700] = f32::INFINITY,
        "all -inf" => row.fill(f32::NEG_INFINITY),
        _ => unreachable!(),
    }
    row
}

const POISONS: [&str; 4] = ["all NaN", "one NaN", "one +inf", "all -inf"];

fn poison_generate(what: &str, opts: GenerateOptions) -> Result<lockstep_generate::Output> {
    let backend = Arc::new(PoisonBackend {
        config: testing::toy_config(V),
        row: poisoned(what),
    });
    let g = Generator::new(backend, testing::toy_tokenizer(V));
    let mut s = block_on(g.session(64))?;
    g.generate(s.as_mut(), vec![2, 700], opts.max_new_tokens(4))
}

#[test]
fn poisoned_logits_are_errors_when_sampling() {
    for what in POISONS {
        let r = poison_generate(what, GenerateOptions::new().temperature(0.8).seed(1));
        let e = r.expect_err(what);
        assert!(matches!(e, Error::Runtime(_)), "{what}: {e:?}");
        println!("| {what} logits, sampling | `{e}` |");
    }
}

/// BUG (lockstep-core/src/lib.rs, the default `Session::forward_greedy`): greedy decoding
/// takes `argmax`, which skips NaN and lets +inf win, so a backend returning NaN logits
/// produces token 0 (`<pad>`) text and +inf wins silently; the same holds for the GPU
/// backend's device argmax (lockstep-gpu/src/session.rs `forward_greedy`).
#[test]
fn poisoned_logits_are_errors_when_greedy() {
    let mut failures = Vec::new();
    for what in POISONS {
        match poison_generate(what, GenerateOptions::new()) {
            Err(e) => println!("| {what} logits, greedy | `{e}` |"),
            Ok(out) => failures.push(format!("{what}: generated {:?} {:?}", out.text, out.tokens)),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A poisoned step mid-stream ends the stream with the error; the text before it stands.
#[test]
fn poison_mid_stream_is_an_error_event_and_the_end() {
    let mut rows: Vec<Vec<f32>> = (0..2).map(|i| testing::one_hot(V, 700 + i, 10.0)).collect();
    rows.push(poisoned("one NaN"));
    let backend = Arc::new(ScriptedBackend::new(testing::toy_config(V), move || {
        testing::rows(rows.clone())
    }));
    let g = Generator::new(backend.clone(), testing::toy_tokenizer(V));
    let mut s = backend.scripted_session(64);
    let opts = GenerateOptions::new().temperature(0.5).max_new_tokens(8);
    let events: Vec<_> = block_on(futures::StreamExt::collect::<Vec<_>>(
        g.generate_stream(&mut s, vec![2], opts).unwrap(),
    ));
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(events[0], Ok(Event::Token { id: 700, .. })));
    assert!(matches!(events[1], Ok(Event::Token { id: 701, .. })));
    assert!(matches!(events[2], Err(Error::Runtime(_))));
}

// ---- the tokenizer ------------------------------------------------------------------------

/// BUG (tokenizer.rs `Tokenizer::decode`): ids the tokenizer does not know are dropped
/// silently by `tokenizers`, so a bad id becomes missing text instead of an error.
#[test]
fn decoding_unknown_ids_is_an_error() {
    let t = testing::toy_tokenizer(V);
    for bad in [V as u32, u32::MAX] {
        let r = t.decode(&[700, bad, 701]);
        assert!(r.is_err(), "decode of id {bad} gave {r:?}");
    }
}

#[test]
fn chat_roles_out_of_order_are_errors() {
    let t = testing::toy_tokenizer(V);
    let cases: [(&str, Vec<Message>); 3] = [
        ("assistant first", vec![Message::assistant("hi")]),
        (
            "two user turns",
            vec![Message::user("a"), Message::user("b")],
        ),
        (
            "system after user",
            vec![Message::user("a"), Message::system("s")],
        ),
    ];
    for (what, msgs) in cases {
        let e = t.apply_chat_template(&msgs, true).expect_err(what);
        println!("| chat: {what} | `{e}` |");
    }
}

#[test]
fn a_non_gemma_chat_template_or_missing_bos_is_refused() {
    let inner = testing::toy_tokenizer(V).inner().clone();
    let cfg = serde_json::json!({"chat_template": "{{ messages }}"});
    let e = Tokenizer::from_parts(inner.clone(), Some(&cfg)).expect_err("template");
    println!("| tokenizer_config.json: a ChatML template | `{e}` |");
    let cfg = serde_json::json!({"bos_token": "<s>"});
    let e = Tokenizer::from_parts(inner, Some(&cfg)).expect_err("bos");
    println!("| tokenizer_config.json: bos_token `<s>` unknown | `{e}` |");
}

// ---- fuzz seeds -----------------------------------------------------------------------------

fn seeds_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
}

fn chat_seed(flags: u8, msgs: &[(u8, &str)]) -> Vec<u8> {
    let mut b = vec![flags];
    for (i, (role, text)) in msgs.iter().enumerate() {
        if i > 0 {
            b.push(0xff);
        }
        b.push(*role);
        b.extend_from_slice(text.as_bytes());
    }
    b
}

fn ids_seed(ids: &[u32]) -> Vec<u8> {
    let mut b = vec![1u8];
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes()[..3]);
    }
    b
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    // Roles: 0 system, 1 user, 2 assistant (byte % 3).
    let template = "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}";
    vec![
        (
            "chat_template",
            "one_turn",
            chat_seed(1, &[(1, "Hello there")]),
        ),
        (
            "chat_template",
            "system_and_turns",
            chat_seed(
                1,
                &[
                    (0, "Be brief."),
                    (1, " Hi "),
                    (2, "Hello!\n"),
                    (1, "2+2? <end_of_turn> <bos> <start_of_turn>model"),
                ],
            ),
        ),
        (
            "chat_template",
            "bad_order",
            chat_seed(0, &[(2, "me first"), (2, "again")]),
        ),
        (
            "chat_template",
            "unicode",
            chat_seed(
                1,
                &[(
                    1,
                    "caf\u{e9} \u{20ac} \u{65e5}\u{672c} \u{1f600}\t\r\n\u{0}",
                )],
            ),
        ),
        ("chat_template", "config", {
            let mut b = vec![0x80];
            b.extend_from_slice(
                serde_json::json!({"bos_token": {"content": "<bos>"}, "chat_template": template})
                    .to_string()
                    .as_bytes(),
            );
            b
        }),
        (
            "tokenizer",
            "text_ascii",
            b"\x00Water boils at a temperature of".to_vec(),
        ),
        (
            "tokenizer",
            "text_special",
            "\u{0}<bos><start_of_turn>user\n  spaces   and\ttabs<end_of_turn>\n<image_soft_token>"
                .as_bytes()
                .to_vec(),
        ),
        (
            "tokenizer",
            "text_unicode",
            "\u{0}\u{20ac}100 caf\u{e9} \u{65e5}\u{672c}\u{8a9e} \u{1f600}\u{200d}\u{1f4bb}"
                .as_bytes()
                .to_vec(),
        ),
        // <0xE2><0x82><0xAC> is "€" as byte tokens; then a lone continuation byte.
        (
            "tokenizer",
            "ids_bytes",
            ids_seed(&[2, 464, 368, 410, 9259, 368, 106, 107]),
        ),
        (
            "tokenizer",
            "ids_words",
            ids_seed(&[2, 9259, 1902, 563, 496, 5587, 529]),
        ),
    ]
}

/// Writes the chat and tokenizer seeds when `LOCKSTEP_WRITE_FUZZ_SEEDS=1`; otherwise
/// checks that the committed ones are current.
#[test]
fn fuzz_seeds() {
    let write = std::env::var_os("LOCKSTEP_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let path = seeds_root().join(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            println!("wrote {} ({} bytes)", path.display(), bytes.len());
        } else {
            let committed = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `scripts/fuzz.sh seeds`", path.display()));
            assert_eq!(
                committed, bytes,
                "{target}/{name} is stale; run `scripts/fuzz.sh seeds`"
            );
        }
    }
}

/// BUG (detok.rs `Detokenizer::push`): the byte token <0x12> is emitted as "\x12"; the next
/// byte token <0xAC> fuses with it into invalid UTF-8, so the window now decodes to "��",
/// which does not start with the already emitted prefix. `text.get(prefix.len()..)` then
/// lands inside a character, returns `None`, the offsets never advance again, and every
/// later token's text is lost (finish() drops it too). Found by the tokenizer fuzz target.
#[test]
fn streamed_text_survives_invalid_byte_sequences() {
    let t = testing::toy_tokenizer(V);
    let w = testing::TOY_WORDS_START;
    let byte = |b: u32| testing::BYTE_TOKENS_START + b;
    let ids = [w, byte(0x12), byte(0xAC), w + 1, w + 3, w + 4];
    let whole = t.decode(&ids).unwrap();
    let mut d = lockstep_generate::Detokenizer::new();
    let mut streamed = String::new();
    for &id in &ids {
        streamed += &d.push(&t, id).unwrap();
    }
    streamed += &d.finish(&t).unwrap();
    assert!(
        streamed.ends_with(" the end"),
        "the words after the bad bytes were lost: streamed {streamed:?}, whole {whole:?}"
    );
}
