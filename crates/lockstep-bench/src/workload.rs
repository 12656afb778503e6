//! Realistic workloads: prompts from a TOML file (`benches/workloads/*.toml`), each run
//! greedy through the shared generation loop, plain and with speculative decoding.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep::{
    Backend, Error, GenerateOptions, Generator, Prompt, Result, SessionOptions, Speculation,
    Tokenizer,
};
use pollster::block_on;
use serde::{Deserialize, Serialize};

use crate::Stats;

/// One prompt of a workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadPrompt {
    pub id: String,
    /// What the task is, for people reading a report.
    #[serde(default)]
    pub kind: String,
    pub text: String,
}

/// A workload file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Greedy tokens generated per prompt (fewer when the model emits EOS).
    pub max_new_tokens: usize,
    #[serde(rename = "prompt")]
    pub prompts: Vec<WorkloadPrompt>,
}

/// The repository's workloads directory.
pub fn workloads_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/workloads")
}

impl Workload {
    /// A path to a workload file, or a name under `benches/workloads/`.
    pub fn resolve(name_or_path: &str) -> Result<Self> {
        let as_path = PathBuf::from(name_or_path);
        let path = if as_path.is_file() {
            as_path
        } else {
            workloads_dir().join(format!("{name_or_path}.toml"))
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::io(
                "reading the workload (a file, or a name under benches/workloads)",
                &path,
                e,
            )
        })?;
        let w: Workload = toml::from_str(&text)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
        if w.prompts.is_empty() || w.max_new_tokens == 0 {
            return Err(Error::InvalidInput(format!(
                "{}: a workload needs prompts and max_new_tokens >= 1",
                path.display()
            )));
        }
        Ok(w)
    }

    /// Each prompt's token ids (BOS first): what every engine is fed.
    pub fn encode(&self, tokenizer: &Tokenizer) -> Result<Vec<(String, Vec<u32>)>> {
        self.prompts
            .iter()
            .map(|p| Ok((p.id.clone(), tokenizer.encode(&p.text)?)))
            .collect()
    }
}

/// The workload as run: its name and each prompt's ids, for peers to run the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadInfo {
    pub name: String,
    pub max_new_tokens: usize,
    pub prompts: Vec<WorkloadPromptIds>,
    /// The speculation settings of the speculative mode, when it ran.
    pub speculation: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadPromptIds {
    pub id: String,
    pub ids: Vec<u32>,
}

/// One prompt in one mode, over the repetitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptResult {
    pub id: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Decode tok/s (tokens after the first, per second of later steps), one per rep.
    pub decode: Stats,
    pub tokens_per_step: Option<f64>,
    pub acceptance_rate: Option<f64>,
    /// The generated ids (the same every repetition: greedy).
    pub tokens: Vec<u32>,
    /// Speculative mode only: whether the tokens equal the plain mode's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_as_plain: Option<bool>,
}

/// One mode (plain or speculative) over the whole workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeResult {
    /// `plain` or `speculative`.
    pub mode: String,
    /// Decode tok/s of the whole workload (all prompts' tokens after the first over all
    /// their decode time), one sample per repetition.
    pub decode: Stats,
    pub tokens_per_step: Option<f64>,
    pub acceptance_rate: Option<f64>,
    pub prompts: Vec<PromptResult>,
}

#[derive(Default)]
struct Acc {
    rates: Vec<f64>,
    generated: usize,
    steps: usize,
    drafted: usize,
    accepted: usize,
    tokens: Vec<u32>,
}

