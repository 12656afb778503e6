//! GGUF parsing: round trips through a tiny GGUF writer, and malformed files.

use std::io::Cursor;

use lockstep_model::gguf::{GgmlType, GgufFile, MetaArray, MetaValue, TensorInfo};

// ---- a tiny GGUF writer --------------------------------------------------------------

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_array(b: &mut Vec<u8>, a: &MetaArray) {
    b.extend_from_slice(&a.element_type_id().to_le_bytes());
    b.extend_from_slice(&(a.len() as u64).to_le_bytes());
    for v in a.iter() {
        put_value_body(b, &v);
    }
}

fn put_value_body(b: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => b.push(*x as u8),
        MetaValue::String(s) => put_str(b, s),
        MetaValue::Array(a) => put_array(b, a),
        MetaValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_kv(b: &mut Vec<u8>, key: &str, v: &MetaValue) {
    put_str(b, key);
    b.extend_from_slice(&v.type_id().to_le_bytes());
    put_value_body(b, v);
}

struct T {
    name: &'static str,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Writes a GGUF v3 file; `alignment` must match any general.alignment in `kvs`.
/// The file ends with the last tensor's data (no trailing padding).
fn build(kvs: &[(&str, MetaValue)], tensors: &[T], alignment: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_kv(&mut b, k, v);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        put_str(&mut b, t.name);
        b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&t.ty.id().to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.data.len() as u64).next_multiple_of(alignment);
    }
    let data_start = (b.len() as u64).next_multiple_of(alignment);
    for (t, off) in tensors.iter().zip(offsets) {
        b.resize((data_start + off) as usize, 0);
        b.extend_from_slice(&t.data);
    }
    b
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn sample_metadata() -> Vec<(&'static str, MetaValue)> {
    vec![
        ("general.architecture", MetaValue::String("gemma3".into())),
        ("general.name", MetaValue::String("tést ✓".into())),
        ("empty.string", MetaValue::String(String::new())),
        ("v.u8", MetaValue::U8(200)),
        ("v.i8", MetaValue::I8(-5)),
        ("v.u16", MetaValue::U16(60000)),
        ("v.i16", MetaValue::I16(-30000)),
        ("v.u32", MetaValue::U32(640)),
        ("v.i32", MetaValue::I32(-7)),
        ("v.f32", MetaValue::F32(1e-6)),
        ("v.bool", MetaValue::Bool(true)),
        ("v.u64", MetaValue::U64(u64::MAX)),
        ("v.i64", MetaValue::I64(i64::MIN)),
        ("v.f64", MetaValue::F64(-0.125)),
        (
            "a.strings",
            MetaValue::Array(MetaArray::String(vec![
                "<pad>".into(),
                "".into(),
                "<end_of_turn>".into(),
            ])),
        ),
        (
            "a.f32",
            MetaValue::Array(MetaArray::F32(vec![0.5, -1.0, 3.0])),
        ),
        ("a.i32", MetaValue::Array(MetaArray::I32(vec![1, -2, 3]))),
        ("a.u8", MetaValue::Array(MetaArray::U8(vec![1, 2, 255]))),
        ("a.i8", MetaValue::Array(MetaArray::I8(vec![-1, 2]))),
        ("a.u16", MetaValue::Array(MetaArray::U16(vec![65535]))),
        ("a.i16", MetaValue::Array(MetaArray::I16(vec![-2, 9]))),
        ("a.u32", MetaValue::Array(MetaArray::U32(vec![7, 8]))),
        ("a.u64", MetaValue::Array(MetaArray::U64(vec![u64::MAX, 0]))),
        ("a.i64", MetaValue::Array(MetaArray::I64(vec![-9]))),
        ("a.f64", MetaValue::Array(MetaArray::F64(vec![2.5]))),
        (
            "a.bool",
            MetaValue::Array(MetaArray::Bool(vec![true, false])),
        ),
        ("a.empty", MetaValue::Array(MetaArray::U32(vec![]))),
        (
            "a.nested",
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::U32(vec![1, 2]),
                MetaArray::String(vec!["x".into()]),
            ])),
        ),
    ]
}

