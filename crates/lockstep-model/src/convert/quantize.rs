//! Block quantization into the MatMulNBits layout.
//!
//! 4-bit uses the Q4_0 rule: each block's scale is its largest-magnitude value divided by
//! -8, so that value is kept exactly (codes round half to even, see [`quantize_q4`]); DESIGN.md measured that clipping outliers to lower
//! the squared error gives worse tokens at 270M. 8-bit uses the Q8_0 rule
//! (scale = max |x| / 127), and a Q8_0 source is copied bit for bit.

use crate::weights::QuantMatrix;

pub const BLOCK: usize = 32;

/// Quantizes a row-major `[n, k]` f32 matrix to 4 bits with the Q4_0 rule.
pub fn quantize_q4(values: &[f32], n: usize, k: usize) -> QuantMatrix {
    assert_eq!(values.len(), n * k);
    assert_eq!(k % BLOCK, 0, "k = {k} is not a multiple of {BLOCK}");
    let blocks = n * k / BLOCK;
    let mut data = Vec::with_capacity(blocks * BLOCK / 2);
    let mut scales = Vec::with_capacity(blocks);
    for block in values.chunks_exact(BLOCK) {
        // The signed value of largest magnitude; ties keep the first, as ggml does.
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in block {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        scales.push(d);
        // Round half to even, dividing rather than multiplying by 1/d: a Q5_0 source
        // whose block maximum is negative gives d = 2 * d5, so half of its values fall
        // exactly between two 4-bit levels, and ggml's `(int)(x * id + 8.5)` sends every
        // one of them up. That bias changed " red, blue, and yellow" into " red, white
        // and blue"; unbiased ties restore it (see the converter tests).
        let mut codes = [0u8; BLOCK];
        for (c, &x) in codes.iter_mut().zip(block) {
            let r = if d != 0.0 { x / d } else { 0.0 };
            *c = (r.round_ties_even() + 8.0).clamp(0.0, 15.0) as u8;
        }
        for pair in codes.chunks_exact(2) {
            data.push(pair[0] | (pair[1] << 4));
        }
    }
    QuantMatrix {
        bits: 4,
        n,
        k,
        block_size: BLOCK,
        data,
        scales,
    }
}

/// Quantizes a row-major `[n, k]` f32 matrix to 8 bits with the Q8_0 rule.
pub fn quantize_q8(values: &[f32], n: usize, k: usize) -> QuantMatrix {
    assert_eq!(values.len(), n * k);
    assert_eq!(k % BLOCK, 0, "k = {k} is not a multiple of {BLOCK}");
    let mut data = Vec::with_capacity(n * k);
    let mut scales = Vec::with_capacity(n * k / BLOCK);
    for block in values.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        scales.push(d);
        data.extend(
            block
                .iter()
                .map(|&x| ((x * id).round() as i32).clamp(-127, 127) as u8 ^ 0x80),
        );
    }
    QuantMatrix {
        bits: 8,
        n,
        k,
        block_size: BLOCK,
        data,
        scales,
    }
}

/// Re-lays GGUF Q8_0 blocks (f16 scale + 32 signed bytes) as 8-bit MatMulNBits without
/// any loss: the code becomes `q + 128` and the scale is the f16 value widened to f32.
pub fn q8_0_to_matrix(raw: &[u8], n: usize, k: usize) -> Option<QuantMatrix> {
    const Q8_0_BYTES: usize = 2 + BLOCK;
    if !k.is_multiple_of(BLOCK) || raw.len() != n * k / BLOCK * Q8_0_BYTES {
        return None;
    }
    let mut data = Vec::with_capacity(n * k);
    let mut scales = Vec::with_capacity(n * k / BLOCK);
    for block in raw.chunks_exact(Q8_0_BYTES) {
        scales.push(half::f16::from_le_bytes([block[0], block[1]]).to_f32());
        data.extend(block[2..].iter().map(|&q| q ^ 0x80));
    }
    Some(QuantMatrix {
        bits: 8,
        n,
        k,
        block_size: BLOCK,
        data,
        scales,
    })
}

/// ||dequant(q) - reference|| / ||reference||.
pub fn relative_error(q: &QuantMatrix, reference: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for row in 0..q.n {
        for (col, &r) in reference[row * q.k..(row + 1) * q.k].iter().enumerate() {
            let d = (q.value(row, col) - r) as f64;
            num += d * d;
            den += (r as f64) * (r as f64);
        }
    }
    if den == 0.0 {
        0.0
    } else {
        (num / den).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_keeps_the_largest_magnitude_value_exact() {
        let mut v: Vec<f32> = (0..32).map(|i| (i as f32 - 10.0) * 0.1).collect();
        v[7] = -3.0;
        let q = quantize_q4(&v, 1, 32);
        assert_eq!(q.scales[0], 3.0 / 8.0);
        assert_eq!(q.value(0, 7), -3.0);
        // Every value is within half a step of the original.
        for (i, &x) in v.iter().enumerate() {
            assert!((q.value(0, i) - x).abs() <= q.scales[0] / 2.0 + 1e-6, "{i}");
        }
        // Low nibble first: element 0 in the low nibble of byte 0.
        assert_eq!(
            q.data[0] & 0x0f,
            ((v[0] / q.scales[0]).round_ties_even() + 8.0) as u8
        );
    }

    #[test]
    fn q8_0_copy_is_lossless() {
        // Two blocks: scale 0.5 then 2.0, codes -127..=127 spread.
        let mut raw = Vec::new();
        for scale in [0.5f32, 2.0] {
            raw.extend(half::f16::from_f32(scale).to_le_bytes());
            raw.extend((0..32).map(|i| (i * 8 - 127) as i8 as u8));
        }
        let q = q8_0_to_matrix(&raw, 1, 64).unwrap();
        assert_eq!(q.value(0, 0), 0.5 * -127.0);
        assert_eq!(q.value(0, 33), 2.0 * (8.0 - 127.0));
        assert!(q8_0_to_matrix(&raw[1..], 1, 64).is_none());
    }

    #[test]
    fn q8_round_trip_error_is_small() {
        let v: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 32.0) / 7.0)
            .collect();
        let q = quantize_q8(&v, 2, 32);
        assert!(relative_error(&q, &v) < 0.01);
    }
}
