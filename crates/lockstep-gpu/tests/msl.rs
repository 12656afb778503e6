//! Every WGSL kernel must translate to Metal Shading Language with naga (the path wgpu
//! takes on Apple), so that a Metal-only break shows up on any machine.

use lockstep_gpu::kernels::{preprocess, SOURCES, VARIANTS};

#[test]
fn every_kernel_translates_to_msl() {
    let mut failures = Vec::new();
    // Every variant a kernel has: each subset of the variant names it tests.
    let mut sources = Vec::new();
    for (file, raw) in SOURCES {
        let used: Vec<&str> = VARIANTS
            .iter()
            .copied()
            .filter(|v| raw.contains(&format!("#if {v}")))
            .collect();
        for mask in 0..1u32 << used.len() {
            let defined: Vec<&str> = (0..used.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| used[i])
                .collect();
            sources.push((format!("{file} {defined:?}"), preprocess(raw, &defined)));
        }
    }
    assert!(sources.iter().any(|(f, _)| f.contains("kv_f16")));
    assert!(sources.iter().any(|(f, _)| f.contains("subgroups")));
    for (file, source) in &sources {
        let source = source.as_str();
        // naga's WGSL front end rejects `enable subgroups;` on Metal's path; we never use it.
        assert!(
            !source.contains("enable subgroups"),
            "{file} enables subgroups"
        );
        let module = match naga::front::wgsl::parse_str(source) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{file}: parse: {}", e.emit_to_string(source)));
                continue;
            }
        };
        // pack2x16float and its inverse (the f16 KV cache) are core WGSL; wgpu grants them
        // on Metal, Vulkan and D3D12 (the SHADER_F16_IN_F32 downlevel flag). The subgroups
        // variant needs what wgpu grants with its SUBGROUP feature.
        let f16_in_f32 = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        let (caps, stages, ops) = if file.contains("subgroups") {
            (
                f16_in_f32 | naga::valid::Capabilities::SUBGROUP,
                naga::valid::ShaderStages::COMPUTE,
                naga::valid::SubgroupOperationSet::all(),
            )
        } else {
            (
                f16_in_f32,
                naga::valid::ShaderStages::empty(),
                naga::valid::SubgroupOperationSet::empty(),
            )
        };
        let info = match naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .subgroup_stages(stages)
            .subgroup_operations(ops)
            .validate(&module)
        {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{file}: validate: {}", e.emit_to_string(source)));
                continue;
            }
        };
        let options = naga::back::msl::Options {
            lang_version: (2, 1),
            fake_missing_bindings: true,
            ..Default::default()
        };
        for entry in &module.entry_points {
            let pipeline = naga::back::msl::PipelineOptions {
                entry_point: Some((entry.stage, entry.name.clone())),
                ..Default::default()
            };
            match naga::back::msl::write_string(&module, &info, &options, &pipeline) {
                Ok((msl, _)) => assert!(
                    msl.contains("kernel void"),
                    "{file}:{}: no kernel in MSL",
                    entry.name
                ),
                Err(e) => failures.push(format!("{file}:{}: msl: {e}", entry.name)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "kernels without a Metal translation:\n{}",
        failures.join("\n")
    );
}