fn sample_tensors() -> Vec<T> {
    // Q4_0: two blocks, d = 0.5, nibbles 0..15 and 15..0.
    let mut q4 = Vec::new();
    for blk in 0..2u8 {
        q4.extend_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
        q4.extend((0..16u8).map(|j| if blk == 0 { j | (15 - j) << 4 } else { 0x88 }));
    }
    vec![
        T {
            name: "norm.weight",
            dims: vec![4, 3],
            ty: GgmlType::F32,
            data: f32_bytes(&[0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11.]),
        },
        T {
            name: "blk.0.attn_q.weight",
            dims: vec![32, 2],
            ty: GgmlType::Q4_0,
            data: q4,
        },
        T {
            name: "half",
            dims: vec![1, 1, 1, 3],
            ty: GgmlType::F16,
            data: [1.0f32, -2.0, 0.25]
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes())
                .collect(),
        },
    ]
}

fn sample_file() -> Vec<u8> {
    build(&sample_metadata(), &sample_tensors(), 32)
}

fn err_of(bytes: &[u8]) -> String {
    match GgufFile::from_bytes(bytes.to_vec()) {
        Ok(_) => panic!("a malformed file was accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_err_contains(bytes: &[u8], needles: &[&str]) {
    let e = err_of(bytes);
    for n in needles {
        assert!(e.contains(n), "error {e:?} lacks {n:?}");
    }
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "lockstep-gguf-test-{}-{name}.gguf",
        std::process::id()
    ))
}

// ---- valid files ------------------------------------------------------------------

fn check_sample(g: &GgufFile) {
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    let md = sample_metadata();
    assert_eq!(g.metadata().len(), md.len());
    for (k, v) in &md {
        assert_eq!(g.get(k), Some(v), "{k}");
    }
    assert_eq!(g.get("missing"), None);

    // Helpers.
    assert_eq!(
        g.get("general.architecture").unwrap().as_str(),
        Some("gemma3")
    );
    assert_eq!(g.get("v.u32").unwrap().as_u64(), Some(640));
    assert_eq!(g.get("v.u8").unwrap().as_u64(), Some(200));
    assert_eq!(g.get("v.i32").unwrap().as_u64(), None);
    assert_eq!(g.get("v.i32").unwrap().as_i64(), Some(-7));
    assert_eq!(g.get("v.f32").unwrap().as_f32(), Some(1e-6));
    assert_eq!(g.get("v.f64").unwrap().as_f32(), Some(-0.125));
    assert_eq!(g.get("v.bool").unwrap().as_bool(), Some(true));
    assert_eq!(g.get("v.bool").unwrap().as_str(), None);
    let tokens = g.get("a.strings").unwrap().as_array().unwrap();
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens.element_type_name(), "string");
    assert_eq!(tokens.as_strings().unwrap()[2], "<end_of_turn>");
    assert_eq!(
        tokens
            .iter()
            .position(|t| t.as_str() == Some("<end_of_turn>")),
        Some(2)
    );
    assert_eq!(tokens.get(0), Some(MetaValue::String("<pad>".into())));
    assert_eq!(tokens.get(3), None);
    assert_eq!(
        g.get("a.f32").unwrap().as_array().unwrap().as_f32s(),
        Some(&[0.5, -1.0, 3.0][..])
    );
    assert!(g.get("a.empty").unwrap().as_array().unwrap().is_empty());

    // Tensors.
    let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["norm.weight", "blk.0.attn_q.weight", "half"]);
    assert!(g.tensor("nope").is_none());
    let norm = g.tensor("norm.weight").unwrap();
    assert_eq!(norm.dims, [4, 3]);
    assert_eq!(norm.shape(), [3, 4]);
    assert_eq!(norm.n_elements(), 12);
    assert_eq!(norm.n_bytes, 48);
    assert_eq!(norm.offset, g.data_offset());
    assert_eq!(g.data_offset() % 32, 0);
    let values = g.dequantize(norm).unwrap();
    assert_eq!(values, (0..12).map(|i| i as f32).collect::<Vec<_>>());
    // Row-major in ggml order: row r (dims[1] index), column c (dims[0] index).
    assert_eq!(values[4], 4.0);

    let q = g.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(
        (q.ggml_type, q.n_elements(), q.n_bytes),
        (GgmlType::Q4_0, 64, 36)
    );
    assert_eq!(q.offset % 32, 0);
    assert_eq!(g.read_raw(q).unwrap(), sample_tensors()[1].data);
    let v = g.dequantize(q).unwrap();
    let mut expect: Vec<f32> = (0..16).map(|j| (j as f32 - 8.0) * 0.5).collect();
    expect.extend((0..16).map(|j| (7.0 - j as f32) * 0.5));
    expect.extend([0.0; 32]);
    assert_eq!(v, expect);

    let h = g.tensor("half").unwrap();
    assert_eq!(h.dims, [1, 1, 1, 3]);
    assert_eq!(g.dequantize(h).unwrap(), [1.0, -2.0, 0.25]);
    assert_eq!(h.offset + h.n_bytes, g.file_len());
}

