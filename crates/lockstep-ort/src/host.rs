//! Running an ONNX Runtime backend in-process or in a host process of its own.
//!
//! `ort` binds one ONNX Runtime library per process. The first library a process loads is
//! run in-process; a backend that asks for another one (a newer version, the build that
//! carries WebGPU or OpenVINO) is loaded by `lockstep-ort-host`, a small program that
//! serves it over a pipe (`lockstep-remote`). Both run the same code on the same library,
//! so the tokens are the same; only the process differs, and reports say which.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockstep_core::{Backend, Error, Result};
use lockstep_remote::{HostCommand, RemoteBackend};
use serde::{Deserialize, Serialize};

use crate::{OrtBackend, OrtOptions, ProviderChoice, ProviderProfile};

/// The host program's name, without the platform's executable suffix.
pub const HOST_PROGRAM: &str = "lockstep-ort-host";

/// Overrides where the host program is looked for.
pub const HOST_ENV: &str = "LOCKSTEP_ORT_HOST";

/// Set to `1` to run every ONNX Runtime backend in a host process, even the first (tests
/// use it to check that hosted and in-process backends agree).
pub const ALWAYS_HOST_ENV: &str = "LOCKSTEP_ORT_ALWAYS_HOST";

/// What the host needs to load the backend: everything `OrtBackend::load_with` takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostParams {
    pub model_dir: PathBuf,
    pub library: PathBuf,
    pub threads: Option<usize>,
    pub package: Option<String>,
    pub profile: ProviderProfile,
    pub fallback: Option<ProviderProfile>,
    /// The id reports show (e.g. `ort-cpu:1.32.0`).
    pub id: String,
    #[serde(default)]
    pub kv: lockstep_core::KvPrecision,
    #[serde(default = "yes")]
    pub window_cache: bool,
}

fn yes() -> bool {
    true
}

/// A loaded ONNX Runtime backend and the lines to show the user about it.
pub struct Loaded {
    pub backend: Arc<dyn Backend>,
    pub notes: Vec<String>,
}

/// Loads `model_dir` with `opts.library` on `choice`: in this process when no other ONNX
/// Runtime library is bound here, else in a host process. `id` names it in reports.
pub fn load(
    model_dir: &Path,
    opts: &OrtOptions,
    choice: &ProviderChoice,
    id: &str,
) -> Result<Loaded> {
    let always_host = std::env::var(ALWAYS_HOST_ENV).is_ok_and(|v| v == "1");
    let here = crate::runtime::loaded_library();
    let in_process = !always_host && here.is_none_or(|lib| lib == opts.library);
    if in_process {
        let mut backend = OrtBackend::load_with(model_dir, opts, choice)?;
        backend.info.id = id.to_string();
        let notes = backend
            .fallback()
            .into_iter()
            .chain(backend.cpu_nodes())
            .map(str::to_string)
            .collect();
        return Ok(Loaded {
            backend: Arc::new(backend),
            notes,
        });
    }
    let params = HostParams {
        model_dir: model_dir.to_path_buf(),
        library: opts.library.clone(),
        threads: opts.threads,
        package: opts.package.clone(),
        profile: choice.profile.clone(),
        fallback: choice.fallback.clone(),
        id: id.to_string(),
        kv: opts.kv,
        window_cache: opts.window_cache,
    };
    let command = HostCommand {
        program: host_program()?,
        args: Vec::new(),
        env: Vec::new(),
        label: id.to_string(),
    };
    let remote = RemoteBackend::spawn(&command, &params)?;
    let notes = remote.notes().to_vec();
    Ok(Loaded {
        backend: Arc::new(remote),
        notes,
    })
}

/// What the host process runs: reads its parameters, loads, serves until the pipe closes.
pub fn host_main() -> Result<()> {
    lockstep_remote::serve(|params| {
        let params: HostParams = serde_json::from_value(params)
            .map_err(|e| Error::Runtime(format!("the host's parameters are invalid: {e}")))?;
        let opts = OrtOptions {
            library: params.library,
            threads: params.threads,
            package: params.package,
            kv: params.kv,
            window_cache: params.window_cache,
        };
        let choice = ProviderChoice {
            profile: params.profile,
            fallback: params.fallback,
        };
        let mut backend = OrtBackend::load_with(&params.model_dir, &opts, &choice)?;
        backend.info.id = params.id;
        let notes = backend
            .fallback()
            .into_iter()
            .chain(backend.cpu_nodes())
            .map(str::to_string)
            .collect();
        Ok((Arc::new(backend) as Arc<dyn Backend>, notes))
    })
}

/// Finds `lockstep-ort-host`: `$LOCKSTEP_ORT_HOST`, else next to this executable (where
/// cargo and installers put it), else one directory up (test binaries live in `deps/`),
/// else on `PATH`.
pub fn host_program() -> Result<PathBuf> {
    let name = format!("{HOST_PROGRAM}{}", std::env::consts::EXE_SUFFIX);
    if let Some(path) = std::env::var_os(HOST_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(Error::Runtime(format!(
            "{HOST_ENV} is set to {}, which does not exist; point it at the {HOST_PROGRAM} program or unset it",
            path.display()
        )));
    }
    let exe = std::env::current_exe().ok();
    let dirs = exe
        .iter()
        .flat_map(|e| e.parent())
        .flat_map(|d| [Some(d.to_path_buf()), d.parent().map(Path::to_path_buf)])
        .flatten()
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()),
        );
    for dir in dirs {
        let candidate = dir.join(&name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Runtime(format!(
        "this needs a second ONNX Runtime library, which runs in the {HOST_PROGRAM} program, and it was not found next to {} or on PATH; build it with `cargo build --release -p lockstep-cli` (it is installed next to `lockstep`), or set {HOST_ENV}",
        exe.map(|e| e.display().to_string()).unwrap_or_else(|| "this program".into())
    )))
}

/// [`crate::providers_report`] for `library`, computed in a host process so that any number
/// of libraries can be asked from one process. One line of error on failure: the host's
/// own message.
pub fn providers_report_hosted(library: &Path) -> Result<crate::ProvidersReport> {
    let program = host_program()?;
    let out = std::process::Command::new(&program)
        .arg("--providers-report")
        .arg(library)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Runtime(format!("cannot start {}: {e}", program.display())))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let line = msg
            .lines()
            .rev()
            .find(|l| l.starts_with("lockstep-ort-host:"))
            .map(|l| {
                l.trim_start_matches("lockstep-ort-host:")
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|| format!("{HOST_PROGRAM} exited with {}", out.status));
        return Err(Error::Runtime(line));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(json).map_err(|e| {
        Error::Runtime(format!(
            "{HOST_PROGRAM} answered with an unreadable report: {e}"
        ))
    })
}
