//! Status codes, the per-thread error message, and the guard that keeps panics and
//! invalid arguments from crossing the boundary.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use lockstep::Error;

/// What a call returned. Stable numbers: new codes are only ever added.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockstepStatus {
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// A string argument was not valid UTF-8.
    InvalidUtf8 = 2,
    /// An argument's value is wrong: an unknown backend id, sampling values out of range,
    /// ids outside the vocabulary, malformed options JSON, a truncation past the end.
    InvalidInput = 3,
    /// The prompt plus the tokens to generate exceed the session's KV budget or the
    /// model's context length.
    ContextOverflow = 4,
    /// The model is missing, unknown, truncated or not what it claims to be.
    Model = 5,
    /// The backend or execution provider cannot run on this machine.
    Unavailable = 6,
    /// The runtime failed (e.g. the ONNX Runtime library is missing, a step failed).
    Runtime = 7,
    /// A package registry could not be reached or refused a download.
    Fetch = 8,
    /// A downloaded file did not match its pinned sha256.
    Checksum = 9,
    /// A file could not be read or written.
    Io = 10,
    /// The session is in use by another call (another thread, or its own callback).
    Busy = 11,
    /// A bug inside lockstep was caught before it could unwind into the caller.
    Panic = 12,
}

/// A failed call: its code and its one-line message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: LockstepStatus,
    pub message: String,
}

impl Failure {
    pub fn new(status: LockstepStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(LockstepStatus::InvalidInput, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Io { .. } => LockstepStatus::Io,
            Error::Checksum { .. } => LockstepStatus::Checksum,
            Error::Fetch(_) => LockstepStatus::Fetch,
            Error::Model(_) => LockstepStatus::Model,
            Error::Runtime(_) => LockstepStatus::Runtime,
            Error::Unavailable { .. } => LockstepStatus::Unavailable,
            Error::InvalidInput(_) => LockstepStatus::InvalidInput,
            Error::ContextOverflow { .. } => LockstepStatus::ContextOverflow,
        };
        Failure::new(status, e.to_string())
    }
}

pub(crate) type Result<T, E = Failure> = std::result::Result<T, E>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message with a NUL byte in it would be cut there by C; replace it instead.
    let c = CString::new(message.replace('\0', "\\0")).expect("NULs were replaced");
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The last error of this thread: one line saying what is wrong and what to do, or ""
/// when the last call that returned a status succeeded. Valid until the next call on this
/// thread that returns a LockstepStatus (free and new functions leave it alone); never
/// NULL, never to be freed.
#[no_mangle]
pub extern "C" fn lockstep_last_error_message() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "no message".into()
    }
}

/// Runs the body of an exported function that returns a status: clears the thread's
/// error, turns a failure into its status and message, and catches any panic.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> LockstepStatus {
    set_last_error("");
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => LockstepStatus::Ok,
        Ok(Err(f)) => {
            set_last_error(&f.message);
            f.status
        }
        Err(payload) => {
            set_panic_error(payload.as_ref());
            LockstepStatus::Panic
        }
    }
}

fn set_panic_error(payload: &(dyn std::any::Any + Send)) {
    set_last_error(&format!(
        "internal error: lockstep panicked ({}); this is a bug in lockstep, please report it",
        panic_message(payload)
    ));
}

/// For functions with no status to return (free, new): the thread's error is left as it
/// is, so that a caller can free things before reading why an earlier call failed; a
/// panic is caught and only leaves its message.
pub(crate) fn guard_quiet(body: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
        set_panic_error(payload.as_ref());
    }
}

/// A borrowed, NUL-terminated UTF-8 argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Failure::new(
            LockstepStatus::NullArgument,
            format!("{what} is NULL"),
        ));
    }
    CStr::from_ptr(p).to_str().map_err(|e| {
        Failure::new(
            LockstepStatus::InvalidUtf8,
            format!("{what} is not valid UTF-8 ({e})"),
        )
    })
}

/// `p` as a reference to a handle, or a NullArgument failure.
///
/// # Safety
/// `p` is NULL or a live handle of type `T` returned by this library.
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    p.as_ref()
        .ok_or_else(|| Failure::new(LockstepStatus::NullArgument, format!("{what} is NULL")))
}

/// An out-pointer: checked for NULL, and cleared so that a failed call leaves NULL in it.
///
/// # Safety
/// `p` is NULL or valid for writes.
pub(crate) unsafe fn out_ptr<'a, T>(p: *mut *mut T, what: &str) -> Result<&'a mut *mut T> {
    let out = p.as_mut().ok_or_else(|| {
        Failure::new(
            LockstepStatus::NullArgument,
            format!("{what} (the out-pointer) is NULL"),
        )
    })?;
    *out = std::ptr::null_mut();
    Ok(out)
}

/// A string for the caller, freed with `lockstep_string_free`.
pub(crate) fn owned_string(s: String) -> *mut c_char {
    CString::new(s.replace('\0', "\\u0000"))
        .expect("NULs were replaced")
        .into_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        unsafe { CStr::from_ptr(lockstep_last_error_message()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = guard(|| panic!("boom at step 3"));
        assert_eq!(status, LockstepStatus::Panic);
        assert!(last().contains("boom at step 3"), "{}", last());
        // Calls without a status leave it; the next successful status call clears it.
        guard_quiet(|| {});
        assert!(last().contains("boom at step 3"));
        assert_eq!(guard(|| Ok(())), LockstepStatus::Ok);
        assert_eq!(last(), "");
        guard_quiet(|| panic!("boom in a free"));
        assert!(last().contains("boom in a free"), "{}", last());
    }

    #[test]
    fn facade_errors_keep_their_message_and_get_their_code() {
        let status = guard(|| {
            Err(Error::ContextOverflow {
                needed: 300,
                limit: 256,
                limit_name: "the session's KV budget",
            }
            .into())
        });
        assert_eq!(status, LockstepStatus::ContextOverflow);
        assert!(last().starts_with("300 tokens do not fit"), "{}", last());
    }

    #[test]
    fn the_error_is_per_thread() {
        assert_eq!(
            guard(|| Err(Failure::invalid("only on this thread"))),
            LockstepStatus::InvalidInput
        );
        let other = std::thread::spawn(last).join().unwrap();
        assert_eq!(other, "");
        assert_eq!(last(), "only on this thread");
    }
}
