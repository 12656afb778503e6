//! What a fetch shows on stderr: indicatif bars on a terminal, else one plain line per step.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Ui {
    bars: bool,
}

impl Ui {
    pub(crate) fn new(progress: bool) -> Self {
        Self {
            bars: progress && std::io::stderr().is_terminal(),
        }
    }

    /// A step that has no byte count.
    pub(crate) fn line(&self, msg: &str) {
        eprintln!("lockstep: {msg}");
    }

    /// A step over `total` bytes: a bar on a terminal, else its line.
    pub(crate) fn bytes(&self, msg: &str, total: u64) -> Bar {
        if !self.bars {
            self.line(&format!("{msg} ({})", human(total)));
            return Bar(None);
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            // wide_msg shrinks to the terminal width, so a bar never wraps onto two lines.
            "{wide_msg} [{bar:24}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(msg.to_string());
        Bar(Some(bar))
    }
}

/// A byte bar, or nothing when bars are off.
pub(crate) struct Bar(Option<ProgressBar>);

impl Bar {
    pub(crate) fn set(&self, pos: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(pos);
        }
    }

    pub(crate) fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }

    /// Leaves the bar's line on screen as the step's record.
    pub(crate) fn finish(self) {
        if let Some(bar) = self.0 {
            if let Some(len) = bar.length() {
                bar.set_position(len);
            }
            bar.finish();
        }
    }

    /// Removes the bar (the step failed; the error says why).
    pub(crate) fn abandon(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Bytes for people: `241.4 MiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
