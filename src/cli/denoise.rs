//! `msd denoise`: the Proposition 1 optimal denoiser from `.npy` files.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

// Re-exported where they used to live, for callers that name them here.
use super::args::{open_device, ScheduleKind, ScheduleParams};
pub(crate) use super::args::{Backend, DeviceArg};
use crate::accel;
use crate::reference::{NoiseLevel, OptimalDenoiser, Prediction};
use crate::{bridge, npy};

/// Arguments of `msd denoise`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  msd denoise --data D.npy --x X.npy --t 0.5 --schedule vp-linear --out EPS.npy
  msd denoise --data D.npy --x X.npy --sigma 2.5103 --schedule edm --predict x0 --out X0.npy

D is N x d (or N x C x H x W, flattened), X is B x d; float32, float64 or uint8. OUT is float64 B x d.
Values are used as given (no rescaling). At t = 0 (sigma = 0) only --predict x0 is defined: the nearest
training point.")]
pub struct DenoiseArgs {
    /// The dataset {y_i}, N x d.
    #[arg(long, value_name = "D.npy")]
    pub data: PathBuf,
    /// The queries x, B x d.
    #[arg(long, value_name = "X.npy")]
    pub x: PathBuf,
    /// Time t (vp-linear, vp-cosine, ve): x = alpha(t) x0 + sigma(t) eps.
    #[arg(long, conflicts_with = "sigma", allow_negative_numbers = true)]
    pub t: Option<f64>,
    /// Noise level sigma (ve, edm): x = x0 + sigma n.
    #[arg(long, allow_negative_numbers = true)]
    pub sigma: Option<f64>,
    /// Which noise schedule maps --t (or --sigma) to (alpha, sigma).
    #[arg(long, value_enum)]
    pub schedule: ScheduleKind,
    #[command(flatten)]
    pub params: ScheduleParams,
    /// What to output.
    #[arg(long, value_enum, default_value_t = Prediction::Eps)]
    pub predict: Prediction,
    /// Where to write the B x d float64 result. Written through a temporary file; an existing symlink, FIFO or device here is refused, not replaced.
    #[arg(long, value_name = "OUT.npy")]
    pub out: PathBuf,
    /// Which backend computes it.
    #[arg(long, value_enum, default_value_t = Backend::Reference)]
    pub backend: Backend,
    /// Device of the accel backend.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    n: usize,
    d: usize,
    b: usize,
    alpha: f64,
    sigma: f64,
    predict: Prediction,
    backend: Backend,
    seconds: f64,
    out: PathBuf,
}

/// (α, σ) from --t/--sigma and the schedule.
fn noise_level(args: &DenoiseArgs) -> anyhow::Result<NoiseLevel> {
    let sched = args.params.build(args.schedule)?;
    match (args.t, args.sigma, args.schedule) {
        (Some(t), None, ScheduleKind::VpLinear | ScheduleKind::VpCosine | ScheduleKind::Ve) => {
            Ok(NoiseLevel::at(sched.as_ref(), t).with_context(|| format!("--t {t}"))?)
        }
        (Some(_), None, ScheduleKind::Edm) => {
            bail!("--t: edm's time variable is sigma itself; pass --sigma instead")
        }
        // sigma = 0 is the data itself: only x0 is defined there (checked by the caller).
        (None, Some(0.0), ScheduleKind::Ve | ScheduleKind::Edm) => {
            Ok(NoiseLevel::new(1.0, 0.0).context("--sigma 0")?)
        }
        (None, Some(sigma), ScheduleKind::Ve | ScheduleKind::Edm) => {
            Ok(NoiseLevel::ve(sigma).with_context(|| format!("--sigma {sigma}"))?)
        }
        (None, Some(_), _) => bail!("--sigma applies to --schedule ve|edm; VP schedules take --t"),
        (None, None, _) => bail!("give the noise level with --t (VP, ve) or --sigma (ve, edm)"),
        (Some(_), Some(_), _) => unreachable!("clap rejects --t with --sigma"),
    }
}

pub fn run(args: &DenoiseArgs) -> anyhow::Result<()> {
    crate::output::check(&args.out).context("--out")?;
    let level = noise_level(args)?;
    let predict = args.predict;
    if predict == Prediction::Eps && level.sigma == 0.0 {
        bail!("--predict eps at sigma = 0 (--t 0 or --sigma 0): eps* is undefined there; use --predict x0 (the nearest point)");
    }
    let (data, _) = npy::read_matrix(&args.data).context("--data")?;
    let (x, _) = npy::read_matrix(&args.x).context("--x")?;
    if data.nrows() == 0 || data.ncols() == 0 {
        bail!(
            "--data {}: the dataset is empty (shape {:?})",
            args.data.display(),
            data.dim()
        );
    }
    if x.ncols() != data.ncols() {
        bail!(
            "--x {}: queries have dimension {} but the dataset --data {} has dimension {}",
            args.x.display(),
            x.ncols(),
            args.data.display(),
            data.ncols()
        );
    }
    let start = Instant::now();
    let out = match args.backend {
        Backend::Reference => {
            if args.device != DeviceArg::Cpu {
                bail!("--device {:?}: the reference backend runs on the CPU only; use --backend accel", args.device);
            }
            OptimalDenoiser::new(data.view())?.predict(x.view(), level, predict)?
        }
        Backend::Accel => {
            let device = open_device(args.device)?;
            let den = accel::OptimalDenoiser::new(&bridge::to_tensor(&data, &device)?)?;
            let xt = bridge::to_tensor(&x, &device)?;
            let t = match predict {
                Prediction::X0 => den.posterior_mean(&xt, level.alpha, level.sigma)?,
                Prediction::Eps => den.eps(&xt, level.alpha, level.sigma)?,
            };
            bridge::to_array(&t)?
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    npy::write_f64(&args.out, &out).context("--out")?;
    let summary = Summary {
        n: data.nrows(),
        d: data.ncols(),
        b: x.nrows(),
        alpha: level.alpha,
        sigma: level.sigma,
        predict: args.predict,
        backend: args.backend,
        seconds,
        out: args.out.clone(),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "denoised {} queries against {} points (d = {}) with alpha = {:.6}, sigma = {:.6} in {:.3} s -> {}",
            summary.b,
            summary.n,
            summary.d,
            summary.alpha,
            summary.sigma,
            seconds,
            args.out.display()
        );
    }
    Ok(())
}
