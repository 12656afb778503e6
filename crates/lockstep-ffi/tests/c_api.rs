//! The C ABI called as C calls it (raw pointers, status codes), on the tiny model: every
//! error path the facade has must come back as a status and one readable line, never a
//! panic and never a half-made object; streaming, cancel and rewind must do what the
//! header says.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::{null, null_mut};

use lockstep_ffi::*;

const MODEL: &str = "gemma3-tiny";

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(lockstep_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// Takes a string lockstep returned, and frees it.
fn take(s: *mut c_char) -> String {
    assert!(!s.is_null());
    let out = unsafe { CStr::from_ptr(s) }.to_str().unwrap().to_string();
    unsafe { lockstep_string_free(s) };
    out
}

struct Fixture {
    model: *mut LockstepModel,
    backend: *mut LockstepBackend,
}

impl Fixture {
    fn new() -> Self {
        let mut model = null_mut();
        let st = unsafe { lockstep_model_open(c(MODEL).as_ptr(), null(), &mut model) };
        assert_eq!(st, LockstepStatus::Ok, "{}", last_error());
        let mut backend = null_mut();
        let st = unsafe { lockstep_backend_open(model, c("ort-cpu").as_ptr(), &mut backend) };
        assert_eq!(st, LockstepStatus::Ok, "{}", last_error());
        Self { model, backend }
    }

    fn session(&self, max_tokens: usize) -> *mut LockstepSession {
        let mut s = null_mut();
        let st = unsafe { lockstep_session_new(self.backend, max_tokens, &mut s) };
        assert_eq!(st, LockstepStatus::Ok, "{}", last_error());
        s
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        unsafe {
            lockstep_backend_free(self.backend);
            lockstep_model_free(self.model);
        }
    }
}

fn options(max_new_tokens: usize) -> *mut LockstepOptions {
    let o = lockstep_options_new();
    assert!(!o.is_null());
    assert_eq!(
        unsafe { lockstep_options_set_max_new_tokens(o, max_new_tokens) },
        LockstepStatus::Ok
    );
    o
}

/// Generates and returns the status, the summary (when OK) and the streamed pieces.
fn generate(
    session: *mut LockstepSession,
    prompt: &str,
    opts: *const LockstepOptions,
) -> (
    LockstepStatus,
    Option<serde_json::Value>,
    Vec<(u32, String)>,
) {
    unsafe extern "C" fn push(ud: *mut c_void, id: u32, text: *const c_char, len: usize) -> i32 {
        let pieces = &mut *(ud as *mut Vec<(u32, String)>);
        let bytes = std::slice::from_raw_parts(text.cast::<u8>(), len);
        assert_eq!(*text.add(len), 0, "the text is NUL-terminated");
        pieces.push((id, String::from_utf8(bytes.to_vec()).unwrap()));
        0
    }
    let mut pieces: Vec<(u32, String)> = Vec::new();
    let mut summary = null_mut();
    let st = unsafe {
        lockstep_session_generate(
            session,
            c(prompt).as_ptr(),
            opts,
            Some(push),
            (&mut pieces as *mut Vec<(u32, String)>).cast(),
            &mut summary,
        )
    };
    let summary = (st == LockstepStatus::Ok).then(|| serde_json::from_str(&take(summary)).unwrap());
    (st, summary, pieces)
}

fn session_len(s: *const LockstepSession) -> usize {
    let mut n = usize::MAX;
    assert_eq!(
        unsafe { lockstep_session_len(s, &mut n) },
        LockstepStatus::Ok
    );
    n
}

#[test]
fn a_missing_model_is_a_model_error_and_leaves_null() {
    // Not null, so that the test sees the call write null on failure.
    let mut model = std::ptr::dangling_mut::<LockstepModel>();
    let st = unsafe { lockstep_model_open(c("/no/such/dir").as_ptr(), null(), &mut model) };
    assert_eq!(st, LockstepStatus::Model);
    assert!(model.is_null());
    let msg = last_error();
    assert!(
        msg.contains("'/no/such/dir' is neither a model directory nor a known model"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn bad_arguments_are_statuses_not_crashes() {
    let mut model = null_mut();
    assert_eq!(
        unsafe { lockstep_model_open(null(), null(), &mut model) },
        LockstepStatus::NullArgument
    );
    assert_eq!(last_error(), "name_or_dir is NULL");
    assert_eq!(
        unsafe { lockstep_model_open(c(MODEL).as_ptr(), null(), null_mut()) },
        LockstepStatus::NullArgument
    );
    let invalid = [0xff_u8, 0xfe, 0];
    assert_eq!(
        unsafe { lockstep_model_open(invalid.as_ptr().cast(), null(), &mut model) },
        LockstepStatus::InvalidUtf8
    );
    let st = unsafe {
        lockstep_model_open(
            c(MODEL).as_ptr(),
            c(r#"{"threads": 2, "thread": 1}"#).as_ptr(),
            &mut model,
        )
    };
    assert_eq!(st, LockstepStatus::InvalidInput);
    assert!(
        last_error().contains("unknown field `thread`"),
        "{}",
        last_error()
    );
    assert!(model.is_null());

    let mut backend = null_mut();
    assert_eq!(
        unsafe { lockstep_backend_open(null(), c("ort-cpu").as_ptr(), &mut backend) },
        LockstepStatus::NullArgument
    );
    let mut s = null_mut();
    assert_eq!(
        unsafe { lockstep_session_new(null(), 16, &mut s) },
        LockstepStatus::NullArgument
    );
    assert_eq!(
        unsafe {
            lockstep_session_generate(
                null_mut(),
                c("x").as_ptr(),
                null(),
                None,
                null_mut(),
                null_mut(),
            )
        },
        LockstepStatus::NullArgument
    );
    assert_eq!(
        unsafe { lockstep_options_set_temperature(null_mut(), 1.0) },
        LockstepStatus::NullArgument
    );
    // Freeing NULL is allowed.
    unsafe {
        lockstep_model_free(null_mut());
        lockstep_backend_free(null_mut());
        lockstep_session_free(null_mut());
        lockstep_options_free(null_mut());
        lockstep_cancel_free(null_mut());
        lockstep_string_free(null_mut());
        lockstep_tokens_free(null_mut(), 0);
    }
}

#[test]
fn unknown_backend_and_over_budget_prompt() {
    let f = Fixture::new();
    let mut backend = std::ptr::dangling_mut::<LockstepBackend>();
    let st = unsafe { lockstep_backend_open(f.model, c("no-such-backend").as_ptr(), &mut backend) };
    assert_eq!(st, LockstepStatus::InvalidInput);
    assert!(backend.is_null());
    let msg = last_error();
    assert!(
        msg.contains("unknown backend 'no-such-backend'") && msg.contains("ort-cpu"),
        "{msg}"
    );

    let session = f.session(8);
    let opts = options(16);
    let (st, summary, pieces) = generate(session, "The three primary colors are", opts);
    assert_eq!(st, LockstepStatus::ContextOverflow);
    assert!(summary.is_none() && pieces.is_empty());
    // Freeing (or making) objects first does not lose the message.
    unsafe { lockstep_options_free(lockstep_options_new()) };
    let msg = last_error();
    assert!(
        msg.contains("do not fit: the session's KV budget is 8"),
        "{msg}"
    );
    assert_eq!(session_len(session), 0, "nothing ran");

    // Other values the loop refuses, each before any work.
    let zero = options(1);
    unsafe { lockstep_options_set_max_new_tokens(zero, 0) };
    assert_eq!(
        generate(session, "Hi", zero).0,
        LockstepStatus::InvalidInput
    );
    let nan = options(4);
    unsafe { lockstep_options_set_temperature(nan, f32::NAN) };
    assert_eq!(generate(session, "Hi", nan).0, LockstepStatus::InvalidInput);
    assert_eq!(
        generate(session, "   ", null()).0,
        LockstepStatus::InvalidInput
    );
    let ids = [2_u32, 999_999];
    let st = unsafe {
        lockstep_session_generate_tokens(
            session,
            ids.as_ptr(),
            2,
            opts,
            None,
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!(st, LockstepStatus::InvalidInput);
    assert!(
        last_error().contains("outside the model's vocabulary"),
        "{}",
        last_error()
    );
    assert_eq!(
        unsafe { lockstep_session_truncate(session, 5) },
        LockstepStatus::InvalidInput
    );
    let mut s = null_mut();
    assert_eq!(
        unsafe { lockstep_session_new(f.backend, 0, &mut s) },
        LockstepStatus::InvalidInput
    );
    unsafe {
        for o in [opts, zero, nan] {
            lockstep_options_free(o);
        }
        lockstep_session_free(session);
    }
}

#[test]
fn streams_summarizes_rewinds_and_reports_info() {
    let f = Fixture::new();
    let mut info = null_mut();
    assert_eq!(
        unsafe { lockstep_backend_info_json(f.backend, &mut info) },
        LockstepStatus::Ok
    );
    let info: serde_json::Value = serde_json::from_str(&take(info)).unwrap();
    assert_eq!(info["id"], "ort-cpu");
    assert!(info["runtime"]
        .as_str()
        .unwrap()
        .starts_with("ONNX Runtime"));
    let mut minfo = null_mut();
    assert_eq!(
        unsafe { lockstep_model_info_json(f.model, &mut minfo) },
        LockstepStatus::Ok
    );
    let minfo: serde_json::Value = serde_json::from_str(&take(minfo)).unwrap();
    assert_eq!(minfo["name"], MODEL);
    assert_eq!(minfo["config"]["vocab_size"], 262144);

    let prompt = "The three primary colors are";
    let (mut ids, mut n) = (null_mut(), 0);
    assert_eq!(
        unsafe { lockstep_model_tokenize(f.model, c(prompt).as_ptr(), true, &mut ids, &mut n) },
        LockstepStatus::Ok
    );
    let prompt_ids = unsafe { std::slice::from_raw_parts(ids, n) }.to_vec();
    unsafe { lockstep_tokens_free(ids, n) };
    assert_eq!(prompt_ids[0], 2, "BOS first");

    let session = f.session(64);
    let opts = options(12);
    let (st, summary, pieces) = generate(session, prompt, opts);
    assert_eq!(st, LockstepStatus::Ok, "{}", last_error());
    let summary = summary.unwrap();
    let ids: Vec<u32> = pieces.iter().map(|p| p.0).collect();
    let text: String = pieces.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(serde_json::to_value(&ids).unwrap(), summary["tokens"]);
    assert_eq!(summary["text"], text.as_str());
    assert_eq!(summary["prompt_tokens"], prompt_ids.len());
    assert_eq!(summary["generated_tokens"], 12);
    assert_eq!(summary["stop"]["reason"], "max_tokens");
    assert_eq!(summary["backend"]["id"], "ort-cpu");
    // The session holds the prompt and every token but the last.
    assert_eq!(session_len(session), prompt_ids.len() + 11);

    // Rewind to the prompt minus its last token, and feed that token again: greedy
    // decoding must give the very same continuation.
    assert_eq!(
        unsafe { lockstep_session_truncate(session, prompt_ids.len() - 1) },
        LockstepStatus::Ok
    );
    let last = [*prompt_ids.last().unwrap()];
    let mut again = null_mut();
    let st = unsafe {
        lockstep_session_generate_tokens(
            session,
            last.as_ptr(),
            1,
            opts,
            None,
            null_mut(),
            &mut again,
        )
    };
    assert_eq!(st, LockstepStatus::Ok, "{}", last_error());
    let again: serde_json::Value = serde_json::from_str(&take(again)).unwrap();
    assert_eq!(again["tokens"], summary["tokens"]);

    // The same as the Rust API.
    let model = lockstep::Model::open(MODEL).unwrap();
    let generator = model.generator("ort-cpu").unwrap();
    let mut rs = pollster::block_on(generator.session(64)).unwrap();
    let out = generator
        .generate(
            rs.as_mut(),
            prompt,
            lockstep::GenerateOptions::new().max_new_tokens(12),
        )
        .unwrap();
    assert_eq!(out.text, text);
    assert_eq!(out.tokens, ids);
    unsafe {
        lockstep_options_free(opts);
        lockstep_session_free(session);
    }
}

#[test]
fn a_callback_or_a_cancel_token_stops_the_run() {
    let f = Fixture::new();
    unsafe extern "C" fn stop_after_three(
        ud: *mut c_void,
        _: u32,
        _: *const c_char,
        _: usize,
    ) -> i32 {
        let n = &mut *(ud as *mut usize);
        *n += 1;
        (*n >= 3) as i32
    }
    let session = f.session(64);
    let opts = options(20);
    let mut calls = 0_usize;
    let mut summary = null_mut();
    let st = unsafe {
        lockstep_session_generate(
            session,
            c("Water boils at").as_ptr(),
            opts,
            Some(stop_after_three),
            (&mut calls as *mut usize).cast(),
            &mut summary,
        )
    };
    assert_eq!(st, LockstepStatus::Ok, "{}", last_error());
    let summary: serde_json::Value = serde_json::from_str(&take(summary)).unwrap();
    assert_eq!(calls, 3);
    assert_eq!(summary["generated_tokens"], 3);
    assert_eq!(summary["stop"]["reason"], "cancelled");

    // A token triggered from another thread before the run: it stops before any step.
    let cancel = lockstep_cancel_new();
    let cancel_addr = cancel as usize;
    std::thread::spawn(move || unsafe {
        lockstep_cancel_trigger(cancel_addr as *const LockstepCancel)
    })
    .join()
    .unwrap();
    assert_eq!(
        unsafe { lockstep_options_set_cancel(opts, cancel) },
        LockstepStatus::Ok
    );
    unsafe { lockstep_cancel_free(cancel) }; // the options keep their own reference
    assert_eq!(
        unsafe { lockstep_session_truncate(session, 0) },
        LockstepStatus::Ok
    );
    let (st, summary, pieces) = generate(session, "Water boils at", opts);
    assert_eq!(st, LockstepStatus::Ok, "{}", last_error());
    assert!(pieces.is_empty());
    assert_eq!(summary.unwrap()["stop"]["reason"], "cancelled");
    unsafe {
        lockstep_options_free(opts);
        lockstep_session_free(session);
    }
}

#[test]
fn a_session_used_from_its_own_callback_is_busy_not_corrupted() {
    let f = Fixture::new();
    struct Probe {
        session: *mut LockstepSession,
        status: Option<LockstepStatus>,
    }
    unsafe extern "C" fn reenter(ud: *mut c_void, _: u32, _: *const c_char, _: usize) -> i32 {
        let probe = &mut *(ud as *mut Probe);
        let st = lockstep_session_generate(
            probe.session,
            c"again".as_ptr(),
            null(),
            None,
            null_mut(),
            null_mut(),
        );
        probe.status = Some(st);
        1
    }
    let session = f.session(64);
    let opts = options(4);
    let mut probe = Probe {
        session,
        status: None,
    };
    let st = unsafe {
        lockstep_session_generate(
            session,
            c("Hello").as_ptr(),
            opts,
            Some(reenter),
            (&mut probe as *mut Probe).cast(),
            null_mut(),
        )
    };
    assert_eq!(st, LockstepStatus::Ok, "{}", last_error());
    assert_eq!(probe.status, Some(LockstepStatus::Busy));
    // ... and the session still works afterwards.
    let (st, _, pieces) = generate(session, " world", opts);
    assert_eq!(st, LockstepStatus::Ok, "{}", last_error());
    assert!(!pieces.is_empty());
    unsafe {
        lockstep_options_free(opts);
        lockstep_session_free(session);
    }
}

#[test]
fn version_is_the_crate_version() {
    let v = unsafe { CStr::from_ptr(lockstep_version()) }
        .to_str()
        .unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
}
