//! What a conformance run found, as Markdown for people and JSON for machines.

use std::fmt::Write as _;

use lockstep_core::BackendInfo;
use serde::Serialize;

use crate::compare::{Divergence, FreeRunning, Outcome, TeacherForced};
use crate::suite::Tolerances;

/// One prompt on one backend, against the reference.
#[derive(Debug, Clone, Serialize)]
pub struct PromptReport {
    pub id: String,
    pub prompt_tokens: usize,
    /// `None` when the backend failed before comparing (see `failures`).
    pub free_running: Option<FreeRunning>,
    pub teacher_forced: Option<TeacherForced>,
    /// Why this prompt failed; empty when it passed.
    pub failures: Vec<String>,
}

impl PromptReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.free_running.as_ref().map(FreeRunning::outcome)
    }
}

/// Where a backend stands after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendStatus {
    /// The reference itself: judged by the golden file, not by comparison.
    Reference,
    Passed,
    Failed,
    /// This machine cannot run it: never counted as passed.
    Unavailable,
}

/// One requested backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    pub id: String,
    pub status: BackendStatus,
    pub info: Option<BackendInfo>,
    /// Why the backend could not run here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub prompts: Vec<PromptReport>,
    /// Wall time of this backend's runs and comparisons.
    pub seconds: f64,
}

impl BackendReport {
    pub fn unavailable(id: &str, reason: String) -> Self {
        Self {
            id: id.to_string(),
            status: BackendStatus::Unavailable,
            info: None,
            unavailable: Some(reason),
            prompts: Vec::new(),
            seconds: 0.0,
        }
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.prompts
            .iter()
            .filter(|p| p.outcome() == Some(outcome))
            .count()
    }

    /// Teacher-forced statistics over every prompt: positions, top-1 agreement, max
    /// |Δlogit|, mean KL (over positions), max KL, hard disagreements.
    pub fn teacher_forced_totals(&self) -> Option<TeacherTotals> {
        let tfs: Vec<&TeacherForced> = self
            .prompts
            .iter()
            .filter_map(|p| p.teacher_forced.as_ref())
            .collect();
        if tfs.is_empty() {
            return None;
        }
        let positions: usize = tfs.iter().map(|t| t.positions).sum();
        let agree: usize = tfs.iter().map(|t| t.top1_agree).sum();
        let kl_sum: f64 = tfs.iter().map(|t| t.mean_kl * t.positions as f64).sum();
        Some(TeacherTotals {
            positions,
            top1_agreement: agree as f64 / positions.max(1) as f64,
            max_abs_logit_diff: tfs.iter().map(|t| t.max_abs_logit_diff).fold(0.0, nan_max),
            mean_kl: kl_sum / positions.max(1) as f64,
            max_kl: tfs.iter().map(|t| t.max_kl).fold(0.0, nan_max),
            disagreements: tfs.iter().map(|t| t.disagreements).sum(),
            hard_disagreements: tfs.iter().map(|t| t.hard_disagreements).sum(),
        })
    }
}

fn nan_max<T: PartialOrd + Copy>(a: T, b: T) -> T {
    // A NaN (b != b) must win: it is the loudest possible difference.
    #[allow(clippy::eq_op)]
    if b > a || b != b {
        b
    } else {
        a
    }
}

/// Teacher-forced statistics summed over a backend's prompts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TeacherTotals {
    pub positions: usize,
    pub top1_agreement: f64,
    pub max_abs_logit_diff: f32,
    pub mean_kl: f64,
    pub max_kl: f64,
    pub disagreements: usize,
    pub hard_disagreements: usize,
}

/// The reference backend's run against the golden file, one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct GoldenPromptReport {
    pub id: String,
    /// Tokens must match exactly: any difference is a failure, near-tie or not.
    pub free_running: Option<FreeRunning>,
    /// Largest |logprob difference| of the golden top-5 entries, over the matching steps.
    pub max_logprob_diff: Option<f32>,
    pub failures: Vec<String>,
}

