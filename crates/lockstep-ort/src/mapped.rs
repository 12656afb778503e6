//! Weights ONNX Runtime no longer reads after pre-packing, handed back to the page cache.
//!
//! ONNX Runtime 1.31 maps each external initializer of `model.onnx.data` into memory
//! (private, file-backed mappings; measured: one mapping per tensor) instead of copying
//! it. MatMulNBits then pre-packs its 4-bit weights into buffers of its own; an
//! initializer used only by pre-packed kernels is unmapped, but the 8-bit table's two
//! halves are also read by the embedding's Gather, so they stay mapped, and every page
//! pre-packing read stays resident: the table was held twice (measured: 160 MiB mapped +
//! 160 MiB packed for gemma3-270m). After the session is built, the clean pages of those
//! mappings are dropped from this process (`madvise(MADV_DONTNEED)`); what is still read
//! (the rows the Gather looks up, scales) faults back in from the page cache, byte for
//! byte the file. Pages ONNX Runtime wrote to (dirty) are never dropped: that would lose
//! the writes.

use std::path::Path;

/// Drops the clean resident pages of every mapping of `data_file`; returns the bytes of
/// the mappings it advised (0 where this is not Linux).
pub(crate) fn release(data_file: &Path) -> u64 {
    #[cfg(target_os = "linux")]
    {
        linux::release(data_file)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = data_file;
        0
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::path::Path;

    extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    const MADV_DONTNEED: i32 = 4;

    struct Mapping {
        start: usize,
        end: usize,
        path: String,
        dirty_kib: u64,
        anonymous_kib: u64,
    }

    fn mappings() -> Vec<Mapping> {
        let Ok(text) = std::fs::read_to_string("/proc/self/smaps") else {
            return Vec::new();
        };
        let mut out: Vec<Mapping> = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let Some(first) = fields.next() else { continue };
            if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
                let (Ok(start), Ok(end)) =
                    (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                else {
                    continue;
                };
                // perms, offset, dev, inode, then the path (which may contain spaces).
                let path = fields.skip(4).collect::<Vec<_>>().join(" ");
                out.push(Mapping {
                    start,
                    end,
                    path,
                    dirty_kib: 0,
                    anonymous_kib: 0,
                });
            } else if let Some(m) = out.last_mut() {
                let kib = || fields.clone().next().and_then(|v| v.parse::<u64>().ok());
                match first {
                    "Private_Dirty:" => m.dirty_kib = kib().unwrap_or(u64::MAX),
                    "Anonymous:" => m.anonymous_kib = kib().unwrap_or(u64::MAX),
                    _ => {}
                }
            }
        }
        out
    }

    pub(super) fn release(data_file: &Path) -> u64 {
        let Ok(target) = std::fs::canonicalize(data_file) else {
            return 0;
        };
        let target = target.to_string_lossy().into_owned();
        let mut advised = 0u64;
        for m in mappings() {
            if m.path != target || m.dirty_kib != 0 || m.anonymous_kib != 0 {
                continue;
            }
            // SAFETY: a private file mapping with no dirty or anonymous pages holds only
            // clean copies of the file; dropping them changes no byte ONNX Runtime reads
            // (the next read faults the same bytes back in from the page cache).
            let rc = unsafe { madvise(m.start as *mut _, m.end - m.start, MADV_DONTNEED) };
            if rc == 0 {
                advised += (m.end - m.start) as u64;
            }
        }
        advised
    }
}
