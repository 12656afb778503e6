//! The results of a run: serializable (`--json`) and printable as a llama-bench-style table.

use lockstep::{BackendInfo, StepProfile};
use serde::{Deserialize, Serialize};

use crate::workload::{ModeResult, WorkloadInfo};
use crate::{mem, Stats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// The backend could not be loaded on this machine (no GPU, no library, ...).
    Unavailable,
    /// Loaded, but a step failed.
    Failed,
}

/// One backend's measurements. Rates are tokens per second, one sample per repetition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendResult {
    pub backend: String,
    pub status: Status,
    pub reason: Option<String>,
    pub info: Option<BackendInfo>,
    pub load_s: Option<f64>,
    pub pp: Option<Stats>,
    pub tg: Option<Stats>,
    /// Fresh session + prefill of the whole prompt + first token id, in milliseconds.
    pub ttft_ms: Option<Stats>,
    /// Process peak RSS (VmHWM, reset before this backend was loaded).
    pub peak_rss_bytes: Option<u64>,
    /// Peak RSS minus the RSS before loading: this backend's own footprint.
    pub rss_delta_bytes: Option<u64>,
    /// The workload's modes (plain, speculative), when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Vec<ModeResult>>,
    /// Device (GPU) buffers the backend had allocated with one session alive (weights,
    /// KV cache, working buffers), as it reports them; `None` for host-only backends.
    #[serde(default)]
    pub device_bytes: Option<u64>,
    /// Host buffers the backend counted itself (ONNX Runtime: the KV cache), with one
    /// session alive; part of the peak RSS.
    #[serde(default)]
    pub kv_host_bytes: Option<u64>,
    /// What the backend said a session of the run's budget would allocate, before it did.
    #[serde(default)]
    pub session_memory: Option<lockstep::SessionMemory>,
    /// Where a step's time goes (`--profile`), for backends that can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<BenchProfile>,
}

/// `--profile`: one prefill of the pp prompt and the tg run, each profiled on its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenchProfile {
    pub prefill: Option<StepProfile>,
    pub decode: Option<StepProfile>,
}

impl BackendResult {
    pub fn new(backend: &str) -> Self {
        Self {
            backend: backend.to_string(),
            status: Status::Ok,
            reason: None,
            info: None,
            load_s: None,
            pp: None,
            tg: None,
            ttft_ms: None,
            peak_rss_bytes: None,
            rss_delta_bytes: None,
            profile: None,
            device_bytes: None,
            kv_host_bytes: None,
            session_memory: None,
            workload: None,
        }
    }
}

/// Where the numbers came from, load included: timings on a busy machine are noisy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub logical_cpus: usize,
    pub os: String,
    /// 1/5/15-minute load averages at the start and the end of the run.
    pub load_avg_start: Option<[f64; 3]>,
    pub load_avg_end: Option<[f64; 3]>,
}

impl Machine {
    pub fn current() -> Self {
        Self {
            cpu: mem::cpu_model(),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS.to_string(),
            load_avg_start: mem::load_avg(),
            load_avg_end: None,
        }
    }
}

/// A whole `lockstep bench` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub model: String,
    pub model_dir: String,
    pub threads: Option<usize>,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub tg_prompt_tokens: usize,
    pub reps: usize,
    pub machine: Machine,
    /// The exact prompt ids every backend ran (peers are fed the same ones).
    pub prompt_ids: Vec<u32>,
    /// The workload every backend ran (and peers run), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadInfo>,
    pub results: Vec<BackendResult>,
}

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| {
        format!("{:.0}", b as f64 / (1 << 20) as f64)
    })
}

