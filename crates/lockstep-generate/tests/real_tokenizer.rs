//! Tests against Gemma 3's real tokenizer files, as `lockstep fetch` stores them.
//! They fail (never skip) when the files are missing.

use std::path::PathBuf;

use lockstep_generate::{Detokenizer, Message, Tokenizer};

fn source_dir() -> PathBuf {
    let base = match std::env::var_os("LOCKSTEP_HOME") {
        Some(home) => PathBuf::from(home),
        None => dirs::cache_dir()
            .expect("no cache directory on this system")
            .join("lockstep"),
    };
    base.join("sources").join("gemma3-270m")
}

fn gemma() -> Tokenizer {
    let dir = source_dir();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        assert!(
            dir.join(f).is_file(),
            "{} is missing: run `lockstep fetch` first",
            dir.join(f).display()
        );
    }
    Tokenizer::from_dir(&dir).expect("the real tokenizer loads")
}

#[test]
fn bos_is_added_exactly_once() {
    let t = gemma();
    assert_eq!(t.bos_id(), 2);
    let ids = t.encode("Hello world").unwrap();
    assert_eq!(ids[0], 2);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
    assert_eq!(t.encode("<bos>Hello world").unwrap(), ids);
    assert_eq!(t.encode_raw("Hello world").unwrap(), ids[1..]);
    // Why we bypass the post-processor: it adds <bos> even when the text has one.
    let hf = t.inner().encode("<bos>Hello world", true).unwrap();
    assert_eq!(hf.get_ids()[..2], [2, 2]);
    // Special tokens in text become their ids; the image token is beyond the model's 262144.
    assert_eq!(
        t.encode_raw("<start_of_turn><end_of_turn>").unwrap(),
        [105, 106]
    );
    assert_eq!(t.token_to_id("<0xE2>"), Some(464));
}

#[test]
fn chat_template_matches_gemma() {
    let t = gemma();
    assert!(t.chat_template().unwrap().contains("first_user_prefix"));
    let msgs = [
        Message::system("Be brief."),
        Message::user(" Hi there "),
        Message::assistant("Hello!\n"),
        Message::user("Bye"),
    ];
    assert_eq!(
        t.apply_chat_template(&msgs, true).unwrap(),
        "<bos><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    );
    assert!(t
        .apply_chat_template(&[Message::assistant("x")], false)
        .is_err());
    assert!(t
        .apply_chat_template(&[Message::user("a"), Message::user("b")], false)
        .is_err());
}

#[test]
fn incremental_chat_tokens_equal_the_whole_rendered_conversation() {
    // What `Chat` feeds turn by turn, with the reply tokenized from its text, must be the
    // tokenization of the whole template: turn boundaries fall on special tokens.
    let t = gemma();
    let msgs = [
        Message::user("What is 2+2?"),
        Message::assistant("It is 4."),
        Message::user("And 3+3?"),
    ];
    let whole = t
        .encode(&t.apply_chat_template(&msgs, true).unwrap())
        .unwrap();
    let mut pieces = t
        .encode(&t.apply_chat_template(&msgs[..1], true).unwrap())
        .unwrap();
    pieces.extend(t.encode_raw("It is 4.").unwrap());
    pieces.extend(
        t.encode_raw(
            "<end_of_turn>\n<start_of_turn>user\nAnd 3+3?<end_of_turn>\n<start_of_turn>model\n",
        )
        .unwrap(),
    );
    assert_eq!(pieces, whole);
}

#[test]
fn detokenizing_one_id_at_a_time_equals_decoding_all() {
    let t = gemma();
    let text = "Hello, 世界! Price: €100 — café 🎉 𓀀𓁐 ok\n  indented";
    let ids = t.encode_raw(text).unwrap();
    assert!(
        ids.iter().any(|&i| (238..=493).contains(&i)),
        "the text must exercise byte-fallback tokens: {ids:?}"
    );
    let mut d = Detokenizer::new();
    let mut out = String::new();
    for &id in &ids {
        let delta = d.push(&t, id).unwrap();
        assert!(
            !delta.contains('\u{FFFD}'),
            "broken character emitted after id {id}"
        );
        out += &delta;
    }
    out += &d.finish(&t).unwrap();
    assert_eq!(out, t.decode(&ids).unwrap());
    assert_eq!(out, text);
}

/// The low-memory reader builds the very tokenizer `tokenizers` builds: same vocabulary,
/// merges and ranks, added tokens, normalizer, pre-tokenizer, post-processor and decoder
/// (their serializations are equal), and the same ids on text that exercises them.
#[test]
fn low_memory_reader_builds_the_same_tokenizer() {
    let ours = gemma();
    let bytes = std::fs::read(source_dir().join("tokenizer.json")).unwrap();
    let theirs = tokenizers::Tokenizer::from_bytes(&bytes).unwrap();
    assert_eq!(
        ours.inner().to_string(false).unwrap(),
        theirs.to_string(false).unwrap()
    );
    for text in [
        "Hello world",
        "  two  spaces, a\ttab and\nnewlines\n\n",
        "<start_of_turn>user\nHi<end_of_turn>\n<unused42>",
        "日本の首都は東京です。 emoji 🦀 and bytes \u{1F9E0}",
        "fn main() { println!(\"{}\", 1 + 2); }",
    ] {
        let a = ours.inner().encode_fast(text, false).unwrap();
        let b = theirs.encode_fast(text, false).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
    }
}