/// Runs `prompts` greedy, plain and (when `speculation` is set) speculative, `reps` times,
/// the two modes interleaved prompt by prompt so that both see the same machine load.
pub fn run_workload(
    backend: std::sync::Arc<dyn Backend>,
    tokenizer: Tokenizer,
    prompts: &[(String, Vec<u32>)],
    max_new: usize,
    speculation: Option<&Speculation>,
    reps: usize,
    progress: &dyn Fn(&str),
) -> Result<Vec<ModeResult>> {
    let id = backend.info().id;
    let generator = Generator::new(backend, tokenizer);
    let mut modes: Vec<(&str, Option<&Speculation>)> = vec![("plain", None)];
    if let Some(s) = speculation {
        modes.push(("speculative", Some(s)));
    }
    let once = |ids: &[u32], spec: Option<&Speculation>, n: usize| -> Result<lockstep::Output> {
        let mut session = block_on(
            generator
                .backend()
                .session(SessionOptions::with_max_tokens(ids.len() + n)),
        )?;
        let mut opts = GenerateOptions::new().max_new_tokens(n);
        opts.speculation = spec.cloned();
        block_on(generator.generate_async(session.as_mut(), Prompt::Tokens(ids.to_vec()), opts))
    };
    // Warm-up, unmeasured: a many-position step may build other kernels than a 1-token one.
    progress(&format!("{id}: workload warm-up"));
    for (_, spec) in &modes {
        once(&prompts[0].1, *spec, 16.min(max_new))?;
    }
    let mut acc: Vec<Vec<Acc>> = modes
        .iter()
        .map(|_| prompts.iter().map(|_| Acc::default()).collect())
        .collect();
    let mut totals: Vec<Vec<(usize, Duration)>> = modes.iter().map(|_| Vec::new()).collect();
    for rep in 1..=reps {
        for (m, _) in modes.iter().enumerate() {
            totals[m].push((0, Duration::ZERO));
        }
        for (p, (pid, ids)) in prompts.iter().enumerate() {
            for (m, (name, spec)) in modes.iter().enumerate() {
                let out = once(ids, *spec, max_new)?;
                let s = &out.stats;
                let a = &mut acc[m][p];
                let rate = s.decode_tokens_per_second().unwrap_or(f64::NAN);
                a.rates.push(rate);
                a.generated = s.generated_tokens;
                a.steps += s.decode_steps;
                if let Some(sp) = &s.speculation {
                    a.drafted += sp.drafted;
                    a.accepted += sp.accepted;
                }
                a.tokens = out.tokens;
                let t = totals[m].last_mut().expect("pushed above");
                t.0 += s.generated_tokens.saturating_sub(1);
                t.1 += s.decode_time;
                progress(&format!(
                    "{id}: {} {name} rep {rep}/{reps}: {} tokens, {rate:.1} tok/s{}",
                    pid,
                    s.generated_tokens,
                    s.speculation.as_ref().map_or(String::new(), |sp| format!(
                        ", {:.2} tokens/step, {}/{} accepted",
                        s.tokens_per_step().unwrap_or(1.0),
                        sp.accepted,
                        sp.drafted
                    ))
                ));
            }
        }
    }
    let plain_tokens: Vec<Vec<u32>> = acc[0].iter().map(|a| a.tokens.clone()).collect();
    Ok(modes
        .iter()
        .enumerate()
        .map(|(m, (name, spec))| {
            let prompt_results: Vec<PromptResult> = acc[m]
                .iter()
                .zip(prompts)
                .enumerate()
                .map(|(p, (a, (pid, ids)))| PromptResult {
                    id: pid.clone(),
                    prompt_tokens: ids.len(),
                    generated_tokens: a.generated,
                    decode: Stats::new(a.rates.clone()),
                    tokens_per_step: (a.steps > 0)
                        .then(|| (a.generated.saturating_sub(1) * reps) as f64 / a.steps as f64),
                    acceptance_rate: (a.drafted > 0).then(|| a.accepted as f64 / a.drafted as f64),
                    tokens: a.tokens.clone(),
                    same_as_plain: spec.map(|_| a.tokens == plain_tokens[p]),
                })
                .collect();
            let steps: usize = acc[m].iter().map(|a| a.steps).sum();
            let gen: usize = acc[m]
                .iter()
                .map(|a| a.generated.saturating_sub(1) * reps)
                .sum();
            let (drafted, accepted) = acc[m]
                .iter()
                .fold((0, 0), |(d, k), a| (d + a.drafted, k + a.accepted));
            ModeResult {
                mode: name.to_string(),
                decode: Stats::new(
                    totals[m]
                        .iter()
                        .map(|(n, t)| *n as f64 / t.as_secs_f64())
                        .collect(),
                ),
                tokens_per_step: (steps > 0).then(|| gen as f64 / steps as f64),
                acceptance_rate: (drafted > 0).then(|| accepted as f64 / drafted as f64),
                prompts: prompt_results,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grounded_workload_parses_and_is_grounded() {
        let w = Workload::resolve("grounded").unwrap();
        assert_eq!(w.name, "grounded");
        assert_eq!(w.max_new_tokens, 128);
        let ids: Vec<&str> = w.prompts.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "rewrite",
                "summarize",
                "extract",
                "code-python",
                "code-rust"
            ]
        );
        // Each prompt holds the passage its continuation draws on.
        assert!(w.prompts.iter().all(|p| p.text.len() > 400));
    }

    #[test]
    fn an_unknown_workload_names_the_file_it_looked_for() {
        let e = Workload::resolve("no-such-workload")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-such-workload.toml"), "{e}");
    }
}
