// Gemma's residual join fused with the next norm, one workgroup per row:
//   x += rmsnorm(proj) * w_post;   xn = rmsnorm(x) * w_next
// (post-attention norm + residual + pre-FFN norm, or post-FFN norm + residual + the next
// layer's input norm): one dispatch instead of two.

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
struct Params { n: u32, eps: f32, pad0: u32, pad1: u32 }

const WG: u32 = 128u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> proj: array<f32>;
@group(0) @binding(3) var<storage, read> w_post: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read> w_next: array<f32>;
@group(0) @binding(6) var<storage, read_write> xn: array<f32>;

var<workgroup> red: array<f32, WG>;

// Sum over the workgroup of each thread's `s`, shared by the whole workgroup.
fn total(s: f32, tid: u32) -> f32 {
    red[tid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) { red[tid] += red[tid + stride]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();  // red is reused
    return r;
}

@compute @workgroup_size(WG)
fn add_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wg.x;
    if (row >= batch.m) { return; }
    let base = row * p.n;
    var s = 0.0;
    for (var i = tid; i < p.n; i += WG) {
        let v = proj[base + i];
        s += v * v;
    }
    let r1 = inverseSqrt(total(s, tid) / f32(p.n) + p.eps);
    var s2 = 0.0;
    for (var i = tid; i < p.n; i += WG) {
        let v = x[base + i] + proj[base + i] * r1 * w_post[i];
        x[base + i] = v;
        s2 += v * v;
    }
    let r2 = inverseSqrt(total(s2, tid) / f32(p.n) + p.eps);
    for (var i = tid; i < p.n; i += WG) {
        xn[base + i] = x[base + i] * r2 * w_next[i];
    }
}
