//! Folders of PNG/JPEG images.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::{DataError, Dataset};
use crate::limits::{MAX_DATASET_VALUES, MAX_IMAGE_PIXELS};

/// Largest image file read: 256 MiB.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// Decodes one PNG/JPEG (and resizes it to `size` x `size` when asked) within bounds: at most
/// [`MAX_IMAGE_PIXELS`] pixels (before and after resizing), and the decoder's own allocation limit.
pub fn decode_image(
    bytes: &[u8],
    path: &Path,
    size: Option<usize>,
) -> Result<image::DynamicImage, DataError> {
    let decode_err = |detail: String| DataError::Decode {
        path: path.to_path_buf(),
        detail,
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    reader.limits(limits_for_decode());
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| decode_err(e.to_string()))?;
    if u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(decode_err(format!(
            "{w} x {h} pixels, more than the limit of {MAX_IMAGE_PIXELS}"
        )));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    reader.limits(limits_for_decode());
    let img = reader.decode().map_err(|e| decode_err(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(decode_err("the image has no pixels".into()));
    }
    Ok(match size {
        Some(s) => {
            if (s as u64) * (s as u64) > MAX_IMAGE_PIXELS {
                return Err(DataError::Shape {
                    path: path.to_path_buf(),
                    detail: format!(
                        "--size {s} gives more than {MAX_IMAGE_PIXELS} pixels per image"
                    ),
                });
            }
            let s = s as u32;
            img.resize_to_fill(s, s, image::imageops::FilterType::Triangle)
        }
        None => img,
    })
}

fn limits_for_decode() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
    limits
}

/// Widest or tallest image decoded.
pub const MAX_IMAGE_SIDE: u32 = 16384;

fn is_image_file(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

pub(super) fn load_images(
    dir: &Path,
    size: Option<usize>,
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_image_file(p))
        .collect();
    files.sort();
    if let Some(l) = limit {
        files.truncate(l);
    }
    if files.is_empty() {
        return Err(DataError::Empty {
            path: dir.to_path_buf(),
        });
    }
    let mut decoded = Vec::with_capacity(files.len());
    for f in &files {
        let bytes = crate::limits::read_file_max(f, MAX_IMAGE_FILE_BYTES, "an image file")
            .map_err(|e| match e {
                crate::limits::LimitError::Io(source) => DataError::Io {
                    path: f.clone(),
                    source,
                },
                other => DataError::Limit {
                    path: f.clone(),
                    source: other,
                },
            })?;
        let img = decode_image(&bytes, f, size)?;
        decoded.push(img);
    }
    let (w, h) = (decoded[0].width(), decoded[0].height());
    for (f, img) in files.iter().zip(&decoded).skip(1) {
        if (img.width(), img.height()) != (w, h) {
            return Err(DataError::SizeMismatch {
                path: f.clone(),
                got_w: img.width(),
                got_h: img.height(),
                first: files[0].clone(),
                want_w: w,
                want_h: h,
            });
        }
    }
    let grey = decoded.iter().all(|i| !i.color().has_color());
    let per_image = (if grey { 1u64 } else { 3 }) * u64::from(w) * u64::from(h);
    if per_image.saturating_mul(decoded.len() as u64) > MAX_DATASET_VALUES {
        return Err(DataError::Shape {
            path: dir.to_path_buf(),
            detail: format!(
                "{} images of {per_image} values are more than the limit of {MAX_DATASET_VALUES} values",
                decoded.len()
            ),
        });
    }
    let channels = if grey { 1 } else { 3 };
    let (hu, wu) = (h as usize, w as usize);
    let d = channels * hu * wu;
    let buf = crate::limits::try_vec(decoded.len() * d, 0f32, "the images as float32").map_err(
        |source| DataError::Limit {
            path: dir.to_path_buf(),
            source,
        },
    )?;
    let mut images = Array2::from_shape_vec((decoded.len(), d), buf).expect("n * d values");
    for (mut row, img) in images.rows_mut().into_iter().zip(&decoded) {
        if grey {
            // to_luma32f maps 8- and 16-bit grey to [0, 1].
            let buf = img.to_luma32f();
            for (dst, src) in row.iter_mut().zip(buf.as_raw()) {
                *dst = *src;
            }
        } else {
            let buf = img.to_rgb32f();
            let raw = buf.as_raw();
            // Interleaved RGB (HWC) to planar CHW.
            for c in 0..3 {
                for p in 0..hu * wu {
                    row[c * hu * wu + p] = raw[p * 3 + c];
                }
            }
        }
    }
    Ok(Dataset {
        images,
        channels,
        height: hu,
        width: wu,
        labels: None,
    })
}
