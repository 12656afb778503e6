//! Golden files: the reference backend's greedy tokens and top-5 log-probabilities per
//! step, committed so that a runtime upgrade that changes outputs fails the suite.

use std::path::{Path, PathBuf};

use lockstep_core::{BackendInfo, Error, Result};
use serde::{Deserialize, Serialize};

use crate::trace::{TopK, Trace};

/// Bumped when the file layout changes.
pub const GOLDEN_FORMAT: u32 = 1;
/// Candidates per step written to a golden file.
pub const GOLDEN_TOP: usize = 5;

/// One prompt's golden output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenPrompt {
    pub id: String,
    /// Length and hash of the prompt's ids: the ids themselves (up to thousands) would
    /// bloat the file, and these suffice to tell that the suite or tokenizer changed.
    pub prompt_tokens: usize,
    pub prompt_hash: String,
    pub tokens: Vec<u32>,
    /// Per generated token: `[id, logprob]` of the best 5, best first.
    pub top5: Vec<TopK>,
}

impl GoldenPrompt {
    pub fn new(id: &str, prompt: &[u32], trace: &Trace) -> Self {
        Self {
            id: id.to_string(),
            prompt_tokens: prompt.len(),
            prompt_hash: prompt_hash(prompt),
            tokens: trace.tokens.clone(),
            top5: trace
                .steps
                .iter()
                .map(|s| {
                    // 5 decimals: far below any tolerance, and short in the file.
                    TopK(
                        s.truncated(GOLDEN_TOP)
                            .0
                            .into_iter()
                            .map(|(id, lp)| (id, ((f64::from(lp) * 1e5).round() / 1e5) as f32))
                            .collect(),
                    )
                })
                .collect(),
        }
    }

    /// The golden output as a trace (no timings), for the comparison functions.
    pub fn trace(&self) -> Trace {
        Trace {
            tokens: self.tokens.clone(),
            steps: self.top5.clone(),
            ..Default::default()
        }
    }

    /// Why this entry does not describe `prompt`, if it does not.
    pub fn stale_for(&self, prompt: &[u32]) -> Option<String> {
        (self.prompt_tokens != prompt.len() || self.prompt_hash != prompt_hash(prompt)).then(|| {
            format!(
                "the prompt is now {} tokens (hash {}), the golden file has {} (hash {}): the suite or tokenizer changed",
                prompt.len(),
                prompt_hash(prompt),
                self.prompt_tokens,
                self.prompt_hash
            )
        })
    }
}

/// A golden file: one model, one suite, the reference backend's outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Golden {
    pub format: u32,
    pub model: String,
    pub suite: String,
    pub max_new_tokens: usize,
    pub reference: BackendInfo,
    pub prompts: Vec<GoldenPrompt>,
}

impl Golden {
    pub fn prompt(&self, id: &str) -> Option<&GoldenPrompt> {
        self.prompts.iter().find(|p| p.id == id)
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("reading the golden file", path, e))?;
        let golden: Golden = serde_json::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!("{}: not a golden file: {e}", path.display()))
        })?;
        if golden.format != GOLDEN_FORMAT {
            return Err(Error::InvalidInput(format!(
                "{}: golden format {} is not {GOLDEN_FORMAT}; run `lockstep conform --bless` to write it anew",
                path.display(),
                golden.format
            )));
        }
        Ok(golden)
    }

    /// `None` when the file does not exist.
    pub fn load_if_exists(path: impl AsRef<Path>) -> Result<Option<Self>> {
        let path = path.as_ref();
        if path.exists() {
            Self::load(path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Writes the file (creating its directory) in a diff-friendly layout: one line per
    /// generation step.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("creating the golden directory", dir, e))?;
        }
        let text = self.to_json_string();
        std::fs::write(path, text).map_err(|e| Error::io("writing the golden file", path, e))
    }

    /// The file's text: fixed key order, one line per generation step, so that a
    /// re-bless shows as a readable diff.
    pub fn to_json_string(&self) -> String {
        let mut out = String::from("{\n");
        out += &format!("  \"format\": {},\n", self.format);
        out += &format!("  \"model\": {},\n", j(&self.model));
        out += &format!("  \"suite\": {},\n", j(&self.suite));
        out += &format!("  \"max_new_tokens\": {},\n", self.max_new_tokens);
        out += &format!("  \"reference\": {},\n", j(&self.reference));
        out += "  \"prompts\": [\n";
        for (i, p) in self.prompts.iter().enumerate() {
            out += "    {\n";
            out += &format!("      \"id\": {},\n", j(&p.id));
            out += &format!("      \"prompt_tokens\": {},\n", p.prompt_tokens);
            out += &format!("      \"prompt_hash\": {},\n", j(&p.prompt_hash));
            out += &format!("      \"tokens\": {},\n", j(&p.tokens));
            out += "      \"top5\": [\n";
            for (k, step) in p.top5.iter().enumerate() {
                let sep = if k + 1 < p.top5.len() { "," } else { "" };
                out += &format!("        {}{sep}\n", j(step));
            }
            out += "      ]\n";
            out += if i + 1 < self.prompts.len() {
                "    },\n"
            } else {
                "    }\n"
            };
        }
        out += "  ]\n}\n";
        out
    }
}

/// Compact JSON of one value.
fn j<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("a golden value serializes")
}

/// Where the golden file of `model` and `suite` lives under a conformance directory.
pub fn golden_path(conformance_dir: &Path, model: &str, suite: &str) -> PathBuf {
    conformance_dir
        .join("golden")
        .join(model)
        .join(format!("{suite}.json"))
}

/// FNV-1a 64 of the ids' little-endian bytes: stable across platforms and versions.
pub fn prompt_hash(ids: &[u32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_round_trips_through_its_file_layout() {
        let trace = Trace {
            tokens: vec![7, 8],
            steps: vec![
                TopK(vec![
                    (7, -0.123_456_7),
                    (3, -2.5),
                    (4, -3.0),
                    (5, -4.0),
                    (6, -5.0),
                    (9, -9.0),
                ]),
                TopK(vec![(8, -0.01), (1, -5.0)]),
            ],
            ..Default::default()
        };
        let g = Golden {
            format: GOLDEN_FORMAT,
            model: "m".into(),
            suite: "s".into(),
            max_new_tokens: 2,
            reference: BackendInfo {
                id: "ort-cpu".into(),
                runtime: "r".into(),
                device: "d".into(),
                precision: "p".into(),
                ..Default::default()
            },
            prompts: vec![GoldenPrompt::new("p1", &[2, 10, 11], &trace)],
        };
        let text = g.to_json_string();
        assert!(
            text.contains("[[7,-0.12346],[3,-2.5],[4,-3.0],[5,-4.0],[6,-5.0]]"),
            "{text}"
        );
        let back: Golden = serde_json::from_str(&text).unwrap();
        assert_eq!(back, g);
        assert_eq!(g.prompts[0].stale_for(&[2, 10, 11]), None);
        assert!(g.prompts[0].stale_for(&[2, 10, 12]).is_some());
    }
}
