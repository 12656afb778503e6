//! lockstep's errors as Python exceptions: one class per kind, all under LockstepError,
//! each carrying the facade's one-line message.

use lockstep::Error;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    lockstep,
    LockstepError,
    PyException,
    "Base class of every lockstep error."
);
create_exception!(
    lockstep,
    ModelError,
    LockstepError,
    "The model is missing, unknown, truncated or not what it claims to be."
);
create_exception!(lockstep, InvalidInputError, LockstepError, "An argument's value is wrong: an unknown backend id, sampling values out of range, ids outside the vocabulary.");
create_exception!(
    lockstep,
    ContextOverflowError,
    LockstepError,
    "The prompt plus the tokens to generate exceed the session's KV budget or the model's context."
);
create_exception!(
    lockstep,
    UnavailableError,
    LockstepError,
    "The backend or execution provider cannot run on this machine."
);
create_exception!(
    lockstep,
    BackendRuntimeError,
    LockstepError,
    "The runtime failed (e.g. the ONNX Runtime library is missing, a step failed)."
);
create_exception!(
    lockstep,
    FetchError,
    LockstepError,
    "A package registry could not be reached or refused a download."
);
create_exception!(
    lockstep,
    ChecksumError,
    LockstepError,
    "A downloaded file did not match its pinned sha256."
);
create_exception!(
    lockstep,
    FileError,
    LockstepError,
    "A file could not be read or written."
);
create_exception!(
    lockstep,
    BusyError,
    LockstepError,
    "The session is already generating: finish or close() that generation first."
);

pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Io { .. } => FileError::new_err(msg),
        Error::Checksum { .. } => ChecksumError::new_err(msg),
        Error::Fetch(_) => FetchError::new_err(msg),
        Error::Model(_) => ModelError::new_err(msg),
        Error::Runtime(_) => BackendRuntimeError::new_err(msg),
        Error::Unavailable { .. } => UnavailableError::new_err(msg),
        Error::InvalidInput(_) => InvalidInputError::new_err(msg),
        Error::ContextOverflow { .. } => ContextOverflowError::new_err(msg),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LockstepError", py.get_type::<LockstepError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add(
        "ContextOverflowError",
        py.get_type::<ContextOverflowError>(),
    )?;
    m.add("UnavailableError", py.get_type::<UnavailableError>())?;
    m.add("BackendRuntimeError", py.get_type::<BackendRuntimeError>())?;
    m.add("FetchError", py.get_type::<FetchError>())?;
    m.add("ChecksumError", py.get_type::<ChecksumError>())?;
    m.add("FileError", py.get_type::<FileError>())?;
    m.add("BusyError", py.get_type::<BusyError>())?;
    Ok(())
}
