//! Reads a GGUF file with `lockstep_model::gguf` and dequantizes every tensor.
//!
//! `cargo run --release -p lockstep-model --example gguf_check -- FILE.gguf [--hashes]`
//!
//! Prints a summary (version, metadata, tensor types, dequantization time). With
//! `--hashes` it also prints, per tensor, the sha256 of the dequantized values as
//! little-endian f32, to compare with another implementation, e.g. gguf-py:
//! `hashlib.sha256(gguf.quants.dequantize(t.data, t.tensor_type).astype("<f4").tobytes())`.

use std::collections::BTreeMap;
use std::time::Instant;

use lockstep_model::gguf::GgufFile;
use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: gguf_check FILE.gguf [--hashes]");
        std::process::exit(2);
    };
    let hashes = args.iter().any(|a| a == "--hashes");

    let t0 = Instant::now();
    let g = GgufFile::open(path)?;
    eprintln!(
        "{path}: GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at {}, read in {:.1?}",
        g.version(),
        g.metadata().len(),
        g.tensors().len(),
        g.alignment(),
        g.data_offset(),
        t0.elapsed()
    );
    for key in [
        "general.architecture",
        "general.name",
        "gemma3.embedding_length",
    ] {
        if let Some(v) = g.get(key) {
            eprintln!("  {key} = {v:?}");
        }
    }
    if let Some(a) = g.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
        eprintln!(
            "  tokenizer.ggml.tokens: {} {}",
            a.len(),
            a.element_type_name()
        );
    }

    let mut per_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let t0 = Instant::now();
    let mut total = 0u64;
    for t in g.tensors() {
        let values = g.dequantize(t)?;
        total += t.n_bytes;
        let e = per_type.entry(t.ggml_type.to_string()).or_default();
        e.0 += 1;
        e.1 += t.n_elements();
        if hashes {
            let mut h = Sha256::new();
            for v in &values {
                h.update(v.to_le_bytes());
            }
            let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            println!("{} {} {digest}", t.name, t.ggml_type);
        }
    }
    let dt = t0.elapsed();
    for (ty, (n, elems)) in &per_type {
        eprintln!("  {ty}: {n} tensors, {elems} values");
    }
    eprintln!(
        "dequantized {total} bytes in {dt:.2?} ({:.0} MB/s)",
        total as f64 / 1e6 / dt.as_secs_f64()
    );
    Ok(())
}
