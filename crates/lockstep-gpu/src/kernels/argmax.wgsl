// Index of the largest logit of the last row of the step (row m - 1), so that a greedy
// step reads back one u32. Ties go to the lowest index and NaN never wins, as in
// lockstep_core::argmax. Two stages: `argmax_partial`, NG workgroups each over a
// contiguous range of the row, writes (value, index) per workgroup to `part`; `argmax`,
// one workgroup, reduces those NG pairs.

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }

const WG: u32 = 256u;
const NG: u32 = 256u;  // stage-1 workgroups (session::ARGMAX_GROUPS)
const NONE: u32 = 0xffffffffu;
// Written instead of an index when the row holds a NaN or an infinity: a greedy step must
// fail loudly rather than return whichever id survived (session.rs maps it to an error).
const NON_FINITE: u32 = 0xfffffffeu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> result: array<u32>;
@group(0) @binding(4) var<storage, read_write> part: array<u32>;  // [NG, 2]: value bits, index

var<workgroup> vals: array<f32, WG>;
var<workgroup> idxs: array<u32, WG>;
var<workgroup> bad: atomic<u32>;

// NaN or +-inf, by the exponent bits: `v != v` may be folded away by shader compilers.
fn non_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u;
}

// Whether (v, i) beats (bv, bi): larger value, or equal value and lower index.
fn beats(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    if (i == NONE) { return false; }
    if (bi == NONE) { return v >= -3.4028235e38; }  // anything above -inf (not NaN) beats nothing
    return v > bv || (v == bv && i < bi);
}

// Tree over the workgroup's (vals, idxs); the winner ends in slot 0.
fn reduce(lid: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (lid < s && beats(vals[lid + s], idxs[lid + s], vals[lid], idxs[lid])) {
            vals[lid] = vals[lid + s];
            idxs[lid] = idxs[lid + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn argmax_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = (batch.m - 1u) * p.n;
    let per = (p.n + NG - 1u) / NG;
    let start = wg.x * per;
    let end = min(start + per, p.n);
    if (lid == 0u) { atomicStore(&bad, 0u); }
    workgroupBarrier();
    var bv = 0.0;
    var bi = NONE;
    for (var i = start + lid; i < end; i += WG) {
        let v = logits[base + i];
        if (non_finite(v)) { atomicOr(&bad, 1u); }
        if (beats(v, i, bv, bi)) { bv = v; bi = i; }
    }
    vals[lid] = bv;
    idxs[lid] = bi;
    reduce(lid);
    if (lid == 0u) {
        part[2u * wg.x] = bitcast<u32>(vals[0]);
        part[2u * wg.x + 1u] = select(idxs[0], NON_FINITE, atomicLoad(&bad) != 0u);
    }
}

@compute @workgroup_size(WG)
fn argmax(@builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) { atomicStore(&bad, 0u); }
    workgroupBarrier();
    var bv = 0.0;
    var bi = NONE;
    for (var g = lid; g < NG; g += WG) {
        let v = bitcast<f32>(part[2u * g]);
        let i = part[2u * g + 1u];
        if (i == NON_FINITE) {
            atomicOr(&bad, 1u);
        } else if (beats(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    vals[lid] = bv;
    idxs[lid] = bi;
    reduce(lid);
    if (lid == 0u) {
        let best = select(idxs[0], 0u, idxs[0] == NONE);
        result[0] = select(best, NON_FINITE, atomicLoad(&bad) != 0u);
    }
}
