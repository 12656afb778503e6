//! `lockstep inspect`: where a model's nodes run under an execution-provider profile,
//! measured by ONNX Runtime where the provider is in the library, predicted otherwise.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;
use lockstep::LoadOptions;
use lockstep_core::Result;
use lockstep_ort::ProviderProfile;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Execution-provider profile: cpu, coreml, cuda, xnnpack, or a path to a profile .toml.
    #[arg(long, default_value = "cpu")]
    pub provider: String,
    /// Predict from the profile's declared op support even where the provider could run.
    #[arg(long)]
    pub predict: bool,
    /// CPU threads for the measuring forward pass.
    #[arg(long)]
    pub threads: Option<usize>,
    /// A built-in model name or a converted model directory (any variant).
    #[arg(default_value = "gemma3-270m")]
    pub model: String,
}

pub fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let profile = ProviderProfile::resolve(&args.provider)?;
    let progress = std::io::stderr().is_terminal();
    let dir = lockstep::resolve_model(&args.model, progress)?;
    let opts = LoadOptions {
        progress,
        ..Default::default()
    };
    // The runtime that carries the provider (onnxruntime-node for webgpu, ...).
    let (library, package) = if args.predict {
        Default::default()
    } else {
        match lockstep::ort_runtime(None, &profile, &opts) {
            // No pinned runtime carries this provider here (CoreML on Linux): the default
            // runtime still answers, with a placement it marks PREDICTED.
            Err(lockstep::Error::Unavailable { .. }) => {
                lockstep::ort_runtime(None, &ProviderProfile::cpu(), &opts)?
            }
            other => other?,
        }
    };
    let ort = lockstep_ort::OrtOptions {
        threads: args.threads,
        package: Some(package),
        ..lockstep_ort::OrtOptions::new(library)
    };
    let report = lockstep_ort::inspect_placement(&dir, &ort, &profile, args.predict)?;
    println!("model: {}", dir.display());
    print!("{}", report.render());
    Ok(ExitCode::SUCCESS)
}
