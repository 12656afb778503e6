//! lockstep's C ABI: open a model by name or directory, load it on a backend by id,
//! create sessions with a KV budget, generate with the loop's options while a callback
//! receives every token, cancel, rewind, read the backend's info and the run's summary.
//!
//! Everything goes through the `lockstep` facade: backend ids are its strings and
//! [`lockstep::BackendInfo`] and [`lockstep::Summary`] cross as JSON, so new backends and
//! new fields reach C callers without a change here. The header, `include/lockstep.h`,
//! is generated from this crate by cbindgen (see `tests/header.rs`); its preamble states
//! the rules for errors, ownership and threads.
//!
//! Every exported function runs inside [`error::guard`]: errors become a
//! [`LockstepStatus`] and a per-thread message, and a panic is caught there, never
//! unwinding into C.

mod error;
mod model;
mod options;
mod session;

use std::ffi::{c_char, CString};

pub use error::{lockstep_last_error_message, LockstepStatus};
pub use model::*;
pub use options::*;
pub use session::*;

/// The lockstep version, e.g. "0.1.0". Static: never free it.
#[no_mangle]
pub extern "C" fn lockstep_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Frees a string this library returned (JSON). NULL is ignored.
///
/// # Safety
/// `s` is NULL or a string returned by lockstep through an out-pointer, freed once.
#[no_mangle]
pub unsafe extern "C" fn lockstep_string_free(s: *mut c_char) {
    error::guard_quiet(|| {
        if !s.is_null() {
            drop(CString::from_raw(s));
        }
    })
}

#[cfg(test)]
mod tests {
    fn shared_across_threads<T: Send + Sync>() {}

    #[test]
    fn the_thread_safety_the_header_promises() {
        shared_across_threads::<super::LockstepModel>();
        shared_across_threads::<super::LockstepBackend>();
        shared_across_threads::<super::LockstepSession>();
        shared_across_threads::<super::LockstepCancel>();
    }
}
