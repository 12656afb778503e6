//! The subset of the ONNX protobuf schema lockstep writes and reads, as prost messages.
//!
//! Field numbers follow `onnx.proto3` (ONNX IR version 10). Hand-declared rather than
//! generated so the build needs no protoc and no schema download; only the messages a
//! decoder-only model uses are here. A `oneof` with one member in use is declared as an
//! optional field: the wire format is the same.

mod builder;

pub use builder::{Attr, Dim, GraphBuilder, Initializers};

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use lockstep_core::{Error, Result};
use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(string, tag = "7")]
    pub domain: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

/// `AttributeProto.AttributeType` values.
pub mod attribute_type {
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    /// `oneof value`: only tensors are used.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProtoTensor {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// `TensorProto.DataType` values.
pub mod data_type {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const FLOAT16: i32 = 10;
}

/// `TensorProto.DataLocation::EXTERNAL`.
pub const DATA_LOCATION_EXTERNAL: i32 = 1;

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

fn element_size(data_type: i32) -> Option<usize> {
    match data_type {
        data_type::FLOAT | data_type::INT32 => Some(4),
        data_type::UINT8 => Some(1),
        data_type::INT64 => Some(8),
        _ => None,
    }
}

/// A model file opened for reading initializers back, external data included.
pub struct OnnxFile {
    path: PathBuf,
    model: ModelProto,
    by_name: HashMap<String, usize>,
}

/// Graph files (weights excluded) are small: the converted 270M, 1B and 4B graphs and the
/// coreml variant's two graphs are all under 256 KB. Anything larger is not one of ours.
const MAX_GRAPH_BYTES: u64 = 16 << 20;

/// The most memory decoding may take, per byte of the graph file, and in all on top.
/// prost materializes every repeated message as a whole struct before any check, so a
/// 2-byte empty `TensorProto` costs ~200 bytes: the wire format is scanned first and a
/// graph whose estimated decoded size exceeds this is refused. The estimate is an upper
/// bound: for the converted graphs (every model and variant) it is 13-15x the file, and
/// decoding them actually takes 7-9x.
const MAX_DECODE_FACTOR: u64 = 32;
const MAX_DECODE_SLACK: u64 = 64 << 10;

impl OnnxFile {
    pub fn open(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io("cannot open ONNX model", path, e))?
            .len();
        if len > MAX_GRAPH_BYTES {
            return Err(Error::Model(format!(
                "{}: {len} bytes is larger than any lockstep graph file (weights belong in the external data file); re-run `lockstep convert`",
                path.display()
            )));
        }
        let bytes =
            std::fs::read(path).map_err(|e| Error::io("cannot read ONNX model", path, e))?;
        Self::from_bytes(path, &bytes)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let len = bytes.len() as u64;
        let estimate = wire::decoded_size(bytes);
        let limit = len
            .saturating_mul(MAX_DECODE_FACTOR)
            .saturating_add(MAX_DECODE_SLACK);
        if estimate > limit {
            return Err(Error::Model(format!(
                "{}: not a lockstep graph: its {len} bytes would decode into about {estimate} bytes of messages (more than {MAX_DECODE_FACTOR}x the file); re-run `lockstep convert`",
                path.display()
            )));
        }
        let model = ModelProto::decode(bytes).map_err(|e| {
            Error::Model(format!(
                "{}: not a valid ONNX model ({e}); re-run `lockstep convert`",
                path.display()
            ))
        })?;
        let graph = model.graph.as_ref().ok_or_else(|| {
            Error::Model(format!("{}: the ONNX model has no graph", path.display()))
        })?;
        let by_name = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            model,
            by_name,
        })
    }

    pub fn model(&self) -> &ModelProto {
        &self.model
    }

    pub fn graph(&self) -> &GraphProto {
        self.model.graph.as_ref().expect("checked in from_bytes")
    }

    pub fn initializer(&self, name: &str) -> Result<&TensorProto> {
        self.by_name
            .get(name)
            .map(|&i| &self.graph().initializer[i])
            .ok_or_else(|| {
                Error::Model(format!(
                    "{}: initializer '{name}' is missing; the file was not written by `lockstep convert` or is damaged",
                    self.path.display()
                ))
            })
    }

    /// The raw little-endian bytes of an initializer, read from the external data file if
    /// the tensor lives there. The size is checked against dims and the data file's
    /// length before anything is allocated.
    pub fn tensor_bytes(&self, t: &TensorProto) -> Result<Vec<u8>> {
        let bad = |what: String| {
            Error::Model(format!(
                "{}: initializer '{}': {what}; re-run `lockstep convert`",
                self.path.display(),
                t.name
            ))
        };
        let elem = element_size(t.data_type)
            .ok_or_else(|| bad(format!("unsupported data type {}", t.data_type)))?;
        let count = t.dims.iter().try_fold(1u64, |acc, &d| {
            u64::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        });
        let expected = count
            .and_then(|c| c.checked_mul(elem as u64))
            .ok_or_else(|| bad(format!("invalid dims {:?}", t.dims)))?;
        if t.data_location != DATA_LOCATION_EXTERNAL {
            if t.raw_data.len() as u64 != expected {
                return Err(bad(format!(
                    "holds {} bytes, dims {:?} need {expected}",
                    t.raw_data.len(),
                    t.dims
                )));
            }
            return Ok(t.raw_data.clone());
        }
        let entry = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.as_str())
        };
        let location =
            entry("location").ok_or_else(|| bad("external data without location".into()))?;
        if location.contains("..") || Path::new(location).is_absolute() {
            return Err(bad(format!(
                "external data location '{location}' leaves the model directory"
            )));
        }
        let offset: u64 = entry("offset")
            .unwrap_or("0")
            .parse()
            .map_err(|_| bad("bad offset".into()))?;
        let length: u64 = match entry("length") {
            Some(l) => l.parse().map_err(|_| bad("bad length".into()))?,
            None => expected,
        };
        if length != expected {
            return Err(bad(format!(
                "external length {length}, dims {:?} need {expected}",
                t.dims
            )));
        }
        let data_path = self.path.with_file_name(location);
        let mut file = std::fs::File::open(&data_path)
            .map_err(|e| Error::io("cannot open the model's external data", &data_path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("cannot stat the model's external data", &data_path, e))?
            .len();
        if offset.checked_add(length).is_none_or(|end| end > file_len) {
            return Err(bad(format!(
                "data at {offset}..+{length} runs past the end of {} ({file_len} bytes): the file is truncated",
                data_path.display()
            )));
        }
        let mut buf = vec![0u8; length as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| Error::io("cannot read the model's external data", &data_path, e))?;
        Ok(buf)
    }

    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<i64>, Vec<f32>)> {
        let t = self.initializer(name)?;
        if t.data_type != data_type::FLOAT {
            return Err(Error::Model(format!(
                "{}: initializer '{name}' is not float32",
                self.path.display()
            )));
        }
        let bytes = self.tensor_bytes(t)?;
        let values = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((t.dims.clone(), values))
    }

    pub fn tensor_u8(&self, name: &str) -> Result<(Vec<i64>, Vec<u8>)> {
        let t = self.initializer(name)?;
        if t.data_type != data_type::UINT8 {
            return Err(Error::Model(format!(
                "{}: initializer '{name}' is not uint8",
                self.path.display()
            )));
        }
        Ok((t.dims.clone(), self.tensor_bytes(t)?))
    }
}

