//! Feature statistics files: the `.npz` with `mu` (d) and `sigma` (d × d) that pytorch-fid
//! (`save_fid_stats`, `np.savez_compressed(path, mu=mu, sigma=sigma)`) and clean-fid write, so that users can
//! reuse reference statistics they already have.
//!
//! Reading accepts float64 or float32 arrays, compressed or stored zip members, with or without the `.npy`
//! suffix on the member names (numpy writes `mu.npy`). Writing produces float64 arrays in a compressed npz,
//! which `numpy.load(path)["mu"]` reads back. Other members (clean-fid adds none; some tools add counts) are
//! ignored.

use std::fs::File;
use std::io::{BufWriter, Read, Seek};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayD, Ix1, Ix2};
use ndarray_npy::NpzWriter;
use thiserror::Error;
use zip::ZipArchive;

use crate::limits::{shape_text, shorten};
use crate::npy;

#[derive(Debug, Error)]
pub enum StatsError {
    #[error("{path}: cannot read: {}", crate::limits::io_message(.source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable .npz (zip) file: {detail}")]
    NotNpz { path: PathBuf, detail: String },
    #[error("{path}: has no array named {name:?} (it holds {found:?}); a statistics file needs `mu` and `sigma`")]
    Missing {
        path: PathBuf,
        name: &'static str,
        found: Vec<String>,
    },
    #[error("{path}: array {name:?}: {detail}")]
    BadArray {
        path: PathBuf,
        name: &'static str,
        detail: String,
    },
    #[error("{path}: {detail}")]
    Shape { path: PathBuf, detail: String },
    #[error("{path}: cannot write: {detail}")]
    Write { path: PathBuf, detail: String },
}

/// The Gaussian summary of a feature set.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    pub mu: Array1<f64>,
    pub sigma: Array2<f64>,
}

impl FeatureStats {
    pub fn dim(&self) -> usize {
        self.mu.len()
    }
}

/// Largest feature dimension d of a statistics file: 8192 (sigma is then 512 MiB; Inception's d is 2048).
pub const MAX_STATS_DIM: usize = 8192;

/// Reads member `name` (or `name.npy`) of the archive as f64, at most `max_bytes` of array data: the
/// member's `.npy` header is checked before its data are decompressed, and decompression stops one byte
/// past what the header declares.
fn read_member<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    path: &Path,
    name: &'static str,
    max_bytes: u64,
) -> Result<ArrayD<f64>, StatsError> {
    let bad = |detail: String| StatsError::BadArray {
        path: path.to_path_buf(),
        name,
        detail,
    };
    let found: Vec<String> = zip
        .file_names()
        .map(|n| n.strip_suffix(".npy").unwrap_or(n).to_string())
        .collect();
    let member = [name.to_string(), format!("{name}.npy")]
        .into_iter()
        .find(|m| zip.index_for_name(m).is_some())
        .ok_or_else(|| StatsError::Missing {
            path: path.to_path_buf(),
            name,
            found: found.iter().take(10).map(|n| shorten(n, 40)).collect(),
        })?;
    let file = zip.by_name(&member).map_err(|e| bad(e.to_string()))?;
    let member_path = path.join(&member);
    let (a, dtype) = npy::read_from_max(file, None, &member_path, max_bytes).map_err(|e| {
        // The path is already in our message: keep npy's detail only.
        let text = e.to_string();
        let prefix = format!("{}: ", member_path.display());
        bad(text.strip_prefix(&prefix).unwrap_or(&text).to_string())
    })?;
    if dtype == npy::NpyDtype::U8 {
        return Err(bad(
            "unsupported element type uint8; statistics must be float64 or float32".into(),
        ));
    }
    Ok(a)
}

/// Reads `mu` and `sigma` from a pytorch-fid / clean-fid statistics `.npz`, checking shapes (d and d × d),
/// finiteness, symmetry and positive semi-definiteness of sigma.
pub fn read_npz(path: &Path) -> Result<FeatureStats, StatsError> {
    let (file, _) = crate::limits::open(path).map_err(|source| StatsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        // A zip is read from its end: it needs a seekable regular file.
        return Err(StatsError::NotNpz {
            path: path.to_path_buf(),
            detail: "not a regular file (a .npz must be seekable)".into(),
        });
    }
    parse_npz(std::io::BufReader::new(file), path)
}

