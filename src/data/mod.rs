//! Datasets: Fashion-MNIST (IDX), CIFAR-10 (binary batches), a folder of PNG/JPEG images, and `.npy`.
//!
//! Every loader returns a [`Dataset`]: an N × (C·H·W) f32 matrix whose rows are images in C, H, W
//! row-major order, with pixels in **[0, 1]** (the scale the authors' clustering used; the diffusion models
//! train on [−1, 1] and rescale themselves). Errors name the file and the problem.
//!
//! Choices the formats leave open:
//! - **Image folders**: `*.png`, `*.jpg`, `*.jpeg` (any case) directly in the folder, sorted by file name; other
//!   files are ignored. If every image is greyscale (luma, with or without alpha) the dataset has 1 channel,
//!   otherwise every image is converted to RGB (3 channels); alpha is dropped. Without a `size`, every image
//!   must have the same width and height; with `size = s`, each image is resized (bilinear, aspect kept) so that
//!   it covers s × s, then centre-cropped to s × s.
//! - **`.npy`**: uint8 arrays are divided by 255; float arrays are taken as given and are expected to already be
//!   in [0, 1]. Shapes: N × C × H × W, N × H × W (C = 1), or N × d, read as 1 × √d × √d when d is a square,
//!   3 × √(d/3) × √(d/3) when d/3 is, else 1 × 1 × d.
//! - **CIFAR-10**: `cifar10:DIR` reads `data_batch_1.bin` … `data_batch_5.bin` (every `data_batch_*.bin` present,
//!   in name order), `cifar10:DIR:test` reads `test_batch.bin`. If DIR holds no batches but has a
//!   `cifar-10-batches-bin/` subfolder (the layout of the official archive), that is used.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ndarray::{Array2, ArrayD};
use thiserror::Error;

use crate::npy::{NpyDtype, NpyError};

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const DEFAULT_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Environment variable that overrides [`DEFAULT_FASHION_MNIST_DIR`].
pub const FASHION_MNIST_ENV: &str = "MSD_FASHION_MNIST_DIR";

/// Train or test split of a dataset that has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Which data to load, as written on the command line (see [`DataSpec::from_str`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSpec {
    FashionMnist { split: Split },
    Cifar10 { dir: PathBuf, split: Split },
    Images { dir: PathBuf },
    Npy { path: PathBuf },
}

/// The accepted spellings, for help texts and errors.
pub const DATA_SPEC_HELP: &str =
    "fashion-mnist[:train|:test], cifar10:DIR[:train|:test], images:DIR, npy:FILE";

impl FromStr for DataSpec {
    type Err = DataError;

    /// Parses `fashion-mnist`, `fashion-mnist:train`, `fashion-mnist:test`, `cifar10:DIR` (train),
    /// `cifar10:DIR:train`, `cifar10:DIR:test`, `images:DIR`, `npy:FILE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| DataError::Spec {
            spec: s.to_string(),
            why: why.to_string(),
        };
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        let nonempty = |r: Option<&str>, what: &str| -> Result<PathBuf, DataError> {
            match r {
                Some(r) if !r.is_empty() => Ok(PathBuf::from(r)),
                _ => Err(bad(&format!("{kind} needs {what} after the colon"))),
            }
        };
        match kind {
            "fashion-mnist" | "fashion_mnist" | "fmnist" => {
                let split = match rest {
                    None | Some("train") => Split::Train,
                    Some("test") => Split::Test,
                    Some(_) => return Err(bad("the fashion-mnist split is train or test")),
                };
                Ok(DataSpec::FashionMnist { split })
            }
            "cifar10" | "cifar-10" => {
                let rest = nonempty(rest, "a directory")?;
                let rest = rest.to_string_lossy().into_owned();
                let (dir, split) = if let Some(d) = rest.strip_suffix(":test") {
                    (d, Split::Test)
                } else if let Some(d) = rest.strip_suffix(":train") {
                    (d, Split::Train)
                } else {
                    (rest.as_str(), Split::Train)
                };
                if dir.is_empty() {
                    return Err(bad("cifar10 needs a directory"));
                }
                Ok(DataSpec::Cifar10 {
                    dir: PathBuf::from(dir),
                    split,
                })
            }
            "images" => Ok(DataSpec::Images {
                dir: nonempty(rest, "a directory")?,
            }),
            "npy" => Ok(DataSpec::Npy {
                path: nonempty(rest, "a file")?,
            }),
            _ => Err(bad(&format!(
                "unknown dataset kind; expected {DATA_SPEC_HELP}"
            ))),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::FashionMnist { split } => write!(f, "fashion-mnist:{split}"),
            DataSpec::Cifar10 { dir, split } => write!(f, "cifar10:{}:{split}", dir.display()),
            DataSpec::Images { dir } => write!(f, "images:{}", dir.display()),
            DataSpec::Npy { path } => write!(f, "npy:{}", path.display()),
        }
    }
}