impl BenchReport {
    /// The workload's table: one row per backend and mode.
    fn workload_table(&self, w: &WorkloadInfo) -> String {
        let mut out = format!(
            "\nworkload {} ({} prompts, up to {} new tokens each, greedy){}\n\n",
            w.name,
            w.prompts.len(),
            w.max_new_tokens,
            w.speculation
                .as_ref()
                .map_or(String::new(), |s| format!("; speculation: {s}"))
        );
        out +=
            "| backend | mode | decode t/s | tokens/step | acceptance | same tokens as plain |\n";
        out += "|---|---|---:|---:|---:|---:|\n";
        for r in &self.results {
            for m in r.workload.iter().flatten() {
                let same = m
                    .prompts
                    .iter()
                    .filter_map(|p| p.same_as_plain)
                    .collect::<Vec<_>>();
                out += &format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r.backend,
                    m.mode,
                    m.decode.show(1),
                    m.tokens_per_step.map_or("-".into(), |t| format!("{t:.2}")),
                    m.acceptance_rate
                        .map_or("-".into(), |a| format!("{:.0}%", a * 100.0)),
                    if same.is_empty() {
                        "-".into()
                    } else {
                        format!("{}/{}", same.iter().filter(|&&s| s).count(), same.len())
                    }
                );
            }
        }
        out
    }

    /// A Markdown table, one row per backend, as llama-bench prints one per test.
    pub fn table(&self) -> String {
        let pp = format!("pp{} t/s", self.prompt_tokens);
        let tg = format!("tg{} t/s", self.gen_tokens);
        let header = [
            "backend",
            "runtime",
            "device",
            &pp,
            &tg,
            "TTFT ms",
            "load s",
            "peak RSS MiB",
            "Δ RSS MiB",
            "device MiB",
        ];
        let mut rows: Vec<Vec<String>> = Vec::new();
        for r in &self.results {
            if r.status != Status::Ok {
                // The reason goes under the table, where it can be long.
                let mut row = vec![r.backend.clone(), format!("{:?}", r.status).to_lowercase()];
                row.resize(header.len(), "-".into());
                rows.push(row);
                continue;
            }
            let show = |s: &Option<Stats>, d| s.as_ref().map_or("-".into(), |s| s.show(d));
            rows.push(vec![
                r.backend.clone(),
                r.info
                    .as_ref()
                    .map_or("-".into(), BackendInfo::runtime_label),
                r.info.as_ref().map_or("-".into(), |i| match &i.process {
                    Some(p) => format!("{} ({p})", i.device),
                    None => i.device.clone(),
                }),
                show(&r.pp, 1),
                show(&r.tg, 1),
                show(&r.ttft_ms, 0),
                r.load_s.map_or("-".into(), |s| format!("{s:.2}")),
                mib(r.peak_rss_bytes),
                mib(r.rss_delta_bytes),
                mib(r.device_bytes),
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                rows.iter()
                    .map(|r| r[c].chars().count())
                    .chain([header[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                // Text left, numbers right, as llama-bench aligns them.
                .map(|(i, (c, w))| {
                    if i < 2 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(header.iter().map(|s| s.to_string()).collect());
        out += &line(
            widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    if i < 2 {
                        "-".repeat(*w)
                    } else {
                        format!("{}:", "-".repeat(w - 1))
                    }
                })
                .collect(),
        );
        for r in rows {
            out += &line(r);
        }
        for r in self.results.iter().filter(|r| r.status != Status::Ok) {
            let status = format!("{:?}", r.status).to_lowercase();
            out += &format!(
                "\n{}: {status}: {}",
                r.backend,
                r.reason.as_deref().unwrap_or("?")
            );
        }
        if let Some(w) = &self.workload {
            out += &self.workload_table(w);
        }
        let m = &self.machine;
        let load = |l: Option<[f64; 3]>| l.map_or("?".into(), |l| format!("{:.2}", l[0]));
        out += &format!(
            "\nmodel {} | {} reps | threads {} | {} ({} logical CPUs) | load avg {} -> {}\n",
            self.model,
            self.reps,
            self.threads.map_or("default".into(), |t| t.to_string()),
            m.cpu,
            m.logical_cpus,
            load(m.load_avg_start),
            load(m.load_avg_end),
        );
        for r in &self.results {
            let Some(p) = &r.profile else { continue };
            for (what, profile) in [
                (
                    format!("prefill of {} tokens", self.prompt_tokens),
                    &p.prefill,
                ),
                (format!("decode, {} steps", self.gen_tokens), &p.decode),
            ] {
                match profile {
                    Some(profile) => {
                        out += &format!("\n{}: where the time goes, {what}\n\n", r.backend);
                        out += &profile.table();
                    }
                    None => out += &format!("\n{}: no profile ({what})\n", r.backend),
                }
            }
        }
        out
    }
}
