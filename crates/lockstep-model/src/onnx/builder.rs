//! A small builder for ONNX graphs whose large initializers go to an external data file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use lockstep_core::{Error, Result};

use super::*;

/// Tensors at least this large go to the external data file; smaller ones stay inline.
const EXTERNAL_MIN_BYTES: usize = 1024;
/// External tensors start on page boundaries so that ONNX Runtime can map them.
const EXTERNAL_ALIGN: u64 = 4096;

/// Attribute values for [`GraphBuilder::node`].
pub enum Attr {
    Int(i64),
    Float(f32),
    Str(String),
    Ints(Vec<i64>),
}

/// Initializers streamed to `<model>.data` as they are added.
pub struct Initializers {
    file_name: String,
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    inline: Vec<TensorProto>,
}

impl Initializers {
    /// `data_path` is where the data is written now (a temp name is fine);
    /// `file_name` is the name the graph refers to once everything is renamed in place.
    pub fn create(data_path: &Path, file_name: &str) -> Result<Self> {
        let file = File::create(data_path)
            .map_err(|e| Error::io("cannot create the external data file", data_path, e))?;
        Ok(Self {
            file_name: file_name.to_string(),
            path: data_path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
            inline: Vec::new(),
        })
    }

    pub fn add_raw(
        &mut self,
        name: &str,
        data_type: i32,
        dims: &[i64],
        bytes: &[u8],
    ) -> Result<()> {
        let mut t = TensorProto {
            dims: dims.to_vec(),
            data_type,
            name: name.to_string(),
            ..Default::default()
        };
        if bytes.len() < EXTERNAL_MIN_BYTES {
            t.raw_data = bytes.to_vec();
        } else {
            let pad = (EXTERNAL_ALIGN - self.offset % EXTERNAL_ALIGN) % EXTERNAL_ALIGN;
            let io = |e| Error::io("cannot write the external data file", &self.path, e);
            self.out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
            self.offset += pad;
            self.out.write_all(bytes).map_err(io)?;
            t.data_location = DATA_LOCATION_EXTERNAL;
            t.external_data = vec![
                entry("location", &self.file_name),
                entry("offset", &self.offset.to_string()),
                entry("length", &bytes.len().to_string()),
            ];
            self.offset += bytes.len() as u64;
        }
        self.inline.push(t);
        Ok(())
    }

    pub fn add_f32(&mut self, name: &str, dims: &[i64], values: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_raw(name, data_type::FLOAT, dims, &bytes)
    }

    pub fn add_i64(&mut self, name: &str, dims: &[i64], values: &[i64]) -> Result<()> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_raw(name, data_type::INT64, dims, &bytes)
    }

    /// Flushes and syncs the data file; returns the tensor protos for the graph.
    pub fn finish(mut self) -> Result<Vec<TensorProto>> {
        let io = |e| Error::io("cannot write the external data file", &self.path, e);
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_all().map_err(io)?;
        Ok(self.inline)
    }
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: key.into(),
        value: value.into(),
    }
}

/// A dimension: a fixed size or a named symbolic one.
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

/// Builds the node list, inputs and outputs of one graph.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

impl GraphBuilder {
    pub fn input(&mut self, name: &str, elem_type: i32, dims: Vec<Dim>) {
        self.inputs.push(value_info(name, elem_type, dims));
    }

    pub fn output(&mut self, name: &str, elem_type: i32, dims: Vec<Dim>) {
        self.outputs.push(value_info(name, elem_type, dims));
    }

    /// Adds a node and returns its first output's name. `outputs` empty means one fresh
    /// output named after the node.
    pub fn node(
        &mut self,
        op_type: &str,
        domain: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        self.counter += 1;
        let name = format!("{op_type}_{}", self.counter);
        let outputs: Vec<String> = if outputs.is_empty() {
            vec![format!("{name}_out")]
        } else {
            outputs.iter().map(|s| s.to_string()).collect()
        };
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            name,
            op_type: op_type.into(),
            domain: domain.into(),
            attribute: attrs.into_iter().map(|(n, a)| attribute(n, a)).collect(),
        });
        outputs.into_iter().next().expect("at least one output")
    }

    /// Shorthand for a standard-domain node with one fresh output.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.node(op_type, "", inputs, &[], attrs)
    }

    pub fn finish(self, name: &str, initializer: Vec<TensorProto>) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: name.into(),
            initializer,
            doc_string: String::new(),
            input: self.inputs,
            output: self.outputs,
            value_info: Vec::new(),
        }
    }
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.into(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.r#type = attribute_type::INT;
            a.i = i;
        }
        Attr::Float(f) => {
            a.r#type = attribute_type::FLOAT;
            a.f = f;
        }
        Attr::Str(s) => {
            a.r#type = attribute_type::STRING;
            a.s = s.into_bytes();
        }
        Attr::Ints(v) => {
            a.r#type = attribute_type::INTS;
            a.ints = v;
        }
    }
    a
}

fn value_info(name: &str, elem_type: i32, dims: Vec<Dim>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .into_iter()
                        .map(|d| match d {
                            Dim::Fixed(v) => Dimension {
                                dim_value: Some(v),
                                dim_param: None,
                            },
                            Dim::Named(p) => Dimension {
                                dim_value: None,
                                dim_param: Some(p.into()),
                            },
                        })
                        .collect(),
                }),
            }),
        }),
    }
}
