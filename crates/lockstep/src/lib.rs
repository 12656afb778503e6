//! lockstep: one INT4 ONNX Gemma on several runtimes, identical tokens.
//!
//! An app needs about five lines: open a model, pick a backend, stream a generation.
//!
//! ```no_run
//! # fn main() -> lockstep::Result<()> {
//! use futures::StreamExt;
//! let model = lockstep::Model::open("gemma3-270m")?; // a built-in name or a converted directory
//! let generator = model.generator("ort-cpu")?; // or "gpu"
//! let mut session = pollster::block_on(generator.session(256))?;
//! let opts = lockstep::GenerateOptions::new().max_new_tokens(32);
//! let mut stream = generator.generate_stream(session.as_mut(), "The three primary colors are", opts)?;
//! while let Some(event) = pollster::block_on(stream.next()) {
//!     if let lockstep::Event::Token { text, .. } = event? { print!("{text}") }
//! }
//! # Ok(()) }
//! ```

mod backends;
pub mod heap;
mod models;
pub mod summary;

pub use backends::{
    llama_cpp_gguf, load_backend, load_spec, ort_runtime, BackendKind, BackendSpec, LoadOptions,
    KV_SUFFIX,
};
pub use lockstep_core::{
    Backend, BackendInfo, Error, HostTime, KernelTime, KvPrecision, MemoryPart, MemoryReport,
    ModelConfig, Result, Session, SessionMemory, SessionOptions, StepProfile, Want,
};
pub use lockstep_generate::{
    CancelToken, Chat, DraftSource, Drafter, Event, GenerateOptions, Generator, NgramDrafter,
    Output, Prompt, SamplingParams, Speculation, SpeculationStats, Stats, StopReason, Tokenizer,
};
pub use models::{resolve_model, synthetic_names, Model};
pub use summary::Summary;

/// What a session of `context` tokens on `generator`'s backend will allocate, known
/// before it does (apps show it, or pick a smaller context); `None` when the backend
/// cannot tell.
pub fn session_memory(generator: &Generator, context: usize) -> Option<SessionMemory> {
    generator
        .backend()
        .session_memory(&SessionOptions::with_max_tokens(context))
}

/// README.md's example is compiled as a doc test so it cannot rot.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
