//! Each kernel against the plain CPU reference, on small odd shapes, with llama.cpp
//! test-backend-ops' normalized MSE: nmse = sum((gpu - cpu)^2) / sum(cpu^2).

use std::sync::OnceLock;

use bytemuck::{Pod, Zeroable};

use crate::context::GpuContext;
use crate::kernels::{bind, Kernel, Kernels};
use crate::reference;
use crate::testing::{quantize_q4, quantize_q8, Rng};
use lockstep_model::weights::QuantMatrix;

const NMSE_DEFAULT: f64 = 1e-7;
const NMSE_MATMUL: f64 = 5e-4;

struct Gpu {
    ctx: GpuContext,
    kernels: Kernels,
    /// The same kernels with an f16 KV cache (`kv_f16`).
    kernels_f16: Kernels,
    /// With subgroup reductions, where the adapter has them.
    kernels_subgroups: Option<Kernels>,
}

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let ctx = GpuContext::new(None, false, true)
            .expect("a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
        let kernels = Kernels::new(&ctx.device, &[]).expect("kernels build");
        let kernels_f16 = Kernels::new(&ctx.device, &["kv_f16"]).expect("kernels build");
        let kernels_subgroups = ctx
            .subgroups
            .then(|| Kernels::new(&ctx.device, &["subgroups"]).expect("kernels build"));
        Gpu {
            ctx,
            kernels,
            kernels_f16,
            kernels_subgroups,
        }
    })
}

pub(crate) fn nmse(gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len());
    let err: f64 = gpu
        .iter()
        .zip(cpu)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let norm: f64 = cpu.iter().map(|b| (*b as f64).powi(2)).sum();
    err / norm
}

fn check(name: &str, gpu: &[f32], cpu: &[f32], threshold: f64) {
    let e = nmse(gpu, cpu);
    eprintln!("{name}: nmse {e:.3e} (threshold {threshold:.0e})");
    assert!(e <= threshold, "{name}: nmse {e:e} over {threshold:e}");
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Batch {
    m: u32,
    pos0: u32,
    row0: u32,
    pad: u32,
}

fn batch(m: usize, pos0: usize, row0: usize) -> Vec<u8> {
    bytemuck::bytes_of(&Batch {
        m: m as u32,
        pos0: pos0 as u32,
        row0: row0 as u32,
        pad: 0,
    })
    .to_vec()
}

fn words<T: Pod>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// Binding contents, in binding order: the first `uniforms` are uniform buffers.
struct Bindings {
    uniforms: usize,
    data: Vec<Vec<u8>>,
}

/// Runs one dispatch of `entry` and returns every binding's contents afterwards.
fn run(kernel: &Kernel, entry: &str, b: Bindings, groups: (u32, u32)) -> Vec<Vec<u8>> {
    run_passes(kernel, &[(entry, groups)], b)
}

/// Runs dispatches of `kernel`'s entry points in order, all on the same bindings.
fn run_passes(kernel: &Kernel, passes: &[(&str, (u32, u32))], b: Bindings) -> Vec<Vec<u8>> {
    use wgpu::util::DeviceExt;
    let ctx = &gpu().ctx;
    let device = &ctx.device;
    let buffers: Vec<wgpu::Buffer> = b
        .data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let usage = if i < b.uniforms {
                wgpu::BufferUsages::UNIFORM
            } else {
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC
            };
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: d,
                usage,
            })
        })
        .collect();
    let refs: Vec<&wgpu::Buffer> = buffers.iter().collect();
    let group = bind(device, kernel, passes[0].0, &refs);
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for &(entry, groups) in passes {
            pass.set_pipeline(kernel.pipeline(entry));
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        }
    }
    let staging: Vec<wgpu::Buffer> = buffers
        .iter()
        .map(|buf| {
            let s = device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: buf.size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            if buf.usage().contains(wgpu::BufferUsages::COPY_SRC) {
                enc.copy_buffer_to_buffer(buf, 0, &s, 0, buf.size());
            }
            s
        })
        .collect();
    ctx.queue.submit([enc.finish()]);
    staging
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i < b.uniforms {
                return b.data[i].clone();
            }
            s.slice(..)
                .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .expect("poll");
            let v = s.slice(..).get_mapped_range().to_vec();
            s.unmap();
            v
        })
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytemuck::cast_slice(bytes).to_vec()
}

