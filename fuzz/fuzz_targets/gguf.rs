//! The GGUF reader on hostile bytes: header, metadata, tensor infos, then every tensor's
//! raw read and dequantization. Must return errors, never panic, and never allocate more
//! than a bounded multiple of the input (dequantized f32 is up to ~12x its Q2_K bytes).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use lockstep_model::gguf::GgufFile;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fuzz_target!(|data: &[u8]| {
    let mut parsed = None;
    let peak = common::peak_of(|| parsed = GgufFile::from_bytes(data.to_vec()).ok());
    // The copy of the input is 1x; the parsed header (strings, arrays, infos) a few more.
    common::check_peak("GgufFile::from_bytes", data.len(), peak, 16, 64 << 10);
    let Some(g) = parsed else { return };
    for t in g.tensors() {
        // Each info was checked against the file, so its bytes are at most the input's.
        assert!(
            t.offset + t.n_bytes <= data.len() as u64,
            "{t:?} is outside the input"
        );
        let peak = common::peak_of(|| {
            if let Ok(raw) = g.read_raw(t) {
                assert_eq!(raw.len() as u64, t.n_bytes);
            }
            if let Ok(v) = g.dequantize(t) {
                assert_eq!(v.len() as u64, t.n_elements());
            }
        });
        common::check_peak(
            "read_raw + dequantize",
            t.n_bytes as usize,
            peak,
            20,
            64 << 10,
        );
    }
});
