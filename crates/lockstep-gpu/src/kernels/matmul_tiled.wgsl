// Prefill matmul, tiled: y[t * out_stride + out_offset + r] = sum_c W[r, c] * x[t, c]
// for many tokens at once, f32 accumulation, the same weights and blocks as matmul.wgsl.
//
// A workgroup computes a tile of BT tokens x BR rows. For each 32-wide block of the inner
// dimension it stages the tile's activations and its dequantized weights (each weight
// decoded once per workgroup, in registers, never expanded in device memory) in
// workgroup memory, then every thread accumulates a 4 x 4 patch of the tile from there:
// 16 multiply-adds per pair of workgroup-memory vector loads, so the step is compute-bound
// instead of bound by reloading activations for every row.
//
// Each block's sum runs over c = 0..31 in order and is scaled once, and the blocks are
// added in order: the same order for every token, whatever the step's size.

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
struct Params { n: u32, k: u32, out_stride: u32, out_offset: u32 }

const BT: u32 = 64u;   // tokens per tile
const BR: u32 = 64u;   // rows per tile
const BK: u32 = 32u;   // one quantization block
const WG: u32 = 256u;  // (BT / 4) * (BR / 4) threads, each a 4 x 4 patch

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// xs[c * (BT/4) + i]: activations of tokens 4i..4i+3 at column c of the block.
var<workgroup> xs: array<vec4<f32>, 512>;  // BK * BT / 4
// ws[c * (BR/4) + i]: codes minus the zero point of rows 4i..4i+3 at column c of the block;
// ss[i]: those rows' block scales (applied to each block's sum, as matmul.wgsl does).
var<workgroup> ws: array<vec4<f32>, 512>;  // BK * BR / 4
var<workgroup> ss: array<vec4<f32>, 16>;   // BR / 4

const NIB: vec4<u32> = vec4<u32>(0u, 4u, 8u, 12u);
const BYTES: vec4<u32> = vec4<u32>(0u, 8u, 16u, 24u);

// Stages block `b` of the tile: tokens t0.., rows r0...
fn stage(bits: u32, b: u32, t0: u32, r0: u32, lid: u32) {
    let k4 = p.k / 4u;
    // Activations: BT tokens x 8 vec4 (32 columns); each thread one token's two vec4.
    {
        let tok = lid / 4u;          // 0..63
        let part = lid % 4u;         // which 8 columns
        let t = t0 + tok;
        var a = vec4<f32>(0.0);
        var c = vec4<f32>(0.0);
        if (t < batch.m) {
            a = x[t * k4 + b * 8u + 2u * part];
            c = x[t * k4 + b * 8u + 2u * part + 1u];
        }
        let col = 8u * part;
        let slot = tok / 4u;
        let lane = tok % 4u;
        xs[(col + 0u) * (BT / 4u) + slot][lane] = a.x;
        xs[(col + 1u) * (BT / 4u) + slot][lane] = a.y;
        xs[(col + 2u) * (BT / 4u) + slot][lane] = a.z;
        xs[(col + 3u) * (BT / 4u) + slot][lane] = a.w;
        xs[(col + 4u) * (BT / 4u) + slot][lane] = c.x;
        xs[(col + 5u) * (BT / 4u) + slot][lane] = c.y;
        xs[(col + 6u) * (BT / 4u) + slot][lane] = c.z;
        xs[(col + 7u) * (BT / 4u) + slot][lane] = c.w;
    }
    // Weights: BR rows x 32 codes; each thread 8 codes of one row.
    {
        let row = lid / 4u;
        let part = lid % 4u;
        let r = r0 + row;
        var v: array<f32, 8>;
        var s = 0.0;
        if (r < p.n) {
            let blk = r * (p.k / 32u) + b;
            s = scales[blk];
            if (bits == 4u) {
                // Word `part` of the 16-byte block: codes 8 part .. 8 part + 7, low nibble first.
                let word = w[blk][part];
                let lo = vec4<f32>((vec4<u32>(word) >> NIB) & vec4<u32>(15u)) - 8.0;
                let hi = vec4<f32>((vec4<u32>(word) >> (NIB + vec4<u32>(16u))) & vec4<u32>(15u)) - 8.0;
                v[0] = lo.x; v[1] = lo.y; v[2] = lo.z; v[3] = lo.w;
                v[4] = hi.x; v[5] = hi.y; v[6] = hi.z; v[7] = hi.w;
            } else {
                // Two words of the 32-byte block: codes 8 part .. 8 part + 7.
                let q = w[2u * blk + part / 2u];
                let w0 = q[2u * (part % 2u)];
                let w1 = q[2u * (part % 2u) + 1u];
                let a = vec4<f32>((vec4<u32>(w0) >> BYTES) & vec4<u32>(255u)) - 128.0;
                let c = vec4<f32>((vec4<u32>(w1) >> BYTES) & vec4<u32>(255u)) - 128.0;
                v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
                v[4] = c.x; v[5] = c.y; v[6] = c.z; v[7] = c.w;
            }
        } else {
            for (var j = 0u; j < 8u; j++) { v[j] = 0.0; }
        }
        let slot = row / 4u;
        let lane = row % 4u;
        for (var j = 0u; j < 8u; j++) {
            ws[(8u * part + j) * (BR / 4u) + slot][lane] = v[j];
        }
        if (part == 0u) { ss[slot][lane] = s; }
    }
}

fn tiled(bits: u32, wg: vec3<u32>, lid: u32) {
    let r0 = wg.x * BR;
    let t0 = wg.y * BT;
    let ti = lid / (BR / 4u);  // token patch 0..15
    let ri = lid % (BR / 4u);  // row patch 0..15
    var acc: array<vec4<f32>, 4>;  // acc[token][row]
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    let nb = p.k / 32u;
    for (var b = 0u; b < nb; b++) {
        stage(bits, b, t0, r0, lid);
        workgroupBarrier();
        // Each block's dot products with the raw codes, then scaled and added, as in
        // matmul.wgsl.
        var part: array<vec4<f32>, 4>;
        for (var i = 0u; i < 4u; i++) { part[i] = vec4<f32>(0.0); }
        for (var c = 0u; c < BK; c++) {
            let a = xs[c * (BT / 4u) + ti];
            let wv = ws[c * (BR / 4u) + ri];
            part[0] += a.x * wv;
            part[1] += a.y * wv;
            part[2] += a.z * wv;
            part[3] += a.w * wv;
        }
        let sc = ss[ri];
        for (var i = 0u; i < 4u; i++) { acc[i] += part[i] * sc; }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let t = t0 + 4u * ti + i;
        if (t < batch.m) {
            for (var j = 0u; j < 4u; j++) {
                let r = r0 + 4u * ri + j;
                if (r < p.n) {
                    y[t * p.out_stride + p.out_offset + r] = acc[i][j];
                }
            }
        }
    }
}

@compute @workgroup_size(WG)
fn matmul_tiled_q4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    tiled(4u, wg, lid);
}

@compute @workgroup_size(WG)
fn matmul_tiled_q8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    tiled(8u, wg, lid);
}
