//! `.npy` image arrays (N x d, N x H x W, N x C x H x W).

use std::path::Path;

use ndarray::{Array2, ArrayD};

use super::{DataError, Dataset};
use crate::npy::{NpyDtype, NpyError};

fn isqrt_exact(n: usize) -> Option<usize> {
    let r = (n as f64).sqrt().round() as usize;
    (r * r == n).then_some(r)
}

/// The (C, H, W) an N × d matrix is read as (see the module docs).
pub fn infer_chw(d: usize) -> (usize, usize, usize) {
    if let Some(s) = isqrt_exact(d) {
        (1, s, s)
    } else if let Some(s) = (d % 3 == 0).then(|| isqrt_exact(d / 3)).flatten() {
        (3, s, s)
    } else {
        (1, 1, d)
    }
}

pub(super) fn load_npy(path: &Path, limit: Option<usize>) -> Result<Dataset, DataError> {
    let (a, dtype): (ArrayD<f64>, NpyDtype) = crate::npy::read_f64(path)?;
    from_array(a, dtype, path, limit)
}

/// A dataset from an array already read from the `.npy` at `path` (as [`super::load`] reads `npy:FILE`):
/// uint8 is divided by 255; float values must be finite and in [0, 1].
pub fn from_array(
    a: ArrayD<f64>,
    dtype: NpyDtype,
    path: &Path,
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    let shape = a.shape().to_vec();
    let (n, c, h, w) = match shape.as_slice() {
        [n, d] => {
            let (c, h, w) = infer_chw(*d);
            (*n, c, h, w)
        }
        [n, h, w] => (*n, 1, *h, *w),
        [n, c, h, w] => (*n, *c, *h, *w),
        _ => {
            return Err(DataError::Shape {
                path: path.to_path_buf(),
                detail: format!(
                    "expected N x d, N x H x W or N x C x H x W, the array has shape {}",
                    crate::limits::shape_text(&shape)
                ),
            })
        }
    };
    let d = c * h * w;
    if n == 0 || d == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let scale = if dtype == NpyDtype::U8 {
        1.0 / 255.0
    } else {
        1.0
    };
    let keep = limit.map_or(n, |l| l.min(n));
    let flat = a.as_standard_layout();
    let flat = flat.as_slice().expect("standard layout is contiguous");
    if let Some((index, value)) = flat[..keep * d]
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
    {
        return Err(DataError::Npy(NpyError::NonFinite {
            path: path.to_path_buf(),
            index,
            value: *value,
        }));
    }
    if dtype != NpyDtype::U8 {
        if let Some((index, value)) = flat[..keep * d]
            .iter()
            .enumerate()
            .find(|(_, v)| !(0.0..=1.0).contains(*v))
        {
            return Err(DataError::Shape {
                path: path.to_path_buf(),
                detail: format!(
                    "value {value} at flat index {index} is outside [0, 1]: float images must be in [0, 1] \
                     (uint8 images are divided by 255)"
                ),
            });
        }
    }
    let mut v = crate::limits::try_vec(0, 0f32, "the dataset as float32").map_err(|source| {
        DataError::Limit {
            path: path.to_path_buf(),
            source,
        }
    })?;
    v.try_reserve_exact(keep * d)
        .map_err(|_| DataError::Limit {
            path: path.to_path_buf(),
            source: crate::limits::LimitError::OutOfMemory {
                bytes: (keep * d * 4) as u64,
                what: "the dataset as float32",
            },
        })?;
    v.extend(flat[..keep * d].iter().map(|&x| (x * scale) as f32));
    let images = Array2::from_shape_vec((keep, d), v).expect("keep * d values");
    Ok(Dataset {
        images,
        channels: c,
        height: h,
        width: w,
        labels: None,
    })
}
