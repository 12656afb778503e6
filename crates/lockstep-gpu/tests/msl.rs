//! Every WGSL kernel must translate to Metal Shading Language with naga (the path wgpu
//! takes on Apple), so that a Metal-only break shows up on any machine.

use lockstep_gpu::kernels::SOURCES;

#[test]
fn every_kernel_translates_to_msl() {
    let mut failures = Vec::new();
    for (file, source) in SOURCES {
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
        let info = match naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
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
