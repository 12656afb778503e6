//! Loading the ONNX Runtime shared library once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lockstep_core::{Error, Result};
use ort::environment::Environment;

static ENVIRONMENT: OnceLock<std::result::Result<(PathBuf, Environment), String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loaded from `library` the first time.
/// `ort` binds the library's symbols globally, so a later call with another path gets
/// the first library; that case is an error rather than a silent mix-up.
pub fn environment(library: &Path) -> Result<&'static Environment> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let builder = ort::init_from(library).map_err(|e| {
            format!(
                "cannot load the ONNX Runtime library {}: {e}; run `lockstep fetch` to download onnxruntime 1.31.1 from PyPI, or point ORT_DYLIB_PATH at a libonnxruntime of version 1.31 or newer",
                library.display()
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

/// "1.31.1", read from the loaded library's build information.
pub fn version() -> String {
    let info = ort::info();
    info.split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|part| part.strip_prefix("git-branch=rel-"))
        .unwrap_or("unknown version")
        .to_string()
}
