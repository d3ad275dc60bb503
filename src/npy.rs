//! `.npy` arrays on disk (f32, f64, u8), with errors that name the file and the problem.
//!
//! Parsing and writing are ndarray-npy's; this module decides which element types are accepted, converts
//! them to f64 for the reference math, and turns every failure into one clear message.

use std::path::{Path, PathBuf};

use std::io::Read;

use ndarray::{Array2, ArrayD, Ix2, IxDyn, ShapeBuilder};
use ndarray_npy::npy::header::Header;
use ndarray_npy::WriteNpyExt;
use thiserror::Error;

/// Element types msd reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    F32,
    F64,
    U8,
}

impl std::fmt::Display for NpyDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NpyDtype::F32 => "float32",
            NpyDtype::F64 => "float64",
            NpyDtype::U8 => "uint8",
        })
    }
}

#[derive(Debug, Error)]
pub enum NpyError {
    #[error("{path}: cannot read: {}", crate::limits::io_message(.source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a .npy file (missing the \\x93NUMPY magic string)")]
    NotNpy { path: PathBuf },
    #[error("{path}: malformed .npy header: {detail}")]
    BadHeader { path: PathBuf, detail: String },
    #[error("{path}: empty file (0 bytes), not a .npy array")]
    EmptyFile { path: PathBuf },
    #[error("{path}: truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    #[error("{path}: the header declares shape {shape}, over the {} limit of this array", crate::limits::human_bytes(*.max))]
    TooLarge {
        path: PathBuf,
        shape: String,
        max: u64,
    },
    #[error("{path}: {source}")]
    Limit {
        path: PathBuf,
        source: crate::limits::LimitError,
    },
    #[error("{path}: {extra} unexpected bytes after the array data")]
    ExtraBytes { path: PathBuf, extra: u64 },
    #[error("{path}: more bytes after the array data than its header's shape needs")]
    TrailingData { path: PathBuf },
    #[error("{path}: unsupported element type {descr}; msd reads float32, float64 and uint8")]
    UnsupportedDtype { path: PathBuf, descr: String },
    #[error("{path}: {expected}, but the array has shape {shape:?}")]
    Shape {
        path: PathBuf,
        expected: String,
        shape: Vec<usize>,
    },
    #[error("{path}: contains a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        path: PathBuf,
        index: usize,
        value: f64,
    },
    #[error("{path}: cannot write: {detail}")]
    Write { path: PathBuf, detail: String },
}

/// The `.npy` magic string.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// What a `.npy` header says, checked: a supported element type and a shape whose size fits the limits.
#[derive(Debug)]
struct Prelude {
    /// Bytes from the magic string to the end of the header (the data start after them).
    len: u64,
    dtype: NpyDtype,
    big_endian: bool,
    fortran: bool,
    shape: Vec<usize>,
    /// Bytes of array data the shape needs.
    data_bytes: u64,
}

