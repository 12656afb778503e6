//! A streaming generation as a Python iterator.
//!
//! The loop's stream borrows its session, so it cannot live inside a Python object. A
//! worker thread owns the session for the length of one generation and runs one step per
//! `__next__` (request, then reply: it never runs ahead, so breaking out of a `for` loop
//! leaves the session exactly as the Rust API would); the session goes back to its
//! `Session` object when the generation ends, is closed, or is dropped.

use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use futures::StreamExt;
use lockstep::{CancelToken, Event, GenerateOptions, Generator, Output, Prompt, Summary};
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

use crate::errors::{to_py, BusyError};

/// Where a `Session` keeps its KV cache; empty while a generation holds it.
pub type Slot = Arc<Mutex<Option<Box<dyn lockstep::Session>>>>;

pub fn busy() -> PyErr {
    BusyError::new_err(
        "this session is already generating: exhaust or close() that generation first, or use another session",
    )
}

/// `str` (text) or `list[int]` (ids fed as given).
#[derive(FromPyObject)]
pub enum PromptArg {
    Text(String),
    Tokens(Vec<u32>),
}

impl From<PromptArg> for Prompt {
    fn from(p: PromptArg) -> Self {
        match p {
            PromptArg::Text(t) => Prompt::Text(t),
            PromptArg::Tokens(t) => Prompt::Tokens(t),
        }
    }
}

/// One generated token and the text it released (possibly "": a character still
/// incomplete, text that may start a stop string, or EOS).
#[pyclass(module = "lockstep", frozen, get_all)]
pub struct Token {
    pub id: u32,
    pub text: String,
}

#[pymethods]
impl Token {
    fn __repr__(&self) -> String {
        format!("Token(id={}, text={:?})", self.id, self.text)
    }
}

type Step = Option<lockstep::Result<Event>>;

/// The worker's side of one generation.
struct Worker {
    /// One request per step; dropping it ends the worker.
    next: Sender<()>,
    steps: Receiver<Step>,
    thread: JoinHandle<()>,
}

struct State {
    /// `None` once finished, and while a step runs (`stepping`).
    worker: Option<Worker>,
    stepping: bool,
    /// `close()` came while another thread was in a step.
    close_requested: bool,
    text: String,
    tokens: Vec<u32>,
    summary: Option<String>,
}

/// An iterator of Token; `.summary` (a dict) once it is exhausted.
#[pyclass(module = "lockstep", frozen)]
pub struct Generation {
    state: Mutex<State>,
    cancel: CancelToken,
    info: lockstep::BackendInfo,
}

impl Generation {
    pub fn start(
        py: Python<'_>,
        generator: Generator,
        slot: Slot,
        prompt: Prompt,
        opts: GenerateOptions,
    ) -> PyResult<Self> {
        let mut session = slot
            .lock()
            .expect("the slot lock is never poisoned")
            .take()
            .ok_or_else(busy)?;
        let cancel = CancelToken::new();
        let opts = opts.cancel_token(cancel.clone());
        let info = generator.backend().info();
        let (next_tx, next_rx) = channel::<()>();
        let (step_tx, step_rx) = sync_channel::<Step>(1);
        let (started_tx, started_rx) = sync_channel::<lockstep::Result<()>>(1);
        let worker_slot = slot.clone();
        let thread = std::thread::spawn(move || {
            {
                match generator.generate_stream(session.as_mut(), prompt, opts) {
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                    Ok(mut stream) => {
                        let _ = started_tx.send(Ok(()));
                        while next_rx.recv().is_ok() {
                            let step = pollster::block_on(stream.next());
                            let last = !matches!(step, Some(Ok(Event::Token { .. })));
                            if step_tx.send(step).is_err() || last {
                                break;
                            }
                        }
                    }
                }
            }
            *worker_slot.lock().expect("the slot lock is never poisoned") = Some(session);
        });
        let started = py.detach(move || started_rx.recv());
        let worker = Worker {
            next: next_tx,
            steps: step_rx,
            thread,
        };
        match started {
            Ok(Ok(())) => Ok(Self {
                state: Mutex::new(State {
                    worker: Some(worker),
                    stepping: false,
                    close_requested: false,
                    text: String::new(),
                    tokens: Vec::new(),
                    summary: None,
                }),
                cancel,
                info,
            }),
            Ok(Err(e)) => {
                finish(worker);
                Err(to_py(e))
            }
            Err(_) => {
                finish(worker);
                Err(crate::errors::BackendRuntimeError::new_err(
                    "the generation thread ended before starting",
                ))
            }
        }
    }
}

