//! Fashion-MNIST in the IDX format (raw or gzipped).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::{f32_images, DataError, Dataset, Split, FASHION_MNIST_ENV};
use crate::limits::MAX_DATASET_VALUES;

/// `dir/stem.gz` if it exists, else `dir/stem`.
fn idx_file(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.exists() {
        return Ok(gz);
    }
    let raw = dir.join(stem);
    if raw.exists() {
        return Ok(raw);
    }
    Err(DataError::NotFound {
        path: gz,
        hint: format!(
            " (nor {}); install Debian's dataset-fashion-mnist, or point ${FASHION_MNIST_ENV} / --fashion-mnist-dir at the IDX files",
            raw.display()
        ),
    })
}

/// Reads an IDX file of unsigned bytes with `rank` dimensions (gunzipped when its name ends in `.gz`);
/// returns the dimensions and the data. The header's dimensions are checked against the limit
/// ([`MAX_DATASET_VALUES`]) and against the real size of the file (or of the decompressed stream, which is
/// cut one byte past what the header declares) before the data are read.
pub fn read_idx_u8(path: &Path, rank: u8) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let (file, len) = crate::limits::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = BufReader::new(file);
    if path.extension().is_some_and(|e| e == "gz") {
        if len == Some(0) {
            return Err(DataError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        decode_idx_u8(flate2::read::GzDecoder::new(file), None, rank, path)
    } else {
        decode_idx_u8(file, len, rank, path)
    }
}

/// Parses the bytes of a raw (not gzipped) IDX file as [`read_idx_u8`] does; `path` names it in errors.
pub fn parse_idx_u8(
    bytes: &[u8],
    rank: u8,
    path: &Path,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    decode_idx_u8(bytes, Some(bytes.len() as u64), rank, path)
}

/// Parses gzipped IDX bytes as [`read_idx_u8`] does for a `.gz` file.
pub fn parse_idx_u8_gz(
    bytes: &[u8],
    rank: u8,
    path: &Path,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    if bytes.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    decode_idx_u8(flate2::read::GzDecoder::new(bytes), None, rank, path)
}

/// A gzip error is the file's fault (corrupt); other I/O errors are reading errors.
fn read_err(path: &Path, e: std::io::Error) -> DataError {
    match e.kind() {
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => DataError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("gzip: {e}"),
        },
        std::io::ErrorKind::UnexpectedEof => DataError::Corrupt {
            path: path.to_path_buf(),
            detail: "gzip: the compressed stream ends early".into(),
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

fn decode_idx_u8<R: Read>(
    mut r: R,
    known_len: Option<u64>,
    rank: u8,
    path: &Path,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let expected = 0x0800 | u32::from(rank);
    let what = if rank == 1 {
        "IDX labels"
    } else {
        "IDX images"
    };
    let header = 4 + 4 * usize::from(rank);
    let mut head = vec![0u8; header];
    let got = read_up_to(&mut r, &mut head).map_err(|e| read_err(path, e))?;
    if got == 0 {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    if got < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!("{got} bytes, shorter than the 4-byte IDX magic number"),
        });
    }
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if magic != expected {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            what,
            found: magic,
            expected,
        });
    }
    if got < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!("{got} bytes, shorter than the {header}-byte IDX header"),
        });
    }
    let dims: Vec<usize> = (0..usize::from(rank))
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]) as usize
        })
        .collect();
    let need = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .filter(|&n| n <= MAX_DATASET_VALUES)
        .ok_or_else(|| DataError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "the header's shape {dims:?} holds more than the limit of {MAX_DATASET_VALUES} values"
            ),
        })?;
    let truncated = |have: u64| DataError::Truncated {
        path: path.to_path_buf(),
        detail: format!("the header's shape {dims:?} needs {need} data bytes, the file has {have}"),
    };
    let extra = |have: u64| DataError::Corrupt {
        path: path.to_path_buf(),
        detail: format!(
            "{} bytes after the {need} data bytes of shape {dims:?}",
            have - need
        ),
    };
    if let Some(len) = known_len {
        let have = len.saturating_sub(header as u64);
        if have < need {
            return Err(truncated(have));
        }
        if have > need {
            return Err(extra(have));
        }
    }
    let data = crate::limits::read_to_end_max(r.take(need + 1), need + 1, "IDX data").map_err(
        |e| match e {
            crate::limits::LimitError::Io(e) => read_err(path, e),
            other => DataError::Limit {
                path: path.to_path_buf(),
                source: other,
            },
        },
    )?;
    let have = data.len() as u64;
    if have < need {
        return Err(truncated(have));
    }
    if have > need {
        return Err(extra(have));
    }
    Ok((dims, data))
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

pub(super) fn load_fashion_mnist(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let img_path = idx_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let (dims, pixels) = read_idx_u8(&img_path, 3)?;
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    if n == 0 || h == 0 || w == 0 {
        return Err(DataError::Empty { path: img_path });
    }
    // Labels are optional: a folder with only the images still clusters.
    let labels = match idx_file(dir, &format!("{prefix}-labels-idx1-ubyte")) {
        Ok(lab_path) => {
            let (ldims, labels) = read_idx_u8(&lab_path, 1)?;
            if ldims[0] != n {
                return Err(DataError::Corrupt {
                    path: lab_path,
                    detail: format!(
                        "{} labels for {n} images in {}",
                        ldims[0],
                        img_path.display()
                    ),
                });
            }
            Some(labels)
        }
        Err(_) => None,
    };
    let keep = limit.map_or(n, |l| l.min(n));
    let d = h * w;
    let images = f32_images(&pixels[..keep * d], keep, d, &img_path)?;
    Ok(Dataset {
        images,
        channels: 1,
        height: h,
        width: w,
        labels: labels.map(|mut l| {
            l.truncate(keep);
            l
        }),
    })
}