/// Reads up to `buf.len()` bytes; fewer only at the end of the input.
fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Deepest bracket nesting of a header dict (the parser recurses; numpy's headers nest 2 deep).
fn nesting(text: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for &c in text {
        match c {
            b'(' | b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn read_prelude<R: Read>(r: &mut R, path: &Path, max_bytes: u64) -> Result<Prelude, NpyError> {
    let p = || path.to_path_buf();
    let io = |source| NpyError::Io { path: p(), source };
    let mut pre = [0u8; 12];
    let got = read_up_to(r, &mut pre[..8]).map_err(io)?;
    if got == 0 {
        return Err(NpyError::EmptyFile { path: p() });
    }
    let magic_len = got.min(MAGIC.len());
    if pre[..magic_len] != MAGIC[..magic_len] {
        return Err(NpyError::NotNpy { path: p() });
    }
    if got < 8 {
        return Err(NpyError::Truncated {
            path: p(),
            detail: format!("{got} bytes, shorter than the 10-byte .npy preamble"),
        });
    }
    let (major, minor) = (pre[6], pre[7]);
    let len_bytes = match major {
        1 => 2,
        2 | 3 => 4,
        _ => {
            return Err(NpyError::BadHeader {
                path: p(),
                detail: format!("unknown .npy format version {major}.{minor}"),
            })
        }
    };
    if read_up_to(r, &mut pre[8..8 + len_bytes]).map_err(io)? < len_bytes {
        return Err(NpyError::Truncated {
            path: p(),
            detail: "the file ends inside the .npy preamble".into(),
        });
    }
    let header_len = if len_bytes == 2 {
        usize::from(u16::from_le_bytes([pre[8], pre[9]]))
    } else {
        u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as usize
    };
    if header_len > crate::limits::MAX_NPY_HEADER_BYTES {
        return Err(NpyError::BadHeader {
            path: p(),
            detail: format!(
                "header length {header_len} is over the {}-byte limit",
                crate::limits::MAX_NPY_HEADER_BYTES
            ),
        });
    }
    let mut all = pre[..8 + len_bytes].to_vec();
    let start = all.len();
    all.resize(start + header_len, 0);
    if read_up_to(r, &mut all[start..]).map_err(io)? < header_len {
        return Err(NpyError::Truncated {
            path: p(),
            detail: format!("the file ends inside its {header_len}-byte header"),
        });
    }
    if nesting(&all[start..]) > 8 {
        return Err(NpyError::BadHeader {
            path: p(),
            detail: "the header's brackets nest too deep".into(),
        });
    }
    let header =
        Header::from_reader(&mut std::io::Cursor::new(&all)).map_err(|e| NpyError::BadHeader {
            path: p(),
            detail: match e {
                ndarray_npy::npy::header::ReadHeaderError::Io(e) => e.to_string(),
                ndarray_npy::npy::header::ReadHeaderError::Parse(e) => e.to_string(),
            },
        })?;
    // A string descriptor prints with its Python quotes: '<f8'.
    let descr = header.type_descriptor.to_string();
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.strip_suffix('\''))
        .unwrap_or(&descr)
        .to_string();
    let (dtype, big_endian) = match descr.as_str() {
        "<f8" => (NpyDtype::F64, false),
        ">f8" => (NpyDtype::F64, true),
        "<f4" => (NpyDtype::F32, false),
        ">f4" => (NpyDtype::F32, true),
        "|u1" | "u1" | "B" | "<u1" | ">u1" => (NpyDtype::U8, false),
        _ => {
            return Err(NpyError::UnsupportedDtype {
                path: p(),
                descr: crate::limits::shorten(&descr, 40),
            })
        }
    };
    let item = match dtype {
        NpyDtype::F64 => 8u64,
        NpyDtype::F32 => 4,
        NpyDtype::U8 => 1,
    };
    let data_bytes = header
        .shape
        .iter()
        .try_fold(item, |a, &d| a.checked_mul(d as u64))
        .filter(|&b| b <= max_bytes)
        .ok_or_else(|| NpyError::TooLarge {
            path: p(),
            shape: crate::limits::shape_text(&header.shape),
            max: max_bytes,
        })?;
    Ok(Prelude {
        len: all.len() as u64,
        dtype,
        big_endian,
        fortran: header.layout.is_fortran(),
        shape: header.shape,
        data_bytes,
    })
}

/// Reads one `.npy` from `r` (`known_len`: the input's size when it is known, e.g. a regular file). The
/// header's shape is checked against the real size before the data are read; an input of unknown size is
/// read in chunks, up to one byte more than the shape needs.
pub(crate) fn read_from<R: Read>(
    r: R,
    known_len: Option<u64>,
    path: &Path,
) -> Result<(ArrayD<f64>, NpyDtype), NpyError> {
    read_from_max(r, known_len, path, crate::limits::MAX_ARRAY_BYTES)
}

/// [`read_from`] with a smaller ceiling on the array's data bytes.
pub(crate) fn read_from_max<R: Read>(
    mut r: R,
    known_len: Option<u64>,
    path: &Path,
    max_bytes: u64,
) -> Result<(ArrayD<f64>, NpyDtype), NpyError> {
    let pre = read_prelude(&mut r, path, max_bytes)?;
    let truncated = |have: u64| NpyError::Truncated {
        path: path.to_path_buf(),
        detail: format!(
            "the header's shape {} needs {} data bytes, the file has {have}",
            crate::limits::shape_text(&pre.shape),
            pre.data_bytes
        ),
    };
    let extra = |extra: u64| NpyError::ExtraBytes {
        path: path.to_path_buf(),
        extra,
    };
    if let Some(len) = known_len {
        let have = len.saturating_sub(pre.len);
        if have < pre.data_bytes {
            return Err(truncated(have));
        }
        if have > pre.data_bytes {
            return Err(extra(have - pre.data_bytes));
        }
    }
    let bytes = crate::limits::read_to_end_max(
        r.take(pre.data_bytes.saturating_add(1)),
        pre.data_bytes.saturating_add(1),
        "a .npy array",
    )
    .map_err(|e| NpyError::Limit {
        path: path.to_path_buf(),
        source: e,
    })?;
    let have = bytes.len() as u64;
    if have < pre.data_bytes {
        return Err(truncated(have));
    }
    if have > pre.data_bytes {
        // A stream is read only one byte past the data: how much more there is stays unknown.
        return Err(NpyError::TrailingData {
            path: path.to_path_buf(),
        });
    }
    let n = pre.shape.iter().product::<usize>();
    let mut v: Vec<f64> = Vec::new();
    v.try_reserve_exact(n).map_err(|_| NpyError::Limit {
        path: path.to_path_buf(),
        source: crate::limits::LimitError::OutOfMemory {
            bytes: (n as u64).saturating_mul(8),
            what: "a .npy array as float64",
        },
    })?;
    match (pre.dtype, pre.big_endian) {
        (NpyDtype::F64, false) => v.extend(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))),
        ),
        (NpyDtype::F64, true) => v.extend(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_be_bytes(c.try_into().expect("8 bytes"))),
        ),
        (NpyDtype::F32, false) => v.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes")))),
        ),
        (NpyDtype::F32, true) => v.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_be_bytes(c.try_into().expect("4 bytes")))),
        ),
        (NpyDtype::U8, _) => v.extend(bytes.iter().map(|&b| f64::from(b))),
    }
    drop(bytes);
    let a = if pre.fortran {
        ArrayD::from_shape_vec(IxDyn(&pre.shape).f(), v)
    } else {
        ArrayD::from_shape_vec(IxDyn(&pre.shape), v)
    }
    .expect("the data length was checked against the shape");
    Ok((a, pre.dtype))
}

