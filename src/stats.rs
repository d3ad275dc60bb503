//! Feature statistics files: the `.npz` with `mu` (d) and `sigma` (d × d) that pytorch-fid
//! (`save_fid_stats`, `np.savez_compressed(path, mu=mu, sigma=sigma)`) and clean-fid write, so that users can
//! reuse reference statistics they already have.
//!
//! Reading accepts float64 or float32 arrays, compressed or stored zip members, with or without the `.npy`
//! suffix on the member names (numpy writes `mu.npy`). Writing produces float64 arrays in a compressed npz,
//! which `numpy.load(path)["mu"]` reads back. Other members (clean-fid adds none; some tools add counts) are
//! ignored.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayD, Ix1, Ix2};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpyError, ReadNpzError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StatsError {
    #[error("{path}: cannot read: {source}")]
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

fn read_member(
    npz: &mut NpzReader<File>,
    path: &Path,
    name: &'static str,
) -> Result<ArrayD<f64>, StatsError> {
    let bad = |detail: String| StatsError::BadArray {
        path: path.to_path_buf(),
        name,
        detail,
    };
    let names = npz.names().map_err(|e| StatsError::NotNpz {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if !names.iter().any(|n| n == name) {
        return Err(StatsError::Missing {
            path: path.to_path_buf(),
            name,
            found: names,
        });
    }
    match npz.by_name::<ndarray::OwnedRepr<f64>, _>(name) {
        Ok(a) => return Ok(a),
        Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(_))) => {}
        Err(e) => return Err(bad(e.to_string())),
    }
    match npz.by_name::<ndarray::OwnedRepr<f32>, _>(name) {
        Ok(a) => Ok(a.mapv(f64::from)),
        Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(d))) => Err(bad(format!(
            "unsupported element type {d}; statistics must be float64 or float32"
        ))),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Reads `mu` and `sigma` from a pytorch-fid / clean-fid statistics `.npz`, checking shapes (d and d × d)
/// and finiteness.
pub fn read_npz(path: &Path) -> Result<FeatureStats, StatsError> {
    let file = File::open(path).map_err(|source| StatsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut npz = NpzReader::new(file).map_err(|e| StatsError::NotNpz {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mu = read_member(&mut npz, path, "mu")?;
    let sigma = read_member(&mut npz, path, "sigma")?;
    let shape_err = |detail: String| StatsError::Shape {
        path: path.to_path_buf(),
        detail,
    };
    let mu_shape = mu.shape().to_vec();
    let mu = mu
        .into_dimensionality::<Ix1>()
        .map_err(|_| shape_err(format!("mu must be a vector, got shape {mu_shape:?}")))?;
    let d = mu.len();
    let sigma_shape = sigma.shape().to_vec();
    if sigma_shape != [d, d] {
        return Err(shape_err(format!(
            "sigma must be {d} x {d} to match mu (length {d}), got shape {sigma_shape:?}"
        )));
    }
    let sigma = sigma.into_dimensionality::<Ix2>().expect("checked 2-D");
    if d == 0 {
        return Err(shape_err("mu is empty".into()));
    }
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
    Ok(FeatureStats { mu, sigma })
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
    let mut tmp_name = path
        .file_name()
        .ok_or_else(|| err("not a file path".into()))?
        .to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| -> Result<(), String> {
        let file = File::create(&tmp).map_err(|e| e.to_string())?;
        let mut npz = NpzWriter::new_compressed(BufWriter::new(file));
        npz.add_array("mu", &stats.mu).map_err(|e| e.to_string())?;
        npz.add_array("sigma", &stats.sigma)
            .map_err(|e| e.to_string())?;
        let w = npz.finish().map_err(|e| e.to_string())?;
        w.into_inner()
            .map_err(|e| e.to_string())?
            .sync_all()
            .map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

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
