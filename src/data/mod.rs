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

mod cifar10;
mod idx;
mod images;
mod npy;
mod spec;

use std::path::{Path, PathBuf};

use ndarray::Array2;
use thiserror::Error;

use crate::npy::NpyError;

pub use cifar10::parse_cifar_batch;
pub use idx::{parse_idx_u8, parse_idx_u8_gz, read_idx_u8};
pub use images::decode_image;
pub use npy::{from_array as dataset_from_array, infer_chw};
pub use spec::{DataSpec, Split, DATA_SPEC_HELP};

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const DEFAULT_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Environment variable that overrides [`DEFAULT_FASHION_MNIST_DIR`].
pub const FASHION_MNIST_ENV: &str = "MSD_FASHION_MNIST_DIR";

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
    #[error("{path}: cannot read: {}", crate::limits::io_message(.source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: empty file (0 bytes)")]
    EmptyFile { path: PathBuf },
    #[error("{path}: {source}")]
    Limit {
        path: PathBuf,
        source: crate::limits::LimitError,
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
            idx::load_fashion_mnist(&opts.fashion_mnist_dir, *split, opts.limit)
        }
        DataSpec::Cifar10 { dir, split } => cifar10::load_cifar10(dir, *split, opts.limit),
        DataSpec::Images { dir } => images::load_images(dir, opts.size, opts.limit),
        DataSpec::Npy { path } => npy::load_npy(path, opts.limit),
    }
}

/// Image rows from pixel bytes (`n` rows of `d`), scaled to [0, 1]; the memory is reserved up front so that
/// a dataset too large for this machine is an error, not an abort.
pub(crate) fn f32_images(
    pixels: &[u8],
    n: usize,
    d: usize,
    path: &Path,
) -> Result<Array2<f32>, DataError> {
    let limit = |source| DataError::Limit {
        path: path.to_path_buf(),
        source,
    };
    let mut v = crate::limits::try_vec(0, 0f32, "the dataset as float32").map_err(limit)?;
    v.try_reserve_exact(n * d).map_err(|_| {
        limit(crate::limits::LimitError::OutOfMemory {
            bytes: (n * d * 4) as u64,
            what: "the dataset as float32",
        })
    })?;
    v.extend(pixels[..n * d].iter().map(|&p| f32::from(p) / 255.0));
    Ok(Array2::from_shape_vec((n, d), v).expect("n * d values"))
}

#[cfg(test)]
mod tests;
