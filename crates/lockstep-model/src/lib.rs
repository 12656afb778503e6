//! Model packages: where a model comes from, how it is fetched and checked, how a GGUF
//! becomes an INT4 ONNX model, and how the INT4 weights are read back by native backends.
//!
//! One model format for every backend: the ONNX file written by [`convert`] is what ONNX
//! Runtime runs, and [`weights`] reads the very same MatMulNBits initializers back out of
//! it for the native GPU backend.

pub mod cache;
pub mod convert;
pub mod fetch;
pub mod gguf;
pub mod manifest;
pub mod onnx;
pub mod package;
pub mod weights;

pub use lockstep_core::{Error, ModelConfig, Result};
