// Gemma's MLP activation: h = gelu_tanh(gate) * up, from the fused gate|up projection
// (row t holds gate[0..ffn] then up[0..ffn]).

struct Batch { m: u32, pos0: u32, row0: u32, pad: u32 }
struct Params { ffn: u32, pad0: u32, pad1: u32, pad2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> batch: Batch;
@group(0) @binding(2) var<storage, read> gu: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn gelu_tanh(x: f32) -> f32 {
    // Clamped: some tanh implementations return NaN for large arguments; tanh(15) == 1 in f32.
    let u = clamp(0.7978846 * (x + 0.044715 * x * x * x), -15.0, 15.0);
    return 0.5 * x * (1.0 + tanh(u));
}

@compute @workgroup_size(64)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i >= p.ffn || t >= batch.m) { return; }
    let g = gu[t * 2u * p.ffn + i];
    let u = gu[t * 2u * p.ffn + p.ffn + i];
    out[t * p.ffn + i] = gelu_tanh(g) * u;
}
