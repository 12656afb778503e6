//! Our WGSL kernels (one file each under `kernels/`) and their compute pipelines.
//!
//! Every kernel class has one explicit bind group layout, shared by its entry points, so a
//! bind group built once per session works with, e.g., both the decode and the prefill
//! matmul. Binding 0 is always the kernel's static parameters (a uniform written once),
//! binding 1 the step's `Batch` uniform (tokens in the step, first position, first row).

use lockstep_core::{Error, Result};

/// Every kernel's WGSL source, by file name: what the pipelines are built from, and what
/// the MSL translation test checks.
pub const SOURCES: &[(&str, &str)] = &[
    ("embed.wgsl", include_str!("kernels/embed.wgsl")),
    ("rmsnorm.wgsl", include_str!("kernels/rmsnorm.wgsl")),
    ("add_norm.wgsl", include_str!("kernels/add_norm.wgsl")),
    ("matmul.wgsl", include_str!("kernels/matmul.wgsl")),
    (
        "matmul_tiled.wgsl",
        include_str!("kernels/matmul_tiled.wgsl"),
    ),
    (
        "qk_norm_rope.wgsl",
        include_str!("kernels/qk_norm_rope.wgsl"),
    ),
    ("attention.wgsl", include_str!("kernels/attention.wgsl")),
    ("geglu.wgsl", include_str!("kernels/geglu.wgsl")),
    ("argmax.wgsl", include_str!("kernels/argmax.wgsl")),
];

/// The WGSL sources' variants: a kernel marks variant code with lines `#if NAME`, `#else`,
/// `#endif` (WGSL has no preprocessor), and [`preprocess`] keeps one side. `kv_f16`: the
/// KV cache stored as f16 pairs (`GpuOptions::kv`); `subgroups`: reductions with subgroup
/// operations, where the adapter has them (wgpu's `SUBGROUP` feature).
pub const VARIANTS: &[&str] = &["kv_f16", "subgroups"];

/// `src` with its `#if NAME` / `#else` / `#endif` blocks (not nested) resolved for the
/// names in `defined`; the directive lines become empty lines, so line numbers in error
/// messages still point into the file.
pub fn preprocess(src: &str, defined: &[&str]) -> String {
    let mut out = String::with_capacity(src.len());
    // None outside a block; Some(keep) inside one.
    let mut keep: Option<bool> = None;
    for line in src.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("#if ") {
            assert!(keep.is_none(), "nested #if in a kernel");
            keep = Some(defined.contains(&name.trim()));
        } else if t == "#else" {
            keep = keep.map(|k| !k);
        } else if t == "#endif" {
            keep = None;
        } else if keep.unwrap_or(true) {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(keep.is_none(), "unterminated #if in a kernel");
    out
}

/// Rows of a matrix one matmul workgroup computes (`ROWS` in matmul.wgsl).
pub(crate) const MATMUL_ROWS: u32 = 8;
/// Tokens one prefill matmul workgroup computes (`TM` in matmul.wgsl).
pub(crate) const MATMUL_TOKENS: u32 = 8;
/// Tokens and rows of one tiled prefill matmul workgroup (`BT`, `BR` in matmul_tiled.wgsl).
pub(crate) const TILED_TOKENS: u32 = 64;
pub(crate) const TILED_ROWS: u32 = 64;
/// Steps of more tokens than this take the tiled matmul; fewer take matmul.wgsl's, which
/// reads each weight once per 8 tokens without staging tiles.
pub(crate) const TILED_MIN_TOKENS: usize = 16;
/// Rows of a matrix one matvec (single-token) workgroup computes (`MV_ROWS` in matmul.wgsl).
pub(crate) const MATVEC_ROWS: u32 = 32;
/// Workgroups of the argmax's first stage (`NG` in argmax.wgsl).
pub(crate) const ARGMAX_GROUPS: u32 = 256;
/// Threads of a geglu workgroup.
pub(crate) const GEGLU_WG: u32 = 64;
/// Largest head_dim the attention and RoPE kernels hold in workgroup memory.
pub(crate) const MAX_HEAD_DIM: usize = 256;
/// Most query heads sharing one KV head (`MAX_G` in attention.wgsl).
pub(crate) const MAX_GROUP: usize = 4;
/// Split-K attention partial results per query head: at least this many (a decode step
/// splits its keys up to this many ways), and at least one per token of `max_batch` (a
/// long step has enough workgroups with one chunk per token).
pub(crate) const ATTN_MIN_SLOTS: usize = 64;
/// Most rows of logits one step computes for `Want::All` (262,144 floats each).
pub(crate) const MAX_LOGIT_ROWS: usize = 64;
/// Keys per attention tile (`TILE` in attention.wgsl).
pub(crate) const ATTN_TILE: usize = 32;

/// How a step splits each token's keys over attention workgroups, as attention.wgsl's
/// `split()` does: (keys per chunk, chunks per token), for a step of `m` tokens from
/// position `pos0`, a layer `window` (0: global), `slots` partial results per head, and
/// chunks of at least `min_tiles` tiles.
pub(crate) fn attention_split(
    m: usize,
    pos0: usize,
    window: usize,
    slots: usize,
    min_tiles: usize,
) -> (usize, usize) {
    let mut nkeys = pos0 + m;
    if window > 0 {
        nkeys = nkeys.min(window);
    }
    let tiles = nkeys.div_ceil(ATTN_TILE);
    let maxc = (slots / m).max(1);
    let per = tiles.div_ceil(maxc).max(min_tiles);
    (per * ATTN_TILE, tiles.div_ceil(per))
}

/// What a binding is, in binding order.
#[derive(Clone, Copy)]
enum Slot {
    Uniform,
    Read,
    Write,
}
use Slot::{Read, Uniform, Write};

/// A kernel class: its layout and its entry points' pipelines.
pub(crate) struct Kernel {
    pub layout: wgpu::BindGroupLayout,
    pipelines: Vec<(&'static str, wgpu::ComputePipeline)>,
}

impl Kernel {
    pub fn pipeline(&self, entry: &str) -> &wgpu::ComputePipeline {
        &self
            .pipelines
            .iter()
            .find(|(e, _)| *e == entry)
            .unwrap_or_else(|| panic!("no entry point {entry}"))
            .1
    }
}

impl Kernel {
    /// Adds the entry points of another module whose bindings are this kernel's.
    fn with_module(
        mut self,
        device: &wgpu::Device,
        defined: &[&str],
        file: &'static str,
        entries: &[&'static str],
    ) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(file),
            source: wgpu::ShaderSource::Wgsl(source(file, defined).into()),
        });
        self.pipelines
            .extend(pipelines(device, file, &self.layout, &module, entries));
        self
    }
}

