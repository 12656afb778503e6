//! Incremental detokenization that never splits a character.

use lockstep_core::Result;

use crate::Tokenizer;

/// Turns a growing list of ids into text deltas.
///
/// Gemma spells characters it has no token for as byte tokens (`<0xE2><0x82><0xAC>` is
/// "€"), so one token's text can be an incomplete UTF-8 sequence. Like Hugging Face
/// text-generation-inference, we decode a short window twice — the ids already emitted
/// (`prefix_offset..read_offset`) and the same window with the new ids — and emit only
/// the difference, and only once it no longer ends in U+FFFD (a character still missing
/// bytes). Decoding a window rather than each id alone also keeps the decoder's
/// cross-token rules (byte fusion, spaces) exactly as a whole-text decode would apply them.
#[derive(Debug, Clone, Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl Detokenizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every id pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Adds one id; returns the newly completed text (often empty while a character is
    /// still missing bytes).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let text = tok.decode(&self.ids[self.prefix_offset..])?;
        if text.ends_with('\u{FFFD}') {
            // A character still missing bytes: wait for them (finish() shows what never
            // completed).
            return Ok(String::new());
        }
        match text.strip_prefix(prefix.as_str()) {
            Some("") => Ok(String::new()),
            Some(delta) => {
                let delta = delta.to_string();
                self.advance();
                Ok(delta)
            }
            None => Ok(self.reinterpreted(&prefix, &text)),
        }
    }

    /// Text still held back at the end of generation: bytes that never formed a
    /// character, shown as U+FFFD as a whole-text decode would show them.
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let text = tok.decode(&self.ids[self.prefix_offset..])?;
        Ok(match text.strip_prefix(prefix.as_str()) {
            Some(delta) => {
                let delta = delta.to_string();
                self.advance();
                delta
            }
            None => self.reinterpreted(&prefix, &text),
        })
    }

    /// The window's text no longer starts with what was already emitted: a later byte
    /// token fused with emitted ones into invalid UTF-8 (`<0x12>` then `<0xAC>` decode
    /// together as "\u{FFFD}\u{FFFD}", not "\u{12}" and more). What was emitted cannot be
    /// taken back; emit the new text from the end of the longest common prefix (a
    /// character boundary of both) and move on, so that later tokens are never lost.
    fn reinterpreted(&mut self, prefix: &str, text: &str) -> String {
        let common = prefix
            .char_indices()
            .zip(text.chars())
            .find(|((_, a), b)| a != b)
            .map_or(prefix.len().min(text.len()), |((i, _), _)| i);
        self.advance();
        text[common..].to_string()
    }

    fn advance(&mut self) {
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
    }
}
