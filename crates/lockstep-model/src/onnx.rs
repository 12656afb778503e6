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

/// Graph files (weights excluded) are small; anything larger is not one of ours.
const MAX_GRAPH_BYTES: u64 = 256 << 20;

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
