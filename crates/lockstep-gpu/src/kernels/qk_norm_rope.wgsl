// Per-head RMSNorm of Q and K over head_dim, then NeoX RoPE (element i pairs with
// i + head_dim/2, angle = pos * inv_freq[i]); Q goes to `q_out`, K and V into the KV cache
// at slot pos % cap (a ring buffer on sliding layers, plain on global ones). With `kv_f16`
// the cache holds f16 (rounded by pack2x16float), the rest stays f32.
// One workgroup per (head, token); heads nh.. are the KV heads (they also copy V).

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
struct Params { nh: u32, nkv: u32, hd: u32, cap: u32, eps: f32, pad0: u32, pad1: u32, pad2: u32 }

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;      // [m, (nh + 2 nkv) * hd]
@group(0) @binding(3) var<storage, read> q_norm: array<f32>;
@group(0) @binding(4) var<storage, read> k_norm: array<f32>;
@group(0) @binding(5) var<storage, read> inv_freq: array<f32>; // [hd / 2], computed on the CPU
@group(0) @binding(6) var<storage, read_write> q_out: array<f32>;   // [m, nh * hd]
#if kv_f16
// f16 cache: one word holds elements i and i + hd/2 of a head (the pair RoPE rotates
// together), [cap, nkv * hd / 2] words.
@group(0) @binding(7) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(8) var<storage, read_write> v_cache: array<u32>;
#else
@group(0) @binding(7) var<storage, read_write> k_cache: array<f32>; // [cap, nkv * hd]
@group(0) @binding(8) var<storage, read_write> v_cache: array<f32>;
#endif

var<workgroup> head: array<f32, 256>;
var<workgroup> red: array<f32, WG>;

// sin/cos are only accurate near zero on some GPUs: reduce the angle to [-pi, pi] first
// (Cody-Waite, 2 pi split in three parts; k * part is exact for angles below 2^16).
fn reduce_angle(a: f32) -> f32 {
    let k = round(a * 0.15915494);
    return ((a - k * 6.28125) - k * 0.0019350052) - k * 3.019916e-7;
}

@compute @workgroup_size(WG)
fn qk_norm_rope(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wg.x;
    let t = wg.y;
    if (t >= batch.m) { return; }
    let hd = p.hd;
    let pos = batch.pos0 + t;
    let row = t * (p.nh + 2u * p.nkv) * hd;
    let is_q = h < p.nh;

    var ss = 0.0;
    for (var i = lid; i < hd; i += WG) {
        let v = qkv[row + h * hd + i];
        head[i] = v;
        ss += v * v;
    }
    red[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let r = inverseSqrt(red[0] / f32(hd) + p.eps);

    let half = hd / 2u;
    let kv = h - p.nh;  // only meaningful for KV heads
    let slot = pos % p.cap;
    for (var i = lid; i < half; i += WG) {
        var wa: f32;
        var wb: f32;
        if (is_q) { wa = q_norm[i]; wb = q_norm[i + half]; } else { wa = k_norm[i]; wb = k_norm[i + half]; }
        let a = head[i] * r * wa;
        let b = head[i + half] * r * wb;
        let angle = reduce_angle(f32(pos) * inv_freq[i]);
        let c = cos(angle);
        let sn = sin(angle);
        let oa = a * c - b * sn;
        let ob = b * c + a * sn;
        if (is_q) {
            let o = (t * p.nh + h) * hd;
            q_out[o + i] = oa;
            q_out[o + i + half] = ob;
        } else {
            let o = (slot * p.nkv + kv) * hd;
#if kv_f16
            k_cache[o / 2u + i] = pack2x16float(vec2<f32>(oa, ob));
#else
            k_cache[o + i] = oa;
            k_cache[o + i + half] = ob;
#endif
        }
    }
    if (!is_q) {
        let src = row + (p.nh + p.nkv + kv) * hd;
        let o = (slot * p.nkv + kv) * hd;
#if kv_f16
        for (var i = lid; i < half; i += WG) {
            v_cache[o / 2u + i] = pack2x16float(vec2<f32>(qkv[src + i], qkv[src + i + half]));
        }
#else
        for (var i = lid; i < hd; i += WG) {
            v_cache[o + i] = qkv[src + i];
        }
#endif
    }
}
