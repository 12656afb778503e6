//! Reads a BPE `tokenizer.json` with a small peak of memory.
//!
//! `tokenizers::Tokenizer::from_bytes` reads the model through an untagged enum and a
//! `serde_json::Value`, so Gemma's 262,144-entry vocabulary and 514,906 merges exist three
//! times over while it loads: measured 365 MB peak and 285 MB resident afterwards (most of
//! it freed but still held by the allocator) for a tokenizer that needs about 100 MB. Here
//! the vocabulary and the merges stream straight into the vectors `BpeBuilder` takes, the
//! small parts (normalizer, pre-tokenizer, post-processor, decoder) go through
//! `tokenizers`' own types, and the added tokens are added the way `tokenizers` adds them,
//! so the result is the same tokenizer (a test compares both serialized).
//! Files whose model is not BPE take `tokenizers`' generic path.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PaddingParams,
    PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder, TruncationParams,
};

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    truncation: Option<TruncationParams>,
    #[serde(default)]
    padding: Option<PaddingParams>,
    #[serde(default)]
    added_tokens: Vec<AddedEntry>,
    #[serde(default)]
    normalizer: Option<NormalizerWrapper>,
    #[serde(default)]
    pre_tokenizer: Option<PreTokenizerWrapper>,
    #[serde(default)]
    post_processor: Option<PostProcessorWrapper>,
    #[serde(default)]
    decoder: Option<DecoderWrapper>,
    model: BpeModel,
}

#[derive(Deserialize)]
struct AddedEntry {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    normalized: bool,
    #[serde(default)]
    special: bool,
}

#[derive(Deserialize)]
struct BpeModel {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    dropout: Option<f32>,
    #[serde(default)]
    unk_token: Option<String>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
    #[serde(default)]
    fuse_unk: bool,
    #[serde(default)]
    byte_fallback: bool,
    #[serde(default)]
    ignore_merges: bool,
    #[serde(deserialize_with = "vocab")]
    vocab: Vocab,
    #[serde(deserialize_with = "merges")]
    merges: Merges,
}

/// Only the model type, to choose a path before parsing the whole file.
#[derive(Deserialize)]
struct Probe {
    model: ProbeModel,
}
#[derive(Deserialize)]
struct ProbeModel {
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn vocab<'de, D: Deserializer<'de>>(d: D) -> Result<Vocab, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vocab;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of token to id")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vocab, A::Error> {
            let mut vocab = Vocab::default();
            vocab.reserve(map.size_hint().unwrap_or(0));
            while let Some((token, id)) = map.next_entry::<String, u32>()? {
                vocab.insert(token, id);
            }
            Ok(vocab)
        }
    }
    d.deserialize_map(V)
}

/// Merges as `["a", "b"]` pairs (current files) or `"a b"` strings (older ones).
fn merges<'de, D: Deserializer<'de>>(d: D) -> Result<Merges, D::Error> {
    struct Pair((String, String));
    impl<'de> Deserialize<'de> for Pair {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct P;
            impl<'de> Visitor<'de> for P {
                type Value = Pair;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a merge: [\"a\", \"b\"] or \"a b\"")
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Pair, E> {
                    let (a, b) = s
                        .split_once(' ')
                        .ok_or_else(|| E::custom(format!("merge {s:?} is not two tokens")))?;
                    Ok(Pair((a.to_string(), b.to_string())))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pair, A::Error> {
                    let a = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                    let b = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                    if seq.next_element::<de::IgnoredAny>()?.is_some() {
                        return Err(de::Error::invalid_length(3, &self));
                    }
                    Ok(Pair((a, b)))
                }
            }
            d.deserialize_any(P)
        }
    }
    struct S;
    impl<'de> Visitor<'de> for S {
        type Value = Merges;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of merges")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merges, A::Error> {
            let mut merges = Merges::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(Pair(m)) = seq.next_element()? {
                merges.push(m);
            }
            Ok(merges)
        }
    }
    d.deserialize_seq(S)
}

/// Parses `bytes` (a `tokenizer.json`). `Ok(Err(bytes))`: the model is not BPE, use
/// `tokenizers::Tokenizer::from_bytes` on the bytes given back.
/// The file's bytes are dropped before the model is built, which holds the peak down.
pub(crate) fn parse_bpe(bytes: Vec<u8>) -> Result<Result<tokenizers::Tokenizer, Vec<u8>>, String> {
    let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if probe.model.kind.as_deref() != Some("BPE") {
        return Ok(Err(bytes));
    }
    let file: File = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    drop(bytes);
    let m = file.model;
    debug_assert_eq!(m.kind, "BPE");
    let mut bpe = BPE::builder()
        .vocab_and_merges(m.vocab, m.merges)
        .fuse_unk(m.fuse_unk)
        .byte_fallback(m.byte_fallback)
        .ignore_merges(m.ignore_merges);
    if let Some(p) = m.dropout {
        bpe = bpe.dropout(p);
    }
    if let Some(t) = m.unk_token {
        bpe = bpe.unk_token(t);
    }
    if let Some(p) = m.continuing_subword_prefix {
        bpe = bpe.continuing_subword_prefix(p);
    }
    if let Some(s) = m.end_of_word_suffix {
        bpe = bpe.end_of_word_suffix(s);
    }
    let bpe = bpe.build().map_err(|e| e.to_string())?;
    let inner = TokenizerBuilder::<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(ModelWrapper::BPE(bpe))
    .with_normalizer(file.normalizer)
    .with_pre_tokenizer(file.pre_tokenizer)
    .with_post_processor(file.post_processor)
    .with_decoder(file.decoder)
    .with_truncation(file.truncation)
    .with_padding(file.padding)
    .build()
    .map_err(|e| e.to_string())?;
    let mut tokenizer = tokenizers::Tokenizer::from(inner);
    // As `tokenizers` does: all at once, in file order, after the model.
    let added: Vec<AddedToken> = file
        .added_tokens
        .iter()
        .map(|t| {
            AddedToken::from(t.content.clone(), t.special)
                .single_word(t.single_word)
                .lstrip(t.lstrip)
                .rstrip(t.rstrip)
                .normalized(t.normalized)
        })
        .collect();
    tokenizer.add_tokens(&added);
    if let Some(t) = file
        .added_tokens
        .iter()
        .find(|t| tokenizer.token_to_id(&t.content) != Some(t.id))
    {
        return Err(format!(
            "added token {:?} should have id {} but has {:?}",
            t.content,
            t.id,
            tokenizer.token_to_id(&t.content)
        ));
    }
    Ok(Ok(tokenizer))
}
