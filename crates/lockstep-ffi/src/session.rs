//! Sessions (one conversation's KV cache) and generation with a streaming callback.

use std::ffi::{c_char, c_void};
use std::sync::{Mutex, MutexGuard, TryLockError};

use futures::StreamExt;
use lockstep::{CancelToken, Event, Generator, Output, Prompt, Session, Summary};

use crate::error::{guard, guard_quiet, handle, out_ptr, owned_string, str_arg, Failure, Result};
use crate::model::LockstepBackend;
use crate::options::LockstepOptions;
use crate::LockstepStatus;

/// One sequence's KV cache on a backend, with a fixed token budget. One call at a time.
pub struct LockstepSession {
    generator: Generator,
    session: Mutex<Box<dyn Session>>,
}

impl LockstepSession {
    /// The session for one call; a concurrent call gets Busy instead of waiting.
    fn lock(&self) -> Result<MutexGuard<'_, Box<dyn Session>>> {
        self.session.try_lock().map_err(|e| match e {
            TryLockError::WouldBlock => Failure::new(
                LockstepStatus::Busy,
                "the session is in use by another call (another thread, or its own callback); use one session per thread",
            ),
            TryLockError::Poisoned(_) => Failure::new(
                LockstepStatus::Runtime,
                "the session is unusable after an internal error in an earlier call; free it and create a new one",
            ),
        })
    }
}

/// Called once per generated token, on the thread that called generate, with the token's
/// id and the text it released (`text_len` bytes of UTF-8, NUL-terminated, possibly empty:
/// a character still incomplete, text that may be the start of a stop string, or EOS;
/// it may itself contain NUL bytes, so use `text_len`). The text is borrowed for the call.
/// Return 0 to go on, anything else to stop: the run then ends with stop reason
/// "cancelled". Must not unwind (C++ exceptions, longjmp) and must not free the session.
pub type LockstepTokenCallback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        token_id: u32,
        text: *const c_char,
        text_len: usize,
    ) -> i32,
>;

/// A new, empty session whose KV budget is `max_tokens`: prompt plus generated tokens,
/// over every generation on it, never exceed it (a generation that would is refused with
/// LOCKSTEP_STATUS_CONTEXT_OVERFLOW before any work). Free with `lockstep_session_free`.
///
/// # Safety
/// `backend` is a live backend; `out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lockstep_session_new(
    backend: *const LockstepBackend,
    max_tokens: usize,
    out: *mut *mut LockstepSession,
) -> LockstepStatus {
    guard(|| {
        let out = out_ptr(out, "out")?;
        let generator = handle(backend, "backend")?.generator.clone();
        if max_tokens == 0 {
            return Err(Failure::invalid(
                "max_tokens is 0: a session needs a KV budget of at least one token",
            ));
        }
        let session = pollster::block_on(generator.session(max_tokens))?;
        *out = Box::into_raw(Box::new(LockstepSession {
            generator,
            session: Mutex::new(session),
        }));
        Ok(())
    })
}

/// Tokens the session's KV cache holds now.
///
/// # Safety
/// `session` is a live session; `len_out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lockstep_session_len(
    session: *const LockstepSession,
    len_out: *mut usize,
) -> LockstepStatus {
    guard(|| {
        let out = len_out.as_mut().ok_or_else(|| {
            Failure::new(
                LockstepStatus::NullArgument,
                "len_out (the out-pointer) is NULL",
            )
        })?;
        *out = 0;
        *out = handle(session, "session")?.lock()?.len();
        Ok(())
    })
}

/// The KV budget the session was created with.
///
/// # Safety
/// `session` is a live session; `max_out` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lockstep_session_max_tokens(
    session: *const LockstepSession,
    max_out: *mut usize,
) -> LockstepStatus {
    guard(|| {
        let out = max_out.as_mut().ok_or_else(|| {
            Failure::new(
                LockstepStatus::NullArgument,
                "max_out (the out-pointer) is NULL",
            )
        })?;
        *out = 0;
        *out = handle(session, "session")?.lock()?.max_tokens();
        Ok(())
    })
}

/// Rewinds the session: forgets every token from position `len` on, so that the next
/// generation continues after the first `len` tokens (0 empties it). `len` past the
/// session's length is LOCKSTEP_STATUS_INVALID_INPUT.
///
/// # Safety
/// `session` is a live session.
#[no_mangle]
pub unsafe extern "C" fn lockstep_session_truncate(
    session: *mut LockstepSession,
    len: usize,
) -> LockstepStatus {
    guard(|| {
        let mut s = handle(session, "session")?.lock()?;
        if len > s.len() {
            return Err(Failure::invalid(format!(
                "cannot truncate to {len} tokens: the session holds {}",
                s.len()
            )));
        }
        s.truncate(len)?;
        Ok(())
    })
}