/// The golden-file check of the reference backend.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum GoldenStatus {
    /// No golden file was asked for.
    NotChecked,
    /// The golden file does not exist: run `lockstep conform --bless`.
    Missing { path: String },
    Checked {
        path: String,
        /// The reference backend that wrote the file (its runtime version shows what an
        /// upgrade changed).
        written_by: BackendInfo,
        prompts: Vec<GoldenPromptReport>,
    },
}

impl GoldenStatus {
    pub fn passed(&self) -> bool {
        match self {
            GoldenStatus::Checked { prompts, .. } => prompts.iter().all(|p| p.failures.is_empty()),
            _ => true,
        }
    }

    fn summary(&self) -> String {
        match self {
            GoldenStatus::NotChecked => "golden file not checked".into(),
            GoldenStatus::Missing { path } => {
                format!("golden file {path} is missing: run `lockstep conform --bless`")
            }
            GoldenStatus::Checked { prompts, .. } => {
                let same = prompts
                    .iter()
                    .filter(|p| {
                        p.free_running.as_ref().map(FreeRunning::outcome)
                            == Some(Outcome::Identical)
                    })
                    .count();
                let lp = prompts
                    .iter()
                    .filter_map(|p| p.max_logprob_diff)
                    .fold(0.0f32, nan_max);
                format!(
                    "golden {same}/{} identical, max |Δlogprob| {}",
                    prompts.len(),
                    sci(f64::from(lp))
                )
            }
        }
    }
}

/// Everything a conformance run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub suite: String,
    /// Prompt ids, in suite order.
    pub prompts: Vec<String>,
    pub max_new_tokens: usize,
    pub reference: BackendInfo,
    pub tolerances: Tolerances,
    pub golden: GoldenStatus,
    pub backends: Vec<BackendReport>,
}

impl Report {
    /// No failure anywhere: the golden check and every backend that ran. An unavailable
    /// backend is not a failure, but it is never counted as passed either.
    pub fn passed(&self) -> bool {
        self.golden.passed()
            && self
                .backends
                .iter()
                .all(|b| b.status != BackendStatus::Failed)
    }