/// Options that apply to every loader.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Keep only the first `limit` images (file order). `Some(0)` is an error.
    pub limit: Option<usize>,
    /// Image folders: resize and centre-crop every image to size × size. Ignored by the other formats.
    pub size: Option<usize>,
    /// Where the Fashion-MNIST IDX files are (`train-images-idx3-ubyte[.gz]`, …).
    pub fashion_mnist_dir: PathBuf,
}

impl Default for LoadOptions {
    /// No limit, no resize, Fashion-MNIST from `$MSD_FASHION_MNIST_DIR` or else
    /// `/usr/share/datasets/fashion-mnist`.
    fn default() -> Self {
        LoadOptions {
            limit: None,
            size: None,
            fashion_mnist_dir: default_fashion_mnist_dir(),
        }
    }
}

/// `$MSD_FASHION_MNIST_DIR` if set and non-empty, else [`DEFAULT_FASHION_MNIST_DIR`].
pub fn default_fashion_mnist_dir() -> PathBuf {
    match std::env::var_os(FASHION_MNIST_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_FASHION_MNIST_DIR),
    }
}

/// Images as rows: `images[i]` is image i flattened in C, H, W order, pixels in [0, 1].
#[derive(Debug, Clone)]
pub struct Dataset {
    pub images: Array2<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Class labels when the format has them (Fashion-MNIST, CIFAR-10).
    pub labels: Option<Vec<u8>>,
}

