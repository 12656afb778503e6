//! `lockstep conform`: the conformance suite against the reference backend and the
//! committed golden files; `--bless` rewrites the golden files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use lockstep::{LoadOptions, Model};
use lockstep_conformance as conformance;
use lockstep_core::{Error, Result};

#[derive(Args, Debug)]
pub struct ConformArgs {
    /// A built-in model or a converted model directory [default: gemma3-270m; with
    /// --bless: every built-in model that has golden files].
    #[arg(long, short)]
    pub model: Option<String>,
    /// Backends to check, comma-separated: ort-cpu, ort-webgpu, ort-openvino, gpu, llama-cpp,
    /// ... An
    /// ONNX Runtime backend takes a runtime after a colon (ort-cpu:1.32.0 checks an upgrade
    /// against the pinned one) and another conversion after an @ (ort-cpu@gemma3-270m-int8act).
    /// One this machine cannot run is reported as unavailable, never as passed.
    #[arg(long, short, value_delimiter = ',', default_value = "ort-cpu,gpu")]
    pub backends: Vec<String>,
    /// A suite name under <conformance dir>/suites, or a path to a suite file.
    #[arg(long, default_value = conformance::DEFAULT_SUITE)]
    pub suite: String,
    /// Only these prompts of the suite (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub prompts: Vec<String>,
    /// Where suites and golden files live [default: $LOCKSTEP_CONFORMANCE_DIR, ./conformance,
    /// or the source tree's].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rewrite the golden files from the reference backend instead of checking.
    #[arg(long)]
    pub bless: bool,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
    /// Only the free-running greedy comparison (skip teacher forcing).
    #[arg(long)]
    pub no_teacher_forced: bool,
    /// Count an unavailable backend as a failure (for CI that must run every backend).
    #[arg(long)]
    pub strict: bool,
    /// CPU threads for ONNX Runtime and llama.cpp.
    #[arg(long)]
    pub threads: Option<usize>,
    /// The backend the others are compared with and that the golden files check
    /// [default: the suite's, ort-cpu]; e.g. ort-cpu:1.32.0 to hold a new runtime itself to
    /// the committed golden tokens.
    #[arg(long)]
    pub reference: Option<String>,
    /// Also write the report as JUnit XML to FILE, for CI systems to display.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// With --speculate: instead of comparing backends, run every prompt on every backend
    /// twice, plain and with speculative decoding, and require identical greedy tokens
    /// (a difference from a many-position step's numerics is reported as a near-tie with
    /// its margins when the suite's near-tie rule holds, and fails otherwise).
    #[command(flatten)]
    pub speculation: crate::generate_args::SpeculationArgs,
}

fn open(name: &str, threads: Option<usize>) -> Result<Model> {
    let opts = LoadOptions {
        threads,
        progress: true,
        ..Default::default()
    };
    Model::open_with(name, opts)
}

pub fn conform(args: ConformArgs) -> Result<ExitCode> {
    let dir = args.dir.clone().unwrap_or_else(conformance::default_dir);
    let mut suite = conformance::load_suite(&dir, &args.suite)?;
    if args.bless {
        if !args.prompts.is_empty() {
            return Err(Error::InvalidInput(
                "--bless writes the whole suite's golden file; drop --prompts".into(),
            ));
        }
        let models: Vec<String> = match &args.model {
            Some(m) => vec![m.clone()],
            None => conformance::GOLDEN_MODELS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        for name in &models {
            let model = open(name, args.threads)?;
            let golden = conformance::golden_name(name, &model);
            let path = conformance::bless_model(&model, &golden, &suite, &dir, true)?;
            eprintln!("conform: wrote {}", path.display());
        }
        eprintln!(
            "conform: review the diff before committing: a changed token is a changed runtime"
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !args.prompts.is_empty() {
        suite.select(&args.prompts)?;
    }
    if let Some(r) = &args.reference {
        suite.reference = r.clone();
    }
    let name = args.model.clone().unwrap_or_else(|| "gemma3-270m".into());
    let model = open(&name, args.threads)?;
    let golden = conformance::golden_name(&name, &model);
    if let Some(spec) = args.speculation.speculation()? {
        if args.junit.is_some() {
            return Err(Error::InvalidInput(
                "--junit is for the backend comparison; --speculate prints Markdown or --json"
                    .into(),
            ));
        }
        let report =
            conformance::run_speculative(&model, &golden, &suite, &args.backends, &spec, true)?;
        if args.json {
            println!("{}", report.to_json());
        } else {
            println!("{}", report.to_markdown());
        }
        let failed = !report.passed() || (args.strict && !report.unavailable().is_empty());
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let opts = conformance::RunOptions {
        conformance_dir: Some(dir),
        progress: true,
        teacher_forced: !args.no_teacher_forced,
    };
    let report = conformance::run_model(&model, &golden, &suite, &args.backends, &opts)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_markdown());
    }
    if let Some(path) = &args.junit {
        lockstep_fetch::cache::atomic_write(path, report.to_junit().as_bytes())?;
        eprintln!("conform: wrote JUnit XML to {}", path.display());
    }
    let failed = !report.passed() || (args.strict && !report.unavailable().is_empty());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
