// Causal attention of one query head for one token over the KV cache, with one online
// softmax over tiles of WG keys (so any context length fits in workgroup memory).
// GQA: query head h reads KV head h / (nh / nkv). A query at position pos sees keys
// max(0, pos - window + 1) ..= pos (window 0: every key); key j lives in slot j % cap.
// One workgroup per (head, token).

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
struct Params { nh: u32, nkv: u32, hd: u32, cap: u32, window: u32, scale: f32, pad0: u32, pad1: u32 }

const WG: u32 = 64u;
const MAX_HD: u32 = 256u;
const PER_THREAD: u32 = 4u;  // MAX_HD / WG output dims per thread
const NEG_BIG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;       // [m, nh * hd]
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>; // [cap, nkv * hd]
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;       // [cap, nkv * hd]
@group(0) @binding(5) var<storage, read_write> out: array<f32>;     // [m, nh * hd]

var<workgroup> qs: array<vec4<f32>, 64>;  // MAX_HD / 4
var<workgroup> ps: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let t = wg.y;
    if (t >= batch.m) { return; }
    let hd = p.hd;
    let hd4 = hd / 4u;
    let pos = batch.pos0 + t;
    var first = 0u;
    if (p.window > 0u && pos + 1u > p.window) { first = pos + 1u - p.window; }
    let kvh = h / (p.nh / p.nkv);
    let qbase = (t * p.nh + h) * hd;

    for (var i = lid; i < hd4; i += WG) { qs[i] = q[qbase / 4u + i]; }
    workgroupBarrier();

    var m_run = NEG_BIG;
    var l_run = 0.0;
    var acc: array<f32, PER_THREAD>;
    let ntiles = (pos + 1u - first + WG - 1u) / WG;
    for (var tile = 0u; tile < ntiles; tile++) {
        let j0 = first + tile * WG;
        let j = j0 + lid;
        let valid = j <= pos;
        var s = NEG_BIG;
        if (valid) {
            let kb = ((j % p.cap) * p.nkv + kvh) * hd4;
            var d = 0.0;
            for (var i = 0u; i < hd4; i++) { d += dot(qs[i], k_cache[kb + i]); }
            s = d * p.scale;
        }
        red[lid] = s;
        workgroupBarrier();
        for (var st = WG / 2u; st > 0u; st /= 2u) {
            if (lid < st) { red[lid] = max(red[lid], red[lid + st]); }
            workgroupBarrier();
        }
        let m_new = max(m_run, red[0]);
        ps[lid] = select(0.0, exp(s - m_new), valid);
        workgroupBarrier();

        let corr = exp(m_run - m_new);
        let nvalid = min(WG, pos + 1u - j0);
        var tsum = 0.0;
        for (var e = 0u; e < nvalid; e++) { tsum += ps[e]; }
        l_run = l_run * corr + tsum;
        for (var c = 0u; c < PER_THREAD; c++) {
            let d = lid + c * WG;
            if (d < hd) {
                var a = acc[c] * corr;
                for (var e = 0u; e < nvalid; e++) {
                    a += ps[e] * v_cache[(((j0 + e) % p.cap) * p.nkv + kvh) * hd + d];
                }
                acc[c] = a;
            }
        }
        m_run = m_new;
        workgroupBarrier();  // red and ps are rewritten by the next tile
    }
    for (var c = 0u; c < PER_THREAD; c++) {
        let d = lid + c * WG;
        if (d < hd) { out[qbase + d] = acc[c] / l_run; }
    }
}
