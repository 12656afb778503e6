//! `lockstep-ort-host`: serves one ONNX Runtime backend to a lockstep process over its
//! stdin and stdout. Started by lockstep when a run needs a second ONNX Runtime library
//! (another version, or the build that carries another execution provider); not meant to
//! be run by hand.

fn main() -> std::process::ExitCode {
    // `lockstep providers` asks each runtime what it can run, one process per library.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, library] = args.as_slice() {
        if flag == "--providers-report" {
            return match lockstep_ort::providers_report(std::path::Path::new(library), &[]) {
                Ok(report) => {
                    println!("{}", serde_json::to_string(&report).unwrap_or_default());
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lockstep-ort-host: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!(
            "lockstep-ort-host serves an ONNX Runtime backend to lockstep over a pipe; lockstep starts it when a run needs a second ONNX Runtime library. Nothing to do here."
        );
        return std::process::ExitCode::from(2);
    }
    match lockstep_ort::host::host_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstep-ort-host: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
