//! A GGUF reader and dequantizer written to be safe on hostile files, and a writer
//! ([`GgufWriter`]).
//!
//! [`GgufFile::open`] reads the header, the metadata and the tensor infos; tensor data is
//! read on demand ([`GgufFile::read_raw`], [`GgufFile::dequantize`]) with a seek and a
//! read. Every count and length read from the file is checked against the bytes that
//! remain before anything is allocated, all offset arithmetic is overflow-checked, and
//! every tensor's data must lie inside the file: a malformed file gives an
//! [`Error::Model`] naming the file and what is wrong, never a panic or a huge allocation.
//!
//! Layout (GGUF v2/v3, little-endian): magic `GGUF`, version u32, tensor count u64,
//! metadata count u64, metadata key/value pairs, tensor infos (name, n_dims u32, dims u64
//! each, type u32, offset u64 relative to the data section), padding to
//! `general.alignment` (default 32), tensor data. dims\[0\] is the contiguous innermost
//! dimension: a weight with dims `[640, 1024]` is 1024 rows of 640.

mod dequant;
mod meta;
mod types;
mod write;

pub use meta::{MetaArray, MetaValue};
pub use types::GgmlType;
pub use write::{GgufWriter, GGUF_VERSION};

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dequant::DequantError;
use lockstep_core::{Error, Result};
use meta::value_type as vt;

/// The magic at the start of every GGUF file ("GGUF" as bytes).
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays inside metadata arrays accepted.
const MAX_ARRAY_DEPTH: u32 = 8;

/// Where one tensor's data is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: dims\[0\] is the contiguous innermost dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute file offset of the first byte of the data.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The product of the dims (checked when the file was read, so it cannot overflow
    /// for infos that came from a [`GgufFile`]; saturates otherwise).
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// The shape outermost first, as ONNX and numpy write it (the dims reversed).
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// An open GGUF file: its metadata and tensor infos, and a handle to read tensor data.
pub struct GgufFile {
    source: String,
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
    reader: Mutex<Box<dyn ReadSeek>>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("source", &self.source)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("file_len", &self.file_len)
            .finish()
    }
}

impl GgufFile {
    /// Opens a GGUF file and reads its header, metadata and tensor infos.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io("cannot open GGUF file", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("cannot read the size of GGUF file", path, e))?
            .len();
        let reader = BufReader::with_capacity(1 << 16, file);
        Self::parse(Box::new(reader), len, path.display().to_string())
    }

    /// Reads a GGUF from any seekable stream of `len` bytes (the stream may be longer; the
    /// bytes past `len` are ignored). Messages name the source `<reader>`.
    pub fn from_reader<R: Read + Seek + Send + 'static>(mut r: R, len: u64) -> Result<GgufFile> {
        let source = "<reader>".to_string();
        let end = r.seek(SeekFrom::End(0)).map_err(|e| io_err(&source, e))?;
        if end < len {
            return Err(Error::Model(format!(
                "{source}: the stream holds {end} bytes, fewer than the {len} announced"
            )));
        }
        Self::parse(Box::new(r), len, source)
    }

    /// Reads a GGUF held in memory (the fuzzing entry point). Messages name the source `<memory>`.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<GgufFile> {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        Self::parse(
            Box::new(std::io::Cursor::new(bytes)),
            len,
            "<memory>".to_string(),
        )
    }

    fn parse(mut reader: Box<dyn ReadSeek>, len: u64, source: String) -> Result<GgufFile> {
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| io_err(&source, e))?;
        let header = Parser {
            r: &mut *reader,
            pos: 0,
            len,
            source: &source,
        }
        .header()?;
        Ok(GgufFile {
            version: header.version,
            metadata: header.metadata,
            by_name: header.by_name,
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
            file_len: len,
            reader: Mutex::new(reader),
            source,
        })
    }

    /// The path (or `<reader>` / `<memory>`) used in messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// The tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The alignment of the tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Bytes in the file.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The tensor's raw bytes (ggml blocks) as they lie in the file.
    pub fn read_raw(&self, info: &TensorInfo) -> Result<Vec<u8>> {
        let n = self.check_info(info)?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(n).map_err(|_| {
            self.err(format!(
                "tensor {}: cannot allocate {n} bytes for its data",
                info.name
            ))
        })?;
        buf.resize(n, 0);
        let mut r = self
            .reader
            .lock()
            .map_err(|_| self.err("the reader was poisoned by an earlier panic".to_string()))?;
        r.seek(SeekFrom::Start(info.offset))
            .map_err(|e| io_err(&self.source, e))?;
        r.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.err(format!(
                    "tensor {}: data runs past the end of the file (the file shrank after it was opened?)",
                    info.name
                ))
            } else {
                io_err(&self.source, e)
            }
        })?;
        Ok(buf)
    }

    /// The tensor dequantized to f32, in ggml order (row-major with dims\[0\] innermost).
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        if !info.ggml_type.can_dequantize() {
            return Err(self.err(unsupported_msg(&info.name, info.ggml_type)));
        }
        let raw = self.read_raw(info)?;
        let n = usize::try_from(info.n_elements()).map_err(|_| {
            self.err(format!(
                "tensor {}: too many elements for this machine",
                info.name
            ))
        })?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| {
            self.err(format!(
                "tensor {}: cannot allocate {n} floats for its values",
                info.name
            ))
        })?;
        out.resize(n, 0.0);
        dequant::dequantize_into(info.ggml_type, &raw, &mut out).map_err(|e| match e {
            DequantError::Unsupported(t) => self.err(unsupported_msg(&info.name, t)),
            DequantError::Shape(m) => self.err(format!("tensor {}: {m}", info.name)),
        })?;
        Ok(out)
    }

    /// Checks an info (perhaps not one of ours) against the file; returns its byte count.
    fn check_info(&self, info: &TensorInfo) -> Result<usize> {
        let expected = info
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| info.ggml_type.n_bytes(n));
        if expected != Some(info.n_bytes) {
            return Err(self.err(format!(
                "tensor {}: {} bytes do not match dims {:?} of type {}",
                info.name, info.n_bytes, info.dims, info.ggml_type
            )));
        }
        match info.offset.checked_add(info.n_bytes) {
            Some(end) if end <= self.file_len => {}
            _ => {
                return Err(self.err(format!(
                    "tensor {}: data runs past the end of the file ({} bytes at offset {}, file is {} bytes)",
                    info.name, info.n_bytes, info.offset, self.file_len
                )))
            }
        }
        usize::try_from(info.n_bytes).map_err(|_| {
            self.err(format!(
                "tensor {}: {} bytes do not fit this machine's memory",
                info.name, info.n_bytes
            ))
        })
    }

    fn err(&self, msg: String) -> Error {
        Error::Model(format!("{}: {msg}", self.source))
    }
}

