//! Hostile and damaged ONNX model directories through the weight reader: truncated data,
//! missing or mis-shaped initializers, absurd dims, a hostile manifest. Each is an error
//! with a one-line message, never a panic or an unbounded allocation. Also writes the ONNX
//! fuzz seeds (`LOCKSTEP_WRITE_FUZZ_SEEDS=1`, see scripts/fuzz.sh) and checks them.
//!
//! The models here are small synthetic ones (vocabulary 512) so that every case copies a
//! few hundred KB; the facade's reliability tests damage the real `gemma3-tiny` model and
//! check the ONNX Runtime and GPU backends as well.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lockstep_model::convert::{build_synthetic, tiny_config, ConvertOptions};
use lockstep_model::onnx::{
    data_type, GraphProto, ModelProto, OnnxFile, StringStringEntryProto, TensorProto,
    DATA_LOCATION_EXTERNAL,
};
use lockstep_model::package::{DATA_FILE, MANIFEST_FILE, MODEL_FILE};
use lockstep_model::weights::ModelWeights;
use lockstep_model::ModelConfig;
use prost::Message;

mod alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static LIVE: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    fn grow(n: usize) {
        let _ = LIVE.try_with(|l| {
            let now = l.get() + n;
            l.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
    }

    fn shrink(n: usize) {
        let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                grow(layout.size());
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            shrink(layout.size());
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                if new_size > layout.size() {
                    grow(new_size - layout.size());
                } else {
                    shrink(layout.size() - new_size);
                }
            }
            p
        }
    }

    /// The most bytes `f` had allocated at once on this thread.
    pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let out = f();
        (out, PEAK.with(Cell::get) - base)
    }
}

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// Gemma-shaped but small: two layers (one sliding, one global), vocabulary 512.
fn small_config() -> ModelConfig {
    ModelConfig {
        num_layers: 2,
        vocab_size: 512,
        ..tiny_config()
    }
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "lockstep-reliability-onnx-{}-{tag}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The pristine small model, built once per test binary.
fn pristine() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = scratch("pristine");
        let tok = root.join("tokenizer");
        std::fs::create_dir_all(&tok).unwrap();
        // The reader never parses the tokenizer; the package only needs the files.
        std::fs::write(tok.join("tokenizer.json"), "{}").unwrap();
        std::fs::write(tok.join("tokenizer_config.json"), "{}").unwrap();
        let opts = ConvertOptions {
            name: "small".into(),
            accuracy_level: 0,
            tokenizer_dir: tok,
            projection_bits: 4,
            progress: false,
            variant: Default::default(),
        };
        let dir = root.join("model");
        build_synthetic(small_config(), 7, &dir, &opts).unwrap();
        dir
    })
}

