//! The device: picking an adapter, opening it with the adapter's own limits, describing it.

use lockstep_core::{Error, Result};

/// An open wgpu device and what we know about it.
pub(crate) struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Whether timestamp queries inside compute passes were granted.
    pub timestamps: bool,
    /// Whether subgroup operations were granted, with subgroups of at least 8 invocations
    /// (the matvec's lanes per row): the kernels' `subgroups` variant.
    pub subgroups: bool,
}

/// The graphics APIs we run on: the ones with compute shaders and native drivers.
const BACKENDS: wgpu::Backends = wgpu::Backends::VULKAN
    .union(wgpu::Backends::METAL)
    .union(wgpu::Backends::DX12);

impl GpuContext {
    /// Opens the best adapter (discrete over integrated over CPU), or the first whose name
    /// contains `name_filter`, asking for the adapter's own limits: the defaults cap a
    /// storage binding at 128 MiB and would make us split buffers for nothing. Timestamps
    /// and subgroup operations are asked for when wanted and offered.
    pub fn new(
        name_filter: Option<&str>,
        want_timestamps: bool,
        want_subgroups: bool,
    ) -> Result<Self> {
        let instance = wgpu::Instance::new(&wgpu::InstanceDescriptor {
            backends: BACKENDS,
            ..wgpu::InstanceDescriptor::from_env_or_default()
        });
        let mut adapters: Vec<wgpu::Adapter> = instance.enumerate_adapters(BACKENDS);
        if let Some(filter) = name_filter {
            let filter = filter.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&filter));
        }
        adapters.sort_by_key(|a| rank(a.get_info().device_type));
        let Some(adapter) = adapters.into_iter().next() else {
            return Err(Error::Unavailable {
                backend: "gpu".into(),
                reason: match name_filter {
                    Some(f) => format!("no GPU adapter whose name contains '{f}'"),
                    None => no_adapter_reason().into(),
                },
            });
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let timestamps = want_timestamps
            && adapter.features().contains(
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            );
        let subgroups = want_subgroups
            && adapter.features().contains(wgpu::Features::SUBGROUP)
            && limits.min_subgroup_size >= 8;
        let mut required_features = wgpu::Features::empty();
        if timestamps {
            required_features |=
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        }
        if subgroups {
            required_features |= wgpu::Features::SUBGROUP;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("lockstep-gpu"),
            required_features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::Unavailable {
            backend: "gpu".into(),
            reason: format!("could not open {} ({:?}): {e}", info.name, info.backend),
        })?;
        Ok(Self {
            device,
            queue,
            info,
            limits,
            timestamps,
            subgroups,
        })
    }

    /// "Vulkan / NVIDIA H100", "Metal / Apple M2", "Vulkan / llvmpipe (LLVM 15.0.6, 256 bits)".
    pub fn describe(&self) -> String {
        format!("{} / {}", api_name(self.info.backend), self.info.name)
    }

    /// The largest buffer we may bind as one storage binding.
    pub fn max_binding_bytes(&self) -> u64 {
        (self.limits.max_storage_buffer_binding_size as u64).min(self.limits.max_buffer_size)
    }
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

pub(crate) fn api_name(b: wgpu::Backend) -> &'static str {
    match b {
        wgpu::Backend::Vulkan => "Vulkan",
        wgpu::Backend::Metal => "Metal",
        wgpu::Backend::Dx12 => "D3D12",
        wgpu::Backend::Gl => "OpenGL",
        wgpu::Backend::BrowserWebGpu => "WebGPU",
        wgpu::Backend::Noop => "none",
    }
}

fn no_adapter_reason() -> &'static str {
    if cfg!(target_os = "macos") {
        "no Metal adapter found (Metal needs macOS 10.13+ on a Mac with a GPU)"
    } else if cfg!(target_os = "windows") {
        "no D3D12 or Vulkan adapter found; install your GPU vendor's driver"
    } else {
        "no Vulkan adapter found; install your GPU's Vulkan driver, or on a machine without a GPU \
         the CPU one: `apt-get install mesa-vulkan-drivers` (Mesa lavapipe)"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn no_adapter_says_what_to_install() {
        assert!(super::no_adapter_reason().contains("apt-get install mesa-vulkan-drivers"));
    }
}
