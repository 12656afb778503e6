//! Provider profiles: every built-in parses and maps onto an `ort` provider, unknown keys
//! are errors, and ONNX Runtime's profiling output aggregates into a measured placement.

use lockstep_ort::placement::{from_profile_json, Method};
use lockstep_ort::profile::Declared;
use lockstep_ort::ProviderProfile;

#[test]
fn builtins_parse_and_build() {
    let names: Vec<String> = ProviderProfile::builtins()
        .into_iter()
        .map(|p| {
            // Every option maps onto the provider's builder.
            p.dispatch(None)
                .expect("the profile builds an ort provider");
            assert_eq!(p.backend_id(), format!("ort-{}", p.name.replace('_', "-")));
            p.name
        })
        .collect();
    assert_eq!(
        names,
        [
            "cpu",
            "webgpu",
            "openvino",
            "openvino_accuracy",
            "openvino_bf16",
            "cuda",
            "coreml",
            "xnnpack"
        ]
    );
    assert_eq!(
        ProviderProfile::resolve("webgpu").unwrap().ep_name(),
        "WebGpuExecutionProvider"
    );
    assert_eq!(
        ProviderProfile::resolve("openvino").unwrap().ep_name(),
        "OpenVINOExecutionProvider"
    );
    assert_eq!(ProviderProfile::cpu().ep_name(), "CPUExecutionProvider");
    assert_eq!(
        ProviderProfile::resolve("coreml").unwrap().ep_name(),
        "CoreMLExecutionProvider"
    );
}

#[test]
fn coreml_declares_contrib_ops_unsupported() {
    let p = ProviderProfile::resolve("coreml").unwrap();
    for op in ["MatMulNBits", "GroupQueryAttention", "RotaryEmbedding"] {
        assert_eq!(
            p.declares("com.microsoft", op),
            Declared::Unsupported,
            "{op}"
        );
    }
    // ONNX Runtime registers this contrib op in the standard domain.
    assert_eq!(
        p.declares("", "SimplifiedLayerNormalization"),
        Declared::Unsupported
    );
    assert_eq!(p.declares("", "MatMul"), Declared::Supported);
    assert_eq!(p.declares("", "NonZero"), Declared::NotListed);
    assert_eq!(p.support.max_dim, Some(16384));
    assert!(p.requires_static_shapes());
    let cpu = ProviderProfile::cpu();
    assert_eq!(
        cpu.declares("com.microsoft", "MatMulNBits"),
        Declared::Supported
    );
}

#[test]
fn unknown_keys_and_bad_profiles_are_errors() {
    let cpu = "name = \"x\"\ndescription = \"d\"\n[cpu]\narena_allocator = true\n[support]\nall_ops = true\n";
    ProviderProfile::from_toml_str(cpu, "ok.toml").unwrap();

    let typo = cpu.replace("arena_allocator", "arena_alocator");
    let e = ProviderProfile::from_toml_str(&typo, "typo.toml").unwrap_err();
    assert!(e.to_string().contains("arena_alocator"), "{e}");

    let top = format!("{cpu}\n[extra]\n");
    assert!(ProviderProfile::from_toml_str(&top, "top.toml").is_err());

    let two = format!("{cpu}\n[xnnpack]\n");
    let e = ProviderProfile::from_toml_str(&two, "two.toml").unwrap_err();
    assert!(
        e.to_string().contains("exactly one provider section"),
        "{e}"
    );

    let units = include_str!("../../../providers/coreml.toml").replace("\"All\"", "\"Everything\"");
    assert!(ProviderProfile::from_toml_str(&units, "units.toml").is_err());

    let e = ProviderProfile::resolve("tpu").unwrap_err();
    assert!(
        e.to_string().contains(
            "cpu, webgpu, openvino, openvino_accuracy, openvino_bf16, cuda, coreml, xnnpack"
        ),
        "{e}"
    );
}

#[test]
fn a_profile_file_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(
        &path,
        "name = \"mine\"\ndescription = \"CoreML, CPU only\"\n[coreml]\nmodel_format = \"NeuralNetwork\"\ncompute_units = \"CPUOnly\"\n[support]\nops = [\"Add\"]\n",
    )
    .unwrap();
    let p = ProviderProfile::resolve(path.to_str().unwrap()).unwrap();
    assert_eq!(p.name, "mine");
    assert_eq!(p.backend_id(), "ort-mine");
    assert_eq!(p.source, path.display().to_string());
    assert!(!p.requires_static_shapes());
}

#[test]
fn profiling_json_gives_measured_placement() {
    // The shape of ONNX Runtime's profiling events: three per node, one "_kernel_time".
    let json = r#"[
      {"cat":"Session","name":"model_run","args":{}},
      {"cat":"Node","name":"mm_1_fence_before","args":{"op_name":"MatMulNBits","provider":"CPUExecutionProvider"}},
      {"cat":"Node","name":"mm_1_kernel_time","args":{"op_name":"MatMulNBits","provider":"CPUExecutionProvider"}},
      {"cat":"Node","name":"mm_2_kernel_time","args":{"op_name":"MatMulNBits","provider":"CPUExecutionProvider"}},
      {"cat":"Node","name":"CoreML_1_kernel_time","args":{"op_name":"CoreML_1","provider":"CoreMLExecutionProvider"}}
    ]"#;
    let coreml = ProviderProfile::resolve("coreml").unwrap();
    let r = from_profile_json(json, &coreml, 10).unwrap();
    assert_eq!(r.method, Method::Measured);
    assert_eq!(r.total(), 3);
    let mm = r.op("MatMulNBits").unwrap();
    assert_eq!((mm.count, mm.on_ep, mm.on_cpu), (2, 0, 2));
    assert_eq!(r.on_ep(), 1);
    assert_eq!(r.cpu_ops(), ["MatMulNBits"]);
    assert!(r.render().contains("MEASURED"), "{}", r.render());

    let cpu = ProviderProfile::cpu();
    let r = from_profile_json(json, &cpu, 10).unwrap();
    assert_eq!(r.op("MatMulNBits").unwrap().on_ep, 2);
    assert!(from_profile_json("[]", &cpu, 0).is_err());
}
