//! Loads Gemma 3's real tokenizer once per process, from the cache `lockstep fetch` fills.

use std::path::PathBuf;
use std::sync::OnceLock;

use lockstep_generate::Tokenizer;

pub fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let home = match std::env::var_os("LOCKSTEP_HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h),
            _ => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/lockstep"),
        };
        let dir = home.join("sources/gemma3-270m");
        Tokenizer::from_dir(&dir).unwrap_or_else(|e| {
            panic!("the fuzz targets need the real tokenizer (run `lockstep fetch`): {e}")
        })
    })
}

/// `Tokenizer::vocab_size` rebuilds the 262,144-entry vocabulary map on every call
/// (tens of milliseconds), so it is taken once.
pub fn vocab_size() -> u32 {
    static N: OnceLock<u32> = OnceLock::new();
    *N.get_or_init(|| tokenizer().vocab_size() as u32)
}
