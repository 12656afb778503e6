// Quantized matrix times activations, f32 accumulation:
//   y[t * out_stride + out_offset + r] = sum_c W[r, c] * x[t, c]
// W is n x k in MatMulNBits layout: blocks of 32 codes sharing one f32 scale, code c
// meaning scale * (c - zero point). 4-bit blocks are 16 bytes (one vec4<u32>, low nibble
// first), 8-bit blocks 32 bytes (two vec4<u32>). Weights are never expanded in memory.
//
// Layout for bandwidth: a workgroup owns ROWS rows; the LANES threads of a row take every
// LANES-th block, so neighbouring threads read neighbouring 16-byte blocks; a tree over
// workgroup memory sums the lanes. `matvec_*` does one token per workgroup (decode);
// `matvec_*` uses fewer lanes per row (MV_LANES) and more rows per workgroup;
// `matmul_*` decodes each block once for TM tokens (prefill), so weights are read
// ceil(m / TM) times instead of m times. With `subgroups` (where the adapter has them) the
// one-token kernels sum a row's lanes with subgroup shuffles instead of workgroup memory.

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
struct Params { n: u32, k: u32, out_stride: u32, out_offset: u32 }

const LANES: u32 = 32u;
const ROWS: u32 = 8u;
const WG: u32 = 256u;  // LANES * ROWS
const TM: u32 = 8u;
const MV_LANES: u32 = 8u;  // matvec: threads per row
const MV_ROWS: u32 = 32u;  // matvec: rows per workgroup (WG / MV_LANES)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 2048>;  // WG * TM

const NIB_LO: vec4<u32> = vec4<u32>(0u, 4u, 8u, 12u);
const NIB_HI: vec4<u32> = vec4<u32>(16u, 20u, 24u, 28u);
const BYTES: vec4<u32> = vec4<u32>(0u, 8u, 16u, 24u);

// The 32 codes of block `blk`, minus the zero point, as 8 vec4 (scale not applied).
fn decode(bits: u32, blk: u32) -> array<vec4<f32>, 8> {
    var v: array<vec4<f32>, 8>;
    if (bits == 4u) {
        let b = w[blk];
        for (var i = 0u; i < 4u; i++) {
            let word = vec4<u32>(b[i]);
            v[2u * i] = vec4<f32>((word >> NIB_LO) & vec4<u32>(15u)) - 8.0;
            v[2u * i + 1u] = vec4<f32>((word >> NIB_HI) & vec4<u32>(15u)) - 8.0;
        }
    } else {
        let b0 = w[2u * blk];
        let b1 = w[2u * blk + 1u];
        for (var i = 0u; i < 4u; i++) {
            v[i] = vec4<f32>((vec4<u32>(b0[i]) >> BYTES) & vec4<u32>(255u)) - 128.0;
            v[i + 4u] = vec4<f32>((vec4<u32>(b1[i]) >> BYTES) & vec4<u32>(255u)) - 128.0;
        }
    }
    return v;
}

// Sum of one decoded block times x[xb .. xb + 8] (vec4 index).
fn block_dot(v: array<vec4<f32>, 8>, xb: u32) -> f32 {
    var s = 0.0;
    for (var i = 0u; i < 8u; i++) {
        s += dot(v[i], x[xb + i]);
    }
    return s;
}

#if subgroups
// The sum of `v` over the MV_LANES consecutive invocations of a row, in every one of them:
// a butterfly inside the subgroup, no workgroup memory and no barrier. The host builds this
// variant only where subgroups hold at least MV_LANES invocations, so a row's lanes share one.
fn row_sum(v: f32) -> f32 {
    var s = v;
    s += subgroupShuffleXor(s, 4u);
    s += subgroupShuffleXor(s, 2u);
    s += subgroupShuffleXor(s, 1u);
    return s;
}

#endif
// One token: MV_LANES threads per row, each over every MV_LANES-th block; one barrier,
// then the row's first lane sums its lanes' partial sums.
fn matvec_body(bits: u32, wg: vec3<u32>, lid: u32) {
    let lane = lid % MV_LANES;
    let r = wg.x * MV_ROWS + lid / MV_LANES;
    let t = wg.y;
    let nb = p.k / 32u;
    var acc = 0.0;
    if (r < p.n) {
        for (var b = lane; b < nb; b += MV_LANES) {
            let blk = r * nb + b;
            acc += scales[blk] * block_dot(decode(bits, blk), t * (p.k / 4u) + b * 8u);
        }
    }
#if subgroups
    let s = row_sum(acc);
    if (lane == 0u && r < p.n) {
        y[t * p.out_stride + p.out_offset + r] = s;
    }
#else
    red[lid] = acc;
    workgroupBarrier();
    if (lane == 0u && r < p.n) {
        var s = 0.0;
        for (var l = 0u; l < MV_LANES; l++) { s += red[lid + l]; }
        y[t * p.out_stride + p.out_offset + r] = s;
    }
#endif
}

