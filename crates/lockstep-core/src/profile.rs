//! Where a backend's step time goes, for backends that can measure it themselves.

use std::time::Duration;

/// Time of one class of device work (a kernel and its variants), summed over steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KernelTime {
    pub kernel: String,
    pub dispatches: u64,
    pub total: Duration,
}

/// Host-side time of the steps, by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostTime {
    /// Building the step's commands.
    pub encode: Duration,
    /// Handing them to the driver.
    pub submit: Duration,
    /// Waiting for the device to finish.
    pub wait: Duration,
    /// Copying results back to host memory.
    pub readback: Duration,
}

/// A session's profile since it began or since `Session::reset_profile`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepProfile {
    /// Steps submitted (one per device submission).
    pub steps: u64,
    /// Tokens those steps computed.
    pub tokens: u64,
    /// Device time per kernel class, largest first; empty where the device has no timers.
    pub kernels: Vec<KernelTime>,
    pub host: HostTime,
}

impl StepProfile {
    /// Total device time in kernels.
    pub fn kernel_time(&self) -> Duration {
        self.kernels.iter().map(|k| k.total).sum()
    }

    /// A table: per kernel class its device time, share, and dispatches per step; then the
    /// host phases per step.
    pub fn table(&self) -> String {
        let steps = self.steps.max(1) as f64;
        let total = self.kernel_time().as_secs_f64();
        let mut out = String::from(
            "| kernel | dispatches/step | device µs/step | share |\n|---|---:|---:|---:|\n",
        );
        for k in &self.kernels {
            out += &format!(
                "| {} | {:.1} | {:.1} | {:.1}% |\n",
                k.kernel,
                k.dispatches as f64 / steps,
                k.total.as_secs_f64() * 1e6 / steps,
                100.0 * k.total.as_secs_f64() / total.max(f64::MIN_POSITIVE)
            );
        }
        let dispatches: u64 = self.kernels.iter().map(|k| k.dispatches).sum();
        out += &format!(
            "| all kernels | {:.1} | {:.1} | |\n",
            dispatches as f64 / steps,
            total * 1e6 / steps
        );
        let h = &self.host;
        out += &format!(
            "\nhost per step: encode {:.1} µs, submit {:.1} µs, wait {:.1} µs, readback {:.1} µs ({} steps, {} tokens)\n",
            h.encode.as_secs_f64() * 1e6 / steps,
            h.submit.as_secs_f64() * 1e6 / steps,
            h.wait.as_secs_f64() * 1e6 / steps,
            h.readback.as_secs_f64() * 1e6 / steps,
            self.steps,
            self.tokens
        );
        out
    }
}
