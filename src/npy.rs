//! `.npy` arrays on disk (f32, f64, u8), with errors that name the file and the problem.
//!
//! Parsing and writing are ndarray-npy's; this module decides which element types are accepted, converts
//! them to f64 for the reference math, and turns every failure into one clear message.

use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, Ix2};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};
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
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a .npy file (missing the \\x93NUMPY magic string)")]
    NotNpy { path: PathBuf },
    #[error("{path}: malformed .npy header: {detail}")]
    BadHeader { path: PathBuf, detail: String },
    #[error("{path}: truncated: the file holds fewer bytes than its header's shape needs")]
    Truncated { path: PathBuf },
    #[error("{path}: {extra} unexpected bytes after the array data")]
    ExtraBytes { path: PathBuf, extra: usize },
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

/// Maps ndarray-npy's read errors to ours. `None` means "wrong element type: try the next one".
fn classify(path: &Path, err: ReadNpyError) -> Option<NpyError> {
    let path = path.to_path_buf();
    Some(match err {
        ReadNpyError::WrongDescriptor(_) => return None,
        ReadNpyError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            NpyError::Truncated { path }
        }
        ReadNpyError::Io(source) => NpyError::Io { path, source },
        ReadNpyError::ParseHeader(ndarray_npy::npy::header::ParseHeaderError::MagicString) => {
            NpyError::NotNpy { path }
        }
        ReadNpyError::ParseHeader(e) => NpyError::BadHeader {
            path,
            detail: e.to_string(),
        },
        ReadNpyError::MissingData => NpyError::Truncated { path },
        ReadNpyError::ExtraBytes(extra) => NpyError::ExtraBytes { path, extra },
        other => NpyError::BadHeader {
            path,
            detail: other.to_string(),
        },
    })
}

/// The `descr` of a header, for the unsupported-type message (best effort: the header is already known
/// to parse).
fn header_descr(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]);
    text.split("'descr':")
        .nth(1)
        .and_then(|rest| rest.split('\'').nth(1))
        .unwrap_or("(unknown)")
        .to_string()
}

/// Reads a `.npy` of float32, float64 or uint8 (any shape, either byte order, C or Fortran order) as f64.
pub fn read_f64(path: &Path) -> Result<(ArrayD<f64>, NpyDtype), NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_f64(&bytes, path)
}

/// Parses the bytes of a `.npy` file as [`read_f64`] does; `path` only names the source in errors.
pub fn parse_f64(bytes: &[u8], path: &Path) -> Result<(ArrayD<f64>, NpyDtype), NpyError> {
    match ArrayD::<f64>::read_npy(bytes) {
        Ok(a) => return Ok((a, NpyDtype::F64)),
        Err(e) => {
            if let Some(err) = classify(path, e) {
                return Err(err);
            }
        }
    }
    match ArrayD::<f32>::read_npy(bytes) {
        Ok(a) => return Ok((a.mapv(f64::from), NpyDtype::F32)),
        Err(e) => {
            if let Some(err) = classify(path, e) {
                return Err(err);
            }
        }
    }
    match ArrayD::<u8>::read_npy(bytes) {
        Ok(a) => Ok((a.mapv(f64::from), NpyDtype::U8)),
        Err(e) => Err(
            classify(path, e).unwrap_or_else(|| NpyError::UnsupportedDtype {
                path: path.to_path_buf(),
                descr: header_descr(bytes),
            }),
        ),
    }
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

/// Rows of an array of rank >= 2, checked finite.
fn into_matrix(
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
    let rows = a
        .as_standard_layout()
        .into_owned()
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

/// Writes to a temporary file beside `path` and renames it into place, so that a failed or interrupted
/// write never leaves a half-written array under the final name.
fn write<A: WriteNpyExt>(path: &Path, a: &A) -> Result<(), NpyError> {
    let err = |detail: String| NpyError::Write {
        path: path.to_path_buf(),
        detail,
    };
    let mut tmp_name = path
        .file_name()
        .ok_or_else(|| err("not a file path".into()))?
        .to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let file = std::fs::File::create(&tmp).map_err(|e| err(e.to_string()))?;
    let mut writer = std::io::BufWriter::new(file);
    a.write_npy(&mut writer).map_err(|e| err(e.to_string()))?;
    let file = writer.into_inner().map_err(|e| err(e.to_string()))?;
    file.sync_all().map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
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
