//! Chat rendering on hostile input: arbitrary messages (roles, contents with special-token
//! text, control characters, invalid UTF-8 made lossy) through the Gemma template, then
//! the tokenizer; and arbitrary `tokenizer_config.json` text through `Tokenizer::from_parts`.
#![no_main]

#[path = "gemma.rs"]
mod gemma;

use libfuzzer_sys::fuzz_target;
use lockstep_generate::{Message, Role, Tokenizer};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    if flags & 0x80 != 0 {
        // The tokenizer config: any JSON (or not) must give Ok or a clear error.
        let text = String::from_utf8_lossy(rest);
        if let Ok(config) = serde_json::from_str::<serde_json::Value>(&text) {
            let inner = lockstep_generate::testing::toy_tokenizer(1024)
                .inner()
                .clone();
            if let Ok(t) = Tokenizer::from_parts(inner, Some(&config)) {
                let _ = t.apply_chat_template(&[Message::user("hi")], true);
            }
        }
        return;
    }
    let tok = gemma::tokenizer();
    // Messages separated by 0xff; each starts with a role byte.
    let messages: Vec<Message> = rest
        .split(|&b| b == 0xff)
        .filter_map(|m| {
            let (&r, content) = m.split_first()?;
            let role = match r % 3 {
                0 => Role::System,
                1 => Role::User,
                _ => Role::Assistant,
            };
            Some(Message {
                role,
                content: String::from_utf8_lossy(content).into_owned(),
            })
        })
        .collect();
    let add_prompt = flags & 1 != 0;
    let Ok(text) = tok.apply_chat_template(&messages, add_prompt) else {
        return;
    };
    assert!(text.starts_with("<bos>"));
    if add_prompt {
        assert!(text.ends_with("<start_of_turn>model\n"));
    }
    let ids = tok.encode(&text).expect("rendered chat text must tokenize");
    assert_eq!(ids[0], tok.bos_id());
    // The rendered text starts with the literal <bos>: exactly one BOS id in front.
    assert_ne!(ids.get(1), Some(&tok.bos_id()), "BOS doubled");
    let vocab = gemma::vocab_size();
    assert!(ids.iter().all(|&i| i < vocab));
});