    pub fn unavailable(&self) -> Vec<&str> {
        self.backends
            .iter()
            .filter(|b| b.status == BackendStatus::Unavailable)
            .map(|b| b.id.as_str())
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Conformance: {}, suite `{}` ({} prompts, {} greedy tokens each), reference `{}`\n",
            self.model,
            self.suite,
            self.prompts.len(),
            self.max_new_tokens,
            self.reference.id
        );
        if let GoldenStatus::Checked { written_by, .. } = &self.golden {
            if written_by.runtime_label() != self.reference.runtime_label() {
                let _ = writeln!(
                    s,
                    "Golden file written by `{}` ({}); the reference now runs {}.\n",
                    written_by.id,
                    written_by.runtime_label(),
                    self.reference.runtime_label()
                );
            }
        }
        s += "| backend | runtime | device | greedy tokens | near-ties | failures | TF positions | TF top-1 | TF max abs Δlogit | TF mean KL | TF max KL | time | result |\n";
        s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
        for b in &self.backends {
            let device = b
                .info
                .as_ref()
                .map_or("—".to_string(), |i| match &i.process {
                    Some(p) => format!("{} ({p})", i.device),
                    None => i.device.clone(),
                });
            let runtime = b
                .info
                .as_ref()
                .map_or("—".to_string(), BackendInfo::runtime_label);
            if let Some(reason) = &b.unavailable {
                let _ = writeln!(
                    s,
                    "| {} | — | — | unavailable: {} | | | | | | | | | **unavailable** |",
                    b.id,
                    cell(reason)
                );
                continue;
            }
            let n = b.prompts.len();
            let failures = match (&self.golden, b.status) {
                (GoldenStatus::Checked { prompts, .. }, BackendStatus::Reference) => {
                    prompts.iter().filter(|p| !p.failures.is_empty()).count()
                }
                _ => b.prompts.iter().filter(|p| !p.passed()).count(),
            };
            let greedy = if b.status == BackendStatus::Reference {
                self.golden.summary()
            } else {
                format!("{}/{n} identical", b.count(Outcome::Identical))
            };
            let tf = b.teacher_forced_totals();
            let tf_cells = match tf {
                Some(t) => format!(
                    "{} | {:.2}% | {} | {} | {}",
                    t.positions,
                    t.top1_agreement * 100.0,
                    sci(f64::from(t.max_abs_logit_diff)),
                    sci(t.mean_kl),
                    sci(t.max_kl)
                ),
                None => "— | — | — | — | —".into(),
            };
            let result = match b.status {
                BackendStatus::Reference if self.golden.passed() => "reference",
                BackendStatus::Reference => "**FAIL** (golden)",
                BackendStatus::Passed => "pass",
                BackendStatus::Failed => "**FAIL**",
                BackendStatus::Unavailable => "unavailable",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {failures} | {tf_cells} | {:.1} s | {result} |",
                b.id,
                cell(&runtime),
                cell(&device),
                cell(&greedy),
                b.count(Outcome::NearTie),
                b.seconds
            );
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let unavailable = self.unavailable();
        let _ = write!(s, "\n**{verdict}**");
        if !unavailable.is_empty() {
            let _ = write!(
                s,
                " (not run here, so not passed: {})",
                unavailable.join(", ")
            );
        }
        s += "\n";

        let notes = self.difference_notes();
        if !notes.is_empty() {
            s += "\n### Differences\n\n";
            for n in notes {
                let _ = writeln!(s, "- {n}");
            }
        }

        for b in self.backends.iter().filter(|b| !b.prompts.is_empty()) {
            let _ = writeln!(s, "\n### `{}` per prompt\n", b.id);
            s += "| prompt | prompt tokens | greedy | TF top-1 | TF max abs Δlogit | TF mean KL | TF max KL (position) |\n";
            s += "|---|---|---|---|---|---|---|\n";
            for p in &b.prompts {
                let greedy = match (&p.free_running, p.failures.first()) {
                    (Some(fr), _) => greedy_cell(fr),
                    (None, Some(f)) => format!("error: {}", cell(f)),
                    (None, None) => "—".into(),
                };
                let tf = match &p.teacher_forced {
                    Some(t) => format!(
                        "{}/{} | {} | {} | {} ({})",
                        t.top1_agree,
                        t.positions,
                        sci(f64::from(t.max_abs_logit_diff)),
                        sci(t.mean_kl),
                        sci(t.max_kl),
                        t.max_kl_position
                    ),
                    None => "— | — | — | —".into(),
                };
                let _ = writeln!(s, "| {} | {} | {greedy} | {tf} |", p.id, p.prompt_tokens);
            }
        }

        s += "\n### Tolerances\n\n| tolerance | value | why |\n|---|---|---|\n";
        let t = &self.tolerances;
        for (name, tol) in [
            ("near_tie_margin", &t.near_tie_margin),
            ("golden_logprob", &t.golden_logprob),
            ("max_abs_logit", &t.max_abs_logit),
            ("mean_kl", &t.mean_kl),
            ("max_kl", &t.max_kl),
        ] {
            let _ = writeln!(s, "| {name} | {} | {} |", sci(tol.value), cell(&tol.why));
        }
        s
    }

