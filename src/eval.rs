//! Evaluation inputs and feature extractors, shared by `msd fid`, `msd fid-stats` and `msd prdc`.
//!
//! An evaluation SPEC names one of:
//! - a statistics file: `*.npz` with `mu` and `sigma` (pytorch-fid / clean-fid), or `stats:FILE`;
//! - features: a 2-D `.npy` (N × d, float32/float64), or `features:FILE` to insist;
//! - images: a 3-D or 4-D `.npy` (N × H × W or N × C × H × W; uint8 is divided by 255, floats must be in
//!   [0, 1]), an image folder (PNG/JPEG), or any dataset spec of `msd::data` (`fashion-mnist:test`,
//!   `cifar10:DIR`, `images:DIR`, `npy:FILE`). Images need a feature extractor (`--features`).
//!
//! Feature extractors (`--features`): `inception:WEIGHTS.safetensors` (the FID Inception-v3, 2048-d pool3;
//! see `scripts/convert_inception_weights.py`), `fmnist:CKPT.safetensors` (the 128-d penultimate layer of
//! the classifier `msd train-features` trains) or `fmnist` alone (the checkpoint committed in
//! `assets/fmnist-features/`, built into the binary: see [`builtin_fmnist`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, ArrayView2};

use crate::accel::fmnist_features::{self, FmnistNet};
use crate::accel::inception::{self, FidInception};
use crate::data::{self, DataSpec, Dataset, LoadOptions};
use crate::reference::frechet::RunningStats;
use crate::stats::{self, FeatureStats};
use crate::{bridge, npy};

/// Which network turns images into features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureSpec {
    Inception(PathBuf),
    /// A checkpoint of `msd train-features`, or `None`: the built-in one ([`builtin_fmnist`]).
    Fmnist(Option<PathBuf>),
}

/// The Fashion-MNIST feature checkpoint committed in `assets/fmnist-features/` (made by `msd train-features`
/// with its default settings; docs/evaluation.md says how to remake it).
///
/// It is embedded with `include_bytes!` rather than looked up beside the sources: a binary installed with
/// `cargo install` (or copied to another machine) no longer has the source tree that `CARGO_MANIFEST_DIR`
/// names, and the file is small (~1.7 MB).
pub mod builtin_fmnist {
    /// The safetensors checkpoint.
    pub const CHECKPOINT: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/fmnist-features/fmnist-features.safetensors"
    ));
    /// Its JSON sidecar (architecture, training settings, seed, test accuracy).
    pub const SIDECAR: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/fmnist-features/fmnist-features.json"
    ));
    /// How errors name it.
    pub const NAME: &str = "the built-in Fashion-MNIST feature checkpoint";
}

impl FromStr for FeatureSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("inception", p)) if !p.is_empty() => Ok(Self::Inception(PathBuf::from(p))),
            Some(("fmnist", p)) if !p.is_empty() => Ok(Self::Fmnist(Some(PathBuf::from(p)))),
            None if s == "fmnist" => Ok(Self::Fmnist(None)),
            _ => bail!("bad --features {s:?}: expected inception:WEIGHTS.safetensors, fmnist or fmnist:CKPT.safetensors"),
        }
    }
}

impl std::fmt::Display for FeatureSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inception(p) => write!(f, "inception:{}", p.display()),
            Self::Fmnist(Some(p)) => write!(f, "fmnist:{}", p.display()),
            Self::Fmnist(None) => write!(f, "fmnist"),
        }
    }
}

/// A loaded feature extractor.
#[derive(Debug)]
pub enum Extractor {
    Inception(Box<FidInception>),
    Fmnist(FmnistNet),
}

/// Refuses a Fashion-MNIST checkpoint whose sidecar (JSON `text`, called `name`) names another architecture.
fn check_fmnist_arch(text: &str, name: &str) -> anyhow::Result<()> {
    let v: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("{name}: not JSON"))?;
    let arch = v.get("arch").and_then(|a| a.as_str()).unwrap_or("(none)");
    if arch != fmnist_features::ARCH {
        bail!(
            "{name}: checkpoint architecture {arch:?}, this msd reads {:?}",
            fmnist_features::ARCH
        );
    }
    Ok(())
}

/// The JSON sidecar `msd train-features` writes beside its checkpoint (`CKPT.json` for `CKPT.safetensors`).
pub fn sidecar_path(ckpt: &Path) -> PathBuf {
    ckpt.with_extension("json")
}

