// RMSNorm in f32: y = x * inverseSqrt(mean(x^2) + eps) * w. One workgroup per row.
//
// `rmsnorm` reads rows row0.. of `x` and writes rows 0.. of `out` (row0 lets the final norm
// take only the rows the LM head needs); `rmsnorm_add` adds the normed rows into the
// residual stream `out` (Gemma's post-attention and post-FFN norms).

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
struct Params { n: u32, eps: f32, pad0: u32, pad1: u32 }

const WG: u32 = 128u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, WG>;

// 1 / rms of row `base..base+n` of x, shared by the whole workgroup.
fn inv_rms(base: u32, tid: u32) -> f32 {
    var s = 0.0;
    for (var i = tid; i < p.n; i += WG) {
        let v = x[base + i];
        s += v * v;
    }
    red[tid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) { red[tid] += red[tid + stride]; }
        workgroupBarrier();
    }
    return inverseSqrt(red[0] / f32(p.n) + p.eps);
}

@compute @workgroup_size(WG)
fn rmsnorm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.x;
    if (row >= batch.m) { return; }
    let base = (batch.row0 + row) * p.n;
    let r = inv_rms(base, lid.x);
    for (var i = lid.x; i < p.n; i += WG) {
        out[row * p.n + i] = x[base + i] * r * w[i];
    }
}

@compute @workgroup_size(WG)
fn rmsnorm_add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.x;
    if (row >= batch.m) { return; }
    let base = row * p.n;
    let r = inv_rms(base, lid.x);
    for (var i = lid.x; i < p.n; i += WG) {
        out[base + i] += x[base + i] * r * w[i];
    }
}