/// Ends the worker and waits until the session is back in its slot. Quick: the worker is
/// between steps (waiting for a request) or past its last one, so the interpreter can
/// stay attached.
fn finish(worker: Worker) {
    let Worker {
        next,
        steps,
        thread,
    } = worker;
    drop(next);
    drop(steps);
    let _ = thread.join();
}

impl Generation {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the state lock is never poisoned")
    }
}

#[pymethods]
impl Generation {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Token> {
        // The lock is never held while the interpreter is released: a thread that holds
        // the interpreter may be waiting for it.
        let worker = {
            let mut state = self.lock();
            if state.stepping {
                return Err(BusyError::new_err(
                    "another thread is iterating this generation",
                ));
            }
            match state.worker.take() {
                Some(w) => {
                    state.stepping = true;
                    w
                }
                None => return Err(PyStopIteration::new_err(())),
            }
        };
        // The worker moves into the step and back: a receiver cannot be shared across
        // threads, only sent.
        let (worker, step) = py.detach(move || {
            let step = match worker.next.send(()) {
                Ok(()) => worker.steps.recv().ok().flatten(),
                Err(_) => None,
            };
            (worker, step)
        });
        let mut state = self.lock();
        state.stepping = false;
        match step {
            Some(Ok(Event::Token { id, text })) => {
                state.tokens.push(id);
                state.text.push_str(&text);
                if state.close_requested {
                    finish(worker);
                } else {
                    state.worker = Some(worker);
                }
                Ok(Token { id, text })
            }
            Some(Ok(Event::Done(stats))) => {
                let output = Output {
                    text: state.text.clone(),
                    tokens: state.tokens.clone(),
                    stats,
                };
                state.summary = Some(Summary::new(&output, self.info.clone()).to_json());
                finish(worker);
                Err(PyStopIteration::new_err(()))
            }
            Some(Err(e)) => {
                finish(worker);
                Err(to_py(e))
            }
            None => {
                finish(worker);
                Err(crate::errors::BackendRuntimeError::new_err(
                    "generation ended without its final statistics",
                ))
            }
        }
    }

    /// Stops before the next model step; iteration then ends with stop reason
    /// "cancelled". Safe to call from another thread.
    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Stops now and gives the session back (no summary). Breaking out of a loop and
    /// dropping the generation does the same.
    fn close(&self) {
        let mut state = self.lock();
        match state.worker.take() {
            Some(w) => finish(w),
            // Another thread is in a step: it ends the worker when the step returns.
            None if state.stepping => state.close_requested = true,
            None => {}
        }
    }

    /// The text streamed so far.
    #[getter]
    fn text(&self) -> String {
        self.lock().text.clone()
    }

    /// The ids streamed so far.
    #[getter]
    fn tokens(&self) -> Vec<u32> {
        self.lock().tokens.clone()
    }

    /// After the last token: {"text", "tokens", "prompt_tokens", "generated_tokens",
    /// "time_to_first_token_ms", "prefill_ms", "decode_ms", "prefill_tokens_per_second",
    /// "decode_tokens_per_second", "stop": {"reason", ...}, "backend": {...}}, the same
    /// summary the C ABI returns. None before.
    #[getter]
    fn summary(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let json = self.lock().summary.clone();
        json.map(|j| crate::json_to_py(py, &j)).transpose()
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if let Some(w) = self.state.get_mut().ok().and_then(|s| s.worker.take()) {
            finish(w);
        }
    }
}