#[test]
fn round_trip_from_bytes_reader_and_file() {
    let bytes = sample_file();
    check_sample(&GgufFile::from_bytes(bytes.clone()).unwrap());

    // from_reader ignores bytes past the announced length; a short stream is refused.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0xEE; 100]);
    check_sample(&GgufFile::from_reader(Cursor::new(longer), bytes.len() as u64).unwrap());
    let e = GgufFile::from_reader(Cursor::new(bytes.clone()), bytes.len() as u64 + 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fewer"), "{e}");

    let path = temp_path("roundtrip");
    std::fs::write(&path, &bytes).unwrap();
    let g = GgufFile::open(&path).unwrap();
    check_sample(&g);
    assert_eq!(g.source(), path.display().to_string());
    // The file handle is shared: reads from several threads work.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| check_sample(&g));
        }
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn messages_name_the_file() {
    let path = temp_path("badmagic");
    let mut bytes = sample_file();
    bytes[0] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let e = GgufFile::open(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("not a GGUF file (bad magic"), "{e}");

    let missing = GgufFile::open(temp_path("does-not-exist"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("does-not-exist"), "{missing}");
}

#[test]
fn custom_alignment_and_empty_file() {
    let kvs = vec![("general.alignment", MetaValue::U32(64))];
    let bytes = build(&kvs, &sample_tensors(), 64);
    let g = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(g.alignment(), 64);
    for t in g.tensors() {
        assert_eq!(t.offset % 64, 0, "{}", t.name);
        assert!(g.dequantize(t).is_ok());
    }
    // No tensors and no metadata: valid, even though the data section would start past EOF.
    let g = GgufFile::from_bytes(build(&[], &[], 32)).unwrap();
    assert!(g.tensors().is_empty() && g.metadata().is_empty());
    // Version 2 is read the same way.
    let mut v2 = sample_file();
    v2[4] = 2;
    assert_eq!(GgufFile::from_bytes(v2).unwrap().version(), 2);
}

// ---- malformed files --------------------------------------------------------------

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample_file();
    for len in 0..bytes.len() {
        let e = err_of(&bytes[..len]);
        assert!(
            e.contains("truncated GGUF")
                || e.contains("runs past the end of the file")
                || e.contains("bad magic"),
            "truncated to {len} bytes: {e}"
        );
    }
}

#[test]
fn bad_magic_and_version() {
    assert_err_contains(b"", &["not a GGUF file (bad magic)"]);
    assert_err_contains(b"GGU", &["not a GGUF file (bad magic)"]);
    let mut b = sample_file();
    b[..4].copy_from_slice(b"GGML");
    assert_err_contains(&b, &["not a GGUF file (bad magic"]);
    for (v, hint) in [
        (1u32, "version 1"),
        (4, "version 4"),
        (0x0300_0000, "big-endian"),
    ] {
        let mut b = sample_file();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        assert_err_contains(&b, &["unsupported GGUF version", hint]);
    }
}

/// A header with the given counts followed by `rest`.
fn header(n_tensors: u64, n_kv: u64, rest: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b.extend_from_slice(rest);
    b
}

#[test]
fn absurd_counts_and_lengths() {
    // Counts far beyond what the bytes could hold are refused before allocating.
    for n in [u64::MAX, u64::MAX / 13, 1 << 40, 1000] {
        assert_err_contains(&header(0, n, &[0; 64]), &["truncated GGUF", "metadata"]);
        assert_err_contains(&header(n, 0, &[0; 64]), &["truncated GGUF", "tensor"]);
    }
    // Absurd key length.
    for n in [u64::MAX, 1 << 40, 17] {
        let mut rest = n.to_le_bytes().to_vec();
        rest.extend_from_slice(&[b'k'; 16]);
        assert_err_contains(
            &header(0, 1, &rest),
            &["truncated GGUF", "key", "offset 24"],
        );
    }
    // Absurd string value length.
    let mut rest = Vec::new();
    put_str(&mut rest, "k");
    rest.extend_from_slice(&8u32.to_le_bytes());
    rest.extend_from_slice(&u64::MAX.to_le_bytes());
    rest.extend_from_slice(&[0; 32]);
    assert_err_contains(&header(0, 1, &rest), &["truncated GGUF", "metadata k"]);
    // Absurd array lengths, for each element type.
    for elem in 0u32..=12 {
        for n in [u64::MAX, u64::MAX / 8 + 1, 1 << 40] {
            let mut rest = Vec::new();
            put_str(&mut rest, "arr");
            rest.extend_from_slice(&9u32.to_le_bytes());
            rest.extend_from_slice(&elem.to_le_bytes());
            rest.extend_from_slice(&n.to_le_bytes());
            rest.extend_from_slice(&[0; 40]);
            assert_err_contains(&header(0, 1, &rest), &["truncated GGUF", "array arr"]);
        }
    }
    // Absurd tensor name length.
    let mut rest = u64::MAX.to_le_bytes().to_vec();
    rest.extend_from_slice(&[0; 64]);
    assert_err_contains(
        &header(1, 0, &rest),
        &["truncated GGUF", "name of tensor 0"],
    );
}

#[test]
fn deeply_nested_arrays_are_refused() {
    let mut rest = Vec::new();
    put_str(&mut rest, "deep");
    rest.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..10_000 {
        rest.extend_from_slice(&9u32.to_le_bytes());
        rest.extend_from_slice(&1u64.to_le_bytes());
    }
    assert_err_contains(&header(0, 1, &rest), &["nested deeper"]);
}

#[test]
fn bad_values() {
    let kv = |ty: u32, body: &[u8]| {
        let mut rest = Vec::new();
        put_str(&mut rest, "key");
        rest.extend_from_slice(&ty.to_le_bytes());
        rest.extend_from_slice(body);
        header(0, 1, &rest)
    };
    assert_err_contains(&kv(13, &[0; 8]), &["unknown value type 13"]);
    assert_err_contains(&kv(7, &[2]), &["bool", "not 0 or 1"]);
    let mut arr = 13u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&1u64.to_le_bytes());
    assert_err_contains(&kv(9, &arr), &["unknown element type 13"]);
    // Invalid UTF-8 in a key and in a value.
    let mut bad = header(0, 1, &2u64.to_le_bytes());
    bad.extend_from_slice(&[0xC3, 0x28]);
    bad.extend_from_slice(&6u32.to_le_bytes());
    bad.extend_from_slice(&[0; 4]);
    assert_err_contains(&bad, &["UTF-8"]);
    assert_err_contains(&kv(8, &[1, 0, 0, 0, 0, 0, 0, 0, 0xFF]), &["UTF-8"]);
    // A duplicate key.
    let mut b = header(0, 2, &[]);
    put_kv(&mut b, "dup", &MetaValue::U32(1));
    put_kv(&mut b, "dup", &MetaValue::U32(2));
    assert_err_contains(&b, &["dup", "twice"]);
}