impl Extractor {
    pub fn load(spec: &FeatureSpec, device: &Device) -> anyhow::Result<Self> {
        Ok(match spec {
            FeatureSpec::Inception(p) => {
                Self::Inception(Box::new(FidInception::from_safetensors(p, device)?))
            }
            FeatureSpec::Fmnist(Some(p)) => {
                let side = sidecar_path(p);
                if side.exists() {
                    let text = crate::limits::read_text(&side, "a checkpoint sidecar")
                        .with_context(|| format!("{}: cannot read", side.display()))?;
                    check_fmnist_arch(&text, &side.display().to_string())?;
                }
                Self::Fmnist(FmnistNet::from_safetensors(p, device)?)
            }
            FeatureSpec::Fmnist(None) => {
                check_fmnist_arch(builtin_fmnist::SIDECAR, builtin_fmnist::NAME)?;
                Self::Fmnist(FmnistNet::from_safetensors_bytes(
                    builtin_fmnist::CHECKPOINT,
                    builtin_fmnist::NAME,
                    device,
                )?)
            }
        })
    }

    pub fn dim(&self) -> usize {
        match self {
            Self::Inception(_) => inception::FEATURE_DIM,
            Self::Fmnist(_) => fmnist_features::FEATURE_DIM,
        }
    }

    /// Images per forward pass (bounded memory: Inception activations at 299² are ~30 MB per image).
    pub fn batch_size(&self) -> usize {
        match self {
            Self::Inception(_) => 16,
            Self::Fmnist(_) => 512,
        }
    }

    /// Features of a batch of image rows (B × C·H·W, [0, 1]) as f64 rows.
    pub fn features(
        &self,
        rows: ArrayView2<f32>,
        chw: (usize, usize, usize),
        device: &Device,
    ) -> anyhow::Result<Array2<f64>> {
        let (c, h, w) = chw;
        let b = rows.nrows();
        let v: Vec<f32> = rows.iter().cloned().collect();
        let x = Tensor::from_vec(v, (b, c, h, w), device)?;
        let f = match self {
            Self::Inception(net) => net.features(&x)?,
            Self::Fmnist(net) => net.features(&x)?,
        };
        Ok(bridge::to_array(&f)?)
    }

