use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error a user can meet. Each message says what is wrong and what to do about it,
/// in one line, so that the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {path}: {source}")]
    Io {
        context: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}; the file was removed from the cache, run the command again to fetch it anew")]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    /// A package registry could not be reached or refused a download.
    #[error("{0}")]
    Fetch(String),
    /// A model file is missing, truncated or not what it claims to be.
    #[error("{0}")]
    Model(String),
    /// The runtime failed or is missing (e.g. the ONNX Runtime library).
    #[error("{0}")]
    Runtime(String),
    /// A backend or execution provider this machine cannot run.
    #[error("backend '{backend}' is unavailable: {reason}")]
    Unavailable { backend: String, reason: String },
    /// Invalid arguments: sampling values, ids, budgets.
    #[error("{0}")]
    InvalidInput(String),
    /// Prompt plus generation would not fit the session's KV budget or the model's context.
    #[error("{needed} tokens do not fit: {limit_name} is {limit}; shorten the prompt, lower --max-tokens, or raise the budget")]
    ContextOverflow {
        needed: usize,
        limit: usize,
        limit_name: &'static str,
    },
}

impl Error {
    pub fn io(
        context: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            context: context.into(),
            path: path.into(),
            source,
        }
    }
}