impl Dataset {
    /// Number of images N.
    pub fn len(&self) -> usize {
        self.images.nrows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per image, C·H·W.
    pub fn dim(&self) -> usize {
        self.images.ncols()
    }

    /// The images as f64 rows, for the reference math.
    pub fn to_f64(&self) -> Array2<f64> {
        self.images.mapv(f64::from)
    }
}

#[derive(Debug, Error)]
pub enum DataError {
    #[error("bad --data spec {spec:?}: {why}")]
    Spec { spec: String, why: String },
    #[error("--limit must be at least 1")]
    ZeroLimit,
    #[error("--size must be at least 1")]
    ZeroSize,
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not found{hint}")]
    NotFound { path: PathBuf, hint: String },
    #[error("{path}: {what}: wrong magic number {found:#010x} (expected {expected:#010x})")]
    BadMagic {
        path: PathBuf,
        what: &'static str,
        found: u32,
        expected: u32,
    },
    #[error("{path}: truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    #[error("{path}: corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: empty dataset (no images)")]
    Empty { path: PathBuf },
    #[error("{path}: cannot decode image: {detail}")]
    Decode { path: PathBuf, detail: String },
    #[error("{path}: image is {got_w}x{got_h} but {first} is {want_w}x{want_h}; pass --size to resize and crop them to one size")]
    SizeMismatch {
        path: PathBuf,
        got_w: u32,
        got_h: u32,
        first: PathBuf,
        want_w: u32,
        want_h: u32,
    },
    #[error("{path}: {detail}")]
    Shape { path: PathBuf, detail: String },
    #[error(transparent)]
    Npy(#[from] NpyError),
}

/// Loads the dataset `spec` names.
pub fn load(spec: &DataSpec, opts: &LoadOptions) -> Result<Dataset, DataError> {
    if opts.limit == Some(0) {
        return Err(DataError::ZeroLimit);
    }
    if opts.size == Some(0) {
        return Err(DataError::ZeroSize);
    }
    match spec {
        DataSpec::FashionMnist { split } => {
            load_fashion_mnist(&opts.fashion_mnist_dir, *split, opts.limit)
        }
        DataSpec::Cifar10 { dir, split } => load_cifar10(dir, *split, opts.limit),
        DataSpec::Images { dir } => load_images(dir, opts.size, opts.limit),
        DataSpec::Npy { path } => load_npy(path, opts.limit),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The bytes of `path`, gunzipped when the name ends in `.gz`.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = read_file(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("gzip: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST (IDX)

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

fn load_fashion_mnist(
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

// ---------------------------------------------------------------------------------------------
// CIFAR-10 (binary version)

const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

fn cifar_batches(dir: &Path, split: Split) -> Result<Vec<PathBuf>, DataError> {
    let list = |dir: &Path| -> Result<Vec<PathBuf>, DataError> {
        let mut files = Vec::new();
        match split {
            Split::Test => {
                let p = dir.join("test_batch.bin");
                if p.is_file() {
                    files.push(p);
                }
            }
            Split::Train => {
                let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("data_batch_") && name.ends_with(".bin") {
                        files.push(e.path());
                    }
                }
                files.sort();
            }
        }
        Ok(files)
    };
    let mut files = list(dir)?;
    if files.is_empty() {
        let sub = dir.join("cifar-10-batches-bin");
        if sub.is_dir() {
            files = list(&sub)?;
        }
    }
    if files.is_empty() {
        let want = match split {
            Split::Train => "data_batch_*.bin",
            Split::Test => "test_batch.bin",
        };
        return Err(DataError::NotFound {
            path: dir.join(want),
            hint: " (CIFAR-10 binary version: cifar-10-binary.tar.gz)".into(),
        });
    }
    Ok(files)
}

/// Parses one CIFAR-10 binary batch: records of 1 label byte (0–9) and 3072 pixel bytes (R, G, B planes of 32 × 32).
pub fn parse_cifar_batch(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() % CIFAR_RECORD != 0 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records",
                bytes.len()
            ),
        });
    }
    let n = bytes.len() / CIFAR_RECORD;
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * (CIFAR_RECORD - 1));
    for (i, rec) in bytes.chunks_exact(CIFAR_RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(DataError::Corrupt {
                path: path.to_path_buf(),
                detail: format!(
                    "record {i} has label {} (CIFAR-10 labels are 0..=9)",
                    rec[0]
                ),
            });
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((labels, pixels))
}

fn load_cifar10(dir: &Path, split: Split, limit: Option<usize>) -> Result<Dataset, DataError> {
    let mut labels = Vec::new();
    let mut pixels = Vec::new();
    for f in cifar_batches(dir, split)? {
        if limit.is_some_and(|l| labels.len() >= l) {
            break;
        }
        let (l, p) = parse_cifar_batch(&read_file(&f)?, &f)?;
        labels.extend(l);
        pixels.extend(p);
    }
    let d = CIFAR_RECORD - 1;
    let keep = limit.map_or(labels.len(), |l| l.min(labels.len()));
    labels.truncate(keep);
    let images = Array2::from_shape_fn((keep, d), |(i, j)| f32::from(pixels[i * d + j]) / 255.0);
    Ok(Dataset {
        images,
        channels: 3,
        height: 32,
        width: 32,
        labels: Some(labels),
    })
}

// ---------------------------------------------------------------------------------------------
// Image folders

fn is_image_file(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn load_images(
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

// ---------------------------------------------------------------------------------------------
// .npy

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

fn load_npy(path: &Path, limit: Option<usize>) -> Result<Dataset, DataError> {
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

#[cfg(test)]
mod tests;
