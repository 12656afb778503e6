//! The few llama.cpp calls this backend makes, as owned, safe Rust types over
//! `llama-cpp-sys-2`'s generated bindings.
//!
//! Not `llama-cpp-2`'s safe layer: it depends on `llama-cpp-sys-2` with default features,
//! which compiles llama.cpp's `common` library (argument parsing, chat templates, JSON,
//! downloads; about a third of the C++), and none of it is needed to run a step. On CI's two
//! cores that is minutes per build.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::OnceLock;

use llama_cpp_sys_2 as sys;
use lockstep_core::{Error, Result};

/// llama.cpp's process-wide state: initialized once, logs sent to `tracing`.
pub(crate) fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: the callback is a plain function valid for the whole process; the user
        // data pointer is unused.
        unsafe {
            sys::llama_log_set(Some(log_to_tracing), std::ptr::null_mut());
            sys::llama_backend_init();
        }
    });
}

/// llama.cpp prints every metadata key and tensor count while loading: that goes to
/// `tracing` at debug level (RUST_LOG=lockstep_llamacpp=debug shows it). So do its
/// warnings: they are about the full-size sliding-window cache chosen here and token types
/// it corrects in the vocabulary, never about a step's result (a failed step returns an
/// error code, which becomes an error). Its errors stay errors.
unsafe extern "C" fn log_to_tracing(
    level: sys::ggml_log_level,
    text: *const c_char,
    _user: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid during the call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    match level {
        sys::GGML_LOG_LEVEL_ERROR => tracing::error!(target: "lockstep_llamacpp", "{text}"),
        _ => tracing::debug!(target: "lockstep_llamacpp", "{text}"),
    }
}

/// The SIMD features ggml was compiled for, as llama.cpp reports them.
pub(crate) fn system_info() -> String {
    init();
    // SAFETY: returns a pointer to a static, NUL-terminated string.
    unsafe { CStr::from_ptr(sys::llama_print_system_info()) }
        .to_string_lossy()
        .into_owned()
}

/// A loaded `llama_model`.
pub(crate) struct Model(NonNull<sys::llama_model>);

// SAFETY: llama.cpp's model is read-only after loading, except during context creation,
// which `LlamaCppBackend` serializes.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

impl Model {
    pub(crate) fn load(path: &Path) -> Result<Self> {
        init();
        let c_path = path
            .to_str()
            .and_then(|p| CString::new(p).ok())
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{}: llama.cpp needs a UTF-8 path without NUL bytes",
                    path.display()
                ))
            })?;
        // SAFETY: default params, a valid C string; a null result is an error.
        let ptr = unsafe {
            let params = sys::llama_model_default_params();
            sys::llama_model_load_from_file(c_path.as_ptr(), params)
        };
        NonNull::new(ptr).map(Model).ok_or_else(|| {
            Error::Model(format!(
                "llama.cpp cannot load {}; RUST_LOG=lockstep_llamacpp=debug shows its log",
                path.display()
            ))
        })
    }

    pub(crate) fn n_vocab(&self) -> i32 {
        // SAFETY: a live model; the vocabulary belongs to it.
        unsafe { sys::llama_vocab_n_tokens(sys::llama_model_get_vocab(self.0.as_ptr())) }
    }

    pub(crate) fn n_layer(&self) -> i32 {
        // SAFETY: a live model.
        unsafe { sys::llama_model_n_layer(self.0.as_ptr()) }
    }

    pub(crate) fn n_embd(&self) -> i32 {
        // SAFETY: a live model.
        unsafe { sys::llama_model_n_embd(self.0.as_ptr()) }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: owned; every context on it holds an `Arc` to it and is gone by now.
        unsafe { sys::llama_model_free(self.0.as_ptr()) }
    }
}

/// What a context is created with.
pub(crate) struct ContextParams {
    pub n_ctx: u32,
    pub n_batch: u32,
    pub threads: i32,
}

