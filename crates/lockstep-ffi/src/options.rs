//! Generation options and cancel tokens.

use std::ffi::c_char;

use lockstep::{CancelToken, GenerateOptions};

use crate::error::{guard, guard_quiet, handle, str_arg, Failure, Result};
use crate::LockstepStatus;

/// The generation loop's options: token limit, sampling, stop strings, a cancel token.
/// Values are checked when a generation starts, with the loop's own messages.
pub struct LockstepOptions {
    pub(crate) options: GenerateOptions,
    pub(crate) cancel: Option<CancelToken>,
}

/// Stops a running generation from any thread; see `lockstep_options_set_cancel`.
pub struct LockstepCancel {
    pub(crate) token: CancelToken,
}

/// New options with the loop's defaults: 256 new tokens, greedy (temperature 0), top-p 1,
/// min-p 0, no top-k, repetition penalty 1, seed 0, no stop strings, no cancel token.
/// Free with `lockstep_options_free`. NULL only if lockstep failed internally.
#[no_mangle]
pub extern "C" fn lockstep_options_new() -> *mut LockstepOptions {
    let mut out = std::ptr::null_mut();
    guard_quiet(|| {
        out = Box::into_raw(Box::new(LockstepOptions {
            options: GenerateOptions::new(),
            cancel: None,
        }));
    });
    out
}

/// # Safety
/// `options` is NULL or live options, not used by any other call now or later.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_free(options: *mut LockstepOptions) {
    guard_quiet(|| {
        if !options.is_null() {
            drop(Box::from_raw(options));
        }
    })
}

/// Runs `f` on the options behind `p`.
///
/// # Safety
/// `p` is NULL or live options used by no other call now.
unsafe fn edit(
    p: *mut LockstepOptions,
    f: impl FnOnce(&mut LockstepOptions) -> Result<()>,
) -> LockstepStatus {
    guard(|| {
        let o = p
            .as_mut()
            .ok_or_else(|| Failure::new(LockstepStatus::NullArgument, "options is NULL"))?;
        f(o)
    })
}

/// Most tokens to generate (at least 1; an EOS counts). Default 256.
///
/// # Safety
/// `options` is live options used by no other call now.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_set_max_new_tokens(
    options: *mut LockstepOptions,
    value: usize,
) -> LockstepStatus {
    edit(options, |o| {
        o.options = std::mem::take(&mut o.options).max_new_tokens(value);
        Ok(())
    })
}

/// Sampling temperature; 0 (the default) is greedy.
///
/// # Safety
/// `options` is live options used by no other call now.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_set_temperature(
    options: *mut LockstepOptions,
    value: f32,
) -> LockstepStatus {
    edit(options, |o| {
        o.options = std::mem::take(&mut o.options).temperature(value);
        Ok(())
    })
}

/// Keep the smallest set of tokens whose probability reaches p (0 < p <= 1; default 1).
///
/// # Safety
/// `options` is live options used by no other call now.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_set_top_p(
    options: *mut LockstepOptions,
    value: f32,
) -> LockstepStatus {
    edit(options, |o| {
        o.options = std::mem::take(&mut o.options).top_p(value);
        Ok(())
    })
}

/// Drop tokens less likely than min_p times the most likely one (0 <= p <= 1; default 0).
///
/// # Safety
/// `options` is live options used by no other call now.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_set_min_p(
    options: *mut LockstepOptions,
    value: f32,
) -> LockstepStatus {
    edit(options, |o| {
        o.options = std::mem::take(&mut o.options).min_p(value);
        Ok(())
    })
}

/// Penalize tokens already seen (Hugging Face rule; 1, the default, is off).
///
/// # Safety
/// `options` is live options used by no other call now.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_set_repetition_penalty(
    options: *mut LockstepOptions,
    value: f32,
) -> LockstepStatus {
    edit(options, |o| {
        o.options = std::mem::take(&mut o.options).repetition_penalty(value);
        Ok(())
    })
}

/// Seed of the sampler's random numbers: same seed and logits, same tokens. Default 0.
///
/// # Safety
/// `options` is live options used by no other call now.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_set_seed(
    options: *mut LockstepOptions,
    value: u64,
) -> LockstepStatus {
    edit(options, |o| {
        o.options = std::mem::take(&mut o.options).seed(value);
        Ok(())
    })
}

/// Keep only the `k` most likely tokens when sampling; 0 turns top-k off.
///
/// # Safety
/// `options` is live options used by no other call now.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_set_top_k(
    options: *mut LockstepOptions,
    k: usize,
) -> LockstepStatus {
    edit(options, |o| {
        o.options.sampling.top_k = (k > 0).then_some(k);
        Ok(())
    })
}

/// Speculative decoding by prompt lookup with drafts of up to `max_draft` tokens (the
/// length adapts); 0 (the default) turns it off. Greedy output equals plain decoding's up
/// to near-ties that a many-position step's numerics can flip; sampling keeps its
/// distribution. Checked when a generation starts.
///
/// # Safety
/// `options` is live options used by no other call now.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_set_speculation(
    options: *mut LockstepOptions,
    max_draft: usize,
) -> LockstepStatus {
    edit(options, |o| {
        o.options.speculation =
            (max_draft > 0).then(|| lockstep::Speculation::default().max_draft(max_draft));
        Ok(())
    })
}

/// Adds a stop string: generation ends when it appears; it is not part of the text.
///
/// # Safety
/// `options` is live options used by no other call now; `stop` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_add_stop(
    options: *mut LockstepOptions,
    stop: *const c_char,
) -> LockstepStatus {
    edit(options, |o| {
        let s = str_arg(stop, "stop")?;
        o.options = std::mem::take(&mut o.options).stop(s);
        Ok(())
    })
}

/// Generations run with these options stop when `cancel` is triggered (checked before each
/// model step; the run then ends normally with stop reason "cancelled"). NULL removes it.
/// The options hold their own reference: `cancel` may be freed before them.
///
/// # Safety
/// `options` is live options used by no other call now; `cancel` NULL or a live token.
#[no_mangle]
pub unsafe extern "C" fn lockstep_options_set_cancel(
    options: *mut LockstepOptions,
    cancel: *const LockstepCancel,
) -> LockstepStatus {
    edit(options, |o| {
        o.cancel = cancel.as_ref().map(|c| c.token.clone());
        Ok(())
    })
}

/// A new cancel token, not triggered. Free with `lockstep_cancel_free`.
/// NULL only if lockstep failed internally.
#[no_mangle]
pub extern "C" fn lockstep_cancel_new() -> *mut LockstepCancel {
    let mut out = std::ptr::null_mut();
    guard_quiet(|| {
        out = Box::into_raw(Box::new(LockstepCancel {
            token: CancelToken::new(),
        }));
    });
    out
}

/// Triggers the token; any thread may call it, at any time. A triggered token stays
/// triggered: make a new one for the next generation.
///
/// # Safety
/// `cancel` is a live token.
#[no_mangle]
pub unsafe extern "C" fn lockstep_cancel_trigger(cancel: *const LockstepCancel) -> LockstepStatus {
    guard(|| {
        handle(cancel, "cancel")?.token.cancel();
        Ok(())
    })
}

/// # Safety
/// `cancel` is NULL or a live token, not used by any other call now or later.
#[no_mangle]
pub unsafe extern "C" fn lockstep_cancel_free(cancel: *mut LockstepCancel) {
    guard_quiet(|| {
        if !cancel.is_null() {
            drop(Box::from_raw(cancel));
        }
    })
}
