//! Bounded reading: no input file, however it lies about its size and whatever kind of file it is
//! (`/dev/zero`, a FIFO, a decompression bomb), makes msd read or allocate without bound.
//!
//! - Sizes a header declares are checked against the real size of the file (or of the decompressed
//!   member) before anything that size is allocated; streams whose size is unknown are read in chunks, so
//!   memory grows only with the bytes that really arrive.
//! - Every kind of input has a documented ceiling (the constants below), the same for regular files and
//!   streams.
//! - Large buffers are reserved with `try_reserve`, so an allocation the system refuses is an error
//!   message rather than an abort.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Largest text input (model configs, plan JSON, checkpoint sidecars): 64 MiB.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;
/// Largest `.npy` header (numpy itself writes under 4 KiB; it refuses over 10 000 bytes by default).
pub const MAX_NPY_HEADER_BYTES: usize = 1 << 16;
/// Largest array data of one `.npy` (or one `.npz` member): 16 GiB.
pub const MAX_ARRAY_BYTES: u64 = 16 << 30;
/// Most values (pixels) a dataset may hold: 2^31 (8 GiB as f32; CIFAR-10's train split has 1.5 × 10^8).
pub const MAX_DATASET_VALUES: u64 = 1 << 31;
/// Largest decoded image: 2^24 pixels (4096 × 4096); as float32 RGB it takes 192 MiB.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 24;

/// Why a bounded read failed.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("larger than the {} limit of {what}", human_bytes(*.max))]
    TooLarge { max: u64, what: &'static str },
    #[error("not enough memory for {} ({what})", human_bytes(*.bytes))]
    OutOfMemory { bytes: u64, what: &'static str },
}

/// `123 bytes`, `4.0 MiB`, `16.0 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} bytes");
    }
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `s` cut to at most `max` characters (with an ellipsis), for quoting untrusted text in messages.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// A shape as `[2, 3]`, at most 8 dimensions shown.
pub fn shape_text(shape: &[usize]) -> String {
    if shape.len() <= 8 {
        return format!("{shape:?}");
    }
    let head: Vec<String> = shape[..8].iter().map(|d| d.to_string()).collect();
    format!("[{}, … ({} dimensions)]", head.join(", "), shape.len())
}

/// A vector of `n` copies of `fill`, or an error when the memory cannot be reserved.
pub fn try_vec<T: Clone>(n: usize, fill: T, what: &'static str) -> Result<Vec<T>, LimitError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| LimitError::OutOfMemory {
            bytes: (n as u64).saturating_mul(std::mem::size_of::<T>() as u64),
            what,
        })?;
    v.resize(n, fill);
    Ok(v)
}

/// Reads `r` to its end, at most `max` bytes; more is [`LimitError::TooLarge`]. The buffer grows with the
/// data (no allocation of a size anyone declared).
pub fn read_to_end_max<R: Read>(r: R, max: u64, what: &'static str) -> Result<Vec<u8>, LimitError> {
    let mut out = Vec::new();
    let mut r = r.take(max.saturating_add(1));
    let mut chunk = [0u8; 64 << 10];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if out.len() + n > out.capacity() {
            let want = (out.len() + n).max(out.capacity() * 2);
            out.try_reserve_exact(want - out.len())
                .map_err(|_| LimitError::OutOfMemory {
                    bytes: want as u64,
                    what,
                })?;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    if out.len() as u64 > max {
        return Err(LimitError::TooLarge { max, what });
    }
    Ok(out)
}

/// Opens `path` and returns the file with its length when it is a regular file (`None` for devices,
/// FIFOs and other streams, whose length is unknown).
pub fn open(path: &Path) -> Result<(File, Option<u64>), std::io::Error> {
    let f = File::open(path)?;
    let meta = f.metadata()?;
    if meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    let len = meta.is_file().then_some(meta.len());
    Ok((f, len))
}

/// Reads a whole file of at most `max` bytes (regular files are checked before reading).
pub fn read_file_max(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>, LimitError> {
    let (f, len) = open(path)?;
    if len.is_some_and(|l| l > max) {
        return Err(LimitError::TooLarge { max, what });
    }
    read_to_end_max(f, max, what)
}

/// Reads a UTF-8 text file of at most [`MAX_TEXT_BYTES`].
pub fn read_text(path: &Path, what: &'static str) -> Result<String, LimitError> {
    let bytes = read_file_max(path, MAX_TEXT_BYTES, what)?;
    String::from_utf8(bytes).map_err(|e| {
        LimitError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })
}

/// The message of an I/O error without Rust's " (os error N)" suffix (the path is named by the caller).
pub fn io_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_cut_at_the_limit() {
        // /dev/zero never ends: the read must stop just past the limit.
        let e = read_file_max(Path::new("/dev/zero"), 1000, "a test").unwrap_err();
        assert!(matches!(e, LimitError::TooLarge { max: 1000, .. }), "{e}");
        let ok = read_to_end_max(&[7u8; 1000][..], 1000, "a test").unwrap();
        assert_eq!(ok.len(), 1000);
        assert!(read_to_end_max(&[7u8; 1001][..], 1000, "a test").is_err());
    }

    #[test]
    fn regular_files_are_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![1u8; 5000]).unwrap();
        assert!(matches!(
            read_file_max(&p, 4999, "a test"),
            Err(LimitError::TooLarge { .. })
        ));
        assert_eq!(read_file_max(&p, 5000, "a test").unwrap().len(), 5000);
        let e = read_file_max(dir.path(), 10, "a test").unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }

    #[test]
    fn refused_allocations_are_errors() {
        let e = try_vec(usize::MAX / 2, 0u64, "a test").unwrap_err();
        assert!(e.to_string().starts_with("not enough memory"), "{e}");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(16 << 30), "16.0 GiB");
    }

    #[test]
    fn os_error_suffix_is_dropped() {
        let e = std::fs::File::open("/no/such/file").unwrap_err();
        assert_eq!(io_message(&e), "No such file or directory");
    }
}