/// Reads a `.npy` of float32, float64 or uint8 (any shape, either byte order, C or Fortran order) as f64.
/// Regular files, devices and FIFOs alike: the header's shape is checked against the bytes there are.
pub fn read_f64(path: &Path) -> Result<(ArrayD<f64>, NpyDtype), NpyError> {
    let (file, len) = crate::limits::open(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_from(std::io::BufReader::new(file), len, path)
}

/// Parses the bytes of a `.npy` file as [`read_f64`] does; `path` only names the source in errors.
pub fn parse_f64(bytes: &[u8], path: &Path) -> Result<(ArrayD<f64>, NpyDtype), NpyError> {
    read_from(bytes, Some(bytes.len() as u64), path)
}

/// Reads an N × d matrix of rows (float32, float64 or uint8, converted to f64). Arrays of rank > 2
/// (N × C × H × W images) are flattened to rows; rank 0 and 1 are rejected. Every value must be finite.
pub fn read_matrix(path: &Path) -> Result<(Array2<f64>, NpyDtype), NpyError> {
    let (a, dtype) = read_f64(path)?;
    into_matrix(a, dtype, path)
}

/// Parses the bytes of a `.npy` file as [`read_matrix`] does; `path` only names the source in errors.
pub fn parse_matrix(bytes: &[u8], path: &Path) -> Result<(Array2<f64>, NpyDtype), NpyError> {
    let (a, dtype) = parse_f64(bytes, path)?;
    into_matrix(a, dtype, path)
}

/// Rows of an array of rank >= 2 (as [`read_matrix`] makes them), checked finite. No copy when the array
/// is in C order already.
pub fn into_matrix(
    a: ArrayD<f64>,
    dtype: NpyDtype,
    path: &Path,
) -> Result<(Array2<f64>, NpyDtype), NpyError> {
    let shape = a.shape().to_vec();
    if shape.len() < 2 {
        return Err(NpyError::Shape {
            path: path.to_path_buf(),
            expected: "expected an N x d matrix (or N x C x H x W images)".into(),
            shape,
        });
    }
    let d: usize = shape[1..].iter().product();
    let a = if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    };
    let rows = a
        .into_shape_with_order((shape[0], d))
        .map_err(|e| NpyError::Shape {
            path: path.to_path_buf(),
            expected: format!("cannot flatten to rows ({e})"),
            shape: shape.clone(),
        })?;
    if let Some((index, &value)) = rows.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(NpyError::NonFinite {
            path: path.to_path_buf(),
            index,
            value,
        });
    }
    Ok((
        rows.into_dimensionality::<Ix2>().expect("reshaped to 2-D"),
        dtype,
    ))
}

/// Writes an f64 array as float64 `.npy`.
pub fn write_f64<D: ndarray::Dimension>(
    path: &Path,
    a: &ndarray::Array<f64, D>,
) -> Result<(), NpyError> {
    write(path, a)
}

