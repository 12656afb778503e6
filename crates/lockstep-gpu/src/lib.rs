//! Native GPU backend: our own WGSL kernels on wgpu (Metal, Vulkan, D3D12)
