//! `lockstep`: run one INT4 ONNX Gemma on several runtimes and prove they agree.

mod bench;
mod conform;
mod demo;
mod generate_args;
mod inspect;
mod prepare;
mod providers;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run one INT4 ONNX Gemma on several runtimes, with one shared generation loop, and check
/// that they emit identical tokens: ONNX Runtime's CPU, WebGPU, OpenVINO, CUDA and CoreML
/// execution providers (any pinned runtime version: ort-cpu:1.32.0), lockstep's own WGSL
/// kernels (gpu), and llama.cpp on the original GGUF (llama-cpp).
///
/// Models and every ONNX Runtime library come from PyPI and npm, pinned by sha256, and are
/// cached outside the repository (set LOCKSTEP_HOME to move the cache). `lockstep
/// providers` says which runtimes and providers run here.
#[derive(Parser)]
#[command(name = "lockstep", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt; the text streams to stdout, a summary to stderr.
    Run(run::RunArgs),
    /// Chat interactively (multi-turn, the KV cache kept between turns).
    Chat(run::ChatArgs),
    /// Download a model's sources and the ONNX Runtime library, then convert the model.
    Fetch(prepare::FetchArgs),
    /// Convert any Gemma 3 GGUF into an INT4 ONNX model directory.
    Convert(prepare::ConvertArgs),
    /// Measure prefill and generation speed per backend (llama-bench style table, --json, --svg).
    Bench(bench::BenchArgs),
    /// Stream a prompt, then run it on every backend here and show the tokens are identical.
    Demo(demo::DemoArgs),
    /// Run the conformance suite: every backend against the reference and the golden files.
    Conform(conform::ConformArgs),
    /// List the ONNX Runtime library's execution providers and which profiles run here.
    Providers(providers::ProvidersArgs),
    /// Show where a model's nodes run under a provider profile (measured or predicted).
    Inspect(inspect::InspectArgs),
}

fn main() -> ExitCode {
    // Mesa's Vulkan drivers probe for a Wayland display when the GPU backend starts, and
    // libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set" on headless
    // machines. Any absolute path silences that probe (it then finds no socket); done
    // first, while the process is still single-threaded.
    #[cfg(target_os = "linux")]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            // ONNX Runtime warns about our overridable `logits_to_keep` input at every
            // load, and wgpu's Vulkan layer about driver details; by design, so only
            // their errors are shown by default.
            tracing_subscriber::EnvFilter::try_from_env("LOCKSTEP_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,ort=error,wgpu_hal=error,wgpu_core=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Chat(args) => run::chat(args),
        Command::Fetch(args) => prepare::fetch(args),
        Command::Convert(args) => prepare::convert(args),
        Command::Bench(args) => bench::bench(args),
        Command::Demo(args) => demo::demo(args),
        Command::Conform(args) => conform::conform(args),
        Command::Providers(args) => providers::providers(args),
        Command::Inspect(args) => inspect::inspect(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
