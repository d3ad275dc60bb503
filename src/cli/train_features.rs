//! `msd train-features`: trains the Fashion-MNIST feature classifier, reports its test accuracy and the
//! sanity check of the FID-style distance it defines, and writes the checkpoint with a JSON sidecar.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;

use super::args::{open_device, DeviceArg};
use crate::accel::fmnist_features::{self, FmnistNet, LrSchedule, TrainConfig, SIDE};
use crate::data::{self, DataSpec, Dataset, LoadOptions, Split};
use crate::eval::{self, sidecar_path, Extractor};
use crate::reference::frechet::frechet_distance;

/// Arguments of `msd train-features`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Example (the defaults made the checkpoint built into msd, `--features fmnist`; see docs/evaluation.md):
  msd train-features --out fmnist-features.safetensors
Then: msd fid --a fashion-mnist:test --b SAMPLES.npy --features fmnist:fmnist-features.safetensors

Reads Fashion-MNIST from $MSD_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist. Writes OUT
(safetensors: conv1.*, conv2.*, fc1.*, fc2.*) and OUT with the extension .json (architecture, training
settings, per-epoch loss, test accuracy, features/second and the sanity-check distances).
The sanity check: FID-style distances (128-d penultimate features) between the train and test sets, and
between the test set and copies of it with Gaussian noise (std --noise, clipped to [0, 1]) and with a
5 x 5 binomial blur; the first should be the smallest.")]
pub struct TrainFeaturesArgs {
    /// Checkpoint to write (safetensors); the sidecar goes to the same path with extension .json. Written through a temporary file; an existing symlink, FIFO or device here is refused, not replaced.
    #[arg(long, value_name = "CKPT.safetensors")]
    pub out: PathBuf,
    #[arg(long, default_value_t = TrainConfig::default().epochs, value_parser = super::args::epochs_count, allow_negative_numbers = true)]
    pub epochs: usize,
    #[arg(long, default_value_t = TrainConfig::default().batch_size, value_parser = super::args::batch_count, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Adam learning rate (the base rate of --lr-schedule).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub lr: f64,
    /// How the learning rate changes over the run.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().lr_schedule)]
    pub lr_schedule: LrSchedule,
    /// Seeds the initialisation, the shuffles and the sanity check's noise.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Train on the first N training images only (default: all 60000).
    #[arg(long, value_parser = super::args::limit_count, allow_negative_numbers = true)]
    pub limit: Option<usize>,
    /// Evaluate on the first N test images only (default: all 10000).
    #[arg(long, value_parser = super::args::limit_count, allow_negative_numbers = true)]
    pub test_limit: Option<usize>,
    /// Noise std of the sanity check's noised test copy (pixels in [0, 1]).
    #[arg(long, default_value_t = 0.1)]
    pub noise: f64,
    /// Skip the sanity check.
    #[arg(long)]
    pub no_sanity: bool,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Print one JSON object (the sidecar's content) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Sanity {
    /// FID-style distance between the train and test features.
    train_vs_test: f64,
    test_vs_noised_test: f64,
    test_vs_blurred_test: f64,
    noise_std: f64,
    blur: &'static str,
    /// train_vs_test < both others.
    ordered: bool,
}

#[derive(Debug, Serialize)]
struct Sidecar {
    arch: &'static str,
    feature_dim: usize,
    checkpoint: String,
    epochs: usize,
    batch_size: usize,
    lr: f64,
    lr_schedule: LrSchedule,
    seed: u64,
    train_examples: usize,
    test_examples: usize,
    epoch_losses: Vec<f64>,
    test_accuracy: f64,
    train_seconds: f64,
    /// Feature extraction throughput on the test set (images/second, this device).
    features_per_second: f64,
    sanity: Option<Sanity>,
}

fn load_split(split: Split, limit: Option<usize>) -> anyhow::Result<Dataset> {
    let d = data::load(
        &DataSpec::FashionMnist { split },
        &LoadOptions {
            limit,
            ..LoadOptions::default()
        },
    )?;
    if (d.channels, d.height, d.width) != (1, SIDE, SIDE) {
        bail!(
            "Fashion-MNIST {split} images are {}x{}x{}, expected 1x{SIDE}x{SIDE}",
            d.channels,
            d.height,
            d.width
        );
    }
    if d.labels.is_none() {
        bail!("Fashion-MNIST {split}: no labels were loaded");
    }
    Ok(d)
}

fn tensors(d: &Dataset, device: &Device) -> anyhow::Result<(Tensor, Tensor)> {
    let x = Tensor::from_vec(
        d.images.iter().cloned().collect::<Vec<f32>>(),
        (d.len(), 1, SIDE, SIDE),
        device,
    )?;
    let labels = d.labels.as_ref().expect("checked by load_split");
    if let Some(bad) = labels
        .iter()
        .find(|&&l| l as usize >= fmnist_features::CLASSES)
    {
        bail!("Fashion-MNIST label {bad} is out of range 0..10");
    }
    let y: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
    Ok((x, Tensor::from_vec(y, d.len(), device)?))
}

/// A copy with N(0, std²) noise added per pixel, clipped to [0, 1].
fn noised(d: &Dataset, std: f64, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = d.clone();
    out.images.mapv_inplace(|v| {
        (f64::from(v) + std * rng.sample::<f64, _>(StandardNormal)).clamp(0.0, 1.0) as f32
    });
    out
}

/// A copy blurred with the separable 5 × 5 binomial kernel [1 4 6 4 1]/16 (edges clamped).
fn blurred(d: &Dataset) -> Dataset {
    const K: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];
    let (h, w) = (d.height, d.width);
    let mut out = d.clone();
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    for (src, mut dst) in d.images.rows().into_iter().zip(out.images.rows_mut()) {
        let mut tmp = vec![0f32; h * w];
        for r in 0..h {
            for c in 0..w {
                tmp[r * w + c] = (0..5)
                    .map(|k| K[k] * src[r * w + clamp(c as isize + k as isize - 2, w)])
                    .sum();
            }
        }
        for r in 0..h {
            for c in 0..w {
                dst[r * w + c] = (0..5)
                    .map(|k| K[k] * tmp[clamp(r as isize + k as isize - 2, h) * w + c])
                    .sum();
            }
        }
    }
    out
}

