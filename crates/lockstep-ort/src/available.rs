//! What the loaded ONNX Runtime library can run: the execution providers it was built with
//! (`GetAvailableProviders`), and whether a profile's provider registers here.

use std::ffi::{c_char, c_int, CStr};
use std::path::Path;

use lockstep_core::{Error, Result};
use ort::environment::Environment;
use ort::session::builder::AutoDevicePolicy;

use crate::profile::{EpKind, ProviderProfile};

/// Whether a profile can run with the loaded library on this machine.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Availability {
    /// The library was built with the profile's provider.
    pub built_in: bool,
    /// The provider also registered on a session here.
    pub runnable: bool,
    /// Why not, in a few words with what to do; empty when runnable.
    pub reason: String,
}

/// The execution providers the loaded library was built with, in its order.
/// `ort` only exposes a yes/no per provider, so this calls the C API directly.
pub fn available_providers() -> Result<Vec<String>> {
    let api = ort::api();
    let mut list: *mut *mut c_char = std::ptr::null_mut();
    let mut len: c_int = 0;
    // SAFETY: the out-pointers are valid; the list is released below with its length.
    let status = unsafe { (api.GetAvailableProviders)(&mut list, &mut len) };
    check(status, "GetAvailableProviders")?;
    if list.is_null() {
        return Ok(Vec::new());
    }
    let names = (0..len as usize)
        .map(|i| {
            // SAFETY: ONNX Runtime returned `len` NUL-terminated strings.
            unsafe { CStr::from_ptr(*list.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // SAFETY: releases exactly what GetAvailableProviders returned.
    let status = unsafe { (api.ReleaseAvailableProviders)(list, len) };
    check(status, "ReleaseAvailableProviders")?;
    Ok(names)
}

fn check(status: ort::sys::OrtStatusPtr, what: &str) -> Result<()> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status carries a message; it is released after copying it.
    let msg = unsafe { CStr::from_ptr((api.GetErrorMessage)(status.0)) }
        .to_string_lossy()
        .into_owned();
    unsafe { (api.ReleaseStatus)(status.0) };
    Err(Error::Runtime(format!("ONNX Runtime {what}: {msg}")))
}

/// The library's own version ("1.31.1", from `OrtGetApiBase()->GetVersionString()`):
/// the build-info string that `ort::info()` returns says "git-branch=HEAD" on 1.31.
pub fn library_version(library: &Path) -> String {
    fn read(library: &Path) -> Option<String> {
        // SAFETY: `ort` already loaded this library, so opening it again only takes a
        // reference (no initializers run); OrtGetApiBase has this signature in every
        // ONNX Runtime, and the version string is static, copied before the close.
        unsafe {
            let lib = libloading::Library::new(library).ok()?;
            let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
                lib.get(b"OrtGetApiBase").ok()?;
            let base = get();
            if base.is_null() {
                return None;
            }
            let v = ((*base).GetVersionString)();
            (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
        }
    }
    read(library).unwrap_or_else(crate::runtime::version)
}

/// What to do to get a provider that this library lacks: the pinned runtimes that carry it
/// here, else what would.
pub fn how_to_get(profile: &ProviderProfile) -> String {
    let carriers: Vec<String> = lockstep_fetch::manifest::RuntimeManifest::builtins()
        .into_iter()
        .filter(|r| r.carries_here(profile.ep_name()))
        .map(|r| r.id)
        .collect();
    if !carriers.is_empty() {
        return format!(
            "runtimes that carry it here: {} (`{}` picks the first; `lockstep fetch --runtime ID`)",
            carriers.join(", "),
            profile.backend_id()
        );
    }
    match profile.kind() {
        EpKind::Cpu(_) => "every ONNX Runtime has it".into(),
        EpKind::CoreMl(_) => {
            "CoreML needs macOS on Apple silicon (the official macOS arm64 onnxruntime wheel carries it)".into()
        }
        EpKind::Cuda(_) => {
            "CUDA needs Linux x86-64 (onnxruntime-gpu), an NVIDIA GPU, CUDA 13 and cuDNN 9".into()
        }
        EpKind::Xnnpack(_) => {
            "no registry package ships it: point --ort-library at an ONNX Runtime built with --use_xnnpack".into()
        }
        EpKind::WebGpu(_) => {
            "no pinned runtime carries WebGPU for this platform (npm onnxruntime-node covers linux x86-64/arm64, macOS arm64, Windows x86-64)".into()
        }
        EpKind::OpenVino(_) => {
            "no pinned runtime carries OpenVINO for this platform (PyPI onnxruntime-openvino covers linux x86-64)".into()
        }
    }
}

/// Checks `profile` against the library behind `env`: built in, then registered on a
/// throwaway session builder (a CUDA build without a GPU or its libraries fails here).
pub fn availability(profile: &ProviderProfile, env: &Environment) -> Availability {
    let providers = match available_providers() {
        Ok(p) => p,
        Err(e) => {
            return Availability {
                built_in: false,
                runnable: false,
                reason: e.to_string(),
            }
        }
    };
    let built_in = profile.is_cpu() || providers.iter().any(|p| p == profile.ep_name());
    if !built_in {
        return Availability {
            built_in,
            runnable: false,
            reason: format!(
                "this ONNX Runtime was not built with {} (it has {}); {}",
                profile.ep_name(),
                providers.join(", "),
                how_to_get(profile)
            ),
        };
    }
    let registered = profile.dispatch(None).and_then(|ep| {
        ort::session::Session::builder(env)
            .and_then(|b| {
                b.with_auto_device(AutoDevicePolicy::PreferCPU)
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_execution_providers([ep]).map_err(Into::into))
            .map(|_| ())
            .map_err(|e| Error::Runtime(e.to_string()))
    });
    // A GPU provider registers without a device and fails only when a session starts it
    // (Dawn's "No supported adapters"): start one on a one-node model to know.
    let registered = registered.and_then(|()| {
        if profile.is_cpu() {
            return Ok(());
        }
        let ep = profile.dispatch(None)?;
        ort::session::Session::builder(env)
            .and_then(|b| {
                b.with_auto_device(AutoDevicePolicy::PreferCPU)
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_execution_providers([ep]).map_err(Into::into))
            .and_then(|mut b| b.commit_from_memory(&probe_model()))
            .map(|_| ())
            .map_err(|e| Error::Runtime(e.to_string()))
    });
    match registered {
        Ok(()) => Availability {
            built_in,
            runnable: true,
            reason: String::new(),
        },
        Err(e) => Availability {
            built_in,
            runnable: false,
            reason: format!(
                "{} is built in but did not register here: {}; {}",
                profile.ep_name(),
                e.to_string().lines().next().unwrap_or(""),
                how_to_get(profile)
            ),
        },
    }
}

/// The loaded library and what each profile can do with it (`lockstep providers`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProvidersReport {
    pub library: std::path::PathBuf,
    pub version: String,
    /// `GetAvailableProviders`: the providers the library was built with.
    pub built_with: Vec<String>,
    pub profiles: Vec<(ProviderProfile, Availability)>,
}

/// Loads `library` and checks every built-in profile, then `extra` (names or files).
pub fn providers_report(library: &Path, extra: &[ProviderProfile]) -> Result<ProvidersReport> {
    let env = crate::runtime::environment(library)?;
    let built_with = available_providers()?;
    let profiles = ProviderProfile::builtins()
        .into_iter()
        .chain(extra.iter().cloned())
        .map(|p| {
            let a = availability(&p, env);
            (p, a)
        })
        .collect();
    Ok(ProvidersReport {
        library: library.to_path_buf(),
        version: library_version(library),
        built_with,
        profiles,
    })
}

/// A one-node model (y = x + x, f32 [4]) that any provider can take: starting a session on
/// it starts the provider's device.
fn probe_model() -> Vec<u8> {
    use lockstep_model::onnx::{data_type, Dim, GraphBuilder, ModelProto, OperatorSetIdProto};
    let mut g = GraphBuilder::default();
    g.input("x", data_type::FLOAT, vec![Dim::Fixed(4)]);
    g.output("y", data_type::FLOAT, vec![Dim::Fixed(4)]);
    g.node("Add", "", &["x", "x"], &["y"], vec![]);
    let model = ModelProto {
        ir_version: 10,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 21,
        }],
        producer_name: "lockstep".into(),
        graph: Some(g.finish("probe", Vec::new())),
        ..Default::default()
    };
    prost::Message::encode_to_vec(&model)
}
