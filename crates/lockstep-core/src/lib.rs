//! The contract every lockstep runtime implements.
//!
//! A [`Backend`] is a loaded model on one runtime and device; a [`Session`] is one
//! conversation's KV cache on it. The trait covers exactly one model step: everything
//! else (sampling, stop rules, chat templates, streaming) lives once, in
//! `lockstep-generate`, so that two backends can only differ in what a step computes.

mod config;
mod error;
mod logits;
mod memory;
mod profile;

pub use config::{LayerKind, ModelConfig};
pub use error::{Error, Result};
pub use logits::{argmax, check_finite, Logits};
pub use memory::{kv_layout, mib, KvPrecision, MemoryPart, MemoryReport, SessionMemory};
pub use profile::{HostTime, KernelTime, StepProfile};

use async_trait::async_trait;

/// What a backend is: shown in reports, tables and `--json` output.
///
/// The optional fields are absent from files written before they existed (golden files).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct BackendInfo {
    /// Stable id used on the command line, e.g. `ort-cpu`, `ort-cpu:1.32.0` or `gpu`.
    pub id: String,
    /// The runtime and its version, e.g. `ONNX Runtime 1.31.1`.
    pub runtime: String,
    /// The device and API, e.g. `CPU (2 threads)` or `Vulkan / NVIDIA H100`.
    pub device: String,
    /// The numeric mode, e.g. `int4 weights, f32 compute`.
    pub precision: String,
    /// Where the runtime came from, e.g. `onnxruntime 1.32.0 (PyPI)`, or the library file
    /// given by `--ort-library` / `ORT_DYLIB_PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// The execution provider the runtime runs the model on, e.g. `WebGpuExecutionProvider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Set when the backend runs in a host process of its own (a second ONNX Runtime
    /// library cannot share a process with the first): `host process 1234`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

impl BackendInfo {
    /// `onnxruntime 1.32.0 (PyPI), CPUExecutionProvider`: the package and provider, or the
    /// runtime where neither applies, for one column of a table.
    pub fn runtime_label(&self) -> String {
        match (&self.package, &self.provider) {
            (Some(p), Some(e)) => format!("{p}, {e}"),
            (Some(p), None) => p.clone(),
            (None, Some(e)) => format!("{}, {e}", self.runtime),
            (None, None) => self.runtime.clone(),
        }
    }
}

/// Options fixed when a session is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// KV budget: the most tokens (prompt plus generated) the session will ever hold.
    /// Backends size their caches from it; exceeding it is an error, never a reallocation.
    pub max_tokens: usize,
}

impl SessionOptions {
    pub fn with_max_tokens(max_tokens: usize) -> Self {
        Self { max_tokens }
    }
}

/// Which positions' logits a forward step must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Only the last position: what generation needs.
    Last,
    /// Every position of the step: what teacher-forced comparison needs.
    All,
}

/// A loaded model on one runtime and device.
#[async_trait]
pub trait Backend: Send + Sync {
    fn info(&self) -> BackendInfo;
    /// The architecture facts of the loaded model.
    fn config(&self) -> &ModelConfig;
    /// A new, empty KV cache with a fixed token budget.
    async fn session(&self, opts: SessionOptions) -> Result<Box<dyn Session>>;

    /// The id of the process the backend computes in, when it is not this one (a host
    /// process): benchmarks read that process's memory.
    fn host_process(&self) -> Option<u32> {
        None
    }

    /// What the backend has allocated now that it can count itself: device buffers
    /// (weights, live sessions' caches) on GPU backends, KV buffers on CPU ones. Empty
    /// when the runtime does not say; host memory as a whole is the process's RSS.
    fn memory(&self) -> MemoryReport {
        MemoryReport::default()
    }

    /// What a session with `opts` will allocate, before it does; `None` when the backend
    /// cannot tell.
    fn session_memory(&self, opts: &SessionOptions) -> Option<SessionMemory> {
        let _ = opts;
        None
    }
}

/// One sequence's state (its KV cache) on a backend.
#[async_trait]
pub trait Session: Send {
    /// Runs `tokens` after the cached ones, appends them to the KV cache and returns
    /// the logits that `want` asks for.
    async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Logits>;

    /// Runs `tokens` and returns only the id of the most likely next token.
    /// Backends that can take the argmax on the device override this to avoid reading
    /// back the whole vocabulary; ties go to the lowest id, as in [`Logits::argmax`].
    /// Non-finite logits (NaN, an infinity) are an [`Error::Runtime`], never a token: an
    /// override must refuse them too.
    async fn forward_greedy(&mut self, tokens: &[u32]) -> Result<u32> {
        let logits = self.forward(tokens, Want::Last).await?;
        if logits.rows() == 0 {
            return Err(Error::Runtime("the backend returned no logits".into()));
        }
        let row = logits.last();
        check_finite(row)?;
        Ok(argmax(row))
    }

    /// Tokens in the KV cache.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The budget the session was created with.
    fn max_tokens(&self) -> usize;

    /// Forgets every token from `len` on, so that a conversation can be edited.
    fn truncate(&mut self, len: usize) -> Result<()>;

    /// Where the steps' time went since the session began or since
    /// [`reset_profile`](Self::reset_profile); `None` for backends that cannot tell.
    fn profile(&self) -> Option<StepProfile> {
        None
    }

    /// Starts the profile over (e.g. after prefill, to see decode alone).
    fn reset_profile(&mut self) {}
}

/// What every step checks before it runs: at least one token, ids inside the vocabulary,
/// and room in the session's KV budget.
pub fn check_step(
    config: &ModelConfig,
    len: usize,
    max_tokens: usize,
    tokens: &[u32],
) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::InvalidInput(
            "forward needs at least one token".into(),
        ));
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= config.vocab_size) {
        return Err(Error::InvalidInput(format!(
            "token id {bad} is out of range: the vocabulary has {} ids",
            config.vocab_size
        )));
    }
    let needed = len + tokens.len();
    if needed > max_tokens {
        return Err(Error::ContextOverflow {
            needed,
            limit: max_tokens,
            limit_name: "the session's KV budget",
        });
    }
    Ok(())
}
