// Causal attention over the KV cache, split over the keys (flash-decoding):
//
// `attention_partial`: one workgroup per (chunk of keys, token, KV head). It takes the
// chunk's keys in tiles of TILE, for all g = nh / nkv query heads that share the KV head
// (each K and V row is read once for the g heads), with an online softmax, and writes the
// chunk's partial result: its running max m, its sum l and its unnormalized output acc.
// `attention_combine`: one workgroup per (query head, token) merges the chunks' partials.
// When a step needs only one chunk per token, `attention_partial` writes the result itself
// and the host dispatches no combine.
//
// A query at position pos sees keys max(0, pos - window + 1) ..= pos (window 0: every
// key); key j lives in slot j % cap. The split of a step (keys per chunk, chunks per
// token) depends only on the step (m, pos0) and the layer's window: `split()`, mirrored
// on the host by `session::attention_split`. Chunk c of a token covers its keys
// first + c * chunk_keys ..; a token with fewer keys than the step's last uses fewer chunks.

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
// slots: partial results the scratch buffers hold per query head (>= m chunks).
// min_tiles: fewest key tiles a chunk takes (short contexts in one chunk: no combine).
struct Params { nh: u32, nkv: u32, hd: u32, cap: u32, window: u32, scale: f32, slots: u32, min_tiles: u32 }

const WG: u32 = 256u;
const TILE: u32 = 32u;      // keys per tile
const LPK: u32 = 8u;        // threads per key for the scores (WG / TILE)
const MAX_G: u32 = 4u;      // query heads per KV head
const MAX_HD4: u32 = 64u;   // MAX_HD / 4
const NEG_BIG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;       // [m, nh * hd]
#if kv_f16
// f16 cache (qk_norm_rope.wgsl): a word holds elements i and i + hd/2 of a head.
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<u32>>; // [cap, nkv * hd / 8]
@group(0) @binding(4) var<storage, read> v_cache: array<u32>;       // [cap, nkv * hd / 2]
#else
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>; // [cap, nkv * hd]
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;       // [cap, nkv * hd]
#endif
@group(0) @binding(5) var<storage, read_write> part_acc: array<f32>; // [slots * nh, hd]
@group(0) @binding(6) var<storage, read_write> part_ml: array<f32>;  // [slots * nh, 2]
@group(0) @binding(7) var<storage, read_write> out: array<f32>;      // [m, nh * hd]

var<workgroup> qs: array<vec4<f32>, 256>;  // MAX_G * MAX_HD4
var<workgroup> red: array<f32, 1024>;      // MAX_G * WG partial dot products
var<workgroup> ps: array<f32, 128>;        // MAX_G * TILE scores, then probabilities
var<workgroup> tmax: array<f32, MAX_G>;

// (keys per chunk, chunks per token) of this step.
fn split() -> vec2<u32> {
    var nkeys = batch.pos0 + batch.m;  // keys of the step's last token
    if (p.window > 0u) { nkeys = min(nkeys, p.window); }
    let tiles = (nkeys + TILE - 1u) / TILE;
    let maxc = max(1u, p.slots / batch.m);
    let per = max((tiles + maxc - 1u) / maxc, p.min_tiles);
    return vec2<u32>(per * TILE, (tiles + per - 1u) / per);
}

fn first_key(pos: u32) -> u32 {
    if (p.window > 0u && pos + 1u > p.window) { return pos + 1u - p.window; }
    return 0u;
}