/// Writes an f32 array as float32 `.npy`.
pub fn write_f32<D: ndarray::Dimension>(
    path: &Path,
    a: &ndarray::Array<f32, D>,
) -> Result<(), NpyError> {
    write(path, a)
}

/// Writes a u8 array as uint8 `.npy`.
pub fn write_u8<D: ndarray::Dimension>(
    path: &Path,
    a: &ndarray::Array<u8, D>,
) -> Result<(), NpyError> {
    write(path, a)
}

/// Writes through a temporary file renamed into place (see [`crate::output`]): a failed or interrupted
/// write leaves neither a half-written array under the final name nor a temporary file.
fn write<A: WriteNpyExt>(path: &Path, a: &A) -> Result<(), NpyError> {
    crate::output::write_with(path, |tmp| -> Result<(), String> {
        let file = std::fs::File::create(tmp).map_err(|e| crate::limits::io_message(&e))?;
        let mut writer = std::io::BufWriter::new(file);
        a.write_npy(&mut writer).map_err(|e| e.to_string())?;
        writer
            .into_inner()
            .map_err(|e| crate::limits::io_message(e.error()))?;
        Ok(())
    })
    .map_err(|e| NpyError::Write {
        path: path.to_path_buf(),
        detail: e.why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array3};

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn round_trips_each_dtype() {
        let d = dir();
        let p = d.path().join("a.npy");
        let a = array![[1.5, -2.0], [0.25, 1e-300]];
        write_f64(&p, &a).unwrap();
        assert_eq!(read_matrix(&p).unwrap(), (a.clone(), NpyDtype::F64));
        write_f32(&p, &a.mapv(|v| v as f32)).unwrap();
        let (b, t) = read_matrix(&p).unwrap();
        assert_eq!(t, NpyDtype::F32);
        assert_eq!(b, a.mapv(|v| v as f32 as f64));
        write_u8(&p, &array![[0u8, 255], [7, 9]]).unwrap();
        assert_eq!(
            read_matrix(&p).unwrap(),
            (array![[0.0, 255.0], [7.0, 9.0]], NpyDtype::U8)
        );
    }

    #[test]
    fn images_are_flattened_to_rows() {
        let d = dir();
        let p = d.path().join("img.npy");
        let imgs = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 12 + j * 4 + k) as f32);
        write_f32(&p, &imgs).unwrap();
        let (m, _) = read_matrix(&p).unwrap();
        assert_eq!(m.dim(), (2, 12));
        assert_eq!(m[[1, 5]], 17.0);
    }

    #[test]
    fn bad_files_are_named_errors() {
        let d = dir();
        let p = d.path().join("x.npy");
        std::fs::write(&p, b"hello, this is not an array").unwrap();
        assert!(matches!(read_matrix(&p), Err(NpyError::NotNpy { .. })));

        write_f64(&p, &array![[1.0, 2.0, 3.0]]).unwrap();
        let full = std::fs::read(&p).unwrap();
        std::fs::write(&p, &full[..full.len() - 5]).unwrap();
        let e = read_matrix(&p).unwrap_err();
        assert!(matches!(e, NpyError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("x.npy"));

        std::fs::write(&p, &full[..20]).unwrap();
        assert!(read_matrix(&p).is_err());

        let missing = d.path().join("missing.npy");
        assert!(matches!(read_matrix(&missing), Err(NpyError::Io { .. })));

        let ints = ndarray::arr2(&[[1i32, 2]]);
        ndarray_npy::write_npy(&p, &ints).unwrap();
        let e = read_matrix(&p).unwrap_err();
        assert!(matches!(e, NpyError::UnsupportedDtype { .. }), "{e}");
        assert!(e.to_string().contains("<i4"), "{e}");

        write_f64(&p, &array![1.0, 2.0]).unwrap();
        assert!(matches!(read_matrix(&p), Err(NpyError::Shape { .. })));

        write_f64(&p, &array![[1.0, f64::NAN]]).unwrap();
        assert!(matches!(
            read_matrix(&p),
            Err(NpyError::NonFinite { index: 1, .. })
        ));
    }

    #[test]
    fn failed_write_keeps_nothing_half_written() {
        let d = dir();
        let p = d.path().join("no-such-dir").join("out.npy");
        assert!(matches!(
            write_f64(&p, &array![[1.0]]),
            Err(NpyError::Write { .. })
        ));
    }
}
