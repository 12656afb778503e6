//! Dequantization against fixtures produced by gguf-py (fixtures/gguf/make_fixtures.py).
//!
//! The comparison is bitwise: our routines perform ggml's reference operations in the same
//! order (f16 -> f32 scale conversion, then the same f32 multiplies and adds, no fused
//! multiply-add), and gguf-py performs those same IEEE-754 f32 operations in numpy, so
//! every value must be identical to the bit. The fixtures hold no NaNs.

use std::path::PathBuf;

use lockstep_model::gguf::{dequantize, dequantize_into, GgmlType};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

fn read_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn dequantization_matches_gguf_py_bitwise() {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("index.json")).unwrap()).unwrap();
    let entries = index.as_array().unwrap();
    assert!(
        entries.len() >= 20,
        "index.json lists {} fixtures",
        entries.len()
    );
    let mut covered = std::collections::BTreeSet::new();
    for e in entries {
        let name = e["name"].as_str().unwrap();
        let ty = GgmlType::from_name(e["type"].as_str().unwrap()).unwrap();
        let n = e["n_elements"].as_u64().unwrap() as usize;
        let raw = std::fs::read(fixtures().join(format!("{name}.raw"))).unwrap();
        let expected = read_f32s(&std::fs::read(fixtures().join(format!("{name}.f32"))).unwrap());
        assert_eq!(expected.len(), n, "{name}");
        let got = dequantize(ty, &raw, n).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.len(), n, "{name}");
        for (i, (g, x)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(
                g.to_bits(),
                x.to_bits(),
                "{name} ({ty}) element {i} (block {}): got {g:e}, gguf-py {x:e}",
                i as u64 / ty.block_size()
            );
        }
        // The same through the caller-buffer entry point.
        let mut buf = vec![f32::NAN; n];
        dequantize_into(ty, &raw, &mut buf).unwrap();
        assert!(buf
            .iter()
            .zip(&expected)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        covered.insert(ty);
    }
    use GgmlType::*;
    for ty in [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    ] {
        assert!(covered.contains(&ty), "no fixture covers {ty}");
    }
}

#[test]
fn type_table_matches_gguf_py() {
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("ggml_types.json")).unwrap())
            .unwrap();
    let table = table.as_object().unwrap();
    for (name, v) in table {
        let v: Vec<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        let ty = GgmlType::from_name(name).unwrap_or_else(|| panic!("{name} is not parsed"));
        assert_eq!(ty.name(), name);
        assert_eq!(u64::from(ty.id()), v[0], "{name} id");
        assert_eq!(ty.block_size(), v[1], "{name} block size");
        assert_eq!(ty.type_size(), v[2], "{name} bytes per block");
        assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
    }
    assert_eq!(
        GgmlType::ALL.len(),
        table.len(),
        "types gguf-py does not know"
    );
    for removed in [4, 5, 31, 32, 33, 36, 37, 38, 42, 1000, u32::MAX] {
        assert_eq!(GgmlType::from_id(removed), None, "id {removed}");
    }
}

/// gguf-py has no Q8_K dequantizer: check it by hand (d is an f32, then 256 i8, then
/// 16 i16 block sums that dequantization ignores).
#[test]
fn q8_k_by_hand() {
    let mut block = Vec::new();
    block.extend_from_slice(&0.5f32.to_le_bytes());
    block.extend((0..256).map(|i| (i as i8).wrapping_sub(100) as u8));
    block.extend_from_slice(&[0xAB; 32]);
    assert_eq!(block.len() as u64, GgmlType::Q8_K.type_size());
    let got = dequantize(GgmlType::Q8_K, &block, 256).unwrap();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, 0.5 * f32::from((i as i8).wrapping_sub(100)));
    }
}

#[test]
fn plain_integer_and_f64_types() {
    let b: Vec<u8> = [-3i16, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(dequantize(GgmlType::I16, &b, 2).unwrap(), vec![-3.0, 7.0]);
    let b: Vec<u8> = [1.5f64, -2.25]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(dequantize(GgmlType::F64, &b, 2).unwrap(), vec![1.5, -2.25]);
    assert_eq!(
        dequantize(GgmlType::I8, &[0xFF, 2], 2).unwrap(),
        vec![-1.0, 2.0]
    );
}

#[test]
fn dequantize_checks_sizes_and_names_unsupported_types() {
    // Not a whole block.
    let e = dequantize(GgmlType::Q4_0, &[0; 18], 16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Q4_0") && e.contains("block"), "{e}");
    // Wrong byte count, both ways.
    let e = dequantize(GgmlType::Q4_K, &[0; 143], 256)
        .unwrap_err()
        .to_string();
    assert!(e.contains("144"), "{e}");
    assert!(dequantize(GgmlType::Q4_K, &[0; 145], 256).is_err());
    assert!(dequantize(GgmlType::F32, &[0; 7], 2).is_err());
    let mut small = [0f32; 3];
    assert!(dequantize_into(GgmlType::F16, &[0; 8], &mut small).is_err());
    // A huge element count with few bytes is refused before allocating.
    assert!(dequantize(GgmlType::F32, &[0; 4], usize::MAX / 2).is_err());
    assert!(dequantize(GgmlType::Q8_0, &[0; 34], usize::MAX - 31).is_err());
    // Unsupported types are named.
    for ty in [
        GgmlType::IQ2_XXS,
        GgmlType::TQ1_0,
        GgmlType::MXFP4,
        GgmlType::Q8_1,
    ] {
        assert!(!ty.can_dequantize());
        let n = ty.block_size() as usize;
        let e = dequantize(ty, &vec![0; ty.type_size() as usize], n)
            .unwrap_err()
            .to_string();
        assert!(e.contains(ty.name()) && e.contains("unsupported"), "{e}");
    }
    // Empty input is fine.
    assert!(dequantize(GgmlType::Q6_K, &[], 0).unwrap().is_empty());
}

/// Every bit pattern of a block dequantizes without panicking.
#[test]
fn arbitrary_bytes_never_panic() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    for &ty in GgmlType::ALL.iter().filter(|t| t.can_dequantize()) {
        let n = 3 * ty.block_size() as usize;
        let bytes: Vec<u8> = (0..3 * ty.type_size()).map(|_| next()).collect();
        assert_eq!(dequantize(ty, &bytes, n).unwrap().len(), n);
    }
}
