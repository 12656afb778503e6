//! The real Gemma 3 270M, converted to INT4 ONNX, through ONNX Runtime's CPU provider:
//! greedy continuations must be what llama.cpp produces from the original GGUF.

use lockstep::{GenerateOptions, Model};

fn continue_greedy(generator: &lockstep::Generator, prompt: &str) -> String {
    let mut session = pollster::block_on(generator.session(64)).unwrap();
    let out = generator
        .generate(
            session.as_mut(),
            prompt,
            GenerateOptions::new().max_new_tokens(12),
        )
        .unwrap();
    out.text
}

#[test]
fn real_model_continues_like_llama_cpp() {
    let model = Model::open("gemma3-270m").unwrap();
    let generator = model.generator("ort-cpu").unwrap();
    let water = continue_greedy(&generator, "Water boils at a temperature of");
    assert!(water.starts_with(" 100 degrees Celsius"), "got {water:?}");
    let colors = continue_greedy(&generator, "The three primary colors are");
    assert!(
        colors.starts_with(" red, blue, and yellow"),
        "got {colors:?}"
    );
}
