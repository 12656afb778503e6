//! The client side: a [`Backend`] whose every call is answered by a host process.

use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lockstep_core::{
    Backend, BackendInfo, Error, Logits, MemoryReport, ModelConfig, Result, Session, SessionMemory,
    SessionOptions, Want,
};
use serde::Serialize;

use crate::protocol::{bytes_to_f32s, read_message, write_message, Request, Response};

/// How to start a host: its program, arguments and extra environment.
#[derive(Debug, Clone)]
pub struct HostCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Names the backend in errors before it has loaded (e.g. `ort-cpu:1.32.0`).
    pub label: String,
}

struct Connection {
    child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
    label: String,
}

impl Connection {
    fn call(&mut self, request: &Request) -> Result<(Response, Vec<u8>)> {
        let sent = write_message(&mut self.input, request, &[]);
        let answer = match sent {
            Ok(()) => read_message::<Response>(&mut self.output),
            Err(e) => Err(e),
        };
        match answer {
            Ok(Some((Response::Failed(e), _))) => Err(e.into()),
            Ok(Some(r)) => Ok(r),
            Ok(None) | Err(_) => Err(self.ended()),
        }
    }

    /// The error for a host that stopped answering, with how it ended when it has.
    fn ended(&mut self) -> Error {
        let how = match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited with {status}"),
            _ => "it closed its pipe".to_string(),
        };
        Error::Runtime(format!(
            "the host process of {} stopped answering ({how}); its messages, if any, are above",
            self.label
        ))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closing its stdin ends the host's loop; kill it if it does not go.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A backend computing in a host process that runs [`serve`](crate::serve).
pub struct RemoteBackend {
    conn: Arc<Mutex<Connection>>,
    info: BackendInfo,
    config: ModelConfig,
    notes: Vec<String>,
    pid: u32,
}

fn lock(conn: &Mutex<Connection>) -> Result<std::sync::MutexGuard<'_, Connection>> {
    conn.lock()
        .map_err(|_| Error::Runtime("a host process connection was poisoned by a panic".into()))
}

impl RemoteBackend {
    /// Starts the host and asks it to load its backend with `params`; the host's own
    /// error (a missing provider, a bad model) comes back as the same error.
    pub fn spawn(command: &HostCommand, params: &impl Serialize) -> Result<Self> {
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Error::Runtime(format!(
                    "cannot start the host process {} for {}: {e}",
                    command.program.display(),
                    command.label
                ))
            })?;
        let pid = child.id();
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Runtime("the host process has no pipes".into()));
        };
        let mut conn = Connection {
            child,
            input: BufWriter::new(input),
            output: BufReader::new(output),
            label: command.label.clone(),
        };
        let params = serde_json::to_value(params)
            .map_err(|e| Error::Runtime(format!("cannot encode the host's parameters: {e}")))?;
        let (info, config, notes) = match conn.call(&Request::Load(params))? {
            (
                Response::Loaded {
                    mut info,
                    config,
                    notes,
                },
                _,
            ) => {
                info.process = Some(format!("host process {pid}"));
                (info, config, notes)
            }
            (other, _) => return Err(unexpected(&other)),
        };
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            info,
            config,
            notes,
            pid,
        })
    }

    /// What the host said at load for the user (fallbacks, CPU placement).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

fn unexpected(r: &Response) -> Error {
    Error::Runtime(format!("the host process answered out of turn: {r:?}"))
}

#[async_trait]
impl Backend for RemoteBackend {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    async fn session(&self, opts: SessionOptions) -> Result<Box<dyn Session>> {
        let request = Request::Session {
            max_tokens: opts.max_tokens,
        };
        match lock(&self.conn)?.call(&request)? {
            (Response::Session { session }, _) => Ok(Box::new(RemoteSession {
                conn: Arc::clone(&self.conn),
                id: session,
                len: 0,
                max_tokens: opts.max_tokens,
            })),
            (other, _) => Err(unexpected(&other)),
        }
    }

    fn host_process(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn memory(&self) -> MemoryReport {
        match lock(&self.conn).and_then(|mut c| c.call(&Request::Memory)) {
            Ok((Response::Memory(m), _)) => m,
            _ => MemoryReport::default(),
        }
    }

    fn session_memory(&self, opts: &SessionOptions) -> Option<SessionMemory> {
        let request = Request::SessionMemory {
            max_tokens: opts.max_tokens,
        };
        match lock(&self.conn).and_then(|mut c| c.call(&request)) {
            Ok((Response::SessionMemory(m), _)) => m,
            _ => None,
        }
    }
}

/// One session in the host; its length is mirrored here (every change goes through it).
struct RemoteSession {
    conn: Arc<Mutex<Connection>>,
    id: u64,
    len: usize,
    max_tokens: usize,
}

#[async_trait]
impl Session for RemoteSession {
    async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Logits> {
        let request = Request::Forward {
            session: self.id,
            tokens: tokens.to_vec(),
            all: want == Want::All,
        };
        let answer = lock(&self.conn)?.call(&request)?;
        match answer {
            (Response::Logits { vocab }, payload) => {
                let values = bytes_to_f32s(&payload);
                if vocab == 0 || !values.len().is_multiple_of(vocab) {
                    return Err(Error::Runtime(format!(
                        "the host process sent {} logits, not rows of {vocab}",
                        values.len()
                    )));
                }
                self.len += tokens.len();
                Ok(Logits::new(vocab, values))
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn forward_greedy(&mut self, tokens: &[u32]) -> Result<u32> {
        let request = Request::ForwardGreedy {
            session: self.id,
            tokens: tokens.to_vec(),
        };
        let answer = lock(&self.conn)?.call(&request)?;
        match answer {
            (Response::Token { id }, _) => {
                self.len += tokens.len();
                Ok(id)
            }
            (other, _) => Err(unexpected(&other)),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        let request = Request::Truncate {
            session: self.id,
            len,
        };
        match lock(&self.conn)?.call(&request)? {
            (Response::Done, _) => {
                self.len = len;
                Ok(())
            }
            (other, _) => Err(unexpected(&other)),
        }
    }
}

impl Drop for RemoteSession {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.conn.lock() {
            let _ = conn.call(&Request::DropSession { session: self.id });
        }
    }
}