/// A copy of the pristine model to damage.
fn copy(tag: &str) -> PathBuf {
    let dir = scratch(tag);
    for e in std::fs::read_dir(pristine()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

fn read_model(dir: &Path) -> ModelProto {
    ModelProto::decode(&*std::fs::read(dir.join(MODEL_FILE)).unwrap()).unwrap()
}

fn write_model(dir: &Path, m: &ModelProto) {
    std::fs::write(dir.join(MODEL_FILE), m.encode_to_vec()).unwrap();
}

fn edit_init(dir: &Path, name: &str, f: impl FnOnce(&mut TensorProto)) {
    let mut m = read_model(dir);
    let g = m.graph.as_mut().unwrap();
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer {name}"));
    f(t);
    write_model(dir, &m);
}

fn set_external(t: &mut TensorProto, key: &str, value: &str) {
    match t.external_data.iter_mut().find(|e| e.key == key) {
        Some(e) => e.value = value.into(),
        None => t.external_data.push(StringStringEntryProto {
            key: key.into(),
            value: value.into(),
        }),
    }
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join(MANIFEST_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Loads the weights, which must fail with a one-line message; checks that loading
/// allocated at most what the files hold plus a bounded amount.
fn load_err(dir: &Path) -> String {
    let files: u64 = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let (r, peak) = alloc::peak_of(|| ModelWeights::load(dir).map(|_| ()));
    let limit = 4 * files as usize + (1 << 20);
    assert!(
        peak <= limit,
        "loading allocated {peak} bytes (limit {limit})"
    );
    let e = r.expect_err("a damaged model loaded").to_string();
    assert!(!e.contains('\n'), "one line: {e:?}");
    e
}

/// Q, K and V of layer 0, one matrix of 128 + 32 + 32 rows.
const Q: &str = "model.layers.0.qkv_proj.qweight";
const NORM: &str = "model.layers.0.input_layernorm.weight";

#[test]
fn the_pristine_small_model_loads() {
    let w = ModelWeights::load(pristine()).unwrap();
    assert_eq!(w.layers.len(), 2);
    assert_eq!(w.embed.n, 512);
}

/// Every case of docs/bad-inputs.md's ONNX table; prints the actual messages.
#[test]
fn damaged_models_give_one_line_errors() {
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "model.onnx.data truncated to half",
            Box::new(|d| {
                let p = d.join(DATA_FILE);
                let len = std::fs::metadata(&p).unwrap().len();
                let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
                f.set_len(len / 2).unwrap();
            }),
        ),
        (
            "model.onnx.data empty",
            Box::new(|d| std::fs::write(d.join(DATA_FILE), b"").unwrap()),
        ),
        (
            "model.onnx.data deleted",
            Box::new(|d| std::fs::remove_file(d.join(DATA_FILE)).unwrap()),
        ),
        (
            "model.onnx truncated to half",
            Box::new(|d| {
                let p = d.join(MODEL_FILE);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            }),
        ),
        (
            "model.onnx replaced by a GGUF header",
            Box::new(|d| {
                std::fs::write(d.join(MODEL_FILE), b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0").unwrap()
            }),
        ),
        (
            "model.onnx empty (no graph)",
            Box::new(|d| std::fs::write(d.join(MODEL_FILE), b"").unwrap()),
        ),
        (
            "an initializer deleted (layer 0 qkv_proj)",
            Box::new(|d| {
                let mut m = read_model(d);
                m.graph
                    .as_mut()
                    .unwrap()
                    .initializer
                    .retain(|t| t.name != Q);
                write_model(d, &m);
            }),
        ),
        (
            "a dim changed (qkv_proj rows + 1)",
            Box::new(|d| edit_init(d, Q, |t| t.dims[0] += 1)),
        ),
        (
            "dims reshaped, same byte count (qkv_proj [192,2,16] -> [384,1,16])",
            Box::new(|d| {
                edit_init(d, Q, |t| {
                    t.dims[0] *= 2;
                    t.dims[1] /= 2;
                })
            }),
        ),
        (
            "a negative dim",
            Box::new(|d| edit_init(d, Q, |t| t.dims[0] = -192)),
        ),
        (
            "a norm of the wrong length (inline, 64 -> 63 values)",
            Box::new(|d| {
                edit_init(d, NORM, |t| {
                    t.dims = vec![63];
                    if t.data_location == DATA_LOCATION_EXTERNAL {
                        set_external(t, "length", "252");
                    } else {
                        t.raw_data.truncate(252);
                    }
                })
            }),
        ),
        (
            "a norm stored as int64",
            Box::new(|d| edit_init(d, NORM, |t| t.data_type = data_type::INT64)),
        ),
        (
            "an unknown data type (bfloat16)",
            Box::new(|d| edit_init(d, NORM, |t| t.data_type = 16)),
        ),
        (
            "external data location ../../etc/passwd",
            Box::new(|d| edit_init(d, Q, |t| set_external(t, "location", "../../etc/passwd"))),
        ),
        (
            "external data location absolute",
            Box::new(|d| edit_init(d, Q, |t| set_external(t, "location", "/etc/passwd"))),
        ),
        (
            "external offset 2^63",
            Box::new(|d| {
                edit_init(d, Q, |t| {
                    set_external(t, "offset", &(1u64 << 63).to_string())
                })
            }),
        ),
        (
            "external offset not a number",
            Box::new(|d| edit_init(d, Q, |t| set_external(t, "offset", "-1"))),
        ),
        (
            "external length does not match dims",
            Box::new(|d| edit_init(d, Q, |t| set_external(t, "length", "1"))),
        ),
        (
            "manifest.json deleted",
            Box::new(|d| std::fs::remove_file(d.join(MANIFEST_FILE)).unwrap()),
        ),
        (
            "manifest.json not JSON",
            Box::new(|d| std::fs::write(d.join(MANIFEST_FILE), b"\x00garbage").unwrap()),
        ),
        (
            "manifest converter_version 0",
            Box::new(|d| edit_manifest(d, |v| v["converter_version"] = 0.into())),
        ),
        (
            "manifest hidden_size 65 (graph has 64)",
            Box::new(|d| edit_manifest(d, |v| v["config"]["hidden_size"] = 65.into())),
        ),
        (
            "manifest num_layers 3 (graph has 2)",
            Box::new(|d| edit_manifest(d, |v| v["config"]["num_layers"] = 3.into())),
        ),
    ];
    for (i, (what, damage)) in cases.iter().enumerate() {
        let dir = copy(&format!("case{i}"));
        damage(&dir);
        let e = load_err(&dir);
        println!("| {what} | `{e}` |");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A zero dim makes the byte count 0 whatever the other dims are; the shape checks that
/// follow must still not overflow on the huge one.
#[test]
fn zero_dim_with_a_huge_dim_is_an_error_not_an_overflow() {
    let dir = copy("zero-dim");
    edit_init(&dir, Q, |t| {
        t.dims = vec![128, 1 << 56, 0];
        set_external(t, "length", "0");
    });
    let r = std::panic::catch_unwind(|| ModelWeights::load(&dir).map(|_| ()));
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(r) => assert!(r.is_err(), "accepted"),
        Err(_) => panic!("dims [128, 2^56, 0] panicked instead of giving an error"),
    }
}

/// Sizes multiplied from the manifest's config must not overflow on a hostile manifest.
#[test]
fn manifest_with_absurd_sizes_is_an_error_not_an_overflow() {
    let dir = copy("absurd-manifest");
    edit_manifest(&dir, |v| {
        v["config"]["vocab_size"] = (1u64 << 62).into();
    });
    let r = std::panic::catch_unwind(|| ModelWeights::load(&dir).map(|_| ()));
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(r) => assert!(r.is_err(), "accepted"),
        Err(_) => panic!("vocab_size 2^62 in the manifest panicked instead of giving an error"),
    }
}

/// BUG (weights.rs ModelWeights::load): `Vec::with_capacity(c.num_layers)` trusts the
/// manifest; 2^40 layers aborts the process before the first missing layer is noticed.
#[test]
fn manifest_with_huge_num_layers_is_an_error_not_an_abort() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_huge_num_layers",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "ModelWeights::load aborted or panicked on num_layers 2^40 ({})",
        out.status
    );
}

#[test]
#[ignore = "run by manifest_with_huge_num_layers_is_an_error_not_an_abort in a child process"]
fn child_huge_num_layers() {
    let dir = copy("huge-layers");
    edit_manifest(&dir, |v| v["config"]["num_layers"] = (1u64 << 40).into());
    let e = ModelWeights::load(&dir).map(|_| ()).expect_err("accepted");
    let _ = std::fs::remove_dir_all(&dir);
    println!("| manifest num_layers 2^40 | `{e}` |");
}

/// prost materializes every repeated message before any check: N empty initializers cost
/// 2 bytes each in the file and a full `TensorProto` (~176 bytes, x2 for Vec growth) in
/// memory. At `OnnxFile::open`'s 256 MiB cap that is tens of GiB.
/// BUG (onnx.rs OnnxFile::from_bytes / MAX_GRAPH_BYTES).
#[test]
fn graph_decode_memory_is_bounded_by_the_file() {
    let n = 500_000;
    let graph = GraphProto {
        initializer: vec![TensorProto::default(); n],
        ..Default::default()
    };
    let m = ModelProto {
        graph: Some(graph),
        ..Default::default()
    };
    let bytes = m.encode_to_vec();
    drop(m);
    let (r, peak) = alloc::peak_of(|| OnnxFile::from_bytes(Path::new("x.onnx"), &bytes).is_ok());
    let ratio = peak as f64 / bytes.len() as f64;
    println!(
        "{} bytes of empty initializers decoded into {peak} bytes ({ratio:.0}x); ok: {r}",
        bytes.len()
    );
    assert!(
        ratio <= 16.0,
        "a {}-byte graph allocated {peak} bytes ({ratio:.0}x the file); at the 256 MiB cap that is {:.0} GiB",
        bytes.len(),
        ratio * 256.0 / 1024.0
    );
}

// ---- fuzz seeds ------------------------------------------------------------------------

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/onnx")
}

