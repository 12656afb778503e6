//! Criterion: the GPU INT4 matrix-vector kernel (`matvec_q4`) against its bandwidth bound.
//!
//! lockstep-gpu has no public entry point for one kernel, so this runs real decode steps
//! with GPU timestamps on (`GpuOptions::profile`) and counts only the time of the
//! `matvec_q4` dispatches; criterion turns the 4-bit weight bytes those dispatches read
//! into GiB/s. The bound next to it is a device-local buffer copy (`copy_f32`: bytes read +
//! written per second), the most a bandwidth-bound kernel can stream. Where the device has
//! no timestamps inside passes, a whole decode step is measured instead (and said so).
//!
//! Shapes: Gemma 3 270M and 1B with random weights (speed does not depend on the values),
//! `LOCKSTEP_BENCH_GPU_SHAPES=270m,1b,4b` to choose.
//!
//! ```text
//! cargo bench -p lockstep-bench --bench gpu_matvec
//! ```

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lockstep::{Backend, ModelConfig, Session, SessionOptions};
use lockstep_gpu::testing::random_weights;
use lockstep_gpu::{GpuBackend, GpuOptions};
use lockstep_model::convert::{gemma3_1b_config, gemma3_4b_config};
use lockstep_model::weights::QuantMatrix;
use pollster::block_on;

const CONTEXT: usize = 64;

fn bytes(m: &QuantMatrix) -> u64 {
    (m.data.len() + 4 * m.scales.len()) as u64
}

fn matvec(c: &mut Criterion) {
    let shapes = std::env::var("LOCKSTEP_BENCH_GPU_SHAPES").unwrap_or_else(|_| "270m,1b".into());
    for shape in shapes.split(',') {
        let config = match shape {
            "270m" => ModelConfig::gemma3_270m(),
            "1b" => gemma3_1b_config(),
            "4b" => gemma3_4b_config(),
            other => panic!("unknown shape {other}: use 270m, 1b, 4b"),
        };
        let weights = random_weights(&config, 1);
        // Every 4-bit projection is read once per decode step.
        let q4_bytes: u64 = weights
            .layers
            .iter()
            .flat_map(|l| {
                [
                    &l.q_proj,
                    &l.k_proj,
                    &l.v_proj,
                    &l.o_proj,
                    &l.gate_proj,
                    &l.up_proj,
                    &l.down_proj,
                ]
            })
            .filter(|m| m.bits == 4)
            .map(bytes)
            .sum();
        let all_bytes = q4_bytes + bytes(&weights.embed);
        let opts = GpuOptions {
            profile: true,
            ..Default::default()
        };
        let backend = match GpuBackend::load(weights, opts) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("gpu unavailable: {e}");
                return;
            }
        };
        eprintln!(
            "{shape}: {} ({} MiB of 4-bit weights per step)",
            backend.info().device,
            q4_bytes >> 20
        );
        let mut s = backend
            .new_session(SessionOptions::with_max_tokens(CONTEXT + 1))
            .expect("session");
        let prompt = lockstep_bench::prompt_ids(CONTEXT, 2);
        let tok = block_on(s.forward_greedy(&prompt)).expect("prefill");
        s.reset_profile();
        let step = |s: &mut lockstep_gpu::GpuSession| {
            s.truncate(CONTEXT).expect("truncate");
            block_on(s.forward_greedy(&[tok])).expect("decode");
        };
        step(&mut s);
        let kernels =
            |s: &lockstep_gpu::GpuSession| s.profile().map(|p| p.kernels).unwrap_or_default();
        let timed = kernels(&s).iter().any(|k| k.kernel == "matvec_q4");
        let mut g = c.benchmark_group(format!("gpu-{shape}"));
        g.sample_size(20);
        if timed {
            g.throughput(Throughput::Bytes(q4_bytes));
            g.bench_function("matvec_q4 per decode step", |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        s.reset_profile();
                        step(&mut s);
                        total += kernels(&s)
                            .iter()
                            .filter(|k| k.kernel == "matvec_q4")
                            .map(|k| k.total)
                            .sum::<Duration>();
                    }
                    total
                })
            });
        } else {
            eprintln!("{shape}: no GPU timestamps inside passes on this device: timing whole decode steps (all weights) instead");
            g.throughput(Throughput::Bytes(all_bytes));
            g.bench_function("decode step (no kernel timestamps)", |b| {
                b.iter(|| step(&mut s))
            });
        }
        g.finish();
    }
    copy_bound(c);
}

/// Device-local copy bandwidth through the same wgpu adapter choice (first high-performance one).
fn copy_bound(c: &mut Criterion) {
    let instance = wgpu::Instance::default();
    let Ok(adapter) = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    })) else {
        return;
    };
    let limits = adapter.limits();
    let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .expect("device");
    let size = (256u64 << 20).min(limits.max_buffer_size) & !3;
    let buf = |usage| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let src = buf(wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::STORAGE);
    let dst = buf(wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::STORAGE);
    let mut g = c.benchmark_group(format!("gpu-bound ({})", adapter.get_info().name));
    g.sample_size(20);
    g.throughput(Throughput::Bytes(2 * size));
    g.bench_function(format!("copy {} MiB (read + write)", size >> 20), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let mut enc = device.create_command_encoder(&Default::default());
                enc.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
                queue.submit([enc.finish()]);
            }
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .expect("poll");
            t.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, matvec);
criterion_main!(benches);