@compute @workgroup_size(WG)
fn attention_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let sp = split();
    let c = wg.x;
    let t = wg.y / p.nkv;
    let kvh = wg.y % p.nkv;
    if (t >= batch.m) { return; }
    let pos = batch.pos0 + t;
    let first = first_key(pos);
    if (c * sp.x >= pos + 1u - first) { return; }  // this token has no keys in chunk c
    let j0 = first + c * sp.x;
    let jend = min(j0 + sp.x, pos + 1u);
    let g = p.nh / p.nkv;
    let hd = p.hd;
    let hd4 = hd / 4u;
    let h0 = kvh * g;  // first query head of this KV head

    for (var i = lid; i < g * hd4; i += WG) { qs[i] = q[(t * p.nh + h0) * hd4 + i]; }
    workgroupBarrier();

    let key = lid / LPK;
    let lane = lid % LPK;
    var m_run: array<f32, MAX_G>;
    var l_run: array<f32, MAX_G>;
    var acc: array<f32, MAX_G>;
    for (var h = 0u; h < MAX_G; h++) { m_run[h] = NEG_BIG; l_run[h] = 0.0; acc[h] = 0.0; }

    for (var tj = j0; tj < jend; tj += TILE) {
        // Scores: LPK threads per key, each over every LPK-th vec4 of the head.
        let j = tj + key;
        var d: array<f32, MAX_G>;
        for (var h = 0u; h < MAX_G; h++) { d[h] = 0.0; }
        if (j < jend) {
#if kv_f16
            // Word vector i: elements 4i..4i+3 (low halves) and hd/2 + 4i.. (high halves).
            let kb = ((j % p.cap) * p.nkv + kvh) * (hd / 8u);
            let h4 = hd4 / 2u;
            for (var i = lane; i < hd / 8u; i += LPK) {
                let w = k_cache[kb + i];
                let a = unpack2x16float(w.x);
                let b = unpack2x16float(w.y);
                let c = unpack2x16float(w.z);
                let e = unpack2x16float(w.w);
                let lo = vec4<f32>(a.x, b.x, c.x, e.x);
                let hi = vec4<f32>(a.y, b.y, c.y, e.y);
                for (var h = 0u; h < MAX_G; h++) {
                    if (h < g) { d[h] += dot(qs[h * hd4 + i], lo) + dot(qs[h * hd4 + h4 + i], hi); }
                }
            }
#else
            let kb = ((j % p.cap) * p.nkv + kvh) * hd4;
            for (var i = lane; i < hd4; i += LPK) {
                let kv = k_cache[kb + i];
                for (var h = 0u; h < MAX_G; h++) {
                    if (h < g) { d[h] += dot(qs[h * hd4 + i], kv); }
                }
            }
#endif
        }
        for (var h = 0u; h < MAX_G; h++) { red[h * WG + lid] = d[h]; }
        workgroupBarrier();
        if (lid < MAX_G * TILE) {
            let h = lid / TILE;
            let kk = lid % TILE;
            var s = NEG_BIG;
            if (h < g && tj + kk < jend) {
                var sum = 0.0;
                for (var l = 0u; l < LPK; l++) { sum += red[h * WG + kk * LPK + l]; }
                s = sum * p.scale;
            }
            ps[lid] = s;
        }
        workgroupBarrier();
        if (lid < MAX_G) {
            var mx = m_run[lid];
            for (var kk = 0u; kk < TILE; kk++) { mx = max(mx, ps[lid * TILE + kk]); }
            tmax[lid] = mx;
        }
        workgroupBarrier();
        if (lid < MAX_G * TILE) {
            ps[lid] = exp(ps[lid] - tmax[lid / TILE]);  // masked keys: exp(-huge) = 0
        }
        workgroupBarrier();
        // Values: one thread per output dimension, for every head of the group.
        let nk = min(TILE, jend - tj);
        for (var h = 0u; h < MAX_G; h++) {
            let corr = exp(m_run[h] - tmax[h]);
            acc[h] *= corr;
            l_run[h] *= corr;
            m_run[h] = tmax[h];
        }
        if (lid < hd) {
            for (var kk = 0u; kk < nk; kk++) {
#if kv_f16
                let half = hd / 2u;
                let vw = unpack2x16float(v_cache[(((tj + kk) % p.cap) * p.nkv + kvh) * half + lid % half]);
                let v = select(vw.x, vw.y, lid >= half);
#else
                let v = v_cache[(((tj + kk) % p.cap) * p.nkv + kvh) * hd + lid];
#endif
                for (var h = 0u; h < MAX_G; h++) {
                    let pv = ps[h * TILE + kk];
                    acc[h] += pv * v;
                    l_run[h] += pv;
                }
            }
        }
        workgroupBarrier();  // red, ps and tmax are rewritten by the next tile
    }
    if (sp.y == 1u) {
        // One chunk: this is the whole result (as attention_combine would compute it).
        if (lid < hd) {
            for (var h = 0u; h < MAX_G; h++) {
                if (h < g) { out[(t * p.nh + h0 + h) * hd + lid] = acc[h] * (1.0 / l_run[h]); }
            }
        }
        return;
    }
    let slot = (t * sp.y + c) * p.nh + h0;
    if (lid < hd) {
        for (var h = 0u; h < MAX_G; h++) {
            if (h < g) { part_acc[(slot + h) * hd + lid] = acc[h]; }
        }
    }
    if (lid == 0u) {
        for (var h = 0u; h < MAX_G; h++) {
            if (h < g) {
                part_ml[2u * (slot + h)] = m_run[h];
                part_ml[2u * (slot + h) + 1u] = l_run[h];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn attention_combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let sp = split();
    let h = wg.x;
    let t = wg.y;
    if (t >= batch.m) { return; }
    let pos = batch.pos0 + t;
    let nkeys = pos + 1u - first_key(pos);
    let nc = (nkeys + sp.x - 1u) / sp.x;
    let base = t * sp.y * p.nh + h;  // slot of chunk c: base + c * nh
    var mx = NEG_BIG;
    for (var c = 0u; c < nc; c++) { mx = max(mx, part_ml[2u * (base + c * p.nh)]); }
    var l = 0.0;
    for (var c = 0u; c < nc; c++) {
        let s = base + c * p.nh;
        l += part_ml[2u * s + 1u] * exp(part_ml[2u * s] - mx);
    }
    let inv = 1.0 / l;
    for (var d = lid; d < p.hd; d += WG) {
        var o = 0.0;
        for (var c = 0u; c < nc; c++) {
            let s = base + c * p.nh;
            o += part_acc[s * p.hd + d] * exp(part_ml[2u * s] - mx);
        }
        out[(t * p.nh + h) * p.hd + d] = o * inv;
    }
}
