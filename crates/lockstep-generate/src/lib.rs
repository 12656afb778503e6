//! The shared generation loop: sampling, stop rules, streaming, chat sessions.
//!
//! Everything here is the same for every backend; a backend only runs model steps.
//!
//! ```no_run
//! # async fn demo(backend: std::sync::Arc<dyn lockstep_core::Backend>) -> lockstep_core::Result<()> {
//! use futures::StreamExt;
//! use lockstep_generate::{Event, GenerateOptions, Generator, Tokenizer};
//!
//! let generator = Generator::new(backend, Tokenizer::from_dir("model-dir")?);
//! let mut session = generator.session(1024).await?;
//! let opts = GenerateOptions::new().max_new_tokens(64).temperature(0.7).top_p(0.95).seed(1);
//! let mut stream = generator.generate_stream(session.as_mut(), "Water boils at", opts)?;
//! while let Some(ev) = stream.next().await {
//!     match ev? {
//!         Event::Token { text, .. } => print!("{text}"),
//!         Event::Done(stats) => println!("\n{:?}", stats.stop),
//!     }
//! }
//! # Ok(()) }
//! ```

mod chat;
mod detok;
mod generate;
mod sampling;
mod speculate;
mod stop;
pub mod testing;
mod tokenizer;
mod tokenizer_file;

pub use chat::Chat;
pub use detok::Detokenizer;
pub use generate::{
    CancelToken, Event, EventStream, GenerateOptions, Generator, Output, Prompt, Stats, StopReason,
};
pub use sampling::{apply_repetition_penalty, Candidate, Sampler, SamplingParams, TokenSet};
pub use speculate::{
    DraftSource, Drafter, DrafterFactory, NgramDrafter, Speculation, SpeculationStats, Speculator,
};
pub use stop::StopMatcher;
pub use tokenizer::{Message, Role, Tokenizer};
