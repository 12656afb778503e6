//! A [`Backend`](lockstep_core::Backend) that computes in another process.
//!
//! Why: an ONNX Runtime library binds process-wide (the `ort` crate keeps one API table per
//! process), so comparing two runtime versions, or a CPU build with a WebGPU build, in one
//! run needs one process per library. The host process loads the backend and calls
//! [`serve`] on its stdin/stdout; [`RemoteBackend`] spawns it and forwards every trait call.
//! The wire format is small and private to one lockstep build: a length-prefixed JSON header
//! per message, with logits as raw little-endian f32 bytes after it (a 262,144-entry row is
//! 1 MiB; JSON would be ten times that).
//!
//! The host runs exactly what the same backend runs in-process: the same code, the same
//! library, so tokens and logits are the same bits; only the process boundary differs.

mod client;
mod protocol;
mod server;

pub use client::{HostCommand, RemoteBackend};
pub use server::serve;