    /// One line per difference and failure, for the Markdown report.
    fn difference_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let GoldenStatus::Checked {
            prompts,
            path,
            written_by,
        } = &self.golden
        {
            if !self.golden.passed() && written_by.runtime != self.reference.runtime {
                notes.push(format!(
                    "golden ({path}) was written by {}, the reference now runs {}",
                    written_by.runtime, self.reference.runtime
                ));
            }
            for p in prompts {
                for f in &p.failures {
                    notes.push(format!("golden ({path}) / `{}`: **failure**: {f}", p.id));
                }
            }
        }
        for b in &self.backends {
            for p in &b.prompts {
                if let Some(d) = p.free_running.as_ref().and_then(|f| f.divergence.as_ref()) {
                    notes.push(format!(
                        "`{}` / `{}`: {}",
                        b.id,
                        p.id,
                        describe_divergence(d, &b.id)
                    ));
                }
                for f in &p.failures {
                    notes.push(format!("`{}` / `{}`: **failure**: {f}", b.id, p.id));
                }
                if let Some(tf) = &p.teacher_forced {
                    for d in &tf.first_disagreements {
                        notes.push(format!(
                            "`{}` / `{}`: teacher-forced top-1 differs at position {}: reference {} (margin {:.4}) vs {} (margin {:.4}): {}",
                            b.id,
                            p.id,
                            d.position,
                            token(d.reference_token, d.reference_text.as_deref()),
                            d.reference_margin,
                            token(d.test_token, d.test_text.as_deref()),
                            d.test_margin,
                            if d.near_tie { "near-tie" } else { "**failure**" }
                        ));
                    }
                    if tf.disagreements > tf.first_disagreements.len() {
                        notes.push(format!(
                            "`{}` / `{}`: {} more teacher-forced top-1 differences",
                            b.id,
                            p.id,
                            tf.disagreements - tf.first_disagreements.len()
                        ));
                    }
                }
            }
        }
        notes
    }
}

/// A prompt's result in one line, for progress output.
pub(crate) fn one_line(p: &PromptReport) -> String {
    let mut s = match &p.free_running {
        Some(fr) => greedy_cell(fr).replace("**", ""),
        None => "no greedy result".into(),
    };
    if let Some(t) = &p.teacher_forced {
        let _ = write!(
            s,
            "; teacher-forced top-1 {}/{}, max |Δlogit| {}, mean KL {}, max KL {}",
            t.top1_agree,
            t.positions,
            sci(f64::from(t.max_abs_logit_diff)),
            sci(t.mean_kl),
            sci(t.max_kl)
        );
    }
    for f in &p.failures {
        let _ = write!(s, "; FAIL: {f}");
    }
    s
}

/// The greedy column of a per-prompt row.
fn greedy_cell(fr: &FreeRunning) -> String {
    match (fr.outcome(), &fr.divergence) {
        (Outcome::Identical, _) => format!("identical ({} tokens)", fr.matching),
        (Outcome::NearTie, Some(d)) => {
            format!("near-tie at token {} (position {})", d.step, d.position)
        }
        (_, Some(d)) => format!("**FAIL** at token {} (position {})", d.step, d.position),
        (_, None) => format!(
            "**FAIL**: lengths differ ({} vs {})",
            fr.reference_len, fr.test_len
        ),
    }
}

/// "near-tie at generated token 7 (position 519): reference ' a' (id 9, margin 0.0210) vs gpu ..."
pub fn describe_divergence(d: &Divergence, test_name: &str) -> String {
    let rank =
        |r: Option<usize>| r.map_or("not in top-8".to_string(), |k| format!("rank {}", k + 1));
    format!(
        "{} at generated token {} (position {}): reference {} (margin {:.4}; {test_name}'s {} there) vs {test_name} {} (margin {:.4}; reference's {} there)",
        if d.near_tie { "near-tie" } else { "**failure**" },
        d.step,
        d.position,
        token(d.reference_token, d.reference_text.as_deref()),
        d.reference_margin,
        rank(d.reference_token_rank_in_test),
        token(d.test_token, d.test_text.as_deref()),
        d.test_margin,
        rank(d.test_token_rank_in_reference),
    )
}

fn token(id: u32, text: Option<&str>) -> String {
    match text {
        Some(t) => format!("`{}` (id {id})", format!("{t:?}").replace('`', "'")),
        None => format!("id {id}"),
    }
}

