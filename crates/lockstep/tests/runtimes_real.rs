//! The real model on ONNX Runtime's other builds: the WebGPU provider (onnxruntime-node,
//! lavapipe in CI) and OpenVINO (onnxruntime-openvino) continue a prompt with the CPU
//! provider's tokens, each naming the package it runs.

use lockstep::{GenerateOptions, Model};

fn continuation(model: &Model, backend: &str) -> (Vec<u32>, String, lockstep::BackendInfo) {
    let generator = model.generator(backend).unwrap();
    let mut session = pollster::block_on(generator.session(64)).unwrap();
    let out = generator
        .generate(
            session.as_mut(),
            "The three primary colors are",
            GenerateOptions::new().max_new_tokens(8),
        )
        .unwrap();
    (out.tokens, out.text, generator.backend().info())
}

#[test]
fn webgpu_and_openvino_continue_the_real_model_with_the_cpu_tokens() {
    let model = Model::open("gemma3-270m").unwrap();
    let (cpu, text, _) = continuation(&model, "ort-cpu");
    assert!(text.starts_with(" red, blue, and yellow"), "{text:?}");
    for (backend, package) in [
        ("ort-openvino", "onnxruntime-openvino 1.24.1 (PyPI)"),
        ("ort-webgpu", "onnxruntime-node 1.30.0 (npm)"),
    ] {
        let (tokens, _, info) = continuation(&model, backend);
        assert_eq!(tokens, cpu, "{backend}");
        assert_eq!(info.package.as_deref(), Some(package));
    }
}