/// All pipelines, built once at load.
pub(crate) struct Kernels {
    pub embed: Kernel,
    pub rmsnorm: Kernel,
    pub add_norm: Kernel,
    pub matmul: Kernel,
    pub rope: Kernel,
    pub attention: Kernel,
    pub geglu: Kernel,
    pub argmax: Kernel,
}

impl Kernels {
    /// Every pipeline, with the variants `defined` (see [`VARIANTS`]).
    pub fn new(device: &wgpu::Device, defined: &[&'static str]) -> Result<Self> {
        let kernel = |file, slots: &[Slot], entries: &[&'static str]| {
            build(device, file, defined, slots, entries)
        };
        device.push_error_scope(wgpu::ErrorFilter::Validation);
        let kernels = Self {
            embed: kernel(
                "embed.wgsl",
                &[Uniform, Uniform, Read, Read, Read, Write],
                &["embed_q8"],
            ),
            rmsnorm: kernel(
                "rmsnorm.wgsl",
                &[Uniform, Uniform, Read, Read, Write],
                &["rmsnorm", "rmsnorm_add"],
            ),
            add_norm: kernel(
                "add_norm.wgsl",
                &[Uniform, Uniform, Read, Read, Write, Read, Write],
                &["add_norm"],
            ),
            matmul: kernel(
                "matmul.wgsl",
                &[Uniform, Uniform, Read, Read, Read, Write],
                &[
                    "matvec_q4",
                    "matvec_q8",
                    "matmul_q4",
                    "matmul_q8",
                    "matvec_geglu_q4",
                    "matvec_geglu_q8",
                ],
            )
            // Same bindings: the prefill kernels share the layout, so one bind group per
            // matrix serves every entry point.
            .with_module(
                device,
                defined,
                "matmul_tiled.wgsl",
                &["matmul_tiled_q4", "matmul_tiled_q8"],
            ),
            rope: kernel(
                "qk_norm_rope.wgsl",
                &[
                    Uniform, Uniform, Read, Read, Read, Read, Write, Write, Write,
                ],
                &["qk_norm_rope"],
            ),
            attention: kernel(
                "attention.wgsl",
                &[Uniform, Uniform, Read, Read, Read, Write, Write, Write],
                &["attention_partial", "attention_combine"],
            ),
            geglu: kernel("geglu.wgsl", &[Uniform, Uniform, Read, Write], &["geglu"]),
            argmax: kernel(
                "argmax.wgsl",
                &[Uniform, Uniform, Read, Write, Write],
                &["argmax_partial", "argmax"],
            ),
        };
        match pollster::block_on(device.pop_error_scope()) {
            Some(e) => Err(Error::Runtime(format!(
                "building the GPU kernels failed: {e}"
            ))),
            None => Ok(kernels),
        }
    }
}

fn source(file: &str, defined: &[&str]) -> String {
    let raw = SOURCES
        .iter()
        .find(|(f, _)| *f == file)
        .expect("kernel source listed")
        .1;
    preprocess(raw, defined)
}

fn build(
    device: &wgpu::Device,
    file: &'static str,
    defined: &[&str],
    slots: &[Slot],
    entries: &[&'static str],
) -> Kernel {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(file),
        source: wgpu::ShaderSource::Wgsl(source(file, defined).into()),
    });
    let layout_entries: Vec<wgpu::BindGroupLayoutEntry> = slots
        .iter()
        .enumerate()
        .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match slot {
                Uniform => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                Read | Write => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: matches!(slot, Read),
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            },
            count: None,
        })
        .collect();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(file),
        entries: &layout_entries,
    });
    let pipelines = pipelines(device, file, &layout, &module, entries);
    Kernel { layout, pipelines }
}

fn pipelines(
    device: &wgpu::Device,
    file: &'static str,
    layout: &wgpu::BindGroupLayout,
    module: &wgpu::ShaderModule,
    entries: &[&'static str],
) -> Vec<(&'static str, wgpu::ComputePipeline)> {
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(file),
        bind_group_layouts: &[layout],
        push_constant_ranges: &[],
    });
    entries
        .iter()
        .map(|&entry| {
            let p = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
            (entry, p)
        })
        .collect()
}

/// A bind group whose binding `i` is the whole of `buffers[i]`.
pub(crate) fn bind(
    device: &wgpu::Device,
    kernel: &Kernel,
    label: &str,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &kernel.layout,
        entries: &entries,
    })
}
