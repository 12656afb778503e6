//! `lockstep bench`: its arguments and runner live in the lockstep-bench crate, shared with
//! the peer harness (benches/peers) and its own `lockstep-bench` binary.

use std::process::ExitCode;

use lockstep_core::Result;

pub use lockstep_bench::cli::BenchArgs;

pub fn bench(args: BenchArgs) -> Result<ExitCode> {
    lockstep_bench::cli::run(&args)?;
    Ok(ExitCode::SUCCESS)
}