/// Dequantizes `n_elements` values of `ggml_type` from `bytes` (whole blocks, exactly
/// `ggml_type.n_bytes(n_elements)` bytes). Values come out in storage order.
pub fn dequantize(ggml_type: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    if !ggml_type.can_dequantize() {
        return Err(Error::Model(format!(
            "cannot dequantize type {ggml_type}: unsupported (supported: {})",
            supported_list()
        )));
    }
    // Check the sizes before allocating the output.
    if ggml_type.n_bytes(n_elements as u64) != Some(bytes.len() as u64) {
        return Err(Error::Model(format!(
            "cannot dequantize {n_elements} elements of {ggml_type} from {} bytes: {}",
            bytes.len(),
            match ggml_type.n_bytes(n_elements as u64) {
                Some(n) => format!("they take {n} bytes"),
                None => format!("not a whole number of blocks of {}", ggml_type.block_size()),
            }
        )));
    }
    let mut out = vec![0.0f32; n_elements];
    dequantize_into(ggml_type, bytes, &mut out)?;
    Ok(out)
}

/// Like [`dequantize`], into a caller's buffer whose length is the number of elements.
pub fn dequantize_into(ggml_type: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    dequant::dequantize_into(ggml_type, bytes, out).map_err(|e| match e {
        DequantError::Unsupported(t) => Error::Model(format!(
            "cannot dequantize type {t}: unsupported (supported: {})",
            supported_list()
        )),
        DequantError::Shape(m) => Error::Model(format!("cannot dequantize {ggml_type}: {m}")),
    })
}

