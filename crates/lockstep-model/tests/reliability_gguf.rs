//! Hostile GGUF files through the reader and the converter's use of it: every bad input is
//! an error with a clear one-line message, never a panic, and parsing never allocates more
//! than a bounded multiple of the file. Also writes the GGUF fuzz seeds
//! (`LOCKSTEP_WRITE_FUZZ_SEEDS=1`, see scripts/fuzz.sh) and checks the committed ones.
//!
//! Cases that abort the process instead of panicking (a huge `Vec::with_capacity`) run in
//! a child process: `#[ignore]`d tests that the parent test re-runs by name.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use lockstep_model::convert::{config_from_gguf, convert_gguf, weights_from_gguf, ConvertOptions};
use lockstep_model::gguf::{GgmlType, GgufFile, MetaArray, MetaValue};
use lockstep_model::weights::ModelWeights;

// ---- a per-thread counting allocator (tests run on several threads) ------------------

mod alloc {
    use super::Cell;
    use std::alloc::{GlobalAlloc, Layout, System};

    pub struct Counting;

    thread_local! {
        static LIVE: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    fn grow(n: usize) {
        // `try_with`: the thread's TLS may already be gone while it frees its last memory.
        let _ = LIVE.try_with(|l| {
            let now = l.get() + n;
            l.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
    }

    fn shrink(n: usize) {
        let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                grow(layout.size());
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            shrink(layout.size());
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                if new_size > layout.size() {
                    grow(new_size - layout.size());
                } else {
                    shrink(layout.size() - new_size);
                }
            }
            p
        }
    }

    /// The most bytes `f` had allocated at once on this thread.
    pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let out = f();
        (out, PEAK.with(Cell::get) - base)
    }
}

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

// ---- a tiny GGUF writer ----------------------------------------------------------------

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::String(s) => put_str(b, s),
        MetaValue::Array(MetaArray::String(items)) => {
            b.extend_from_slice(&8u32.to_le_bytes());
            b.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for s in items {
                put_str(b, s);
            }
        }
        other => unreachable!("the writer does not need {other:?}"),
    }
}

#[derive(Clone)]
struct Tensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    /// Written at this data-section offset instead of the next free one (overlap tests).
    offset: Option<u64>,
}

/// Writes a GGUF v3 file with alignment 32; tensor data is deterministic pseudo-random
/// bytes with a small f16 scale at the start of every block.
fn build(kvs: &[(&str, MetaValue)], tensors: &[Tensor]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut b, k);
        b.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut b, v);
    }
    let mut next = 0u64;
    let mut placed = Vec::new();
    for t in tensors {
        put_str(&mut b, &t.name);
        b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&t.ty.id().to_le_bytes());
        let n = t.ty.n_bytes(t.dims.iter().product()).expect("whole blocks");
        let at = t.offset.unwrap_or(next);
        b.extend_from_slice(&at.to_le_bytes());
        placed.push((at, n, t.ty));
        next = next.max(at + n).next_multiple_of(32);
    }
    let start = (b.len() as u64).next_multiple_of(32);
    let mut seed = 0x1234_5678u32;
    for (at, n, ty) in placed {
        let from = (start + at) as usize;
        b.resize(b.len().max(from + n as usize), 0);
        for (i, byte) in b[from..from + n as usize].iter_mut().enumerate() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *byte = (seed >> 16) as u8;
            // A scale of ~0.01 as the first f16 of each block (or element, for F16).
            let pos = i as u64 % ty.type_size();
            if ty != GgmlType::F32 && pos < 2 {
                *byte = half::f16::from_f32(0.0123).to_le_bytes()[pos as usize];
            }
        }
        if ty == GgmlType::F32 {
            let floats: Vec<u8> = (0..n / 4)
                .flat_map(|i| (1.0 + i as f32 * 0.001).to_le_bytes())
                .collect();
            b[from..from + n as usize].copy_from_slice(&floats);
        }
    }
    b
}

fn t(name: &str, dims: &[u64], ty: GgmlType) -> Tensor {
    Tensor {
        name: name.into(),
        dims: dims.to_vec(),
        ty,
        offset: None,
    }
}

const HIDDEN: u64 = 32;
const VOCAB: u64 = 64;
const HEAD_DIM: u64 = 16;
const FFN: u64 = 64;

