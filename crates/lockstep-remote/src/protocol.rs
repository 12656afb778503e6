//! Messages between a client and its host: `[u32 header length][JSON header][u64 payload
//! length][payload]`, little-endian.

use std::io::{self, Read, Write};

use lockstep_core::{BackendInfo, Error, MemoryReport, ModelConfig, SessionMemory};
use serde::{Deserialize, Serialize};

/// The most a header may claim: a corrupt length must not make the reader allocate
/// gigabytes.
const MAX_HEADER: u32 = 16 << 20;
/// The most a payload may claim: the logits of 32,768 positions of a 262,144-entry vocabulary
/// would be 32 GiB; teacher forcing asks for a few thousand rows at most.
const MAX_PAYLOAD: u64 = 16 << 30;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// The host's own load parameters, opaque here.
    Load(serde_json::Value),
    Session {
        max_tokens: usize,
    },
    Forward {
        session: u64,
        tokens: Vec<u32>,
        all: bool,
    },
    ForwardGreedy {
        session: u64,
        tokens: Vec<u32>,
    },
    Truncate {
        session: u64,
        len: usize,
    },
    DropSession {
        session: u64,
    },
    /// The backend's [`MemoryReport`] now.
    Memory,
    /// What a session of `max_tokens` would allocate.
    SessionMemory {
        max_tokens: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
// Loaded is sent once per backend; boxing it would only add an allocation to every reply.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Response {
    Loaded {
        info: BackendInfo,
        config: ModelConfig,
        /// Lines the host printed for the user at load (fallback notes and the like).
        notes: Vec<String>,
    },
    Session {
        session: u64,
    },
    /// Followed by `rows * vocab` f32 values as the payload.
    Logits {
        vocab: usize,
    },
    Token {
        id: u32,
    },
    Done,
    Memory(MemoryReport),
    SessionMemory(Option<SessionMemory>),
    Failed(WireError),
}

/// [`Error`] across the pipe: the variant and its one-line message are kept, so the client
/// returns the error the in-process backend would have.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireError {
    Io(String),
    Checksum(String),
    Fetch(String),
    Model(String),
    Runtime(String),
    Unavailable {
        backend: String,
        reason: String,
    },
    InvalidInput(String),
    ContextOverflow {
        needed: usize,
        limit: usize,
        limit_name: String,
    },
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::Io { .. } => WireError::Io(e.to_string()),
            Error::Checksum { .. } => WireError::Checksum(e.to_string()),
            Error::Fetch(m) => WireError::Fetch(m.clone()),
            Error::Model(m) => WireError::Model(m.clone()),
            Error::Runtime(m) => WireError::Runtime(m.clone()),
            Error::Unavailable { backend, reason } => WireError::Unavailable {
                backend: backend.clone(),
                reason: reason.clone(),
            },
            Error::InvalidInput(m) => WireError::InvalidInput(m.clone()),
            Error::ContextOverflow {
                needed,
                limit,
                limit_name,
            } => WireError::ContextOverflow {
                needed: *needed,
                limit: *limit,
                limit_name: limit_name.to_string(),
            },
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            // An I/O or checksum error's parts (path, source) stay in the host; the
            // message says everything the user needs.
            WireError::Io(m) | WireError::Checksum(m) | WireError::Runtime(m) => Error::Runtime(m),
            WireError::Fetch(m) => Error::Fetch(m),
            WireError::Model(m) => Error::Model(m),
            WireError::Unavailable { backend, reason } => Error::Unavailable { backend, reason },
            WireError::InvalidInput(m) => Error::InvalidInput(m),
            WireError::ContextOverflow {
                needed,
                limit,
                limit_name,
            } => Error::ContextOverflow {
                needed,
                limit,
                limit_name: limit_name_static(&limit_name),
            },
        }
    }
}

/// `ContextOverflow::limit_name` is a `&'static str` naming one of a few budgets.
fn limit_name_static(name: &str) -> &'static str {
    match name {
        "the session's KV budget" => "the session's KV budget",
        "the model's context" => "the model's context",
        _ => "the host's limit",
    }
}

pub(crate) fn write_message<T: Serialize>(
    out: &mut impl Write,
    header: &T,
    payload: &[u8],
) -> io::Result<()> {
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    out.write_all(&(json.len() as u32).to_le_bytes())?;
    out.write_all(&json)?;
    out.write_all(&(payload.len() as u64).to_le_bytes())?;
    out.write_all(payload)?;
    out.flush()
}

/// Reads one message; `Ok(None)` at a clean end of the stream (the peer closed it).
pub(crate) fn read_message<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
) -> io::Result<Option<(T, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message header of {len} bytes"),
        ));
    }
    let mut json = vec![0u8; len as usize];
    input.read_exact(&mut json)?;
    let header = serde_json::from_slice(&json).map_err(io::Error::other)?;
    let mut plen = [0u8; 8];
    input.read_exact(&mut plen)?;
    let plen = u64::from_le_bytes(plen);
    if plen > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message payload of {plen} bytes"),
        ));
    }
    let mut payload = vec![0u8; plen as usize];
    input.read_exact(&mut payload)?;
    Ok(Some((header, payload)))
}

pub(crate) fn f32s_to_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

pub(crate) fn bytes_to_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
