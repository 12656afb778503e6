//! `lockstep-bench`: the same as `lockstep bench`, for use before or without the CLI.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "lockstep-bench",
    about = "Measure prefill and generation speed of each lockstep backend"
)]
struct Cli {
    #[command(flatten)]
    args: lockstep_bench::cli::BenchArgs,
}

fn main() {
    if let Err(e) = lockstep_bench::cli::run(&Cli::parse().args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
