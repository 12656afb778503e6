// Embedding gather from 8-bit rows: out[t] = dequant(embed[tokens[t]]) * embed_scale.
//
// The table is split into chunks of rows (each its own binding, to stay under the storage
// binding limit); one dispatch per chunk, and a token whose id is outside the chunk is
// left to another chunk's dispatch. One workgroup per token.

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
struct Params { row_start: u32, rows: u32, k: u32, embed_scale: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;       // 8-bit codes, 4 per word
@group(0) @binding(4) var<storage, read> scales: array<f32>;  // one per 32 codes
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn embed_q8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = wg.x;
    if (t >= batch.m) { return; }
    let id = tokens[t];
    if (id < p.row_start || id >= p.row_start + p.rows) { return; }
    let row = id - p.row_start;
    let words = p.k / 4u;
    for (var i = lid.x; i < words; i += 64u) {
        let word = w[row * words + i];
        let s = scales[(row * p.k + i * 4u) / 32u];
        for (var j = 0u; j < 4u; j++) {
            let q = f32(i32((word >> (8u * j)) & 0xffu) - 128);
            out[t * p.k + i * 4u + j] = (s * q) * p.embed_scale;
        }
    }
}