/// A scan of the protobuf wire format that bounds what decoding it would allocate, before
/// prost allocates anything. It follows the schema above: every element of a repeated
/// message field costs its struct, every string and byte field its length, every packed
/// scalar its decoded size; unknown fields cost nothing (prost skips them). Where the
/// bytes are malformed the scan stops with what it counted so far: prost decodes in the
/// same order and fails at the same place, so the count still bounds its work.
mod wire {
    use std::mem::size_of;

    use super::*;

    #[derive(Clone, Copy)]
    enum Kind {
        Model,
        OpSet,
        Entry,
        Graph,
        Node,
        Attribute,
        ValueInfo,
        Type,
        TypeTensor,
        Shape,
        Dim,
        Tensor,
    }

    /// What a field decodes into.
    enum Field {
        /// A message; repeated ones add one struct per element.
        Message(Kind, bool),
        /// A `Vec<String>` element.
        RepeatedString,
        /// A `String` or `Vec<u8>`.
        Bytes,
        /// A repeated varint scalar of this many bytes per element in memory.
        Scalar(u64),
        /// A repeated `f32` (fixed 4 bytes on the wire).
        Float,
        /// Anything else: skipped or a fixed-size value inside its struct.
        Other,
    }

    /// One entry of `OnnxFile::by_name` (its table keeps a control byte per slot too).
    const INDEX_SLOT: u64 = size_of::<(String, usize)>() as u64 + 1;

    fn struct_size(k: Kind) -> u64 {
        (match k {
            Kind::Model => size_of::<ModelProto>(),
            Kind::OpSet => size_of::<OperatorSetIdProto>(),
            Kind::Entry => size_of::<StringStringEntryProto>(),
            Kind::Graph => size_of::<GraphProto>(),
            Kind::Node => size_of::<NodeProto>(),
            Kind::Attribute => size_of::<AttributeProto>(),
            Kind::ValueInfo => size_of::<ValueInfoProto>(),
            Kind::Type => size_of::<TypeProto>(),
            Kind::TypeTensor => size_of::<TypeProtoTensor>(),
            Kind::Shape => size_of::<TensorShapeProto>(),
            Kind::Dim => size_of::<Dimension>(),
            Kind::Tensor => size_of::<TensorProto>(),
        }) as u64
    }