fn fd(a: &crate::stats::FeatureStats, b: &crate::stats::FeatureStats) -> anyhow::Result<f64> {
    Ok(frechet_distance(
        a.mu.view(),
        a.sigma.view(),
        b.mu.view(),
        b.sigma.view(),
    )?)
}

/// Writes the checkpoint and its sidecar through temporary files, renamed into place only when both are
/// complete: a failure leaves neither behind.
fn save_outputs(vm: &VarMap, path: &Path, side_path: &Path, sidecar: &str) -> anyhow::Result<()> {
    let ckpt = crate::output::TempFile::create(path)?;
    vm.save(ckpt.path())
        .with_context(|| format!("{}: cannot write the checkpoint", path.display()))?;
    let side = crate::output::TempFile::create(side_path)?;
    std::fs::write(side.path(), sidecar)
        .with_context(|| format!("{}: cannot write", side_path.display()))?;
    ckpt.commit()?;
    side.commit()?;
    Ok(())
}

pub fn run(args: &TrainFeaturesArgs) -> anyhow::Result<()> {
    if args.out.extension().is_some_and(|e| e == "json") {
        bail!(
            "--out must not end in .json: the sidecar is written to OUT with the extension .json"
        );
    }
    if !(args.noise.is_finite() && args.noise > 0.0) {
        bail!("--noise must be > 0, got {}", args.noise);
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--lr must be finite and > 0, got {}", args.lr);
    }
    // Both outputs are checked before the (long) training.
    let side_path = sidecar_path(&args.out);
    crate::output::check(&args.out).context("--out")?;
    crate::output::check(&side_path).context("--out (its .json sidecar)")?;
    let device = open_device(args.device)?;
    let train = load_split(Split::Train, args.limit)?;
    let test = load_split(Split::Test, args.test_limit)?;
    let (xtr, ytr) = tensors(&train, &device)?;
    let (xte, yte) = tensors(&test, &device)?;

    let vm = VarMap::new();
    let net = FmnistNet::new(&VarBuilder::from_varmap(&vm, DType::F32, &device))?;
    fmnist_features::init_seeded(&vm, args.seed)?;
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        lr_schedule: args.lr_schedule,
        seed: args.seed,
    };
    let steps = train.len().div_ceil(args.batch_size.max(1)) * args.epochs;
    let bar = eval::progress(steps as u64, "training");
    let start = Instant::now();
    let losses = fmnist_features::train(&net, &vm, &xtr, &ytr, &cfg, |epoch, _, _, loss| {
        bar.set_message(format!("epoch {} loss {loss:.4}", epoch + 1));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let train_seconds = start.elapsed().as_secs_f64();
    let test_accuracy = fmnist_features::accuracy(&net, &xte, &yte, 1000)?;

    let ex = Extractor::Fmnist(net);
    let t0 = Instant::now();
    let (test_stats, _) = ex.stats(&test, &device)?;
    let features_per_second = test.len() as f64 / t0.elapsed().as_secs_f64();
    let sanity = if args.no_sanity {
        None
    } else {
        let (train_stats, _) = ex.stats(&train, &device)?;
        let (noise_stats, _) = ex.stats(&noised(&test, args.noise, args.seed), &device)?;
        let (blur_stats, _) = ex.stats(&blurred(&test), &device)?;
        let train_vs_test = fd(&train_stats, &test_stats)?;
        let test_vs_noised_test = fd(&test_stats, &noise_stats)?;
        let test_vs_blurred_test = fd(&test_stats, &blur_stats)?;
        Some(Sanity {
            train_vs_test,
            test_vs_noised_test,
            test_vs_blurred_test,
            noise_std: args.noise,
            blur: "5x5 binomial [1 4 6 4 1]/16, separable",
            ordered: train_vs_test < test_vs_noised_test && train_vs_test < test_vs_blurred_test,
        })
    };
    let side = Sidecar {
        arch: fmnist_features::ARCH,
        feature_dim: fmnist_features::FEATURE_DIM,
        checkpoint: args
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        lr_schedule: args.lr_schedule,
        seed: args.seed,
        train_examples: train.len(),
        test_examples: test.len(),
        epoch_losses: losses,
        test_accuracy,
        train_seconds,
        features_per_second,
        sanity,
    };
    let json = serde_json::to_string_pretty(&side)?;
    save_outputs(&vm, &args.out, &side_path, &format!("{json}\n"))?;
    if args.json {
        outln!("{}", serde_json::to_string(&side)?);
    } else {
        outln!("test accuracy: {:.4}", side.test_accuracy);
        outln!("train seconds: {:.1}", side.train_seconds);
        outln!("features/second: {:.0}", side.features_per_second);
        if let Some(s) = &side.sanity {
            outln!(
                "sanity: train-vs-test {:.4}, test-vs-noised {:.4}, test-vs-blurred {:.4} ({})",
                s.train_vs_test,
                s.test_vs_noised_test,
                s.test_vs_blurred_test,
                if s.ordered {
                    "ordered as expected"
                } else {
                    "NOT ordered as expected"
                }
            );
        }
        outln!("wrote {} and {}", args.out.display(), side_path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn one(img: Vec<f32>, h: usize, w: usize) -> Dataset {
        Dataset {
            images: Array2::from_shape_vec((1, h * w), img).unwrap(),
            channels: 1,
            height: h,
            width: w,
            labels: None,
        }
    }

    #[test]
    fn blur_by_hand() {
        // A single bright pixel in the middle of 5 × 5 becomes the outer product of [1 4 6 4 1]/16.
        let mut img = vec![0f32; 25];
        img[12] = 1.0;
        let b = blurred(&one(img, 5, 5));
        let k = [1.0, 4.0, 6.0, 4.0, 1.0];
        for r in 0..5 {
            for c in 0..5 {
                let want = k[r] * k[c] / 256.0;
                assert!((b.images[[0, r * 5 + c]] - want).abs() < 1e-7);
            }
        }
        // A constant image is unchanged (edges clamped, weights sum to 1).
        let c = blurred(&one(vec![0.3; 12], 3, 4));
        assert!(c.images.iter().all(|v| (v - 0.3).abs() < 1e-6));
    }

    #[test]
    fn noise_is_seeded_and_clipped() {
        let d = one(vec![0.0, 1.0, 0.5, 0.5], 2, 2);
        let a = noised(&d, 0.5, 1);
        assert_eq!(a.images, noised(&d, 0.5, 1).images);
        assert!(a.images.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(a.images, d.images);
    }
}
