//! The host side: load a backend from the client's parameters, then answer its calls.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use lockstep_core::{Backend, Error, Result, Session, SessionOptions, Want};

use crate::protocol::{f32s_to_bytes, read_message, write_message, Request, Response, WireError};

/// Serves one backend on this process's stdin and stdout until the client closes the pipe.
///
/// `load` gets the client's load parameters and returns the backend and the lines to show
/// the user. Anything a library prints to stdout would corrupt the pipe, so on Unix the
/// protocol moves to a duplicate of stdout and stdout itself is pointed at stderr first.
pub fn serve<L>(load: L) -> Result<()>
where
    L: FnOnce(serde_json::Value) -> Result<(Arc<dyn Backend>, Vec<String>)>,
{
    let output = protocol_stdout()?;
    serve_on(load, io::stdin().lock(), output)
}

#[cfg(unix)]
fn protocol_stdout() -> Result<Box<dyn Write>> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain descriptor calls on this process's own stdout and stderr; the
    // duplicate is owned by the File from here on.
    let fd = unsafe { libc::dup(1) };
    if fd < 0 || unsafe { libc::dup2(2, 1) } < 0 {
        return Err(Error::Runtime(format!(
            "the host process cannot set up its pipe: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(Box::new(unsafe { std::fs::File::from_raw_fd(fd) }))
}

#[cfg(not(unix))]
fn protocol_stdout() -> Result<Box<dyn Write>> {
    Ok(Box::new(io::stdout()))
}

/// [`serve`] on any pair of streams.
pub fn serve_on<L>(load: L, input: impl Read, output: impl Write) -> Result<()>
where
    L: FnOnce(serde_json::Value) -> Result<(Arc<dyn Backend>, Vec<String>)>,
{
    let mut input = BufReader::new(input);
    let mut output = BufWriter::new(output);
    let pipe = |e: io::Error| Error::Runtime(format!("the host's pipe to its client broke: {e}"));
    let Some((first, _)) = read_message::<Request>(&mut input).map_err(pipe)? else {
        return Ok(());
    };
    let Request::Load(params) = first else {
        return Err(Error::Runtime(
            "the host's client did not start with a load request".into(),
        ));
    };
    let backend = match load(params) {
        Ok((backend, notes)) => {
            let loaded = Response::Loaded {
                info: backend.info(),
                config: backend.config().clone(),
                notes,
            };
            write_message(&mut output, &loaded, &[]).map_err(pipe)?;
            backend
        }
        Err(e) => {
            write_message(&mut output, &Response::Failed(WireError::from(&e)), &[])
                .map_err(pipe)?;
            return Ok(());
        }
    };
    let mut sessions: HashMap<u64, Box<dyn Session>> = HashMap::new();
    let mut next_id = 0u64;
    while let Some((request, _)) = read_message::<Request>(&mut input).map_err(pipe)? {
        let (response, payload) = match answer(&backend, &mut sessions, &mut next_id, request) {
            Ok(r) => r,
            Err(e) => (Response::Failed(WireError::from(&e)), Vec::new()),
        };
        write_message(&mut output, &response, &payload).map_err(pipe)?;
    }
    Ok(())
}

fn session(
    sessions: &mut HashMap<u64, Box<dyn Session>>,
    id: u64,
) -> Result<&mut Box<dyn Session>> {
    sessions
        .get_mut(&id)
        .ok_or_else(|| Error::Runtime(format!("the host has no session {id}")))
}

fn answer(
    backend: &Arc<dyn Backend>,
    sessions: &mut HashMap<u64, Box<dyn Session>>,
    next_id: &mut u64,
    request: Request,
) -> Result<(Response, Vec<u8>)> {
    Ok(match request {
        Request::Load(_) => {
            return Err(Error::Runtime(
                "the host has loaded its backend already".into(),
            ))
        }
        Request::Session { max_tokens } => {
            let s =
                pollster::block_on(backend.session(SessionOptions::with_max_tokens(max_tokens)))?;
            let id = *next_id;
            *next_id += 1;
            sessions.insert(id, s);
            (Response::Session { session: id }, Vec::new())
        }
        Request::Forward {
            session: id,
            tokens,
            all,
        } => {
            let want = if all { Want::All } else { Want::Last };
            let logits = pollster::block_on(session(sessions, id)?.forward(&tokens, want))?;
            (
                Response::Logits {
                    vocab: logits.vocab(),
                },
                f32s_to_bytes(logits.as_slice()),
            )
        }
        Request::ForwardGreedy {
            session: id,
            tokens,
        } => {
            let token = pollster::block_on(session(sessions, id)?.forward_greedy(&tokens))?;
            (Response::Token { id: token }, Vec::new())
        }
        Request::Truncate { session: id, len } => {
            session(sessions, id)?.truncate(len)?;
            (Response::Done, Vec::new())
        }
        Request::DropSession { session: id } => {
            sessions.remove(&id);
            (Response::Done, Vec::new())
        }
        Request::Memory => (Response::Memory(backend.memory()), Vec::new()),
        Request::SessionMemory { max_tokens } => (
            Response::SessionMemory(
                backend.session_memory(&SessionOptions::with_max_tokens(max_tokens)),
            ),
            Vec::new(),
        ),
    })
}
