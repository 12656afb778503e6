//! Multi-turn chat on a scripted session: each turn feeds only its new tokens; rewind
//! and regenerate edit the cache.

use std::sync::Arc;

use futures::executor::block_on;
use futures::StreamExt;
use lockstep_generate::testing::{self, CallLog, ScriptedBackend};
use lockstep_generate::{Chat, GenerateOptions, Generator, Message, StopReason, Tokenizer};

const V: usize = 1024;

/// A chat whose model answers `ids`, one per step, across turns.
fn chat(ids: Vec<u32>) -> (Chat, CallLog, Tokenizer) {
    let backend = Arc::new(ScriptedBackend::new(testing::toy_config(V), move || {
        testing::peaked(V, ids.clone())
    }));
    let log = backend.log();
    let g = Generator::new(backend.clone(), testing::toy_tokenizer(V));
    let chat = g.chat(Box::new(backend.scripted_session(4096))).unwrap();
    (chat, log, testing::toy_tokenizer(V))
}

fn turn(t: &Tokenizer, user: &str) -> Vec<u32> {
    t.encode_raw(&format!(
        "<end_of_turn>\n<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"
    ))
    .unwrap()
}

fn opts() -> GenerateOptions {
    GenerateOptions::new().max_new_tokens(16)
}

#[test]
fn second_turn_feeds_only_its_new_tokens() {
    let (a, b, c) = (700, 701, 702);
    let (chat, log, t) = chat(vec![a, b, 106, c, 106]);
    let mut chat = chat.with_system("Sys");
    let first = t
        .encode("<start_of_turn>user\nSys\n\nHi<end_of_turn>\n<start_of_turn>model\n")
        .unwrap();
    let out = chat.send("  Hi ", opts()).unwrap();
    assert_eq!(out.text, " w700 w701");
    assert_eq!(out.stats.stop, StopReason::Eos(106));
    let out = chat.send("Again", opts()).unwrap();
    assert_eq!(out.tokens, [c, 106]);

    let fed = log.fed();
    assert_eq!(fed[0], first);
    assert_eq!(fed[1..3], [vec![a], vec![b]]);
    // The unfed EOS is replaced by the template's own <end_of_turn>: nothing else.
    assert_eq!(fed[3], turn(&t, "Again"));
    assert_eq!(fed[4], [c]);
    assert_eq!(fed.len(), 5);
    assert_eq!(chat.session().len(), first.len() + 2 + fed[3].len() + 1);
    assert_eq!(
        chat.messages(),
        [
            Message::system("Sys"),
            Message::user("  Hi "),
            Message::assistant(" w700 w701"),
            Message::user("Again"),
            Message::assistant(" w702"),
        ]
    );
}

#[test]
fn a_reply_cut_by_max_tokens_feeds_its_last_token_next_turn() {
    let (mut chat, log, t) = chat(vec![700, 701, 702, 703]);
    let out = chat
        .send("Hi", GenerateOptions::new().max_new_tokens(2))
        .unwrap();
    assert_eq!(out.stats.stop, StopReason::MaxTokens);
    chat.send("More", GenerateOptions::new().max_new_tokens(1))
        .unwrap();
    let mut expected = vec![701];
    expected.extend(turn(&t, "More"));
    assert_eq!(log.fed()[2], expected);
}

#[test]
fn rewind_truncates_the_session_and_the_edit_feeds_only_new_tokens() {
    let (mut chat, log, t) = chat(vec![700, 106, 701, 106, 702, 106]);
    chat.send("Hi", opts()).unwrap();
    let after_first = chat.tokens().len() - 1; // the EOS is not fed
    chat.send("Wrong", opts()).unwrap();
    assert_eq!(chat.rewind().unwrap().as_deref(), Some("Wrong"));
    assert_eq!(chat.session().len(), after_first);
    assert_eq!(chat.tokens().len(), after_first);
    log.clear();
    let out = chat.send("Right", opts()).unwrap();
    assert_eq!(out.tokens, [702, 106]);
    assert_eq!(
        log.calls()[0],
        testing::Call::Greedy {
            tokens: turn(&t, "Right")
        }
    );
    assert_eq!(chat.messages()[2], Message::user("Right"));
    // Rewinding everything empties the session.
    chat.rewind().unwrap();
    chat.rewind().unwrap();
    assert_eq!(chat.session().len(), 0);
    assert_eq!(chat.rewind().unwrap(), None);
}

#[test]
fn regenerate_replays_only_the_last_prompt_token() {
    let (mut chat, log, t) = chat(vec![700, 701, 106, 710, 106]);
    chat.send("Hi", opts()).unwrap();
    let prompt_len = t
        .encode("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
        .unwrap()
        .len();
    log.clear();
    let out = chat.regenerate(opts()).unwrap();
    assert_eq!(out.tokens, [710, 106]);
    let calls = log.calls();
    assert_eq!(
        calls[0],
        testing::Call::Truncate {
            len: prompt_len - 1
        }
    );
    assert_eq!(log.fed()[0], [107]); // "\n" after "model"
    assert_eq!(chat.messages()[1], Message::assistant(" w710"));
    assert_eq!(chat.last_stop(), Some(&StopReason::Eos(106)));
}

#[test]
fn a_dropped_reply_stream_leaves_chat_and_session_consistent() {
    let (mut chat, log, t) = chat(vec![700, 701, 702, 703, 704]);
    {
        let stream = chat.send_stream("Hi", opts()).unwrap();
        let got: Vec<_> = block_on(stream.take(2).collect::<Vec<_>>());
        assert_eq!(got.len(), 2);
    }
    // 700 and 701 were streamed, only 700 was fed.
    assert_eq!(chat.messages()[1], Message::assistant(" w700 w701"));
    chat.send("Next", GenerateOptions::new().max_new_tokens(1))
        .unwrap();
    let mut expected = vec![701];
    expected.extend(turn(&t, "Next"));
    assert_eq!(log.fed()[2], expected);
}

#[test]
fn chat_turns_respect_the_budget() {
    let backend = Arc::new(ScriptedBackend::new(testing::toy_config(V), || {
        testing::peaked(V, vec![700])
    }));
    let g = Generator::new(backend.clone(), testing::toy_tokenizer(V));
    let mut chat = g.chat(Box::new(backend.scripted_session(40))).unwrap();
    assert!(matches!(
        chat.send("Hi", GenerateOptions::new().max_new_tokens(64)),
        Err(lockstep_core::Error::ContextOverflow { .. })
    ));
    assert!(
        chat.messages().is_empty(),
        "a rejected turn leaves no trace"
    );
    assert!(chat
        .send("Hi", GenerateOptions::new().max_new_tokens(4))
        .is_ok());
}