/// Drives one generation, streaming each token to `callback`; the collected output.
fn generate(
    session: &LockstepSession,
    prompt: Prompt,
    options: Option<&LockstepOptions>,
    callback: LockstepTokenCallback,
    user_data: *mut c_void,
) -> Result<Output> {
    let mut s = session.lock()?;
    let (mut opts, user_cancel) = match options {
        Some(o) => (o.options.clone(), o.cancel.clone()),
        None => (lockstep::GenerateOptions::new(), None),
    };
    // The loop watches one token; the caller's token and the callback's answer both
    // trigger it, between steps.
    let stop = CancelToken::new();
    opts = opts.cancel_token(stop.clone());
    let mut stream = session
        .generator
        .generate_stream(s.as_mut(), prompt, opts)?;
    let (mut text, mut tokens) = (String::new(), Vec::new());
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if user_cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            stop.cancel();
        }
        match pollster::block_on(stream.next()) {
            Some(Ok(Event::Token { id, text: t })) => {
                tokens.push(id);
                text.push_str(&t);
                if let Some(cb) = callback {
                    buf.clear();
                    buf.extend_from_slice(t.as_bytes());
                    buf.push(0);
                    // SAFETY: the caller vouches for the callback; the text outlives the call.
                    let go_on =
                        unsafe { cb(user_data, id, buf.as_ptr().cast::<c_char>(), t.len()) };
                    if go_on != 0 {
                        stop.cancel();
                    }
                }
            }
            Some(Ok(Event::Done(stats))) => {
                return Ok(Output {
                    text,
                    tokens,
                    stats,
                })
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(Failure::new(
                    LockstepStatus::Runtime,
                    "generation ended without its final statistics",
                ))
            }
        }
    }
}

/// The shared tail of both generate functions.
///
/// # Safety
/// As for `lockstep_session_generate`.
unsafe fn generate_into(
    session: *mut LockstepSession,
    prompt: impl FnOnce() -> Result<Prompt>,
    options: *const LockstepOptions,
    callback: LockstepTokenCallback,
    user_data: *mut c_void,
    summary_json_out: *mut *mut c_char,
) -> LockstepStatus {
    guard(|| {
        let summary_out = match summary_json_out.is_null() {
            true => None,
            false => Some(out_ptr(summary_json_out, "summary_json_out")?),
        };
        let session = handle(session, "session")?;
        let prompt = prompt()?;
        let output = generate(session, prompt, options.as_ref(), callback, user_data)?;
        if let Some(out) = summary_out {
            let info = session.generator.backend().info();
            *out = owned_string(Summary::new(&output, info).to_json());
        }
        Ok(())
    })
}

/// Generates from `prompt` after whatever the session already holds (an empty session
/// gets the BOS id first; a non-empty one continues without it), streaming every token to
/// `callback` (may be NULL). Every check (options, empty prompt, KV budget) happens before
/// any model work. `options` may be NULL (defaults: 256 tokens, greedy).
///
/// When `summary_json_out` is not NULL, it receives the run's summary as JSON, freed with
/// `lockstep_string_free`: `{"text", "tokens": [...], "prompt_tokens", "generated_tokens",
/// "time_to_first_token_ms", "prefill_ms", "decode_ms", "prefill_tokens_per_second",
/// "decode_tokens_per_second", "stop": {"reason": "eos"|"stop_string"|"max_tokens"|
/// "cancelled", ...}, "backend": {...}}`.
///
/// Afterwards the session holds the prompt and every generated token but the last one
/// (a sampled token is fed by the next step); a failed step leaves it as far as it got.
///
/// # Safety
/// `session` is a live session; `prompt` a NUL-terminated string; `options` NULL or live;
/// `callback` NULL or a function as `LockstepTokenCallback` describes, given `user_data`;
/// `summary_json_out` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lockstep_session_generate(
    session: *mut LockstepSession,
    prompt: *const c_char,
    options: *const LockstepOptions,
    callback: LockstepTokenCallback,
    user_data: *mut c_void,
    summary_json_out: *mut *mut c_char,
) -> LockstepStatus {
    let prompt = || Ok(Prompt::Text(str_arg(prompt, "prompt")?.to_string()));
    generate_into(
        session,
        prompt,
        options,
        callback,
        user_data,
        summary_json_out,
    )
}

/// `lockstep_session_generate` with the prompt as `len` token ids, fed as given (no BOS
/// is added).
///
/// # Safety
/// As for `lockstep_session_generate`; `ids` points to `len` readable ids (NULL only
/// when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn lockstep_session_generate_tokens(
    session: *mut LockstepSession,
    ids: *const u32,
    len: usize,
    options: *const LockstepOptions,
    callback: LockstepTokenCallback,
    user_data: *mut c_void,
    summary_json_out: *mut *mut c_char,
) -> LockstepStatus {
    let prompt = || {
        if len == 0 {
            return Ok(Prompt::Tokens(Vec::new()));
        }
        if ids.is_null() {
            return Err(Failure::new(LockstepStatus::NullArgument, "ids is NULL"));
        }
        Ok(Prompt::Tokens(
            std::slice::from_raw_parts(ids, len).to_vec(),
        ))
    };
    generate_into(
        session,
        prompt,
        options,
        callback,
        user_data,
        summary_json_out,
    )
}

/// Frees a session and its KV cache. NULL is ignored.
///
/// # Safety
/// `session` is NULL or a live session, not used by any other call now or later (not
/// from inside its own callback either).
#[no_mangle]
pub unsafe extern "C" fn lockstep_session_free(session: *mut LockstepSession) {
    guard_quiet(|| {
        if !session.is_null() {
            drop(Box::from_raw(session));
        }
    })
}