/// The default KV cache type of a context, for reports.
pub(crate) fn default_kv_type() -> String {
    // SAFETY: plain value.
    let params = unsafe { sys::llama_context_default_params() };
    // SAFETY: ggml_type_name returns a static string for every valid type.
    unsafe { CStr::from_ptr(sys::ggml_type_name(params.type_k)) }
        .to_string_lossy()
        .into_owned()
}

/// A `llama_context`: one KV cache on a model.
pub(crate) struct Context(NonNull<sys::llama_context>);

// SAFETY: a context may be used from any thread, one at a time (`&mut self` methods).
unsafe impl Send for Context {}

impl Context {
    /// # Safety
    /// `model` must outlive the context, and no other context may be created on it at
    /// the same time.
    pub(crate) unsafe fn new(model: &Model, p: &ContextParams) -> Option<Self> {
        // SAFETY: llama.cpp's defaults, then the fields we set; the caller keeps the model
        // alive and serializes creation.
        let ptr = unsafe {
            let mut params = sys::llama_context_default_params();
            params.n_ctx = p.n_ctx;
            params.n_batch = p.n_batch;
            params.n_ubatch = p.n_batch;
            params.n_seq_max = 1;
            params.n_threads = p.threads;
            params.n_threads_batch = p.threads;
            // Keep every position on the sliding layers, so that a session can rewind.
            params.swa_full = true;
            params.no_perf = true;
            sys::llama_init_from_model(model.0.as_ptr(), params)
        };
        NonNull::new(ptr).map(Context)
    }

    /// Runs `batch`; llama.cpp's return code on failure.
    pub(crate) fn decode(&mut self, batch: &Batch) -> std::result::Result<(), i32> {
        // SAFETY: a live context and a batch whose arrays hold `n_tokens` entries.
        match unsafe { sys::llama_decode(self.0.as_ptr(), batch.raw) } {
            0 => Ok(()),
            code => Err(code),
        }
    }

    /// The logits of output `i` of the last decode (`n_vocab` floats), or `None` if that
    /// position asked for none.
    pub(crate) fn logits(&mut self, i: i32, n_vocab: usize) -> Option<&[f32]> {
        // SAFETY: llama.cpp returns null for an invalid index, else a row of n_vocab floats
        // that stays valid until the next decode (which needs `&mut self`).
        unsafe {
            let ptr = sys::llama_get_logits_ith(self.0.as_ptr(), i);
            (!ptr.is_null()).then(|| std::slice::from_raw_parts(ptr, n_vocab))
        }
    }

    /// Removes positions `from..` of sequence `seq`; false if llama.cpp cannot.
    pub(crate) fn remove_from(&mut self, seq: i32, from: i32) -> bool {
        // SAFETY: a live context; its memory belongs to it.
        unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.0.as_ptr()), seq, from, -1) }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: owned.
        unsafe { sys::llama_free(self.0.as_ptr()) }
    }
}

/// A `llama_batch` of token ids for one sequence.
pub(crate) struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
}

// SAFETY: plain heap arrays owned by the batch.
unsafe impl Send for Batch {}

impl Batch {
    pub(crate) fn new(capacity: usize) -> Self {
        // SAFETY: allocates `capacity` entries of every array, one sequence id each.
        let raw = unsafe { sys::llama_batch_init(capacity as i32, 0, 1) };
        Self { raw, capacity }
    }

    pub(crate) fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    /// Appends `token` at `pos` of sequence `seq`; `output`: compute its logits.
    pub(crate) fn push(&mut self, token: i32, pos: i32, seq: i32, output: bool) {
        let i = self.raw.n_tokens as usize;
        assert!(
            i < self.capacity,
            "batch of {} tokens is full",
            self.capacity
        );
        // SAFETY: i < capacity, the size every array was allocated with.
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq;
            *self.raw.logits.add(i) = i8::from(output);
        }
        self.raw.n_tokens += 1;
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by llama_batch_init.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}