fn gemma_metadata() -> Vec<(&'static str, MetaValue)> {
    let mut tokens: Vec<String> = (0..VOCAB).map(|i| format!("tok{i}")).collect();
    tokens[0] = "<pad>".into();
    tokens[1] = "<eos>".into();
    tokens[2] = "<bos>".into();
    tokens[6] = "<end_of_turn>".into();
    vec![
        ("general.architecture", MetaValue::String("gemma3".into())),
        ("gemma3.embedding_length", MetaValue::U32(HIDDEN as u32)),
        ("gemma3.attention.head_count", MetaValue::U32(2)),
        ("gemma3.attention.head_count_kv", MetaValue::U32(1)),
        (
            "gemma3.attention.key_length",
            MetaValue::U32(HEAD_DIM as u32),
        ),
        ("gemma3.feed_forward_length", MetaValue::U32(FFN as u32)),
        ("gemma3.block_count", MetaValue::U32(1)),
        ("gemma3.context_length", MetaValue::U32(128)),
        ("gemma3.attention.sliding_window", MetaValue::U32(16)),
        (
            "gemma3.attention.layer_norm_rms_epsilon",
            MetaValue::F32(1e-6),
        ),
        ("gemma3.rope.freq_base", MetaValue::F32(1e6)),
        (
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::String(tokens)),
        ),
    ]
}

/// One Gemma 3 layer with every source type the converter meets (Q8_0 embedding, Q4_0,
/// Q5_0, Q8_0 and F16 projections, F32 norms), plus K-quant and BF16 tensors the
/// converter ignores but the dequantizer must read.
fn gemma_tensors() -> Vec<Tensor> {
    use GgmlType::*;
    let q = 2 * HEAD_DIM;
    let kv = HEAD_DIM;
    let mut v = vec![t("token_embd.weight", &[HIDDEN, VOCAB], Q8_0)];
    let p = |s: &str| format!("blk.0.{s}.weight");
    v.extend([
        t(&p("attn_norm"), &[HIDDEN], F32),
        t(&p("attn_q"), &[HIDDEN, q], Q4_0),
        t(&p("attn_k"), &[HIDDEN, kv], Q5_0),
        t(&p("attn_v"), &[HIDDEN, kv], Q8_0),
        t(&p("attn_output"), &[q, HIDDEN], F16),
        t(&p("attn_q_norm"), &[HEAD_DIM], F32),
        t(&p("attn_k_norm"), &[HEAD_DIM], F32),
        t(&p("post_attention_norm"), &[HIDDEN], F32),
        t(&p("ffn_norm"), &[HIDDEN], F32),
        t(&p("ffn_gate"), &[HIDDEN, FFN], Q4_0),
        t(&p("ffn_up"), &[HIDDEN, FFN], Q5_0),
        t(&p("ffn_down"), &[FFN, HIDDEN], Q8_0),
        t(&p("post_ffw_norm"), &[HIDDEN], F32),
        t("output_norm.weight", &[HIDDEN], F32),
        t("extra.q4_k", &[256], Q4_K),
        t("extra.q6_k", &[256], Q6_K),
        t("extra.q2_k", &[256], Q2_K),
        t("extra.bf16", &[8], BF16),
    ]);
    v
}

fn tiny_gemma_gguf() -> Vec<u8> {
    build(&gemma_metadata(), &gemma_tensors())
}

fn with_meta(key: &str, value: MetaValue) -> Vec<u8> {
    let mut kvs = gemma_metadata();
    match kvs.iter_mut().find(|(k, _)| *k == key) {
        Some(kv) => kv.1 = value,
        None => kvs.push((Box::leak(key.to_string().into_boxed_str()), value)),
    }
    build(&kvs, &gemma_tensors())
}