fn matmul_case(bits: u8, n: usize, k: usize, m: usize, seed: u64) {
    let tiled = m >= crate::kernels::TILED_MIN_TOKENS;
    matmul_entry_case(bits, n, k, m, seed, tiled);
}

fn matmul_entry_case(bits: u8, n: usize, k: usize, m: usize, seed: u64, tiled: bool) {
    let mut rng = Rng::new(seed);
    let values = rng.vec(n * k, 1.0);
    let w = if bits == 4 {
        quantize_q4(n, k, &values)
    } else {
        quantize_q8(n, k, &values)
    };
    let x = rng.vec(m * k, 1.0);
    // Output rows of 3 + n + 5 values, this matrix at offset 3: as the LM head's chunks write.
    let entry = match (bits, m, tiled) {
        (4, _, true) => "matmul_tiled_q4",
        (_, _, true) => "matmul_tiled_q8",
        (4, 1, _) => "matvec_q4",
        (4, _, _) => "matmul_q4",
        (_, 1, _) => "matvec_q8",
        _ => "matmul_q8",
    };
    let (rows, tokens) = match (m, tiled) {
        (_, true) => (64, 64),
        (1, _) => (32, 1),
        _ => (8, 8),
    };
    let groups = (n.div_ceil(rows) as u32, m.div_ceil(tokens) as u32);
    // Every variant the adapter has: the subgroup reductions where it has subgroups.
    let variants = [Some(&gpu().kernels), gpu().kernels_subgroups.as_ref()];
    for kernels in variants.into_iter().flatten() {
        matmul_check(kernels, entry, (n, k, m), groups, &w, &x);
    }
}

fn matmul_check(
    kernels: &Kernels,
    entry: &str,
    (n, k, m): (usize, usize, usize),
    groups: (u32, u32),
    w: &QuantMatrix,
    x: &[f32],
) {
    // Output rows of 3 + n + 5 values, this matrix at offset 3: as the LM head's chunks write.
    let (stride, offset) = (n + 8, 3);
    let params = [n as u32, k as u32, stride as u32, offset as u32];
    let out = run(
        &kernels.matmul,
        entry,
        Bindings {
            uniforms: 2,
            data: vec![
                words(&params),
                batch(m, 0, 0),
                w.data.clone(),
                words(&w.scales),
                words(x),
                words(&vec![7f32; m * stride]),
            ],
        },
        groups,
    );
    let y = f32s(&out[5]);
    let mut got = Vec::new();
    let mut want = Vec::new();
    for t in 0..m {
        got.extend_from_slice(&y[t * stride + offset..t * stride + offset + n]);
        want.extend(reference::matvec(w, &x[t * k..(t + 1) * k]));
        // Nothing outside this matrix's columns may be written.
        assert!(y[t * stride..t * stride + offset].iter().all(|&v| v == 7.0));
        assert!(y[t * stride + offset + n..(t + 1) * stride]
            .iter()
            .all(|&v| v == 7.0));
    }
    check(
        &format!("{entry} n={n} k={k} m={m}"),
        &got,
        &want,
        NMSE_MATMUL,
    );
}

#[test]
fn matvec_q4_matches_cpu() {
    matmul_case(4, 37, 96, 1, 1);
    matmul_case(4, 64, 1088, 1, 2); // more blocks than lanes
}

#[test]
fn matmul_q4_matches_cpu() {
    matmul_case(4, 37, 96, 11, 3);
    matmul_case(4, 16, 64, 2, 4);
}

