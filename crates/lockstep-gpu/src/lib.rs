//! Native GPU backend: our own WGSL kernels on wgpu (Metal on Apple, Vulkan, D3D12).
//!
//! The model runs from its quantized weights as stored in the ONNX file (4-bit
//! MatMulNBits blocks for projections, 8-bit for the tied embedding / LM head), computing
//! in f32. Modules, one concern each:
//! - `context`: adapter choice and device limits;
//! - `kernels`: the WGSL sources (`src/kernels/*.wgsl`) and their pipelines;
//! - `upload`: quantized weights on the device;
//! - `session`: KV cache, activations, bind groups and the encoding of a step;
//! - `backend`: [`GpuBackend`], the `lockstep_core::Backend`;
//! - [`reference`]: the plain f32 CPU forward pass everything is checked against;
//! - [`testing`]: tiny seeded random models for tests.

mod backend;
mod context;
#[cfg(test)]
mod kernel_tests;
pub mod kernels;
pub mod reference;
mod session;
pub mod testing;
mod upload;

pub use backend::{GpuBackend, GpuOptions};
pub use session::GpuSession;
