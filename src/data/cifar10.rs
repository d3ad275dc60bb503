//! CIFAR-10, binary version: `data_batch_*.bin` / `test_batch.bin` records of 1 label and 3072 pixel bytes.

use std::path::{Path, PathBuf};

use super::{f32_images, DataError, Dataset, Split};
use crate::limits::MAX_DATASET_VALUES;

const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;
/// Most records of one batch file: 100 000 (the official batches hold 10 000). Checked before reading, so
/// that a device or FIFO named like a batch is not read without end.
pub const MAX_CIFAR_BATCH_RECORDS: u64 = 100_000;

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
                    if name.starts_with("data_batch_")
                        && name.ends_with(".bin")
                        && e.path().is_file()
                    {
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
        return Err(DataError::EmptyFile {
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

pub(super) fn load_cifar10(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    let mut labels = Vec::new();
    let mut pixels = Vec::new();
    for f in cifar_batches(dir, split)? {
        if limit.is_some_and(|l| labels.len() >= l) {
            break;
        }
        let bytes = crate::limits::read_file_max(
            &f,
            MAX_CIFAR_BATCH_RECORDS * CIFAR_RECORD as u64,
            "a CIFAR-10 batch (100 000 records)",
        )
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
        let (l, p) = parse_cifar_batch(&bytes, &f)?;
        labels.extend(l);
        pixels.extend(p);
        if pixels.len() as u64 > MAX_DATASET_VALUES {
            return Err(DataError::Corrupt {
                path: f,
                detail: format!(
                    "the batches hold more than the limit of {MAX_DATASET_VALUES} values"
                ),
            });
        }
    }
    let d = CIFAR_RECORD - 1;
    let keep = limit.map_or(labels.len(), |l| l.min(labels.len()));
    labels.truncate(keep);
    let images = f32_images(&pixels, keep, d, dir)?;
    Ok(Dataset {
        images,
        channels: 3,
        height: 32,
        width: 32,
        labels: Some(labels),
    })
}