/// The prefill kernel: partial tiles in both directions (rows past n, tokens past m),
/// several blocks, and a step smaller than one tile.
#[test]
fn matmul_tiled_matches_cpu() {
    matmul_entry_case(4, 37, 96, 11, 7, true);
    matmul_entry_case(4, 130, 160, 70, 8, true);
    matmul_entry_case(8, 45, 64, 9, 9, true);
    matmul_entry_case(8, 129, 96, 65, 10, true);
}

#[test]
fn matvec_q8_matches_cpu() {
    matmul_case(8, 45, 64, 1, 5);
}

#[test]
fn matmul_q8_matches_cpu() {
    matmul_case(8, 45, 64, 9, 6);
}

#[test]
fn rmsnorm_matches_cpu() {
    let (n, rows, row0) = (200, 3, 2);
    let mut rng = Rng::new(7);
    let x = rng.vec((rows + row0) * n, 3.0);
    let w = rng.vec(n, 1.0);
    let eps = 1e-6f32;
    let params = [n as u32, eps.to_bits(), 0, 0];
    let out = run(
        &gpu().kernels.rmsnorm,
        "rmsnorm",
        Bindings {
            uniforms: 2,
            data: vec![
                words(&params),
                batch(rows, 0, row0),
                words(&x),
                words(&w),
                words(&vec![0f32; rows * n]),
            ],
        },
        (rows as u32, 1),
    );
    let want: Vec<f32> = (row0..row0 + rows)
        .flat_map(|r| reference::rms_norm(&x[r * n..(r + 1) * n], &w, eps))
        .collect();
    check("rmsnorm", &f32s(&out[4]), &want, NMSE_DEFAULT);

    let res = rng.vec(rows * n, 1.0);
    let out = run(
        &gpu().kernels.rmsnorm,
        "rmsnorm_add",
        Bindings {
            uniforms: 2,
            data: vec![
                words(&params),
                batch(rows, 0, 0),
                words(&x),
                words(&w),
                words(&res),
            ],
        },
        (rows as u32, 1),
    );
    let want: Vec<f32> = (0..rows)
        .flat_map(|r| {
            let normed = reference::rms_norm(&x[r * n..(r + 1) * n], &w, eps);
            normed
                .iter()
                .zip(&res[r * n..(r + 1) * n])
                .map(|(a, b)| a + b)
                .collect::<Vec<_>>()
        })
        .collect();
    check("rmsnorm_add", &f32s(&out[4]), &want, NMSE_DEFAULT);
}

#[test]
fn add_norm_matches_cpu() {
    let (n, rows) = (200, 3);
    let mut rng = Rng::new(17);
    let proj = rng.vec(rows * n, 3.0);
    let x = rng.vec(rows * n, 2.0);
    let (w_post, w_next) = (rng.vec(n, 1.0), rng.vec(n, 1.0));
    let eps = 1e-6f32;
    let out = run(
        &gpu().kernels.add_norm,
        "add_norm",
        Bindings {
            uniforms: 2,
            data: vec![
                words(&[n as u32, eps.to_bits(), 0, 0]),
                batch(rows, 0, 0),
                words(&proj),
                words(&w_post),
                words(&x),
                words(&w_next),
                words(&vec![0f32; rows * n]),
            ],
        },
        (rows as u32, 1),
    );
    let (mut x_want, mut xn_want) = (Vec::new(), Vec::new());
    for r in 0..rows {
        let normed = reference::rms_norm(&proj[r * n..(r + 1) * n], &w_post, eps);
        let joined: Vec<f32> = normed
            .iter()
            .zip(&x[r * n..(r + 1) * n])
            .map(|(a, b)| a + b)
            .collect();
        xn_want.extend(reference::rms_norm(&joined, &w_next, eps));
        x_want.extend(joined);
    }
    check("add_norm residual", &f32s(&out[4]), &x_want, NMSE_DEFAULT);
    check("add_norm next norm", &f32s(&out[6]), &xn_want, NMSE_DEFAULT);
}

