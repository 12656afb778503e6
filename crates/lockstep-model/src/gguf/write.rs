//! A GGUF writer: metadata and tensors in, a GGUF v3 file out (the layout [`super`] reads).
//!
//! lockstep writes GGUF for one purpose: so that llama.cpp can run a model that has no GGUF
//! of its own (the synthetic test models), with exactly the weights ONNX Runtime runs.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use lockstep_core::{Error, Result};

use super::{GgmlType, MetaArray, MetaValue, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};

/// The GGUF version written.
pub const GGUF_VERSION: u32 = 3;

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes them as one GGUF file. Tensor data is
/// aligned to 32 bytes (the default `general.alignment`, so no key is written for it).
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor>,
    names: HashSet<String>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry; keys are written in the order they were first set, and
    /// setting a key again replaces its value.
    pub fn set(&mut self, key: impl Into<String>, value: MetaValue) -> &mut Self {
        let key = key.into();
        if self.keys.insert(key.clone()) {
            self.metadata.push((key, value));
        } else if let Some(entry) = self.metadata.iter_mut().find(|(k, _)| *k == key) {
            entry.1 = value;
        }
        self
    }

    /// Adds a tensor of `ggml_type` with ggml dims (`dims[0]` innermost) and its raw
    /// bytes, which must be exactly what the dims take in that type.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> Result<()> {
        let name = name.into();
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(Error::InvalidInput(format!(
                "tensor {name}: {} dimensions; ggml takes 1 to {MAX_DIMS}",
                dims.len()
            )));
        }
        let expected = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| ggml_type.n_bytes(n));
        if expected != Some(data.len() as u64) {
            return Err(Error::InvalidInput(format!(
                "tensor {name}: {} bytes do not match dims {dims:?} of type {ggml_type}",
                data.len()
            )));
        }
        if !self.names.insert(name.clone()) {
            return Err(Error::InvalidInput(format!("tensor {name} is added twice")));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        Ok(())
    }

    /// Adds an F32 tensor from its values in ggml order.
    pub fn add_f32(&mut self, name: impl Into<String>, dims: &[u64], values: &[f32]) -> Result<()> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_tensor(name, dims, GgmlType::F32, data)
    }

    /// The whole file, in memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// Writes the file to `path`: under a partial name first, renamed when complete, so
    /// that a reader never sees half a file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut file = lockstep_fetch::cache::AtomicFile::create(path)?;
        let partial = file.partial_path().to_path_buf();
        {
            let mut w = BufWriter::with_capacity(1 << 20, &mut file);
            self.write_to(&mut w)
                .and_then(|()| w.flush())
                .map_err(|e| Error::io("cannot write GGUF file", &partial, e))?;
        }
        file.commit()?;
        Ok(())
    }

    /// Writes the file to any stream.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut header = Vec::new();
        header.extend(GGUF_MAGIC);
        header.extend(GGUF_VERSION.to_le_bytes());
        header.extend((self.tensors.len() as u64).to_le_bytes());
        header.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut header, key);
            header.extend(value.type_id().to_le_bytes());
            put_value(&mut header, value);
        }
        // Offsets are relative to the data section; each tensor starts aligned.
        let mut offset = 0u64;
        for t in &self.tensors {
            put_string(&mut header, &t.name);
            header.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend(d.to_le_bytes());
            }
            header.extend(t.ggml_type.id().to_le_bytes());
            header.extend(offset.to_le_bytes());
            offset = align(offset + t.data.len() as u64);
        }
        header.resize(align(header.len() as u64) as usize, 0);
        w.write_all(&header)?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            let pad = align(t.data.len() as u64) - t.data.len() as u64;
            w.write_all(&vec![0u8; pad as usize])?;
        }
        Ok(())
    }
}

