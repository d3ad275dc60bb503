//! Fashion-MNIST in the IDX format (raw or gzipped).

use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::{read_maybe_gz, DataError, Dataset, Split, FASHION_MNIST_ENV};

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

/// Parses an IDX file of unsigned bytes with `rank` dimensions; returns the dimensions and the data.
pub fn parse_idx_u8(
    bytes: &[u8],
    rank: u8,
    path: &Path,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let expected = 0x0800 | u32::from(rank);
    let what = if rank == 1 {
        "IDX labels"
    } else {
        "IDX images"
    };
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes, shorter than the 4-byte IDX magic number",
                bytes.len()
            ),
        });
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            what,
            found: magic,
            expected,
        });
    }
    let header = 4 + 4 * usize::from(rank);
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes, shorter than the {header}-byte IDX header",
                bytes.len()
            ),
        });
    }
    let dims: Vec<usize> = (0..usize::from(rank))
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let need = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| DataError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("IDX dimensions {dims:?} overflow"),
        })?;
    let have = bytes.len() - header;
    if have < need {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "the header's shape {dims:?} needs {need} data bytes, the file has {have}"
            ),
        });
    }
    if have > need {
        return Err(DataError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes after the {need} data bytes of shape {dims:?}",
                have - need
            ),
        });
    }
    Ok((dims, bytes[header..].to_vec()))
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
    let (dims, pixels) = parse_idx_u8(&read_maybe_gz(&img_path)?, 3, &img_path)?;
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    if n == 0 || h == 0 || w == 0 {
        return Err(DataError::Empty { path: img_path });
    }
    // Labels are optional: a folder with only the images still clusters.
    let labels = match idx_file(dir, &format!("{prefix}-labels-idx1-ubyte")) {
        Ok(lab_path) => {
            let (ldims, labels) = parse_idx_u8(&read_maybe_gz(&lab_path)?, 1, &lab_path)?;
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
    let images = Array2::from_shape_fn((keep, d), |(i, j)| f32::from(pixels[i * d + j]) / 255.0);
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
