//! The tokenizer on hostile input: arbitrary text to encode, arbitrary ids to decode, and
//! the streaming detokenizer, whose deltas must add up to the whole-text decode.
#![no_main]

#[path = "gemma.rs"]
mod gemma;

use libfuzzer_sys::fuzz_target;
use lockstep_generate::Detokenizer;

fuzz_target!(|data: &[u8]| {
    let tok = gemma::tokenizer();
    let vocab = gemma::vocab_size();
    if data.first().is_some_and(|b| b & 1 == 0) {
        // Text: encode with and without BOS.
        let text = String::from_utf8_lossy(&data[1..]);
        if let Ok(ids) = tok.encode(&text) {
            assert_eq!(ids.first(), Some(&tok.bos_id()));
            assert!(
                ids.iter().all(|&i| i < vocab),
                "encode gave an id past the vocabulary"
            );
            let raw = tok
                .encode_raw(&text)
                .expect("encode worked, so encode_raw must");
            assert!(ids.len() <= raw.len() + 1);
            let _ = tok.decode(&ids);
        }
        return;
    }
    // Ids: 3 bytes each, so that most land inside the vocabulary and some past it.
    let ids: Vec<u32> = data
        .get(1..)
        .unwrap_or_default()
        .chunks_exact(3)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2] & 0x07, 0]))
        .collect();
    let whole = tok.decode(&ids);
    let in_vocab = ids.iter().all(|&i| i < vocab);
    if !in_vocab {
        return;
    }
    let whole = whole.expect("ids inside the vocabulary decode");
    // Known bug, kept out of the fuzzer so that it can look for others: byte tokens
    // (<0x00>..<0xFF>, ids 238..=493) that fuse into invalid UTF-8 with a later byte token
    // make the detokenizer drop all later text (see
    // lockstep-generate/tests/reliability_input.rs `streamed_text_survives_invalid_byte_sequences`).
    // LOCKSTEP_FUZZ_ALL=1 checks them too.
    if std::env::var_os("LOCKSTEP_FUZZ_ALL").is_none()
        && ids.iter().any(|i| (238..=493).contains(i))
    {
        return;
    }
    let mut detok = Detokenizer::new();
    let mut streamed = String::new();
    for &id in &ids {
        streamed += &detok
            .push(tok, id)
            .expect("push of an id inside the vocabulary");
    }
    streamed += &detok.finish(tok).expect("finish");
    assert_eq!(
        streamed, whole,
        "streamed text differs from the whole-text decode of {ids:?}"
    );
});
