//! Process memory from /proc/self/status (Linux); `None` elsewhere.

fn status_kib(key: &str) -> Option<u64> {
    status_kib_of("self", key)
}

fn status_kib_of(process: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resident set size now, in bytes.
pub fn rss() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// Peak resident set size since the last [`reset_peak`], in bytes.
pub fn peak_rss() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// Peak resident set size of another process (a backend's host process), in bytes.
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    status_kib_of(&pid.to_string(), "VmHWM:").map(|k| k * 1024)
}

/// Resets VmHWM to the current RSS (Linux >= 4.0), so that each backend's peak is its own
/// and not the previous backend's.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `user@host`-free machine facts for the report: CPU model, logical CPUs, load averages.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// 1, 5 and 15 minute load averages.
pub fn load_avg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}