#[test]
fn embed_gathers_8bit_rows() {
    let (vocab, k) = (50, 64);
    let mut rng = Rng::new(8);
    let table = quantize_q8(vocab, k, &rng.vec(vocab * k, 1.0));
    let tokens = [3u32, 49, 20, 3, 0];
    let scale = (k as f32).sqrt();
    // The chunk of rows 20..50: tokens outside it must be left alone.
    let (start, rows) = (20, 30);
    let chunk_data = table.data[start * k..(start + rows) * k].to_vec();
    let chunk_scales = table.scales[start * 2..(start + rows) * 2].to_vec();
    let params = [start as u32, rows as u32, k as u32, scale.to_bits()];
    let out = run(
        &gpu().kernels.embed,
        "embed_q8",
        Bindings {
            uniforms: 2,
            data: vec![
                words(&params),
                batch(tokens.len(), 0, 0),
                words(&tokens),
                chunk_data,
                words(&chunk_scales),
                words(&vec![-1f32; tokens.len() * k]),
            ],
        },
        (tokens.len() as u32, 1),
    );
    let got = f32s(&out[5]);
    let mut want = Vec::new();
    for &t in &tokens {
        if (start..start + rows).contains(&(t as usize)) {
            want.extend(table.row(t as usize).iter().map(|v| v * scale));
        } else {
            want.extend(vec![-1f32; k]);
        }
    }
    check("embed_q8", &got, &want, NMSE_DEFAULT);
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttnParams {
    nh: u32,
    nkv: u32,
    hd: u32,
    cap: u32,
    eps_or_window: u32,
    scale: f32,
    slots: u32,
    min_tiles: u32,
}

fn rope_case(kv16: bool) {
    let (nh, nkv, hd, m, cap) = (4, 2, 64, 3, 5);
    // Positions near the context end: large angles test the range reduction.
    let pos0 = 32_000;
    let eps = 1e-6f32;
    let mut rng = Rng::new(9);
    let width = (nh + 2 * nkv) * hd;
    let qkv = rng.vec(m * width, 2.0);
    let q_norm = rng.vec(hd, 1.0);
    let k_norm = rng.vec(hd, 1.0);
    let inv_freq = reference::rope_inv_freq(10_000.0, hd);
    let params = AttnParams {
        nh: nh as u32,
        nkv: nkv as u32,
        hd: hd as u32,
        cap: cap as u32,
        eps_or_window: eps.to_bits(),
        scale: 0.0,
        slots: 0,
        min_tiles: 0,
    };
    let kernels = if kv16 {
        &gpu().kernels_f16
    } else {
        &gpu().kernels
    };
    // An f16 cache is half as many bytes: pairs of values in u32 words.
    let cache = cap * nkv * hd / if kv16 { 2 } else { 1 };
    let out = run(
        &kernels.rope,
        "qk_norm_rope",
        Bindings {
            uniforms: 2,
            data: vec![
                words(&[params]),
                batch(m, pos0, 0),
                words(&qkv),
                words(&q_norm),
                words(&k_norm),
                words(&inv_freq),
                words(&vec![0f32; m * nh * hd]),
                words(&vec![0f32; cache]),
                words(&vec![0f32; cache]),
            ],
        },
        ((nh + nkv) as u32, m as u32),
    );
    let cache_values = |bytes: &[u8]| -> Vec<f32> {
        if kv16 {
            // Back to [slot][kv head][hd] order, each head's pairs unpacked.
            let w: &[u32] = bytemuck::cast_slice(bytes);
            w.chunks(hd / 2).flat_map(unpack_f16_pairs).collect()
        } else {
            f32s(bytes)
        }
    };
    let (q_got, k_got, v_got) = (f32s(&out[6]), cache_values(&out[7]), cache_values(&out[8]));
    let round = |v: &[f32]| -> Vec<f32> {
        v.iter()
            .map(|&x| {
                if kv16 {
                    half::f16::from_f32(x).to_f32()
                } else {
                    x
                }
            })
            .collect()
    };
    let (mut q_want, mut q_seen) = (Vec::new(), Vec::new());
    let (mut k_want, mut k_seen, mut v_want, mut v_seen) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in 0..m {
        let pos = pos0 + t;
        let row = &qkv[t * width..(t + 1) * width];
        for h in 0..nh + nkv {
            let (w, is_q) = if h < nh {
                (&q_norm, true)
            } else {
                (&k_norm, false)
            };
            let mut head = reference::rms_norm(&row[h * hd..(h + 1) * hd], w, eps);
            reference::rope(&mut head, pos, &inv_freq);
            if is_q {
                q_want.extend(&head);
                q_seen.extend(&q_got[(t * nh + h) * hd..(t * nh + h + 1) * hd]);
            } else {
                let o = ((pos % cap) * nkv + h - nh) * hd;
                k_want.extend(round(&head));
                k_seen.extend(&k_got[o..o + hd]);
                let v = (nh + nkv + h - nh) * hd;
                v_want.extend(round(&row[v..v + hd]));
                v_seen.extend(&v_got[o..o + hd]);
            }
        }
    }
    // sin/cos of an f32 angle near 3e4 radians: the angle itself is only exact to ~2e-3,
    // identically on both sides; the GPU's reduced-range sin/cos then adds ~1e-6.
    // f16: both sides round to nearest even; a key whose f32 value differs in its last bits
    // can round to the neighbouring f16 (one f16 ulp, 2^-11 relative, at a few elements).
    check("qk_norm_rope q", &q_seen, &q_want, 1e-6);
    check("qk_norm_rope k", &k_seen, &k_want, 1e-6);
    check("qk_norm_rope v copy", &v_seen, &v_want, 0.0);
}

#[test]
fn qk_norm_rope_matches_cpu() {
    rope_case(false);
}

/// The f16 cache: keys and values rounded to f16 when written, in the paired layout.
#[test]
fn qk_norm_rope_writes_the_f16_cache() {
    rope_case(true);
}

fn attention_case(
    heads: (usize, usize),
    window: usize,
    cap: usize,
    pos0: usize,
    m: usize,
    split: (usize, usize),
    seed: u64,
) {
    attention_case_kv(false, heads, (window, cap), pos0, m, split, seed);
}

/// A head's values as the f16 cache stores them: word i holds elements i and i + hd/2
/// (qk_norm_rope.wgsl's layout), low half first.
fn pack_f16_pairs(head: &[f32]) -> Vec<u32> {
    let half = head.len() / 2;
    (0..half)
        .map(|i| {
            let lo = half::f16::from_f32(head[i]).to_bits() as u32;
            let hi = half::f16::from_f32(head[i + half]).to_bits() as u32;
            lo | hi << 16
        })
        .collect()
}

fn unpack_f16_pairs(words: &[u32]) -> Vec<f32> {
    let f = |b: u32| half::f16::from_bits(b as u16).to_f32();
    let lo = words.iter().map(|&w| f(w & 0xffff));
    let hi = words.iter().map(|&w| f(w >> 16));
    lo.chain(hi).collect()
}

fn attention_case_kv(
    kv16: bool,
    (nh, nkv): (usize, usize),
    (window, cap): (usize, usize),
    pos0: usize,
    m: usize,
    (slots, min_tiles): (usize, usize),
    seed: u64,
) {
    let hd = 32;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut rng = Rng::new(seed);
    let q = rng.vec(m * nh * hd, 2.0);
    // Positions 0..pos0+m, written into their ring slots in order (later ones overwrite).
    let total = pos0 + m;
    let mut keys = rng.vec(total * nkv * hd, 2.0);
    let mut values = rng.vec(total * nkv * hd, 1.0);
    if kv16 {
        // What an f16 cache holds: the reference attends over the same rounded values.
        for v in keys.iter_mut().chain(values.iter_mut()) {
            *v = half::f16::from_f32(*v).to_f32();
        }
    }
    let mut k_cache = vec![f32::NAN; cap * nkv * hd];
    let mut v_cache = vec![f32::NAN; cap * nkv * hd];
    for p in 0..total {
        let (s, d) = (p * nkv * hd, (p % cap) * nkv * hd);
        k_cache[d..d + nkv * hd].copy_from_slice(&keys[s..s + nkv * hd]);
        v_cache[d..d + nkv * hd].copy_from_slice(&values[s..s + nkv * hd]);
    }
    let cache_bytes = |cache: &[f32]| -> Vec<u8> {
        if kv16 {
            let packed: Vec<u32> = cache.chunks(hd).flat_map(pack_f16_pairs).collect();
            words(&packed)
        } else {
            words(cache)
        }
    };
    let params = AttnParams {
        nh: nh as u32,
        nkv: nkv as u32,
        hd: hd as u32,
        cap: cap as u32,
        eps_or_window: window as u32,
        scale,
        slots: slots as u32,
        min_tiles: min_tiles as u32,
    };
    let (chunk_keys, chunks) = crate::kernels::attention_split(m, pos0, window, slots, min_tiles);
    let partial = ("attention_partial", (chunks as u32, (m * nkv) as u32));
    let combine = ("attention_combine", (nh as u32, m as u32));
    let passes: &[_] = if chunks > 1 {
        &[partial, combine]
    } else {
        &[partial]
    };
    let kernels = if kv16 {
        &gpu().kernels_f16
    } else {
        &gpu().kernels
    };
    let out = run_passes(
        &kernels.attention,
        passes,
        Bindings {
            uniforms: 2,
            data: vec![
                words(&[params]),
                batch(m, pos0, 0),
                words(&q),
                cache_bytes(&k_cache),
                cache_bytes(&v_cache),
                words(&vec![f32::NAN; slots * nh * hd]),
                words(&vec![f32::NAN; slots * nh * 2]),
                words(&vec![0f32; m * nh * hd]),
            ],
        },
    );
    let mut want = Vec::new();
    for t in 0..m {
        let pos = pos0 + t;
        let first = if window == 0 {
            0
        } else {
            (pos + 1).saturating_sub(window)
        };
        for h in 0..nh {
            let qh = &q[(t * nh + h) * hd..(t * nh + h + 1) * hd];
            let kvh = h / (nh / nkv);
            want.extend(reference::attend(
                qh,
                &keys,
                &values,
                nkv * hd,
                kvh * hd,
                first..=pos,
                scale,
            ));
        }
    }
    check(
        &format!(
            "attention heads={nh}/{nkv} window={window} cap={cap} pos0={pos0} m={m} \
             slots={slots} min_tiles={min_tiles} ({chunks} chunks of {chunk_keys} keys)"
        ),
        &f32s(&out[7]),
        &want,
        NMSE_DEFAULT,
    );
}

#[test]
fn attention_matches_cpu() {
    // Global: all keys, several chunks of one tile each.
    attention_case((4, 2), 0, 200, 150, 3, (96, 1), 10);
    // Sliding window in a ring that has wrapped: the ring keeps window + m - 1 slots.
    attention_case((4, 2), 8, 8 + 4 - 1, 30, 4, (128, 1), 11);
    // Window larger than a tile, ring wrapped several times.
    attention_case((4, 2), 100, 110, 500, 2, (64, 1), 12);
    // First positions: fewer keys than the window.
    attention_case((4, 2), 8, 11, 0, 4, (128, 1), 13);
}

#[test]
fn split_k_attention_across_chunks_windows_and_wraps() {
    // Decode, 4 query heads on one KV head (Gemma 3 270M's grouping): chunk boundaries
    // inside the window, a partly filled last tile, the ring wrapped.
    attention_case((4, 1), 70, 70, 333, 1, (64, 1), 20);
    // Few slots: several tiles per chunk (online softmax inside a chunk), global layer.
    attention_case((4, 1), 0, 400, 300, 1, (3, 1), 21);
    // Prefill step over a window: tokens with different key counts share a split, and
    // the ring holds window + m - 1 slots, wrapped.
    attention_case((4, 1), 40, 40 + 7 - 1, 95, 7, (7 * 2, 1), 22);
    // Exactly one tile's worth of keys, and a window that is a multiple of the tile.
    attention_case((4, 1), 64, 64, 31, 1, (32, 1), 23);
    attention_case((4, 1), 64, 70, 200, 1, (32, 1), 24);
    // One query head per KV head.
    attention_case((2, 2), 0, 90, 80, 2, (16, 1), 25);
}

/// The f16 cache: the kernel reads its pairs as the f32 kernel reads f32 values (the
/// reference attends over the same f16-rounded keys and values), windows and rings included.
#[test]
fn attention_reads_the_f16_cache() {
    attention_case_kv(true, (4, 1), (70, 70), 333, 1, (64, 1), 40);
    attention_case_kv(true, (4, 2), (0, 200), 150, 3, (96, 16), 41);
    attention_case_kv(true, (4, 1), (40, 40 + 7 - 1), 95, 7, (7 * 2, 1), 42);
}

/// Short contexts in one chunk per token: the partial pass writes the result itself and
/// no combine runs (GpuOptions::attention_min_tiles).
#[test]
fn one_chunk_attention_needs_no_combine() {
    // Decode with 333 keys in a 70-key window: all 3 tiles in one chunk.
    attention_case((4, 1), 70, 70, 333, 1, (64, 8), 30);
    // Prefill of 7 tokens on a global layer, several tiles in one chunk.
    attention_case((4, 1), 0, 200, 95, 7, (7 * 32, 16), 31);
    attention_case((4, 2), 0, 200, 150, 3, (96, 16), 32);
}

#[test]
fn geglu_matches_cpu() {
    let (ffn, m) = (100, 3);
    let mut rng = Rng::new(14);
    let mut gu = rng.vec(m * 2 * ffn, 4.0);
    gu[0] = 30.0; // tanh of a large argument must not be NaN
    gu[1] = -30.0;
    let out = run(
        &gpu().kernels.geglu,
        "geglu",
        Bindings {
            uniforms: 2,
            data: vec![
                words(&[ffn as u32, 0, 0, 0]),
                batch(m, 0, 0),
                words(&gu),
                words(&vec![0f32; m * ffn]),
            ],
        },
        (ffn.div_ceil(64) as u32, m as u32),
    );
    let want: Vec<f32> = (0..m)
        .flat_map(|t| {
            let row = &gu[t * 2 * ffn..(t + 1) * 2 * ffn];
            (0..ffn).map(move |i| reference::gelu_tanh(row[i]) * row[ffn + i])
        })
        .collect();
    check("geglu", &f32s(&out[3]), &want, NMSE_DEFAULT);
}

fn gpu_argmax(logits: &[f32], n: usize) -> u32 {
    let out = run_passes(
        &gpu().kernels.argmax,
        &[("argmax_partial", (256, 1)), ("argmax", (1, 1))],
        Bindings {
            uniforms: 2,
            data: vec![
                words(&[n as u32, 0, 0, 0]),
                batch(logits.len() / n, 0, 0),
                words(logits),
                words(&[0u32]),
                words(&[0u32; 512]),
            ],
        },
    );
    u32::from_le_bytes(out[3][..4].try_into().unwrap())
}

#[test]
fn argmax_takes_lowest_index_of_last_row() {
    let n = 1000;
    let mut rng = Rng::new(15);
    let mut logits = rng.vec(2 * n, 1.0);
    logits[5] = 10.0; // row 0: must be ignored
    logits[7] = f32::NAN; // also row 0: only the last row is checked
    let row1 = &mut logits[n..];
    row1[700] = 5.0;
    row1[300] = 5.0; // tie: the lower id wins
    row1[999] = 4.0;
    let got = gpu_argmax(&logits, n);
    assert_eq!(got, lockstep_core::argmax(&logits[n..]));
    assert_eq!(got, 300);
}

#[test]
fn argmax_reports_non_finite_rows() {
    let n = 1000;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut logits = Rng::new(16).vec(n, 1.0);
        logits[611] = bad;
        assert_eq!(gpu_argmax(&logits, n), 0xffff_fffe, "{bad}");
    }
}
