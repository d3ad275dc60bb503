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
                    "expected N x d, N x H x W or N x C x H x W, the array has shape {shape:?}"
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
    let images = Array2::from_shape_fn((keep, d), |(i, j)| (flat[i * d + j] * scale) as f32);
    Ok(Dataset {
        images,
        channels: c,
        height: h,
        width: w,
        labels: None,
    })
}