    /// Runs the extractor over every image of `data` in batches, calling `sink` with each batch's
    /// features; a progress bar on stderr counts images.
    pub fn for_each_batch(
        &self,
        data: &Dataset,
        device: &Device,
        mut sink: impl FnMut(Array2<f64>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let n = data.len();
        let bar = progress(n as u64, "features");
        let step = self.batch_size();
        let mut lo = 0;
        while lo < n {
            let hi = (lo + step).min(n);
            let rows = data.images.slice(ndarray::s![lo..hi, ..]);
            let f = self.features(rows, (data.channels, data.height, data.width), device)?;
            if f.iter().any(|v| !v.is_finite()) {
                bail!("the feature extractor produced a non-finite value (images {lo}..{hi})");
            }
            sink(f)?;
            bar.inc((hi - lo) as u64);
            lo = hi;
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// All features of `data` (N × dim).
    pub fn all_features(&self, data: &Dataset, device: &Device) -> anyhow::Result<Array2<f64>> {
        let mut out = Array2::zeros((0, self.dim()));
        self.for_each_batch(data, device, |f| {
            out.append(ndarray::Axis(0), f.view())?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Mean and covariance of the features of `data`, accumulated batch by batch in f64.
    pub fn stats(&self, data: &Dataset, device: &Device) -> anyhow::Result<(FeatureStats, u64)> {
        let mut rs = RunningStats::new(self.dim());
        self.for_each_batch(data, device, |f| Ok(rs.update(f.view())?))?;
        let sigma = rs.covariance()?;
        Ok((
            FeatureStats {
                mu: rs.mean().clone(),
                sigma,
            },
            rs.count(),
        ))
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal, as indicatif does).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {bar:30} {pos}/{len} ({per_sec})")
            .expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

/// What an evaluation SPEC resolved to.
#[derive(Debug)]
pub enum Input {
    Stats(FeatureStats),
    Features(Array2<f64>),
    Images(Dataset),
}

impl Input {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stats(_) => "stats",
            Self::Features(_) => "features",
            Self::Images(_) => "images",
        }
    }
}

fn has_ext(p: &Path, ext: &str) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

fn load_images(spec: &DataSpec) -> anyhow::Result<Input> {
    Ok(Input::Images(data::load(spec, &LoadOptions::default())?))
}

/// Features (2-D) or images (3-D, 4-D) from an array read once from the `.npy` at `path`.
fn from_npy(path: &Path, images_ok: bool) -> anyhow::Result<Input> {
    let (a, dtype) = npy::read_f64(path)?;
    match a.ndim() {
        2 => Ok(Input::Features(npy::into_matrix(a, dtype, path)?.0)),
        3 | 4 if images_ok => Ok(Input::Images(data::dataset_from_array(
            a, dtype, path, None,
        )?)),
        _ if !images_ok => bail!(
            "{}: features must be an N x d array, got shape {}",
            path.display(),
            crate::limits::shape_text(a.shape())
        ),
        _ => bail!(
            "{}: a .npy SPEC is N x d features or N x [C x] H x W images, got shape {}",
            path.display(),
            crate::limits::shape_text(a.shape())
        ),
    }
}

/// Resolves an evaluation SPEC (see the module documentation). Every file is read once.
pub fn resolve(spec: &str) -> anyhow::Result<Input> {
    if let Some(p) = spec.strip_prefix("stats:") {
        return Ok(Input::Stats(stats::read_npz(Path::new(p))?));
    }
    if let Some(p) = spec.strip_prefix("features:") {
        return from_npy(Path::new(p), false);
    }
    // An explicit dataset spec (`npy:FILE` holds images here, even as N x d rows) wins over the extension.
    if let Some((prefix, _)) = spec.split_once(':') {
        if matches!(
            prefix,
            "npy"
                | "images"
                | "cifar10"
                | "cifar-10"
                | "fashion-mnist"
                | "fashion_mnist"
                | "fmnist"
        ) {
            return load_images(&DataSpec::from_str(spec)?);
        }
    }
    let path = Path::new(spec);
    if has_ext(path, "npz") {
        return Ok(Input::Stats(stats::read_npz(path)?));
    }
    if has_ext(path, "npy") {
        return from_npy(path, true);
    }
    if path.is_dir() {
        return load_images(&DataSpec::Images {
            dir: path.to_path_buf(),
        });
    }
    match DataSpec::from_str(spec) {
        Ok(ds) => load_images(&ds),
        Err(_) if !path.exists() && !spec.contains(':') => bail!("{spec}: no such file or directory"),
        Err(_) => bail!(
            "{spec}: not a statistics .npz, a features/images .npy, an image folder or a dataset spec ({})",
            data::DATA_SPEC_HELP
        ),
    }
}

/// Statistics of a resolved input; images go through `extractor`. Returns the count of samples where known.
pub fn to_stats(
    input: Input,
    extractor: Option<&Extractor>,
    device: &Device,
    name: &str,
) -> anyhow::Result<(FeatureStats, Option<u64>)> {
    match input {
        Input::Stats(s) => Ok((s, None)),
        Input::Features(f) => {
            let mut rs = RunningStats::new(f.ncols());
            rs.update(f.view())
                .with_context(|| format!("{name}: features"))?;
            let sigma = rs
                .covariance()
                .with_context(|| format!("{name}: features"))?;
            Ok((
                FeatureStats {
                    mu: rs.mean().clone(),
                    sigma,
                },
                Some(rs.count()),
            ))
        }
        Input::Images(d) => {
            let ex = extractor.with_context(|| {
                format!("{name} holds images: pass --features inception:WEIGHTS.safetensors, fmnist or fmnist:CKPT.safetensors")
            })?;
            let (s, n) = ex.stats(&d, device).with_context(|| name.to_string())?;
            Ok((s, Some(n)))
        }
    }
}

/// Features of a resolved input (statistics are refused: k-NN metrics need the samples).
pub fn to_features(
    input: Input,
    extractor: Option<&Extractor>,
    device: &Device,
    name: &str,
) -> anyhow::Result<Array2<f64>> {
    match input {
        Input::Stats(_) => bail!(
            "{name} is a statistics file: precision/recall need the feature vectors, not mu/sigma"
        ),
        Input::Features(f) => Ok(f),
        Input::Images(d) => {
            let ex = extractor.with_context(|| {
                format!("{name} holds images: pass --features inception:WEIGHTS.safetensors, fmnist or fmnist:CKPT.safetensors")
            })?;
            ex.all_features(&d, device)
                .with_context(|| name.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::fmnist_features::TrainConfig;

    #[test]
    fn fmnist_feature_specs_parse() {
        assert_eq!(
            "fmnist".parse::<FeatureSpec>().unwrap(),
            FeatureSpec::Fmnist(None)
        );
        assert_eq!(
            "fmnist:a.safetensors".parse::<FeatureSpec>().unwrap(),
            FeatureSpec::Fmnist(Some(PathBuf::from("a.safetensors")))
        );
        assert_eq!(FeatureSpec::Fmnist(None).to_string(), "fmnist");
        for bad in ["fmnist:", "inception", "fmnist2"] {
            let err = bad.parse::<FeatureSpec>().unwrap_err().to_string();
            assert!(err.contains("fmnist or fmnist:CKPT"), "{bad}: {err}");
        }
    }

    /// The committed checkpoint is what the issue asked for: made by `msd train-features` with the default
    /// settings on the full Fashion-MNIST splits, of this architecture, at ≥ 90 % test accuracy.
    #[test]
    fn builtin_fmnist_checkpoint_is_the_default_run_and_reaches_90_percent() {
        let side: serde_json::Value = serde_json::from_str(builtin_fmnist::SIDECAR).unwrap();
        assert_eq!(side["arch"], fmnist_features::ARCH);
        assert_eq!(side["feature_dim"], fmnist_features::FEATURE_DIM);
        let acc = side["test_accuracy"].as_f64().unwrap();
        assert!(acc >= 0.90, "test accuracy {acc}");
        let d = TrainConfig::default();
        assert_eq!(side["epochs"], d.epochs);
        assert_eq!(side["batch_size"], d.batch_size);
        assert_eq!(side["lr"], d.lr);
        assert_eq!(
            side["lr_schedule"],
            serde_json::to_value(d.lr_schedule).unwrap()
        );
        assert_eq!(side["seed"], d.seed);
        assert_eq!(
            (
                side["train_examples"].as_u64(),
                side["test_examples"].as_u64()
            ),
            (Some(60_000), Some(10_000))
        );
        assert_eq!(side["sanity"]["ordered"], true);

        // It loads, and its features are the 128-d ReLU outputs.
        let ex = Extractor::load(&FeatureSpec::Fmnist(None), &Device::Cpu).unwrap();
        assert_eq!(ex.dim(), fmnist_features::FEATURE_DIM);
        let rows = Array2::from_shape_fn((3, 28 * 28), |(i, j)| ((i * 31 + j) % 17) as f32 / 16.0);
        let f = ex.features(rows.view(), (1, 28, 28), &Device::Cpu).unwrap();
        assert_eq!(f.dim(), (3, fmnist_features::FEATURE_DIM));
        assert!(f.iter().all(|v| v.is_finite() && *v >= 0.0));
        assert!(f.iter().any(|v| *v > 0.0));
    }

    /// The sidecar's accuracy is the checkpoint's: recomputed here on the real test split (Debian's
    /// dataset-fashion-mnist, which the data tests also need), to within a few images of round-off in the
    /// arg-max (the kernels' summation order may differ between machines).
    #[test]
    fn builtin_fmnist_checkpoint_has_its_recorded_test_accuracy() {
        let side: serde_json::Value = serde_json::from_str(builtin_fmnist::SIDECAR).unwrap();
        let recorded = side["test_accuracy"].as_f64().unwrap();
        let test = data::load(
            &"fashion-mnist:test".parse().unwrap(),
            &LoadOptions {
                fashion_mnist_dir: PathBuf::from(data::DEFAULT_FASHION_MNIST_DIR),
                ..LoadOptions::default()
            },
        )
        .expect("Fashion-MNIST missing: run scripts/setup.sh (installs dataset-fashion-mnist)");
        let net = FmnistNet::from_safetensors_bytes(
            builtin_fmnist::CHECKPOINT,
            builtin_fmnist::NAME,
            &Device::Cpu,
        )
        .unwrap();
        let x = Tensor::from_vec(
            test.images.iter().cloned().collect::<Vec<f32>>(),
            (test.len(), 1, 28, 28),
            &Device::Cpu,
        )
        .unwrap();
        let labels: Vec<u32> = test
            .labels
            .as_ref()
            .unwrap()
            .iter()
            .map(|&l| u32::from(l))
            .collect();
        let y = Tensor::from_vec(labels, test.len(), &Device::Cpu).unwrap();
        let acc = fmnist_features::accuracy(&net, &x, &y, 1000).unwrap();
        assert!(
            (acc - recorded).abs() <= 0.0005,
            "recomputed {acc}, sidecar {recorded}"
        );
    }
}