fn supported_list() -> String {
    GgmlType::ALL
        .iter()
        .filter(|t| t.can_dequantize())
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unsupported_msg(name: &str, t: GgmlType) -> String {
    format!(
        "tensor {name} has unsupported type {t} (dequantization supports {})",
        supported_list()
    )
}

fn io_err(source: &str, e: std::io::Error) -> Error {
    Error::io("cannot read GGUF file", PathBuf::from(source), e)
}

/// Fails if two tensors' data share a byte. ggml's own reader requires each tensor to
/// start where the previous one ends; we accept any order and gaps, but not aliasing: a
/// small file whose many tensor infos point at the same bytes would make every reader
/// materialize those bytes once per info, so memory would grow with infos x tensor size
/// instead of with the file.
fn check_no_overlap(tensors: &[TensorInfo], data_offset: u64) -> std::result::Result<(), String> {
    // (start, end, index) of every tensor that holds data; offsets are checked already.
    let mut spans: Vec<(u64, u64, usize)> = tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.n_bytes > 0)
        .map(|(i, t)| (t.offset, t.offset + t.n_bytes, i))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        let ((a_start, a_end, a), (b_start, _, b)) = (w[0], w[1]);
        if b_start < a_end {
            let (ta, tb) = (&tensors[a], &tensors[b]);
            return Err(format!(
                "tensor {}: its data ({} bytes at data offset {}) overlaps the data of tensor {} ({} bytes at data offset {}); tensors may not share bytes",
                tb.name,
                tb.n_bytes,
                b_start - data_offset,
                ta.name,
                ta.n_bytes,
                a_start - data_offset
            ));
        }
    }
    Ok(())
}

struct Header {
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

/// Reads the header from a stream while tracking the position, so that every length can
/// be checked against the bytes that remain before it is trusted.
struct Parser<'a> {
    r: &'a mut dyn ReadSeek,
    pos: u64,
    len: u64,
    source: &'a str,
}