fn align(n: u64) -> u64 {
    n.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend(x.to_le_bytes()),
        MetaValue::U16(x) => out.extend(x.to_le_bytes()),
        MetaValue::I16(x) => out.extend(x.to_le_bytes()),
        MetaValue::U32(x) => out.extend(x.to_le_bytes()),
        MetaValue::I32(x) => out.extend(x.to_le_bytes()),
        MetaValue::F32(x) => out.extend(x.to_le_bytes()),
        MetaValue::Bool(b) => out.push(u8::from(*b)),
        MetaValue::String(s) => put_string(out, s),
        MetaValue::Array(a) => put_array(out, a),
        MetaValue::U64(x) => out.extend(x.to_le_bytes()),
        MetaValue::I64(x) => out.extend(x.to_le_bytes()),
        MetaValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &MetaArray) {
    out.extend(a.element_type_id().to_le_bytes());
    out.extend((a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend(x.to_le_bytes());
            }
        };
    }
    match a {
        MetaArray::U8(v) => out.extend(v),
        MetaArray::I8(v) => each!(v),
        MetaArray::U16(v) => each!(v),
        MetaArray::I16(v) => each!(v),
        MetaArray::U32(v) => each!(v),
        MetaArray::I32(v) => each!(v),
        MetaArray::F32(v) => each!(v),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| put_string(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
        MetaArray::U64(v) => each!(v),
        MetaArray::I64(v) => each!(v),
        MetaArray::F64(v) => each!(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    #[test]
    fn what_is_written_reads_back() {
        let mut w = GgufWriter::new();
        w.set("general.architecture", MetaValue::String("gemma3".into()))
            .set("gemma3.block_count", MetaValue::U32(4))
            .set(
                "gemma3.attention.layer_norm_rms_epsilon",
                MetaValue::F32(1e-6),
            )
            .set("flag", MetaValue::Bool(true))
            .set("big", MetaValue::U64(u64::MAX))
            .set(
                "tokens",
                MetaValue::Array(MetaArray::String(vec!["<pad>".into(), "▁the".into()])),
            )
            .set(
                "scores",
                MetaValue::Array(MetaArray::F32(vec![-1000.0, -2.5])),
            )
            .set(
                "nested",
                MetaValue::Array(MetaArray::Array(vec![
                    MetaArray::I32(vec![1, -2]),
                    MetaArray::Bool(vec![true]),
                ])),
            )
            // Replaces the earlier value, keeps the position.
            .set("gemma3.block_count", MetaValue::U32(18));
        let values: Vec<f32> = (0..96).map(|i| i as f32 * 0.25 - 3.0).collect();
        w.add_f32("a.weight", &[32, 3], &values).unwrap();
        // 5 bytes: the next tensor must start aligned anyway.
        w.add_tensor("b", &[5], GgmlType::I8, vec![1, 2, 3, 4, 5])
            .unwrap();
        let mut q8 = half::f16::from_f32(0.5).to_le_bytes().to_vec();
        q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
        w.add_tensor("c.weight", &[32], GgmlType::Q8_0, q8).unwrap();

        let g = GgufFile::from_bytes(w.to_bytes()).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.metadata().len(), 8);
        assert_eq!(g.get("gemma3.block_count"), Some(&MetaValue::U32(18)));
        assert_eq!(
            g.get("gemma3.attention.layer_norm_rms_epsilon"),
            Some(&MetaValue::F32(1e-6))
        );
        assert_eq!(g.get("big").and_then(MetaValue::as_u64), Some(u64::MAX));
        let tokens = g.get("tokens").and_then(MetaValue::as_array).unwrap();
        assert_eq!(tokens.as_strings().unwrap(), ["<pad>", "▁the"]);
        let nested = g.get("nested").and_then(MetaValue::as_array).unwrap();
        assert_eq!(nested.as_arrays().unwrap()[0].as_i32s().unwrap(), [1, -2]);

        let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a.weight", "b", "c.weight"]);
        let a = g.tensor("a.weight").unwrap();
        assert_eq!(a.dims, [32, 3]);
        assert_eq!(g.dequantize(a).unwrap(), values);
        let c = g.tensor("c.weight").unwrap();
        assert_eq!(c.offset % DEFAULT_ALIGNMENT, 0);
        let cv = g.dequantize(c).unwrap();
        assert_eq!(cv[0], -8.0);
        assert_eq!(cv[31], 7.5);
        assert_eq!(g.read_raw(g.tensor("b").unwrap()).unwrap(), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn wrong_sizes_and_duplicates_are_refused() {
        let mut w = GgufWriter::new();
        let e = w
            .add_tensor("x", &[32, 2], GgmlType::F32, vec![0; 10])
            .unwrap_err();
        assert!(
            e.to_string().contains("10 bytes do not match dims [32, 2]"),
            "{e}"
        );
        let e = w
            .add_tensor("q", &[16], GgmlType::Q8_0, vec![0; 17])
            .unwrap_err();
        assert!(e.to_string().contains("type Q8_0"), "{e}");
        w.add_f32("x", &[1], &[1.0]).unwrap();
        let e = w.add_f32("x", &[1], &[2.0]).unwrap_err();
        assert!(e.to_string().contains("added twice"), "{e}");
    }

    #[test]
    fn write_leaves_only_the_finished_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let mut w = GgufWriter::new();
        w.set("general.architecture", MetaValue::String("gemma3".into()));
        w.add_f32("t", &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        w.write(&path).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, ["m.gguf"]);
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(
            g.dequantize(g.tensor("t").unwrap()).unwrap(),
            [1.0, 2.0, 3.0, 4.0]
        );
    }
}
