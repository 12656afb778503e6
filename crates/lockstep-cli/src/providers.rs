//! `lockstep providers`: the ONNX Runtime library in use, the execution providers it was
//! built with, and which provider profiles can run here.

use std::process::ExitCode;

use clap::Args;
use lockstep::LoadOptions;
use lockstep_core::Result;
use lockstep_ort::{available::how_to_get, ProviderProfile};

#[derive(Args, Debug)]
pub struct ProvidersArgs {
    /// Also check these profiles (built-in names or paths to profile .toml files).
    #[arg(long = "provider")]
    pub providers: Vec<String>,
}

pub fn providers(args: ProvidersArgs) -> Result<ExitCode> {
    let extra = args
        .providers
        .iter()
        .filter(|p| ProviderProfile::builtin(p).is_none())
        .map(|p| ProviderProfile::resolve(p))
        .collect::<Result<Vec<_>>>()?;
    let opts = LoadOptions {
        progress: true,
        ..Default::default()
    };
    let library = opts.ort_library()?;
    let report = lockstep_ort::providers_report(&library, &extra)?;
    println!(
        "ONNX Runtime {}: {}",
        report.version,
        report.library.display()
    );
    println!("built with: {}", report.built_with.join(", "));
    println!();
    let rows: Vec<[String; 4]> = report
        .profiles
        .iter()
        .map(|(p, a)| {
            let runnable = if a.runnable {
                "yes".to_string()
            } else if !a.built_in {
                format!("no: not built into this library; {}", how_to_get(p))
            } else {
                format!("no: {}", a.reason)
            };
            let name = if p.source == "built-in" {
                p.name.clone()
            } else {
                format!("{} ({})", p.name, p.source)
            };
            [
                name,
                p.ep_name().to_string(),
                if a.built_in { "yes" } else { "no" }.to_string(),
                runnable,
            ]
        })
        .collect();
    let header = ["profile", "execution provider", "built in", "runnable here"];
    let w: Vec<usize> = (0..3)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: [&str; 4]| {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        )
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
    println!();
    println!("use one with `lockstep run --provider NAME` (or --backend ort-NAME); --fallback cpu allows running on the CPU where it cannot run; `lockstep inspect --provider NAME` shows where the model's nodes run");
    Ok(ExitCode::SUCCESS)
}