impl Parser<'_> {
    fn err(&self, msg: String) -> Error {
        Error::Model(format!("{}: {msg}", self.source))
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Fails unless `n` more bytes (a `u64` product that may have overflowed: `None`) remain.
    fn need(&self, n: Option<u64>, what: &dyn Fn() -> String) -> Result<()> {
        match n {
            Some(n) if n <= self.remaining() => Ok(()),
            Some(n) => Err(self.err(format!(
                "truncated GGUF: {} needs {n} bytes at offset {}, but only {} remain",
                what(),
                self.pos,
                self.remaining()
            ))),
            None => Err(self.err(format!(
                "truncated GGUF: {} at offset {} is larger than any file",
                what(),
                self.pos
            ))),
        }
    }

    fn fill(&mut self, buf: &mut [u8], what: &dyn Fn() -> String) -> Result<()> {
        self.need(Some(buf.len() as u64), what)?;
        self.r.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.err(format!(
                    "truncated GGUF: {} at offset {}: the stream ended early",
                    what(),
                    self.pos
                ))
            } else {
                io_err(self.source, e)
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        self.need(Some(n), what)?;
        // n <= remaining <= len, and the caller's stream holds len bytes.
        let n = usize::try_from(n).map_err(|_| self.err(format!("{} is too large", what())))?;
        let mut v = Vec::new();
        v.try_reserve_exact(n)
            .map_err(|_| self.err(format!("cannot allocate {n} bytes for {}", what())))?;
        v.resize(n, 0);
        self.fill(&mut v, what)?;
        Ok(v)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        self.fill(&mut a, what)?;
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let at = self.pos;
        let n = self.u64(&|| format!("the length of {}", what()))?;
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated GGUF: {} at offset {at} is {n} bytes long, but only {} bytes remain",
                what(),
                self.remaining()
            )));
        }
        let bytes = self.bytes(n, what)?;
        String::from_utf8(bytes)
            .map_err(|_| self.err(format!("{} at offset {at} is not valid UTF-8", what())))
    }

    fn header(&mut self) -> Result<Header> {
        let mut magic = [0u8; 4];
        if self.len < 4 {
            return Err(self.err(format!(
                "not a GGUF file (bad magic): the file is only {} bytes long",
                self.len
            )));
        }
        self.fill(&mut magic, &|| "the magic".into())?;
        if magic != GGUF_MAGIC {
            return Err(self.err(format!(
                "not a GGUF file (bad magic {magic:02x?}, expected \"GGUF\")"
            )));
        }
        let version = self.u32(&|| "the version".into())?;
        if version != 2 && version != 3 {
            let hint = if matches!(version.swap_bytes(), 2 | 3) {
                " (a big-endian GGUF: only little-endian files are supported)"
            } else if version == 1 {
                " (version 1 predates 64-bit counts: convert the file again with a current llama.cpp)"
            } else {
                ""
            };
            return Err(self.err(format!(
                "unsupported GGUF version {version}{hint}; versions 2 and 3 are supported"
            )));
        }
        let n_tensors = self.u64(&|| "the tensor count".into())?;
        let n_kv = self.u64(&|| "the metadata count".into())?;

        // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor
        // info at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes. Both
        // bounds come before any allocation sized by the counts.
        self.need(n_kv.checked_mul(13), &|| format!("{n_kv} metadata entries"))?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = self.string(&|| format!("the key of metadata entry {i}"))?;
            let at = self.pos;
            let ty = self.u32(&|| format!("the type of metadata {key}"))?;
            let value = self.value(ty, &key, 0)?;
            if metadata.contains_key(&key) {
                return Err(self.err(format!(
                    "metadata key {key} appears twice (second at offset {at})"
                )));
            }
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(MetaValue::U32(a)) if *a != 0 && a.is_power_of_two() => u64::from(*a),
            Some(MetaValue::U32(a)) => {
                return Err(self.err(format!(
                    "bad alignment: general.alignment is {a}, which is not a power of two"
                )))
            }
            Some(v) => {
                return Err(self.err(format!(
                    "bad alignment: general.alignment is a {}, not a u32",
                    v.type_name()
                )))
            }
        };

        self.need(n_tensors.checked_mul(24), &|| {
            format!("{n_tensors} tensor infos")
        })?;
        let n_tensors_usize = usize::try_from(n_tensors)
            .map_err(|_| self.err(format!("{n_tensors} tensors is too many")))?;
        let mut tensors = Vec::with_capacity(n_tensors_usize);
        let mut by_name = HashMap::with_capacity(n_tensors_usize);
        let mut relative = Vec::with_capacity(n_tensors_usize);
        for i in 0..n_tensors {
            let name = self.string(&|| format!("the name of tensor {i}"))?;
            let n_dims = self.u32(&|| format!("the dimension count of tensor {name}"))?;
            if n_dims as usize > MAX_DIMS {
                return Err(self.err(format!(
                    "tensor {name} has {n_dims} dimensions; ggml allows at most {MAX_DIMS}"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(self.u64(&|| format!("dimension {d} of tensor {name}"))?);
            }
            let n_elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64 && dims.iter().all(|&d| d <= i64::MAX as u64))
                .ok_or_else(|| {
                    self.err(format!(
                        "tensor {name}: dims {dims:?} overflow the element count"
                    ))
                })?;
            let type_id = self.u32(&|| format!("the type of tensor {name}"))?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                self.err(format!(
                    "tensor {name} has unknown ggml type id {type_id} (a newer or removed type)"
                ))
            })?;
            let inner = dims.first().copied().unwrap_or(1);
            if !inner.is_multiple_of(ggml_type.block_size()) {
                return Err(self.err(format!(
                    "tensor {name}: its first dimension {inner} is not a multiple of the {ggml_type} block size {}",
                    ggml_type.block_size()
                )));
            }
            let n_bytes = ggml_type.n_bytes(n_elements).ok_or_else(|| {
                self.err(format!(
                    "tensor {name}: dims {dims:?} of {ggml_type} overflow the byte count"
                ))
            })?;
            let offset = self.u64(&|| format!("the data offset of tensor {name}"))?;
            if !offset.is_multiple_of(alignment) {
                return Err(self.err(format!(
                    "bad alignment: tensor {name} starts at data offset {offset}, not a multiple of the alignment {alignment}"
                )));
            }
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(self.err(format!("tensor {name} appears twice")));
            }
            relative.push(offset);
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset: 0,
                n_bytes,
            });
        }

        let data_offset = self
            .pos
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| self.err("the data section offset overflows".to_string()))?;
        for (t, rel) in tensors.iter_mut().zip(relative) {
            let start = data_offset.checked_add(rel);
            let end = start.and_then(|s| s.checked_add(t.n_bytes));
            match (start, end) {
                (Some(start), Some(end)) if end <= self.len => t.offset = start,
                _ => {
                    return Err(self.err(format!(
                        "tensor {}: data runs past the end of the file ({} bytes at data offset {rel}, the data section starts at {data_offset}, the file is {} bytes)",
                        t.name, t.n_bytes, self.len
                    )))
                }
            }
        }

        check_no_overlap(&tensors, data_offset).map_err(|m| self.err(m))?;

        Ok(Header {
            version,
            metadata,
            tensors,
            by_name,
            alignment,
            data_offset,
        })
    }

    /// Reads one value of type `ty` for metadata `key`.
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<MetaValue> {
        let w = || format!("the value of metadata {key}");
        Ok(match ty {
            vt::U8 => MetaValue::U8(u8::from_le_bytes(self.array(&w)?)),
            vt::I8 => MetaValue::I8(i8::from_le_bytes(self.array(&w)?)),
            vt::U16 => MetaValue::U16(u16::from_le_bytes(self.array(&w)?)),
            vt::I16 => MetaValue::I16(i16::from_le_bytes(self.array(&w)?)),
            vt::U32 => MetaValue::U32(u32::from_le_bytes(self.array(&w)?)),
            vt::I32 => MetaValue::I32(i32::from_le_bytes(self.array(&w)?)),
            vt::F32 => MetaValue::F32(f32::from_le_bytes(self.array(&w)?)),
            vt::U64 => MetaValue::U64(u64::from_le_bytes(self.array(&w)?)),
            vt::I64 => MetaValue::I64(i64::from_le_bytes(self.array(&w)?)),
            vt::F64 => MetaValue::F64(f64::from_le_bytes(self.array(&w)?)),
            vt::BOOL => {
                let at = self.pos;
                let [b] = self.array(&w)?;
                MetaValue::Bool(self.bool(b, key, at)?)
            }
            vt::STRING => MetaValue::String(self.string(&w)?),
            vt::ARRAY => MetaValue::Array(self.meta_array(key, depth)?),
            _ => {
                return Err(self.err(format!(
                    "metadata {key} has unknown value type {ty} at offset {}",
                    self.pos - 4
                )))
            }
        })
    }

    fn bool(&self, b: u8, key: &str, at: u64) -> Result<bool> {
        match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err(format!(
                "metadata {key}: bool at offset {at} is {b}, not 0 or 1"
            ))),
        }
    }

    fn meta_array(&mut self, key: &str, depth: u32) -> Result<MetaArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.err(format!(
                "metadata {key}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels at offset {}",
                self.pos
            )));
        }
        let ty = self.u32(&|| format!("the element type of array {key}"))?;
        let count = self.u64(&|| format!("the length of array {key}"))?;
        // The smallest encoding of one element: fixed-size types take their size, a
        // string its 8-byte length, an array its 4-byte type and 8-byte length.
        let elem: u64 = match ty {
            vt::U8 | vt::I8 | vt::BOOL => 1,
            vt::U16 | vt::I16 => 2,
            vt::U32 | vt::I32 | vt::F32 => 4,
            vt::U64 | vt::I64 | vt::F64 | vt::STRING => 8,
            vt::ARRAY => 12,
            _ => {
                return Err(self.err(format!(
                    "array {key} has unknown element type {ty} at offset {}",
                    self.pos - 12
                )))
            }
        };
        let w = || format!("array {key} of {count} {}", vt::name(ty));
        self.need(count.checked_mul(elem), &w)?;
        // count * elem <= remaining, so count fits usize whenever the bytes do.
        let n = usize::try_from(count).map_err(|_| self.err(format!("{} is too long", w())))?;

        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let raw = self.bytes(count * elem, &w)?;
                MetaArray::$variant(
                    raw.chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| {
                            let mut a = [0u8; std::mem::size_of::<$t>()];
                            a.copy_from_slice(c);
                            <$t>::from_le_bytes(a)
                        })
                        .collect(),
                )
            }};
        }

        Ok(match ty {
            vt::U8 => MetaArray::U8(self.bytes(count, &w)?),
            vt::I8 => fixed!(I8, i8),
            vt::U16 => fixed!(U16, u16),
            vt::I16 => fixed!(I16, i16),
            vt::U32 => fixed!(U32, u32),
            vt::I32 => fixed!(I32, i32),
            vt::F32 => fixed!(F32, f32),
            vt::U64 => fixed!(U64, u64),
            vt::I64 => fixed!(I64, i64),
            vt::F64 => fixed!(F64, f64),
            vt::BOOL => {
                let at = self.pos;
                let raw = self.bytes(count, &w)?;
                let mut v = Vec::with_capacity(n);
                for (i, &b) in raw.iter().enumerate() {
                    v.push(self.bool(b, key, at + i as u64)?);
                }
                MetaArray::Bool(v)
            }
            vt::STRING => {
                let mut v = Vec::with_capacity(n);
                for i in 0..count {
                    v.push(self.string(&|| format!("element {i} of array {key}"))?);
                }
                MetaArray::String(v)
            }
            _ => {
                // vt::ARRAY, the only element type left.
                let mut v = Vec::with_capacity(n);
                for _ in 0..count {
                    v.push(self.meta_array(key, depth + 1)?);
                }
                MetaArray::Array(v)
            }
        })
    }
}