fn without_meta(key: &str) -> Vec<u8> {
    let kvs: Vec<_> = gemma_metadata()
        .into_iter()
        .filter(|(k, _)| *k != key)
        .collect();
    build(&kvs, &gemma_tensors())
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "lockstep-reliability-gguf-{}-{tag}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What `lockstep convert` does with a GGUF held in memory: parse, read the config,
/// quantize every weight. Returns the first error's message.
fn convert_in_memory(bytes: &[u8]) -> Result<(), String> {
    let g = GgufFile::from_bytes(bytes.to_vec()).map_err(|e| e.to_string())?;
    let c = config_from_gguf(&g).map_err(|e| e.to_string())?;
    weights_from_gguf(&g, c, 4, &ProgressBar::hidden()).map_err(|e| e.to_string())?;
    Ok(())
}

/// Parses `bytes`, which must fail; returns the message, after checking that parsing
/// allocated at most 16x the file plus 64 KiB.
fn parse_err(bytes: &[u8]) -> String {
    let (r, peak) = alloc::peak_of(|| GgufFile::from_bytes(bytes.to_vec()).map(|_| ()));
    let limit = 16 * bytes.len() + (64 << 10);
    assert!(
        peak <= limit,
        "parsing {} bytes allocated {peak} (limit {limit})",
        bytes.len()
    );
    let e = r.expect_err("a malformed GGUF was accepted").to_string();
    assert!(!e.contains('\n'), "messages are one line: {e:?}");
    e
}

/// Re-runs one `#[ignore]`d test of this binary in a child process: for inputs that may
/// abort (an allocation failure is not a panic and would kill every test here).
fn run_isolated(test: &str) -> std::process::Output {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    eprintln!(
        "child {test}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---- the valid tiny file ---------------------------------------------------------------

#[test]
fn tiny_gemma_gguf_parses_converts_and_reads_back() {
    let bytes = tiny_gemma_gguf();
    let g = GgufFile::from_bytes(bytes.clone()).unwrap();
    for t in g.tensors() {
        assert_eq!(g.dequantize(t).unwrap().len() as u64, t.n_elements());
    }
    let c = config_from_gguf(&g).unwrap();
    assert_eq!(
        (c.hidden_size, c.vocab_size, c.head_dim, c.num_layers),
        (32, 64, 16, 1)
    );
    assert_eq!(c.eos_token_ids, vec![1, 6]);
    convert_in_memory(&bytes).unwrap();

    // The whole converter on the file, and the weights read back out of the ONNX.
    let dir = temp_dir("convert");
    let gguf = dir.join("tiny.gguf");
    std::fs::write(&gguf, &bytes).unwrap();
    let tok = dir.join("tok");
    std::fs::create_dir_all(&tok).unwrap();
    std::fs::write(tok.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(tok.join("tokenizer_config.json"), "{}").unwrap();
    let opts = ConvertOptions {
        name: "tiny".into(),
        accuracy_level: 0,
        tokenizer_dir: tok,
        projection_bits: 4,
        progress: false,
        variant: Default::default(),
    };
    let out = dir.join("model");
    convert_gguf(&gguf, &out, &opts).unwrap();
    let w = ModelWeights::load(&out).unwrap();
    assert_eq!(w.embed.n, 64);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the table: bad files and their messages --------------------------------------------

/// Every case of docs/bad-inputs.md's GGUF table; the test prints the actual messages.
#[test]
fn bad_gguf_files_give_one_line_errors() {
    let good = tiny_gemma_gguf();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", Vec::new()),
        ("wrong magic (a zip file)", {
            let mut b = good.clone();
            b[..4].copy_from_slice(b"PK\x03\x04");
            b
        }),
        ("version 1", {
            let mut b = good.clone();
            b[4..8].copy_from_slice(&1u32.to_le_bytes());
            b
        }),
        ("big-endian version", {
            let mut b = good.clone();
            b[4..8].copy_from_slice(&3u32.to_be_bytes());
            b
        }),
        ("tensor count 2^60", {
            let mut b = good.clone();
            b[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
            b
        }),
        ("metadata count u64::MAX", {
            let mut b = good.clone();
            b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("first key length 2^62", {
            let mut b = good.clone();
            b[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
            b
        }),
        ("truncated in the header", good[..20].to_vec()),
        ("truncated in the metadata", good[..200].to_vec()),
        (
            "truncated in the tensor data",
            good[..good.len() - 100].to_vec(),
        ),
        ("string array of 2^61 entries", {
            let mut kvs = gemma_metadata();
            kvs.truncate(1);
            let mut b = build(&kvs, &[]);
            // A second key whose value claims 2^61 strings.
            b[16..24].copy_from_slice(&2u64.to_le_bytes());
            put_str(&mut b, "tokenizer.ggml.tokens");
            b.extend_from_slice(&9u32.to_le_bytes());
            b.extend_from_slice(&8u32.to_le_bytes());
            b.extend_from_slice(&(1u64 << 61).to_le_bytes());
            b
        }),
        ("dims overflow u64 (2^32 x 2^32 x 2)", {
            build(&[], &[])
                .into_iter()
                .take(24)
                .chain(one_info("w", &[1 << 32, 1 << 32, 2], 0, 0))
                .collect()
        }),
        ("5 dimensions", {
            build(&[], &[])
                .into_iter()
                .take(24)
                .chain(one_info("w", &[1, 1, 1, 1, 1], 0, 0))
                .collect()
        }),
        ("unknown ggml type 99", {
            build(&[], &[])
                .into_iter()
                .take(24)
                .chain(one_info("w", &[32], 99, 0))
                .collect()
        }),
        ("Q4_0 row of 33 elements", {
            build(&[], &[])
                .into_iter()
                .take(24)
                .chain(one_info("w", &[33], 2, 0))
                .collect()
        }),
        ("tensor data offset past the end", {
            build(&[], &[])
                .into_iter()
                .take(24)
                .chain(one_info("w", &[8], 0, 1 << 40))
                .collect()
        }),
        (
            "general.alignment 0",
            with_meta("general.alignment", MetaValue::U32(0)),
        ),
    ];
    // Fix the tensor count of the hand-made single-info files.
    for (_, b) in cases.iter_mut() {
        if b.len() >= 24 && b[..4] == *b"GGUF" && b[8..16] == [0; 8] && b.len() > 24 {
            b[8..16].copy_from_slice(&1u64.to_le_bytes());
        }
    }
    for (what, bytes) in &cases {
        let e = parse_err(bytes);
        println!("| {what} | `{e}` |");
    }
}

/// One tensor info (name, dims, type id, offset) for a file with no metadata.
fn one_info(name: &str, dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, name);
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.resize(b.len() + 64, 0);
    b
}

/// Every prefix of the tiny file is an error (never a panic), within the allocation bound.
#[test]
fn every_truncation_of_the_tiny_file_is_an_error() {
    let good = tiny_gemma_gguf();
    for n in 0..good.len() {
        parse_err(&good[..n]);
    }
}

/// What the converter reads from a parsed file (metadata, shapes) is checked too.
#[test]
fn bad_gemma_metadata_gives_errors() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "architecture llama",
            with_meta("general.architecture", MetaValue::String("llama".into())),
        ),
        ("no block_count", without_meta("gemma3.block_count")),
        (
            "embedding_length 48 (tensors are 32 wide)",
            with_meta("gemma3.embedding_length", MetaValue::U32(48)),
        ),
        ("block_count 2 (the file has one layer)", {
            with_meta("gemma3.block_count", MetaValue::U32(2))
        }),
        ("a missing tensor", {
            let ts: Vec<_> = gemma_tensors()
                .into_iter()
                .filter(|t| t.name != "blk.0.ffn_up.weight")
                .collect();
            build(&gemma_metadata(), &ts)
        }),
        ("a mis-shaped tensor", {
            let mut ts = gemma_tensors();
            ts[2].dims = vec![HIDDEN, 2 * HEAD_DIM + 32];
            build(&gemma_metadata(), &ts)
        }),
    ];
    for (what, bytes) in cases {
        let e = convert_in_memory(&bytes).expect_err(what);
        assert!(!e.contains('\n'));
        println!("| {what} | `{e}` |");
    }
}

/// BUG (convert/mod.rs config_from_gguf): `hidden / heads` divides by zero when
/// `attention.head_count` is 0 and `attention.key_length` is absent.
#[test]
fn zero_heads_is_an_error_not_a_division_by_zero() {
    let mut kvs = gemma_metadata();
    kvs.retain(|(k, _)| *k != "gemma3.attention.key_length");
    for kv in kvs.iter_mut() {
        if kv.0 == "gemma3.attention.head_count" {
            kv.1 = MetaValue::U32(0);
        }
    }
    let bytes = build(&kvs, &gemma_tensors());
    let r = std::panic::catch_unwind(|| convert_in_memory(&bytes));
    match r {
        Ok(r) => assert!(r.is_err(), "zero heads was accepted"),
        Err(p) => panic!("panicked: {:?}", p.downcast_ref::<&str>()),
    }
}

/// BUG (convert/mod.rs config_from_gguf + weights_from_gguf): sizes multiplied from
/// metadata (`num_heads * head_dim`) overflow: a panic in debug builds, a wrapped (wrong)
/// shape check in release.
#[test]
fn absurd_head_dim_is_an_error_not_an_overflow() {
    // 2 heads x 2^63: the q size overflows usize.
    let bytes = with_meta("gemma3.attention.key_length", MetaValue::U64(1 << 63));
    let r = std::panic::catch_unwind(|| convert_in_memory(&bytes));
    match r {
        Ok(r) => assert!(r.is_err()),
        Err(_) => panic!("an absurd head size panicked instead of giving an error"),
    }
}

/// BUG (convert/mod.rs weights_from_gguf): `Vec::with_capacity(num_layers)` trusts
/// `gemma3.block_count`; 2^40 layers aborts the process (capacity overflow / OOM) before
/// the first missing layer is noticed.
#[test]
fn huge_block_count_is_an_error_not_an_abort() {
    let out = run_isolated("child_huge_block_count");
    assert!(
        out.status.success(),
        "the converter aborted or panicked on block_count 2^40 (exit {})",
        out.status
    );
}

#[test]
#[ignore = "run by huge_block_count_is_an_error_not_an_abort in a child process"]
fn child_huge_block_count() {
    let bytes = with_meta("gemma3.block_count", MetaValue::U64(1 << 40));
    let e = convert_in_memory(&bytes).expect_err("2^40 layers accepted");
    println!("| block_count 2^40 | `{e}` |");
}

/// BUG (gguf/mod.rs header): tensor infos may point at the same bytes. The file stays
/// small while the converter materializes every alias: memory grows with
/// (tensor infos x tensor size), not with the file. ggml's own reader rejects a tensor
/// whose offset is not the end of the previous one; ours should reject overlaps.
#[test]
fn overlapping_tensor_data_is_refused() {
    let mut ts = vec![
        t("a", &[1024], GgmlType::F32),
        t("b", &[1024], GgmlType::F32),
    ];
    ts[1].offset = Some(0);
    let bytes = build(&[], &ts);
    let r = GgufFile::from_bytes(bytes);
    assert!(
        r.is_err(),
        "two tensors sharing the same {} bytes were accepted",
        4096
    );
}

/// Memory stays bounded by the file for the converter too: one layer's data, claimed by
/// many layers through aliased tensor infos, must not be dequantized once per alias.
#[test]
fn aliased_layers_do_not_multiply_memory() {
    const LAYERS: u64 = 64;
    let mut ts = Vec::new();
    let base = gemma_tensors();
    ts.push(base[0].clone());
    // Layer 0 for real; layers 1.. alias layer 0's data.
    let mut offsets = Vec::new();
    let mut next = (VOCAB * (HIDDEN / 32) * 34).next_multiple_of(32);
    for src in &base[1..14] {
        offsets.push(next);
        next = (next + src.ty.n_bytes(src.dims.iter().product()).unwrap()).next_multiple_of(32);
    }
    for l in 0..LAYERS {
        for (src, &off) in base[1..14].iter().zip(&offsets) {
            let mut x = src.clone();
            x.name = src.name.replace("blk.0.", &format!("blk.{l}."));
            if l > 0 {
                x.offset = Some(off);
            }
            ts.push(x);
        }
    }
    ts.push(base[14].clone());
    let bytes = with_meta_and_tensors("gemma3.block_count", MetaValue::U32(LAYERS as u32), &ts);
    let len = bytes.len();
    let (r, peak) = alloc::peak_of(|| convert_in_memory(&bytes));
    println!("{len} bytes, {LAYERS} aliased layers: {r:?}, peak {peak} bytes");
    assert!(
        r.is_err(),
        "a file whose layers alias one layer's bytes was converted ({peak} bytes at peak for a {len}-byte file)"
    );
}

fn with_meta_and_tensors(key: &str, value: MetaValue, ts: &[Tensor]) -> Vec<u8> {
    let mut kvs = gemma_metadata();
    for kv in kvs.iter_mut() {
        if kv.0 == key {
            kv.1 = value.clone();
        }
    }
    build(&kvs, ts)
}

// ---- fuzz seeds ------------------------------------------------------------------------

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/gguf")
}

/// Writes the GGUF seeds when `LOCKSTEP_WRITE_FUZZ_SEEDS=1`; otherwise checks that the
/// committed ones are still valid files (a seed the reader rejects teaches the fuzzer
/// nothing about the deep paths).
#[test]
fn fuzz_seeds() {
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("tiny_gemma3", tiny_gemma_gguf()),
        ("no_tensors", build(&gemma_metadata()[..1], &[])),
    ];
    let dir = seeds_dir();
    if std::env::var_os("LOCKSTEP_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
            println!("wrote {} ({} bytes)", dir.join(name).display(), bytes.len());
        }
        return;
    }
    for (name, bytes) in &seeds {
        let committed = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; run `scripts/fuzz.sh seeds`"));
        assert_eq!(
            &committed, bytes,
            "{name} is stale; run `scripts/fuzz.sh seeds`"
        );
        GgufFile::from_bytes(committed).unwrap();
    }
}