/// A file with one tensor whose info fields are given raw, and 256 bytes of data.
fn one_tensor(kvs: &[(&str, MetaValue)], dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut b = header(1, kvs.len() as u64, &[]);
    for (k, v) in kvs {
        put_kv(&mut b, k, v);
    }
    put_str(&mut b, "w");
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.resize(b.len().next_multiple_of(32) + 256, 0);
    b
}

#[test]
fn bad_tensor_infos() {
    // The helper itself makes a valid file.
    let g = GgufFile::from_bytes(one_tensor(&[], &[8, 8], 0, 0)).unwrap();
    assert_eq!(g.tensor("w").unwrap().n_bytes, 256);
    assert!(GgufFile::from_bytes(one_tensor(&[], &[], 0, 0)).is_ok()); // a scalar

    // Dims overflow, in u64 and past i64.
    assert_err_contains(
        &one_tensor(&[], &[u64::MAX, 2], 0, 0),
        &["tensor w", "overflow"],
    );
    assert_err_contains(&one_tensor(&[], &[1 << 32, 1 << 32], 0, 0), &["overflow"]);
    assert_err_contains(&one_tensor(&[], &[1 << 63], 0, 0), &["overflow"]);
    // Bytes overflow although the element count does not.
    assert_err_contains(&one_tensor(&[], &[1 << 62], 0, 0), &["overflow"]);
    // Too many dims.
    assert_err_contains(&one_tensor(&[], &[1, 1, 1, 1, 1], 0, 0), &["5 dimensions"]);
    let mut b = header(1, 0, &[]);
    put_str(&mut b, "w");
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(&[0; 64]);
    assert_err_contains(&b, &["dimensions"]);
    // Unknown type ids.
    assert_err_contains(&one_tensor(&[], &[8], 99, 0), &["unknown ggml type id 99"]);
    assert_err_contains(&one_tensor(&[], &[8], 4, 0), &["unknown ggml type id 4"]);
    // A row that is not whole blocks.
    assert_err_contains(
        &one_tensor(&[], &[16, 2], 2, 0),
        &["not a multiple", "Q4_0", "32"],
    );
    // Data past the end of the file, with offsets small and near u64::MAX.
    assert_err_contains(
        &one_tensor(&[], &[8, 9], 0, 0),
        &["tensor w: data runs past the end of the file"],
    );
    assert_err_contains(&one_tensor(&[], &[8], 0, 256), &["data runs past the end"]);
    assert_err_contains(
        &one_tensor(&[], &[8], 0, u64::MAX - 31),
        &["data runs past the end"],
    );
    assert_err_contains(
        &one_tensor(&[], &[1 << 40], 0, 0),
        &["data runs past the end"],
    );
    // Offset not aligned.
    assert_err_contains(&one_tensor(&[], &[8], 0, 4), &["bad alignment", "tensor w"]);
    // Bad general.alignment values.
    for a in [0u32, 3, 48] {
        let kvs = [("general.alignment", MetaValue::U32(a))];
        assert_err_contains(
            &one_tensor(&kvs, &[8], 0, 0),
            &["bad alignment", "power of two"],
        );
    }
    let kvs = [("general.alignment", MetaValue::String("32".into()))];
    assert_err_contains(&one_tensor(&kvs, &[8], 0, 0), &["bad alignment", "string"]);
    // Huge alignment: the data section offset would overflow or lie past EOF.
    let kvs = [("general.alignment", MetaValue::U32(1 << 31))];
    assert_err_contains(&one_tensor(&kvs, &[8], 0, 0), &["data runs past the end"]);
    // A duplicate tensor name.
    let t = || T {
        name: "same",
        dims: vec![1],
        ty: GgmlType::F32,
        data: vec![0; 4],
    };
    assert_err_contains(&build(&[], &[t(), t()], 32), &["tensor same appears twice"]);
}