/// A number in a compact form: 0, 1.23e-5, 0.0123.
fn sci(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.is_nan() {
        "NaN".into()
    } else if x.abs() >= 0.01 && x.abs() < 1000.0 {
        format!("{x:.4}")
    } else {
        format!("{x:.2e}")
    }
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Escapes text for an XML attribute or element.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no form for other control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

impl Report {
    /// The report as JUnit XML (`lockstep conform --junit FILE`), the format CI systems
    /// show as test results: one `<testsuite>` per backend, one `<testcase>` per prompt.
    /// A failure carries every reason; an unavailable backend's prompts are `<skipped>`
    /// (never passed); near-ties are noted in `<system-out>`.
    pub fn to_junit(&self) -> String {
        let mut suites = String::new();
        let (mut total, mut failed, mut skipped) = (0usize, 0usize, 0usize);
        for b in &self.backends {
            let mut cases = String::new();
            let (mut t, mut f, mut sk) = (0usize, 0usize, 0usize);
            let class = format!("{}.{}.{}", self.model, self.suite, b.id);
            if let Some(reason) = &b.unavailable {
                for id in &self.prompts {
                    t += 1;
                    sk += 1;
                    let _ = writeln!(
                        cases,
                        "    <testcase classname=\"{}\" name=\"{}\" time=\"0\"><skipped message=\"{}\"/></testcase>",
                        xml(&class),
                        xml(id),
                        xml(&format!("unavailable: {reason}"))
                    );
                }
            } else if b.status == BackendStatus::Reference {
                if let GoldenStatus::Checked { prompts, .. } = &self.golden {
                    for p in prompts {
                        t += 1;
                        let _ = write!(
                            cases,
                            "    <testcase classname=\"{}\" name=\"{} (golden)\" time=\"0\">",
                            xml(&class),
                            xml(&p.id)
                        );
                        if !p.failures.is_empty() {
                            f += 1;
                            let _ = write!(
                                cases,
                                "<failure message=\"{}\">{}</failure>",
                                xml(&p.failures[0]),
                                xml(&p.failures.join("\n"))
                            );
                        }
                        cases += "</testcase>\n";
                    }
                } else if let GoldenStatus::Missing { path } = &self.golden {
                    t += 1;
                    sk += 1;
                    let _ = writeln!(
                        cases,
                        "    <testcase classname=\"{}\" name=\"golden\" time=\"0\"><skipped message=\"{}\"/></testcase>",
                        xml(&class),
                        xml(&format!("golden file {path} is missing: run `lockstep conform --bless`"))
                    );
                }
            } else {
                let per = b.seconds / b.prompts.len().max(1) as f64;
                for p in &b.prompts {
                    t += 1;
                    let _ = write!(
                        cases,
                        "    <testcase classname=\"{}\" name=\"{}\" time=\"{per:.3}\">",
                        xml(&class),
                        xml(&p.id)
                    );
                    if !p.failures.is_empty() {
                        f += 1;
                        let _ = write!(
                            cases,
                            "<failure message=\"{}\">{}</failure>",
                            xml(&p.failures[0]),
                            xml(&p.failures.join("\n"))
                        );
                    } else if let Some(fr) = &p.free_running {
                        if fr.outcome() == Outcome::NearTie {
                            let _ = write!(
                                cases,
                                "<system-out>{}</system-out>",
                                xml(&format!("near-tie: {}", greedy_cell(fr)))
                            );
                        }
                    }
                    cases += "</testcase>\n";
                }
            }
            let props = b
                .info
                .as_ref()
                .map(|i| {
                    let mut p = String::from("    <properties>\n");
                    for (k, v) in [
                        ("runtime", i.runtime.as_str()),
                        ("package", i.package.as_deref().unwrap_or("")),
                        ("provider", i.provider.as_deref().unwrap_or("")),
                        ("device", i.device.as_str()),
                        ("precision", i.precision.as_str()),
                    ] {
                        let _ = writeln!(p, "      <property name=\"{k}\" value=\"{}\"/>", xml(v));
                    }
                    p += "    </properties>\n";
                    p
                })
                .unwrap_or_default();
            let _ = write!(
                suites,
                "  <testsuite name=\"{}\" tests=\"{t}\" failures=\"{f}\" errors=\"0\" skipped=\"{sk}\" time=\"{:.3}\">\n{props}{cases}  </testsuite>\n",
                xml(&class),
                b.seconds
            );
            total += t;
            failed += f;
            skipped += sk;
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"lockstep conform {} {}\" tests=\"{total}\" failures=\"{failed}\" errors=\"0\" skipped=\"{skipped}\">\n{suites}</testsuites>\n",
            xml(&self.model),
            xml(&self.suite)
        )
    }
}
