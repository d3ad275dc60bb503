//! Options and plumbing that several subcommands share: the dataset (`--data` and friends), the noise
//! schedule and its parameters, the backend and device, and opening the device.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::accel::{self, DeviceKind};
use crate::data::{self, DataSpec, LoadOptions};
use crate::reference::schedule::{Edm, Schedule, VeGeometric, VpCosine, VpLinear};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// VP, linear beta: log alpha = -(beta_max - beta_min) t^2/4 - beta_min t/2 (DDPM, DPM-Solver).
    VpLinear,
    /// VP, cosine (Nichol & Dhariwal, s = 0.008): alpha(1) = 0.
    VpCosine,
    /// VE geometric: alpha = 1, sigma(t) = sigma_min (sigma_max/sigma_min)^t.
    Ve,
    /// EDM: alpha = 1, the time variable is sigma itself.
    Edm,
}

/// Schedule parameters shared by the subcommands; each applies to the schedules named in its help.
#[derive(Debug, Clone, Args)]
pub struct ScheduleParams {
    /// beta_min of vp-linear.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub beta_min: f64,
    /// beta_max of vp-linear.
    #[arg(long, allow_negative_numbers = true, default_value_t = 20.0)]
    pub beta_max: f64,
    /// Offset s of vp-cosine.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.008)]
    pub cosine_s: f64,
    /// sigma_min of ve (default 0.01) or edm (default 0.002).
    #[arg(long, allow_negative_numbers = true)]
    pub sigma_min: Option<f64>,
    /// sigma_max of ve (default 50) or edm (default 80).
    #[arg(long, allow_negative_numbers = true)]
    pub sigma_max: Option<f64>,
    /// rho of edm's Karras grid.
    #[arg(long, allow_negative_numbers = true, default_value_t = 7.0)]
    pub rho: f64,
}

impl ScheduleParams {
    pub fn vp_linear(&self) -> anyhow::Result<VpLinear> {
        VpLinear::new(self.beta_min, self.beta_max).context("--beta-min/--beta-max")
    }

