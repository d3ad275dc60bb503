//! Folders of PNG/JPEG images.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::{DataError, Dataset};

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
        let img = image::ImageReader::open(f)
            .map_err(|source| DataError::Io {
                path: f.clone(),
                source,
            })?
            .with_guessed_format()
            .map_err(|source| DataError::Io {
                path: f.clone(),
                source,
            })?
            .decode()
            .map_err(|e| DataError::Decode {
                path: f.clone(),
                detail: e.to_string(),
            })?;
        let img = match size {
            Some(s) => {
                let s = u32::try_from(s).map_err(|_| DataError::ZeroSize)?;
                img.resize_to_fill(s, s, image::imageops::FilterType::Triangle)
            }
            None => img,
        };
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
    let channels = if grey { 1 } else { 3 };
    let (hu, wu) = (h as usize, w as usize);
    let d = channels * hu * wu;
    let mut images = Array2::<f32>::zeros((decoded.len(), d));
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