    fn field(k: Kind, tag: u64) -> Field {
        use Field::*;
        match (k, tag) {
            (Kind::Model, 7) => Message(Kind::Graph, false),
            (Kind::Model, 8) => Message(Kind::OpSet, true),
            (Kind::Model, 14) => Message(Kind::Entry, true),
            (Kind::Model, 2 | 3 | 4 | 6) => Bytes,
            (Kind::OpSet, 1) => Bytes,
            (Kind::Entry, 1 | 2) => Bytes,
            (Kind::Graph, 1) => Message(Kind::Node, true),
            (Kind::Graph, 5) => Message(Kind::Tensor, true),
            (Kind::Graph, 11..=13) => Message(Kind::ValueInfo, true),
            (Kind::Graph, 2 | 10) => Bytes,
            (Kind::Node, 1 | 2) => RepeatedString,
            (Kind::Node, 3 | 4 | 7) => Bytes,
            (Kind::Node, 5) => Message(Kind::Attribute, true),
            (Kind::Attribute, 1 | 4) => Bytes,
            (Kind::Attribute, 5) => Message(Kind::Tensor, false),
            (Kind::Attribute, 7) => Float,
            (Kind::Attribute, 8) => Scalar(8),
            (Kind::ValueInfo, 1) => Bytes,
            (Kind::ValueInfo, 2) => Message(Kind::Type, false),
            (Kind::Type, 1) => Message(Kind::TypeTensor, false),
            (Kind::TypeTensor, 2) => Message(Kind::Shape, false),
            (Kind::Shape, 1) => Message(Kind::Dim, true),
            (Kind::Dim, 2) => Bytes,
            (Kind::Tensor, 1 | 7) => Scalar(8),
            (Kind::Tensor, 4) => Float,
            (Kind::Tensor, 5) => Scalar(4),
            (Kind::Tensor, 8 | 9) => Bytes,
            (Kind::Tensor, 13) => Message(Kind::Entry, true),
            _ => Other,
        }
    }

    /// The bytes decoding a `ModelProto` from `buf` would allocate, at most (saturating).
    pub(super) fn decoded_size(buf: &[u8]) -> u64 {
        let mut total = 0u64;
        scan(Kind::Model, buf, &mut total);
        total
    }

    fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(*pos)?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// Moves `pos` past `n` bytes, if there are that many.
    fn skip(buf: &[u8], pos: &mut usize, n: u64) -> Option<()> {
        let end = pos.checked_add(usize::try_from(n).ok()?)?;
        (end <= buf.len()).then(|| *pos = end)
    }

    /// Vec growth: a vector's capacity is at most twice its length, and growing it holds
    /// the old and the new buffer at once.
    const GROWTH: u64 = 3;

    fn add(total: &mut u64, n: u64) {
        *total = total.saturating_add(n);
    }

    /// Counts the fields of one message of kind `k` held in `buf`; `None` where the
    /// bytes are malformed (the count so far stands).
    fn scan(k: Kind, buf: &[u8], total: &mut u64) -> Option<()> {
        let mut pos = 0;
        while pos < buf.len() {
            let key = varint(buf, &mut pos)?;
            let (tag, wire_type) = (key >> 3, key & 7);
            match wire_type {
                0 => {
                    varint(buf, &mut pos)?;
                    if let Field::Scalar(size) = field(k, tag) {
                        add(total, GROWTH * size);
                    }
                }
                1 => skip(buf, &mut pos, 8)?,
                5 => {
                    skip(buf, &mut pos, 4)?;
                    if let Field::Float = field(k, tag) {
                        add(total, GROWTH * 4);
                    }
                }
                2 => {
                    let n = varint(buf, &mut pos)?;
                    let start = pos;
                    skip(buf, &mut pos, n)?;
                    match field(k, tag) {
                        Field::Message(sub, repeated) => {
                            if repeated {
                                add(total, GROWTH * struct_size(sub));
                            }
                            if let (Kind::Graph, Kind::Tensor) = (k, sub) {
                                // OnnxFile's index: a copy of the name and a map slot.
                                add(total, n.saturating_add(GROWTH * INDEX_SLOT));
                            }
                            scan(sub, &buf[start..pos], total)?;
                        }
                        Field::RepeatedString => add(
                            total,
                            (GROWTH * size_of::<String>() as u64).saturating_add(n),
                        ),
                        Field::Bytes => add(total, n),
                        // Packed varints: at most one element per byte.
                        Field::Scalar(size) => add(total, n.saturating_mul(GROWTH * size)),
                        // Packed floats: n / 4 elements of 4 bytes.
                        Field::Float => add(total, n.saturating_mul(GROWTH)),
                        Field::Other => {}
                    }
                }
                3 => skip_group(buf, &mut pos)?,
                _ => return None,
            }
        }
        Some(())
    }

    /// Moves past a (deprecated) group that has just started; prost skips its contents.
    fn skip_group(buf: &[u8], pos: &mut usize) -> Option<()> {
        let mut depth = 1u32;
        while depth > 0 {
            let key = varint(buf, pos)?;
            match key & 7 {
                0 => {
                    varint(buf, pos)?;
                }
                1 => skip(buf, pos, 8)?,
                2 => {
                    let n = varint(buf, pos)?;
                    skip(buf, pos, n)?;
                }
                3 => depth += 1,
                4 => depth -= 1,
                5 => skip(buf, pos, 4)?,
                _ => return None,
            }
        }
        Some(())
    }
}
