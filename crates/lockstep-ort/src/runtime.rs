//! Loading an ONNX Runtime shared library once per process, after checking that it is one
//! this build can drive.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lockstep_core::{Error, Result};
use ort::environment::Environment;

static ENVIRONMENT: OnceLock<std::result::Result<(PathBuf, Environment), String>> = OnceLock::new();

/// The ONNX Runtime version ("1.31.1") this build's C API needs at least: `ort`'s
/// `api-NN` feature, set to the oldest runtime in `providers/runtime/`.
pub fn minimum_version() -> String {
    format!("1.{}", ort::MINOR_VERSION)
}

/// Opens `library` on its own and asks it what it is, without binding it for `ort`: its
/// version string, and whether it serves the C API version this build uses. `ort` itself
/// would panic on a library that is too old; this turns that into an error that says so.
pub fn probe(library: &Path) -> Result<String> {
    let not_ort = |why: String| {
        Error::Runtime(format!(
            "{} is not a usable ONNX Runtime library ({why}); point --ort-library or ORT_DYLIB_PATH at libonnxruntime, or use a pinned runtime (`lockstep providers`)",
            library.display()
        ))
    };
    // SAFETY: opening a shared library runs its initializers; ONNX Runtime's only register
    // its providers. OrtGetApiBase has this signature in every ONNX Runtime, and both
    // strings it returns are static, copied before the handle is closed.
    unsafe {
        let lib = libloading::Library::new(library).map_err(|e| not_ort(e.to_string()))?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> = lib
            .get(b"OrtGetApiBase")
            .map_err(|_| not_ort("it has no OrtGetApiBase".into()))?;
        let base = get();
        if base.is_null() {
            return Err(not_ort("OrtGetApiBase returned nothing".into()));
        }
        let v = ((*base).GetVersionString)();
        let version = if v.is_null() {
            "unknown".to_string()
        } else {
            CStr::from_ptr(v).to_string_lossy().into_owned()
        };
        let api = ((*base).GetApi)(ort::MINOR_VERSION);
        if api.is_null() {
            return Err(Error::Runtime(format!(
                "ONNX Runtime {version} ({}) is older than {}, the oldest this lockstep drives (it uses C API version {}); use a newer library or a pinned runtime (`lockstep providers` lists them)",
                library.display(),
                minimum_version(),
                ort::MINOR_VERSION
            )));
        }
        Ok(version)
    }
}

/// The process-wide ONNX Runtime environment, loaded from `library` the first time.
/// `ort` binds the library's symbols globally, so a later call with another path gets
/// the first library; that case is an error rather than a silent mix-up (callers that
/// need a second library run it in a host process: see [`loaded_library`]).
pub fn environment(library: &Path) -> Result<&'static Environment> {
    if let Some(Ok((path, env))) = ENVIRONMENT.get() {
        if path == library {
            return Ok(env);
        }
    }
    if ENVIRONMENT.get().is_none() {
        // Checked before `ort` sees it: `ort` panics on a library it cannot use.
        probe(library)?;
    }
    let loaded = ENVIRONMENT.get_or_init(|| {
        let builder = ort::init_from(library).map_err(|e| {
            format!(
                "cannot load the ONNX Runtime library {}: {e}; run `lockstep fetch` to download the pinned runtime, or point ORT_DYLIB_PATH at a libonnxruntime of version {} or newer",
                library.display(),
                minimum_version()
            )
        })?;
        let env = builder
            .with_name("lockstep")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
        Ok((library.to_path_buf(), env))
    });
    match loaded {
        Ok((path, env)) if path == library => Ok(env),
        Ok((path, _)) => Err(Error::Runtime(format!(
            "ONNX Runtime is already loaded from {} in this process; it cannot also be loaded from {}",
            path.display(),
            library.display()
        ))),
        Err(msg) => Err(Error::Runtime(msg.clone())),
    }
}

/// The library this process has bound, if any: a backend asking for another one runs in
/// a host process of its own.
pub fn loaded_library() -> Option<&'static Path> {
    match ENVIRONMENT.get() {
        Some(Ok((path, _))) => Some(path.as_path()),
        _ => None,
    }
}

/// "1.31.1", read from the loaded library's build information.
pub fn version() -> String {
    let info = ort::info();
    info.split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|part| part.strip_prefix("git-branch=rel-"))
        .unwrap_or("unknown version")
        .to_string()
}