    /// Builds the schedule of `kind` from these parameters.
    pub fn build(&self, kind: ScheduleKind) -> anyhow::Result<Box<dyn Schedule>> {
        Ok(match kind {
            ScheduleKind::VpLinear => Box::new(self.vp_linear()?),
            ScheduleKind::VpCosine => Box::new(VpCosine::new(self.cosine_s).context("--cosine-s")?),
            ScheduleKind::Ve => {
                let d = VeGeometric::default();
                Box::new(
                    VeGeometric::new(
                        self.sigma_min.unwrap_or(d.sigma_min),
                        self.sigma_max.unwrap_or(d.sigma_max),
                    )
                    .context("--sigma-min/--sigma-max")?,
                )
            }
            ScheduleKind::Edm => {
                let d = Edm::default();
                Box::new(
                    Edm::new(
                        self.sigma_min.unwrap_or(d.sigma_min),
                        self.sigma_max.unwrap_or(d.sigma_max),
                        self.rho,
                    )
                    .context("--sigma-min/--sigma-max/--rho")?,
                )
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Exact f64 on the CPU (ndarray + BLAS).
    Reference,
    /// candle, f32, on --device.
    Accel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceArg {
    Cpu,
    /// CUDA device 0 (needs a build with --features cuda).
    Cuda,
}

/// The candle device `--device` names.
pub(crate) fn open_device(d: DeviceArg) -> anyhow::Result<candle_core::Device> {
    Ok(accel::device(match d {
        DeviceArg::Cpu => DeviceKind::Cpu,
        DeviceArg::Cuda => DeviceKind::Cuda(0),
    })?)
}

/// Where the data come from (shared by the commands that read datasets).
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Dataset: fashion-mnist[:train|:test], cifar10:DIR[:train|:test] (data_batch_*.bin or test_batch.bin),
    /// images:DIR (PNG/JPEG; with --size), npy:FILE (N x d or N x C x H x W; uint8 is divided by 255, floats
    /// must be in [0, 1]). Pixels are scaled to [0, 1], the authors' clustering scale. Limits: 2^31 values
    /// in all, images of at most 4096 x 4096 pixels, CIFAR-10 batches of at most 100 000 records.
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,
    /// Use only the first N images.
    #[arg(long, value_name = "N", value_parser = limit_count, allow_negative_numbers = true)]
    pub limit: Option<usize>,
    /// images:DIR only: resize (aspect kept) and centre-crop every image to SIZE x SIZE (1 to 4096).
    #[arg(long, value_parser = size_count, allow_negative_numbers = true)]
    pub size: Option<usize>,
    /// Folder of the Fashion-MNIST IDX files [default: $MSD_FASHION_MNIST_DIR, else
    /// /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist)].
    #[arg(long, value_name = "DIR")]
    pub fashion_mnist_dir: Option<PathBuf>,
}

impl DataArgs {
    /// Loads the dataset, or says that --data is missing.
    pub fn load(&self) -> anyhow::Result<(DataSpec, data::Dataset)> {
        let Some(spec) = &self.data else {
            bail!("--data is required (one of {})", data::DATA_SPEC_HELP);
        };
        let spec: DataSpec = spec.parse()?;
        let mut opts = LoadOptions {
            limit: self.limit,
            size: self.size,
            ..LoadOptions::default()
        };
        if let Some(dir) = &self.fashion_mnist_dir {
            opts.fashion_mnist_dir = dir.clone();
        }
        let ds = data::load(&spec, &opts)?;
        Ok((spec, ds))
    }
}

// ---------------------------------------------------------------------------------------------
// Counts: every count option has a documented range, checked when the command line is parsed.

/// Most sampler steps / NFE (`--nfe`, `--steps`): 100 000 (samplers use 10 to 1000).
pub const MAX_STEPS: usize = 100_000;
/// Most discrete steps of the LDM schedule (`--ldm-steps`): 1 000 000 (LDM uses 1000).
pub const MAX_LDM_STEPS: usize = 1_000_000;
/// Most Algorithm-1/2 draws and tau values (`--samples`, `--tau-grid`): 10 000 000.
pub const MAX_DRAWS: usize = 10_000_000;
/// Most grid points of a baseline or Algorithm 2 (`--baseline-grid`, the grid of `--grid-step`, a
/// gradient-affinity or similarity matrix): 5000.
pub const MAX_GRID: usize = 5000;
/// Largest `--size` of resized images: 4096.
pub const MAX_SIZE: usize = 4096;
/// Most training epochs: 10 000.
pub const MAX_EPOCHS: usize = 10_000;
/// Largest batch size: 65 536.
pub const MAX_BATCH: usize = 65_536;
/// Largest k of the k-NN metrics: 10 000.
pub const MAX_K: usize = 10_000;
/// Most stages: 1000.
pub const MAX_STAGES: usize = 1000;

/// Parses a count written as an integer (or an integral number like `1e4`) and checks `lo..=hi`.
pub(crate) fn count(s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    let t = s.trim();
    let v: Option<u128> = t.parse::<u128>().ok().or_else(|| {
        t.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && v.fract() == 0.0 && *v >= 0.0 && *v < 1e30)
            .map(|v| v as u128)
    });
    let range = if hi == usize::MAX {
        format!("at least {lo}")
    } else {
        format!("an integer from {lo} to {hi}")
    };
    match v {
        Some(v) if v >= lo as u128 && v <= hi as u128 => Ok(v as usize),
        Some(_) => Err(format!("must be {range}")),
        None if t.starts_with('-') => Err(format!("must be {range}")),
        None => Err(format!("not a whole number; must be {range}")),
    }
}

macro_rules! count_parser {
    ($(#[$doc:meta])* $name:ident, $lo:expr, $hi:expr) => {
        $(#[$doc])*
        pub(crate) fn $name(s: &str) -> Result<usize, String> {
            count(s, $lo, $hi)
        }
    };
}

count_parser!(
    /// `--nfe`, `--steps`.
    steps_count, 1, MAX_STEPS
);
count_parser!(
    /// `--ldm-steps`.
    ldm_steps_count, 2, MAX_LDM_STEPS
);
count_parser!(
    /// `--samples`, `--tau-grid`.
    draws_count, 1, MAX_DRAWS
);
count_parser!(
    /// `--baseline-grid`.
    grid_count, 2, MAX_GRID
);
count_parser!(
    /// `--limit`, `--test-limit`: at least 1.
    limit_count, 1, usize::MAX
);
count_parser!(
    /// `--size`.
    size_count, 1, MAX_SIZE
);
count_parser!(
    /// `--epochs`.
    epochs_count, 1, MAX_EPOCHS
);
count_parser!(
    /// `--batch-size`.
    batch_count, 1, MAX_BATCH
);
count_parser!(
    /// `--k`.
    k_count, 1, MAX_K
);
count_parser!(
    /// `--stages`.
    stages_count, 2, MAX_STAGES
);
count_parser!(
    /// `--order`.
    order_count, 1, 3
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_ranges() {
        assert_eq!(count("20", 1, 100), Ok(20));
        assert_eq!(count("1e2", 1, 100), Ok(100));
        assert!(count("101", 1, 100).unwrap_err().contains("from 1 to 100"));
        assert!(count("-1", 1, 100).unwrap_err().contains("from 1 to 100"));
        assert!(count("0", 1, usize::MAX)
            .unwrap_err()
            .contains("at least 1"));
        assert!(count("18446744073709551616", 1, 100).is_err());
        assert!(count("1e300", 1, 100).is_err());
        assert!(count("2.5", 1, 100)
            .unwrap_err()
            .contains("not a whole number"));
        assert!(count("abc", 1, 100).is_err());
    }
}
