//! `lockstep demo`: stream one prompt on the first backend, then run the same prompt on
//! the others and show that the tokens are identical.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;
use lockstep::{Event, GenerateOptions, Generator, LoadOptions, Model, Output};
use lockstep_core::Result;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// A built-in model (fetched and converted on first use) or a converted model directory.
    #[arg(long, short, default_value = "gemma3-270m")]
    pub model: String,
    /// Greedy tokens to generate.
    #[arg(long, short = 'n', default_value_t = 32)]
    pub max_tokens: usize,
    /// Backends to run, comma-separated; the first streams and is the one the others are
    /// compared with. More: ort-webgpu, ort-openvino, ort-cpu:1.32.0, ort-cuda (each
    /// fetches its runtime on first use; `lockstep providers` lists them).
    #[arg(long, short, value_delimiter = ',', default_value = "ort-cpu,gpu")]
    pub backends: Vec<String>,
    /// CPU threads for ONNX Runtime.
    #[arg(long)]
    pub threads: Option<usize>,
    /// An ONNX Runtime shared library for the ONNX Runtime backends (like ORT_DYLIB_PATH):
    /// nothing is downloaded for them then.
    #[arg(long)]
    pub ort_library: Option<std::path::PathBuf>,
    /// The prompt; the base model continues it.
    #[arg(default_value = "The three primary colors are")]
    pub prompt: String,
}

/// One row of the table.
struct Row {
    backend: String,
    runtime: String,
    device: String,
    /// `None` for the first backend (what the others are compared with).
    identical: Option<String>,
    decode: Option<f64>,
}

/// A KV budget that always fits: a token is at least one byte, plus BOS.
fn budget(prompt: &str, max_new: usize) -> usize {
    prompt.len() + 1 + max_new
}

fn generate(generator: &Generator, prompt: &str, opts: GenerateOptions) -> Result<Output> {
    let mut session = pollster::block_on(generator.session(budget(prompt, opts.max_new_tokens)))?;
    generator.generate(session.as_mut(), prompt, opts)
}

pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    let load = LoadOptions {
        threads: args.threads,
        progress: true,
        ort_library: args.ort_library.clone(),
        ..Default::default()
    };
    let Some((first, others)) = args.backends.split_first() else {
        return Err(lockstep_core::Error::InvalidInput(
            "--backends names no backend".into(),
        ));
    };
    let model = Model::open_with(&args.model, load)?;
    let opts = GenerateOptions::new().max_new_tokens(args.max_tokens);
    let generator = model.generator(first)?;
    let info = generator.backend().info();
    eprintln!(
        "lockstep demo: {} on {} ({} on {}), greedy, {} tokens",
        args.model,
        info.id,
        info.runtime_label(),
        info.device,
        args.max_tokens
    );

    // Stream on the default backend.
    let mut session = pollster::block_on(generator.session(budget(&args.prompt, args.max_tokens)))?;
    let mut stream =
        generator.generate_stream(session.as_mut(), args.prompt.as_str(), opts.clone())?;
    let mut stdout = std::io::stdout();
    print!("{}", args.prompt);
    let (mut tokens, mut stats) = (Vec::new(), None);
    while let Some(ev) = pollster::block_on(stream.next()) {
        match ev? {
            Event::Token { id, text } => {
                tokens.push(id);
                print!("{text}");
                let _ = stdout.flush();
            }
            Event::Done(s) => stats = Some(s),
        }
    }
    drop(stream);
    println!("\n");
    let mut rows = vec![Row {
        backend: info.id.clone(),
        runtime: info.runtime_label(),
        device: info.device.clone(),
        identical: None,
        decode: stats.and_then(|s| s.decode_tokens_per_second()),
    }];

    // The same prompt on every other backend this machine can run.
    let mut all_identical = true;
    for id in others {
        eprintln!("lockstep demo: running the same prompt on {id}...");
        let row = match model.generator(id).and_then(|g| {
            let out = generate(&g, &args.prompt, opts.clone())?;
            Ok((g.backend().info(), out))
        }) {
            Ok((info, out)) => {
                let identical = match out.tokens.iter().zip(&tokens).position(|(a, b)| a != b) {
                    None if out.tokens.len() == tokens.len() => "yes".to_string(),
                    None => format!("no ({} tokens vs {})", out.tokens.len(), tokens.len()),
                    Some(i) => format!("no (first difference at token {i})"),
                };
                all_identical &= identical == "yes";
                Row {
                    backend: info.id.clone(),
                    runtime: info.runtime_label(),
                    device: info.device,
                    identical: Some(identical),
                    decode: out.stats.decode_tokens_per_second(),
                }
            }
            Err(e) => Row {
                backend: id.clone(),
                runtime: "—".into(),
                device: "—".into(),
                identical: Some(format!("unavailable: {e}")),
                decode: None,
            },
        };
        rows.push(row);
    }

    println!("| backend | runtime | device | identical tokens | decode tok/s |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.backend,
            r.runtime.replace('|', "\\|"),
            r.device.replace('|', "\\|"),
            r.identical
                .as_deref()
                .unwrap_or("reference")
                .replace('|', "\\|"),
            r.decode.map_or("—".to_string(), |v| format!("{v:.1}")),
        );
    }
    println!(
        "\nEvery prompt of the conformance suite, with logit statistics: lockstep conform --model {} --backends {}",
        args.model,
        args.backends.join(",")
    );
    Ok(if all_identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