#[test]
fn unsupported_type_is_named_on_dequantize() {
    // IQ2_XXS: parsed, read raw, but not dequantized.
    let t = T {
        name: "iq",
        dims: vec![256],
        ty: GgmlType::IQ2_XXS,
        data: vec![0; 66],
    };
    let g = GgufFile::from_bytes(build(&[], &[t], 32)).unwrap();
    let info = g.tensor("iq").unwrap();
    assert_eq!(g.read_raw(info).unwrap().len(), 66);
    let e = g.dequantize(info).unwrap_err().to_string();
    assert!(
        e.contains("<memory>: tensor iq has unsupported type IQ2_XXS"),
        "{e}"
    );
}

#[test]
fn foreign_tensor_infos_are_checked() {
    let g = GgufFile::from_bytes(sample_file()).unwrap();
    let mut t = g.tensor("norm.weight").unwrap().clone();
    t.offset = g.file_len() - 8;
    assert!(g
        .read_raw(&t)
        .unwrap_err()
        .to_string()
        .contains("past the end"));
    let t = TensorInfo {
        name: "liar".into(),
        dims: vec![1 << 40],
        ggml_type: GgmlType::F32,
        offset: 0,
        n_bytes: 4,
    };
    assert!(g
        .read_raw(&t)
        .unwrap_err()
        .to_string()
        .contains("do not match"));
    assert!(g.dequantize(&t).is_err());
}

/// A small deterministic fuzz: overwrite each byte of a valid file with a few values and
/// parse; whatever parses must also survive reading and dequantizing every tensor.
#[test]
fn single_byte_mutations_never_panic() {
    let bytes = sample_file();
    let mut accepted = 0;
    for i in 0..bytes.len() {
        for v in [0x00, 0xFF, 0x80, 0x07, bytes[i] ^ 0x01] {
            let mut b = bytes.clone();
            b[i] = v;
            if let Ok(g) = GgufFile::from_bytes(b) {
                accepted += 1;
                for t in g.tensors() {
                    let _ = g.read_raw(t);
                    let _ = g.dequantize(t);
                }
            }
        }
    }
    assert!(accepted > 0);
}