/// Parses a statistics `.npz` from any seekable reader, as [`read_npz`] does; `path` names it in errors.
pub fn parse_npz<R: Read + Seek>(reader: R, path: &Path) -> Result<FeatureStats, StatsError> {
    let mut zip = ZipArchive::new(reader).map_err(|e| StatsError::NotNpz {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let max_mu = (MAX_STATS_DIM as u64) * 8;
    let mu = read_member(&mut zip, path, "mu", max_mu)?;
    let shape_err = |detail: String| StatsError::Shape {
        path: path.to_path_buf(),
        detail,
    };
    let mu_shape = mu.shape().to_vec();
    let mu = mu.into_dimensionality::<Ix1>().map_err(|_| {
        shape_err(format!(
            "mu must be a vector, got shape {}",
            shape_text(&mu_shape)
        ))
    })?;
    let d = mu.len();
    if d == 0 {
        return Err(shape_err("mu is empty".into()));
    }
    let sigma =
        read_member(&mut zip, path, "sigma", (d as u64) * (d as u64) * 8).map_err(|e| match e {
            StatsError::BadArray { detail, .. } if detail.contains("over the") => shape_err(
                format!("sigma must be {d} x {d} to match mu (length {d}): {detail}"),
            ),
            other => other,
        })?;
    let sigma_shape = sigma.shape().to_vec();
    if sigma_shape != [d, d] {
        return Err(shape_err(format!(
            "sigma must be {d} x {d} to match mu (length {d}), got shape {}",
            shape_text(&sigma_shape)
        )));
    }
    let sigma = sigma.into_dimensionality::<Ix2>().expect("checked 2-D");
    for (name, bad) in [
        ("mu", mu.iter().any(|v| !v.is_finite())),
        ("sigma", sigma.iter().any(|v| !v.is_finite())),
    ] {
        if bad {
            return Err(StatsError::BadArray {
                path: path.to_path_buf(),
                name,
                detail: "contains a non-finite value".into(),
            });
        }
    }
    check_covariance(&sigma).map_err(|detail| StatsError::BadArray {
        path: path.to_path_buf(),
        name: "sigma",
        detail,
    })?;
    Ok(FeatureStats { mu, sigma })
}

/// A covariance matrix is symmetric and positive semi-definite. Symmetry is checked to a relative 1e-6
/// (float32 files round each entry on their own); definiteness on the smallest eigenvalue of the
/// symmetrised matrix, allowing -1e-6 of the largest (the rounding of a PSD matrix, e.g. a rank-deficient
/// covariance of fewer samples than dimensions, gives tiny negative eigenvalues).
pub fn check_covariance(sigma: &Array2<f64>) -> Result<(), String> {
    let d = sigma.nrows();
    let scale = sigma.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for i in 0..d {
        for j in 0..i {
            let (a, b) = (sigma[[i, j]], sigma[[j, i]]);
            if (a - b).abs() > 1e-6 * scale.max(f64::MIN_POSITIVE) {
                return Err(format!(
                    "is not symmetric: sigma[{i}][{j}] = {a:e} but sigma[{j}][{i}] = {b:e}"
                ));
            }
        }
    }
    if scale == 0.0 {
        return Ok(());
    }
    let sym = (sigma + &sigma.t()) * 0.5;
    let (eig, _) = crate::reference::symeig::symmetric_eigen(sym.view(), false)
        .map_err(|e| format!("eigenvalues failed: {e}"))?;
    let (lo, hi) = eig
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if lo < -1e-6 * hi.abs().max(scale) {
        return Err(format!(
            "is not positive semi-definite (smallest eigenvalue {lo:e}, largest {hi:e}): not a covariance"
        ));
    }
    Ok(())
}

/// Writes `mu` and `sigma` as float64 members of a compressed `.npz` (through a temporary file renamed into
/// place, so a failed write never leaves a partial file under `path`).
pub fn write_npz(path: &Path, stats: &FeatureStats) -> Result<(), StatsError> {
    let err = |detail: String| StatsError::Write {
        path: path.to_path_buf(),
        detail,
    };
    if stats.sigma.dim() != (stats.dim(), stats.dim()) {
        return Err(err(format!(
            "sigma has shape {:?}, mu has length {}",
            stats.sigma.shape(),
            stats.dim()
        )));
    }
    crate::output::write_with(path, |tmp| -> Result<(), String> {
        let file = File::create(tmp).map_err(|e| crate::limits::io_message(&e))?;
        let mut npz = NpzWriter::new_compressed(BufWriter::new(file));
        npz.add_array("mu", &stats.mu).map_err(|e| e.to_string())?;
        npz.add_array("sigma", &stats.sigma)
            .map_err(|e| e.to_string())?;
        let w = npz.finish().map_err(|e| e.to_string())?;
        w.into_inner()
            .map_err(|e| crate::limits::io_message(e.error()))?;
        Ok(())
    })
    .map_err(|e| err(e.why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use ndarray_npy::NpzReader;

    #[test]
    fn round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.npz");
        let stats = FeatureStats {
            mu: array![1.0, -2.5, 1e-300],
            sigma: array![[2.0, 0.1, 0.0], [0.1, 3.0, -0.2], [0.0, -0.2, 1.0 / 3.0]],
        };
        write_npz(&path, &stats).unwrap();
        assert_eq!(read_npz(&path).unwrap(), stats);
        // The members are the ones numpy names: mu.npy and sigma.npy, float64.
        let mut npz = NpzReader::new(File::open(&path).unwrap()).unwrap();
        let mut names = npz.names().unwrap();
        names.sort();
        assert_eq!(names, ["mu", "sigma"]);
        let mu: Array1<f64> = npz.by_name("mu.npy").unwrap();
        assert_eq!(mu, stats.mu);
    }

    #[test]
    fn reads_float32_and_uncompressed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f32.npz");
        let mut npz = NpzWriter::new(File::create(&path).unwrap());
        npz.add_array("mu", &array![0.5f32, 0.25]).unwrap();
        npz.add_array("sigma", &array![[1.0f32, 0.0], [0.0, 0.1]])
            .unwrap();
        npz.add_array("extra", &array![1u8]).unwrap();
        npz.finish().unwrap();
        let s = read_npz(&path).unwrap();
        assert_eq!(s.mu, array![0.5, 0.25]);
        assert_eq!(s.sigma, array![[1.0, 0.0], [0.0, f64::from(0.1f32)]]);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, mu: ArrayD<f64>, sigma: Option<ArrayD<f64>>| {
            let p = dir.path().join(name);
            let mut npz = NpzWriter::new(File::create(&p).unwrap());
            npz.add_array("mu", &mu).unwrap();
            if let Some(s) = sigma {
                npz.add_array("sigma", &s).unwrap();
            }
            npz.finish().unwrap();
            p
        };
        let v = |x: Vec<f64>, shape: &[usize]| ArrayD::from_shape_vec(shape, x).unwrap();
        let missing = write("m.npz", v(vec![0.0; 2], &[2]), None);
        let e = read_npz(&missing).unwrap_err().to_string();
        assert!(e.contains("no array named \"sigma\""), "{e}");
        let shape = write(
            "s.npz",
            v(vec![0.0; 2], &[2]),
            Some(v(vec![0.0; 9], &[3, 3])),
        );
        let e = read_npz(&shape).unwrap_err().to_string();
        assert!(e.contains("sigma must be 2 x 2"), "{e}");
        let nan = write(
            "n.npz",
            v(vec![f64::NAN, 0.0], &[2]),
            Some(v(vec![0.0; 4], &[2, 2])),
        );
        let e = read_npz(&nan).unwrap_err().to_string();
        assert!(e.contains("non-finite"), "{e}");
        let junk = dir.path().join("junk.npz");
        std::fs::write(&junk, b"not a zip").unwrap();
        let e = read_npz(&junk).unwrap_err().to_string();
        assert!(e.contains("not a readable .npz"), "{e}");
        let e = read_npz(&dir.path().join("absent.npz"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