fn matmul_body(bits: u32, wg: vec3<u32>, lid: u32) {
    let lane = lid % LANES;
    let slot = lid / LANES;
    let r = wg.x * ROWS + slot;
    let t0 = wg.y * TM;
    let nb = p.k / 32u;
    var acc: array<f32, TM>;
    if (r < p.n) {
        for (var b = lane; b < nb; b += LANES) {
            let blk = r * nb + b;
            let v = decode(bits, blk);
            let s = scales[blk];
            for (var j = 0u; j < TM; j++) {
                if (t0 + j < batch.m) {
                    acc[j] += s * block_dot(v, (t0 + j) * (p.k / 4u) + b * 8u);
                }
            }
        }
    }
    // red[(slot * TM + j) * LANES + lane]: 64 groups of LANES partial sums.
    for (var j = 0u; j < TM; j++) {
        red[(slot * TM + j) * LANES + lane] = acc[j];
    }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s /= 2u) {
        for (var e = lid; e < ROWS * TM * s; e += WG) {
            let i = (e / s) * LANES + e % s;
            red[i] += red[i + s];
        }
        workgroupBarrier();
    }
    if (lid < ROWS * TM) {
        let rr = wg.x * ROWS + lid / TM;
        let t = t0 + lid % TM;
        if (rr < p.n && t < batch.m) {
            y[t * p.out_stride + p.out_offset + rr] = red[lid * LANES];
        }
    }
}

fn gelu_tanh(x: f32) -> f32 {
    // As geglu.wgsl: clamped, since some tanh implementations return NaN for large arguments.
    let u = clamp(0.7978846 * (x + 0.044715 * x * x * x), -15.0, 15.0);
    return 0.5 * x * (1.0 + tanh(u));
}

// The MLP's gate|up projection fused with its activation, for one token: the matrix is
// gate (rows 0..f) over up (rows f..2f), f = n / 2; a workgroup takes MV_ROWS / 2 gate rows
// and the up rows that pair with them, and writes y[t * f + i] = gelu_tanh(gate_i) * up_i
// (the output is the activation, f wide; out_stride and out_offset are not used).
fn matvec_geglu_body(bits: u32, wg: vec3<u32>, lid: u32) {
    let lane = lid % MV_LANES;
    let j = lid / MV_LANES;             // 0..MV_ROWS-1
    let f = p.n / 2u;
    let half_rows = MV_ROWS / 2u;
    let i = wg.x * half_rows + j % half_rows;  // activation index
    let r = select(i, f + i, j >= half_rows);  // gate row, or its up row
    let t = wg.y;
    let nb = p.k / 32u;
    var acc = 0.0;
    if (i < f) {
        for (var b = lane; b < nb; b += MV_LANES) {
            let blk = r * nb + b;
            acc += scales[blk] * block_dot(decode(bits, blk), t * (p.k / 4u) + b * 8u);
        }
    }
#if subgroups
    // Each row's sum in its lanes' subgroup; the up row's is 16 rows away, in another
    // subgroup, so the pairs meet in workgroup memory.
    let sum = row_sum(acc);
    if (lane == 0u) { red[j] = sum; }
    workgroupBarrier();
    if (lane == 0u && j < half_rows && i < f) {
        y[t * f + i] = gelu_tanh(red[j]) * red[j + half_rows];
    }
#else
    red[lid] = acc;
    workgroupBarrier();
    if (lane == 0u && j < half_rows && i < f) {
        var g = 0.0;
        var u = 0.0;
        for (var l = 0u; l < MV_LANES; l++) {
            g += red[lid + l];
            u += red[lid + half_rows * MV_LANES + l];
        }
        y[t * f + i] = gelu_tanh(g) * u;
    }
#endif
}

@compute @workgroup_size(WG)
fn matvec_geglu_q4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    matvec_geglu_body(4u, wg, lid);
}

@compute @workgroup_size(WG)
fn matvec_geglu_q8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    matvec_geglu_body(8u, wg, lid);
}

@compute @workgroup_size(WG)
fn matvec_q4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    matvec_body(4u, wg, lid);
}

@compute @workgroup_size(WG)
fn matvec_q8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    matvec_body(8u, wg, lid);
}

@compute @workgroup_size(WG)
fn matmul_q4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    matmul_body(4u, wg, lid);
}

@compute @workgroup_size(WG)
fn matmul_q8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    matmul_body(8u, wg, lid);
}
