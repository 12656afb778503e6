//! Model formats: reading GGUF, writing and reading ONNX, turning a GGUF into an INT4 ONNX
//! model package, and reading the INT4 weights back for native backends. Where the sources
//! come from (registries, checksums, the cache) is `lockstep-fetch`'s concern.
//!
//! One model format for every backend: the ONNX file written by [`convert`] is what ONNX
//! Runtime runs, and [`weights`] reads the very same MatMulNBits initializers back out of
//! it for the native GPU backend.

pub mod convert;
pub mod gguf;
pub mod onnx;
pub mod package;
pub mod weights;

pub use lockstep_core::{Error, ModelConfig, Result};