/// A graph with one inline and one external initializer of each type the reader knows.
fn mixed_seed() -> Vec<u8> {
    let ext = |name: &str, dt: i32, dims: Vec<i64>, offset: u64, length: u64| TensorProto {
        name: name.into(),
        data_type: dt,
        dims,
        data_location: DATA_LOCATION_EXTERNAL,
        external_data: [
            ("location", DATA_FILE.to_string()),
            ("offset", offset.to_string()),
            ("length", length.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| StringStringEntryProto {
            key: k.into(),
            value: v,
        })
        .collect(),
        ..Default::default()
    };
    let inline = |name: &str, dt: i32, dims: Vec<i64>, raw: Vec<u8>| TensorProto {
        name: name.into(),
        data_type: dt,
        dims,
        raw_data: raw,
        ..Default::default()
    };
    let graph = GraphProto {
        name: "seed".into(),
        initializer: vec![
            inline("f", data_type::FLOAT, vec![2, 2], vec![0; 16]),
            inline("u", data_type::UINT8, vec![3], vec![1, 2, 3]),
            inline("i", data_type::INT64, vec![1], vec![0; 8]),
            ext("ef", data_type::FLOAT, vec![4, 8], 0, 128),
            ext("eu", data_type::UINT8, vec![2, 2, 16], 4096, 64),
        ],
        ..Default::default()
    };
    ModelProto {
        ir_version: 10,
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Writes the ONNX seeds when `LOCKSTEP_WRITE_FUZZ_SEEDS=1` (the small converted graph
/// and a hand-made mixed one); otherwise checks that the committed ones still parse.
#[test]
fn fuzz_seeds() {
    let converted = std::fs::read(pristine().join(MODEL_FILE)).unwrap();
    let seeds = [("small_converted", converted), ("mixed", mixed_seed())];
    let dir = seeds_dir();
    if std::env::var_os("LOCKSTEP_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
            println!("wrote {} ({} bytes)", dir.join(name).display(), bytes.len());
        }
        return;
    }
    for (name, bytes) in &seeds {
        let committed = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; run `scripts/fuzz.sh seeds`"));
        // The converted graph changes with the converter; it only has to stay a graph.
        if *name != "small_converted" {
            assert_eq!(
                &committed, bytes,
                "{name} is stale; run `scripts/fuzz.sh seeds`"
            );
        }
        OnnxFile::from_bytes(Path::new("seed.onnx"), &committed).unwrap();
    }
}
