// Index of the largest logit of the last row of the step (row m - 1), so that a greedy
// step reads back one u32. Ties go to the lowest index and NaN never wins, as in
// lockstep_core::argmax. One workgroup.

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> result: array<u32>;

var<workgroup> vals: array<f32, WG>;
var<workgroup> idxs: array<u32, WG>;

// Whether (v, i) beats (bv, bi): larger value, or equal value and lower index.
fn beats(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    if (i == NONE) { return false; }
    if (bi == NONE) { return v >= -3.4028235e38; }  // anything above -inf (not NaN) beats nothing
    return v > bv || (v == bv && i < bi);
}

@compute @workgroup_size(WG)
fn argmax(@builtin(local_invocation_index) lid: u32) {
    let base = (batch.m - 1u) * p.n;
    var bv = 0.0;
    var bi = NONE;
    for (var i = lid; i < p.n; i += WG) {
        let v = logits[base + i];
        if (beats(v, i, bv, bi)) { bv = v; bi = i; }
    }
    vals[lid] = bv;
    idxs[lid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (lid < s && beats(vals[lid + s], idxs[lid + s], vals[lid], idxs[lid])) {
            vals[lid] = vals[lid + s];
            idxs[lid] = idxs[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) { result[0] = select(idxs[0], 0u, idxs[0] == NONE); }
}
