//! The ONNX weight reader on hostile bytes: the protobuf decode, then every initializer's
//! bytes (inline or from the external data file) and the typed reads the weight loader
//! uses. Errors only; sizes are checked against dims and the data file before allocating.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lockstep_model::onnx::OnnxFile;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

/// Bytes of the external data file the graphs may point into (the seeds' data fit).
const DATA_LEN: usize = 1 << 20;

/// A directory holding `model.onnx.data`, made once per process: tensor reads need a real
/// file to seek in, and its contents do not matter to the reader.
fn model_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lockstep-fuzz-onnx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let data: Vec<u8> = (0..DATA_LEN).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(dir.join("model.onnx.data"), data).expect("data file");
        dir.join("model.onnx")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = model_path();
    let mut parsed = None;
    let peak = common::peak_of(|| parsed = OnnxFile::from_bytes(path, data).ok());
    // prost materializes every repeated message: an empty 2-byte message becomes a
    // ~300-byte struct (and Vec doubling). Bounded per byte, but not small: see
    // docs/bad-inputs.md for what that means at OnnxFile's 256 MiB cap.
    common::check_peak("OnnxFile::from_bytes", data.len(), peak, 640, 64 << 10);
    let Some(f) = parsed else { return };
    for t in &f.graph().initializer {
        let peak = common::peak_of(|| {
            if let Ok(bytes) = f.tensor_bytes(t) {
                let n: u64 = t.dims.iter().map(|&d| d as u64).product();
                assert!(
                    bytes.len() as u64 >= n,
                    "{} bytes for dims {:?}",
                    bytes.len(),
                    t.dims
                );
            }
            let _ = f.tensor_f32(&t.name);
            let _ = f.tensor_u8(&t.name);
        });
        common::check_peak("tensor reads", data.len() + DATA_LEN, peak, 2, 64 << 10);
    }
});
