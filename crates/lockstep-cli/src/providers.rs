//! `lockstep providers`: every ONNX Runtime package of the runtime table, whether it is
//! fetched, the execution providers it carries, which provider profiles run here, and the
//! engines compiled into lockstep (gpu, llama-cpp).
//!
//! Each fetched library is asked in a host process of its own (one ONNX Runtime library per
//! process), so one command can check them all.

use std::process::ExitCode;

use clap::Args;
use lockstep_core::Result;
use lockstep_fetch::cache::Cache;
use lockstep_fetch::manifest::RuntimeManifest;
use lockstep_ort::{available::how_to_get, ProviderProfile, ProvidersReport};

#[derive(Args, Debug)]
pub struct ProvidersArgs {
    /// Also check these profiles (built-in names or paths to profile .toml files).
    #[arg(long = "provider")]
    pub providers: Vec<String>,
    /// Fetch the runtimes that are not in the cache yet, so that every row is checked.
    #[arg(long)]
    pub fetch: bool,
    /// Check this ONNX Runtime library too (like ORT_DYLIB_PATH).
    #[arg(long)]
    pub ort_library: Option<std::path::PathBuf>,
}

fn table(header: &[&str], rows: &[Vec<String>]) {
    let cols = header.len();
    let w: Vec<usize> = (0..cols - 1)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let print = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < cols {
                line.push_str(&format!("{c:<width$}  ", width = w[i]));
            } else {
                line.push_str(c);
            }
        }
        println!("{}", line.trim_end());
    };
    print(header.to_vec());
    for r in rows {
        print(r.iter().map(String::as_str).collect());
    }
}

pub fn providers(args: ProvidersArgs) -> Result<ExitCode> {
    let extra = args
        .providers
        .iter()
        .filter(|p| ProviderProfile::builtin(p).is_none())
        .map(|p| ProviderProfile::resolve(p))
        .collect::<Result<Vec<_>>>()?;
    let profiles: Vec<ProviderProfile> = ProviderProfile::builtins()
        .into_iter()
        .chain(extra.iter().cloned())
        .collect();
    let cache = Cache::from_env()?;
    let platform = format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH);

    // The runtime table and what each library says of itself.
    let mut libraries: Vec<(String, std::path::PathBuf)> = Vec::new();
    let mut reports: Vec<(String, std::result::Result<ProvidersReport, String>)> = Vec::new();
    let mut rows = Vec::new();
    for rt in RuntimeManifest::builtins() {
        let label = if rt.default {
            format!("{} (default)", rt.id)
        } else {
            rt.id.clone()
        };
        let Ok(platform_entry) = rt.current_platform() else {
            rows.push(vec![
                label,
                rt.package_label(),
                "—".into(),
                format!("not pinned for {platform}"),
            ]);
            continue;
        };
        let mut cached = lockstep_fetch::fetch::cached_runtime_library(&rt, &cache);
        if cached.is_none() && args.fetch {
            cached = Some(lockstep_fetch::fetch::fetch_runtime(
                &rt,
                &cache,
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )?);
        }
        let fetched = match &cached {
            Some(_) => "yes".to_string(),
            None => format!(
                "no ({} MB; `lockstep fetch --runtime {}`)",
                platform_entry.archive_size / 1_000_000,
                rt.id
            ),
        };
        rows.push(vec![
            label,
            rt.package_label(),
            fetched,
            rt.providers_on(platform_entry).join(", "),
        ]);
        if let Some(lib) = cached {
            libraries.push((rt.id.clone(), lib));
        }
    }
    if let Some(lib) = &args.ort_library {
        libraries.push((format!("{} (--ort-library)", lib.display()), lib.clone()));
    }
    println!("ONNX Runtime packages (providers/runtime/*.toml) on {platform}:");
    table(
        &["runtime", "package", "fetched", "providers it carries"],
        &rows,
    );
    for (id, lib) in &libraries {
        let report = lockstep_ort::host::providers_report_hosted(lib).map_err(|e| e.to_string());
        reports.push((id.clone(), report));
    }

    // Every profile: which runtime it takes by default, and whether it runs here.
    println!();
    println!("Execution-provider profiles (providers/*.toml):");
    let mut rows = Vec::new();
    for p in &profiles {
        let runtime = RuntimeManifest::for_provider(p.ep_name());
        let status = match &runtime {
            None => format!("no: {}", how_to_get(p)),
            Some(rt) => match reports.iter().find(|(id, _)| *id == rt.id) {
                None => format!(
                    "not checked: its runtime is not fetched (`lockstep fetch --runtime {}`)",
                    rt.id
                ),
                Some((_, Err(e))) => format!("no: the library does not load: {e}"),
                Some((_, Ok(report))) => match report
                    .profiles
                    .iter()
                    .find(|(q, _)| q.name == p.name)
                {
                    Some((_, a)) if a.runnable => format!("yes (ONNX Runtime {})", report.version),
                    Some((_, a)) => format!("no: {}", a.reason),
                    None => "not checked (an extra profile: pass it to the runtime's host)".into(),
                },
            },
        };
        rows.push(vec![
            p.name.clone(),
            p.backend_id(),
            p.ep_name().to_string(),
            runtime.map(|r| r.id).unwrap_or_else(|| "—".into()),
            status,
        ]);
    }
    table(
        &[
            "profile",
            "backend",
            "execution provider",
            "runtime",
            "runs here",
        ],
        &rows,
    );
    if let Some((id, Ok(report))) = reports
        .iter()
        .find(|(id, _)| id.ends_with("(--ort-library)"))
    {
        println!();
        println!(
            "{id}: ONNX Runtime {}, built with {}",
            report.version,
            report.built_with.join(", ")
        );
    }
    // Engines compiled into this binary: nothing to fetch, they run wherever it runs.
    println!();
    println!("Engines compiled into lockstep:");
    let llama = lockstep_llamacpp::compiled_cpu_features();
    table(
        &["backend", "engine", "runs here"],
        &[
            vec![
                "gpu".into(),
                "lockstep's WGSL kernels on wgpu (Vulkan, Metal, D3D12)".into(),
                "when a GPU adapter is found (`lockstep run -b gpu` says which)".into(),
            ],
            vec![
                lockstep_llamacpp::BACKEND_ID.into(),
                format!("llama.cpp, {}", lockstep_llamacpp::PACKAGE),
                format!(
                    "yes: CPU, kernels for {}; runs the model's original GGUF",
                    if llama.is_empty() {
                        "the baseline instruction set".to_string()
                    } else {
                        llama.join(" ")
                    }
                ),
            ],
        ],
    );
    println!();
    println!("Run one with `lockstep run --backend ort-NAME` (a runtime after a colon picks another package: ort-cpu:1.32.0); `lockstep inspect --provider NAME` shows where the model's nodes run; --fallback cpu allows the CPU where a provider cannot run.");
    Ok(ExitCode::SUCCESS)
}
