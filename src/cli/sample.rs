//! `msd sample`: run a sampler plan with the Proposition 1 optimal denoiser of a dataset as the model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use ndarray::{Array2, ArrayView2, IxDyn};
use serde::Serialize;

use super::args::{open_device, Backend, DeviceArg};
use super::plan::PlanArgs;
use crate::accel;
use crate::reference::solver::{self, NoiseStream, OracleModel, TimeAxis};
use crate::reference::stage::nfe_per_stage;
use crate::reference::OptimalDenoiser;
use crate::{bridge, npy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// The Proposition 1 optimal denoiser of --data (the exact posterior mean).
    Optimal,
}

/// Arguments of `msd sample`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  msd sample --model optimal --data D.npy --noise Z.npy --solver dpm-solver --nfe 20 --t-end 1e-4 --out X.npy
  msd sample --model optimal --data D.npy --noise Z.npy --solver heun --steps 18 --out X.npy --json

D is N x d (or N x C x H x W, flattened); Z is B x d or B x C x H x W with C*H*W = d: the initial noise z.
The sampler starts from x_T = sigma_max * z (EDM) or z (VP). OUT is float64 with Z's shape. Values are used as
given (no rescaling). Stochastic samplers (ddim --eta > 0, ancestral, euler-maruyama, heun --s-churn > 0)
draw their extra noise from a seeded stream (--seed): rand 0.9 StdRng::seed_from_u64(seed), f64
StandardNormal draws, one B x d array per step, row-major; the accel backend rounds the same draws to f32.")]
pub struct SampleArgs {
    /// The model.
    #[arg(long, value_enum, default_value_t = ModelKind::Optimal)]
    pub model: ModelKind,
    /// The dataset of the optimal denoiser.
    #[arg(long, value_name = "D.npy", required_unless_present = "checkpoint")]
    pub data: Option<PathBuf>,
    /// The initial noise z (standard normal), B x d or B x C x H x W.
    #[arg(long, value_name = "Z.npy", required_unless_present = "checkpoint")]
    pub noise: Option<PathBuf>,
    /// Sample a trained network instead: a run directory (its newest checkpoint) or a checkpoint directory.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["data", "noise", "save_trajectory"])]
    pub checkpoint: Option<PathBuf>,
    /// With --checkpoint: use the EMA weights.
    #[arg(long, requires = "checkpoint")]
    pub ema: bool,
    /// With --checkpoint: number of images.
    #[arg(long, default_value_t = 16)]
    pub num: usize,
    /// With --checkpoint: images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// With --checkpoint: also write the images as one PNG grid.
    #[arg(long, value_name = "FILE.png", requires = "checkpoint")]
    pub grid: Option<PathBuf>,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Where to write the final samples (float64, Z's shape). With --checkpoint: FILE.npy (f32 in [-1, 1],
    /// N x C x H x W) or a directory for one PNG per image. Written through a temporary file; an existing
    /// symlink, FIFO or device here is refused, not replaced.
    #[arg(long, value_name = "X.npy")]
    pub out: PathBuf,
    /// Write x_T as step_0000.npy and the state after every outer step k as step_{k:04}.npy into DIR.
    #[arg(long, value_name = "DIR")]
    pub save_trajectory: Option<PathBuf>,
    /// Seed of the noise stream of stochastic samplers.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Which backend runs the plan.
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
    plan: String,
    nfe: usize,
    nfe_per_stage: Vec<usize>,
    stochastic: bool,
    seed: u64,
    backend: Backend,
    seconds: f64,
    out: PathBuf,
    trajectory_steps: usize,
}

/// The `--save-trajectory` files of this run, removed on drop unless the run succeeded.
struct Trajectory {
    dir: Option<PathBuf>,
    created: bool,
    /// The last step written (steps are written in order from 0).
    written: std::cell::Cell<Option<usize>>,
    keep: std::cell::Cell<bool>,
}

impl Drop for Trajectory {
    fn drop(&mut self) {
        let (Some(dir), false) = (&self.dir, self.keep.get()) else {
            return;
        };
        if let Some(last) = self.written.get() {
            for k in 0..=last {
                let _ = std::fs::remove_file(dir.join(format!("step_{k:04}.npy")));
            }
        }
        if self.created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn write_step(dir: &Path, step: usize, x: ArrayView2<f64>, shape: &[usize]) -> anyhow::Result<()> {
    let a = x
        .to_owned()
        .into_shape_with_order(IxDyn(shape))
        .expect("B x d has Z's element count");
    let p = dir.join(format!("step_{step:04}.npy"));
    npy::write_f64(&p, &a).with_context(|| format!("--save-trajectory {}", p.display()))
}

pub fn run(args: &SampleArgs) -> anyhow::Result<()> {
    if args.checkpoint.is_some() {
        return super::sample_checkpoint::run(args);
    }
    let (Some(data_path), Some(noise_path)) = (&args.data, &args.noise) else {
        bail!("give --data and --noise (the optimal denoiser), or --checkpoint DIR (a trained network)");
    };
    crate::output::check(&args.out).context("--out")?;
    let built = args.plan.build()?;
    let plan = &built.plan;
    let (data, _) = npy::read_matrix(data_path).context("--data")?;
    if data.nrows() == 0 || data.ncols() == 0 {
        bail!(
            "--data {}: the dataset is empty (shape {:?})",
            data_path.display(),
            data.dim()
        );
    }
    let (z, _) = npy::read_f64(noise_path).context("--noise")?;
    let shape = z.shape().to_vec();
    let per_sample: usize = shape.iter().skip(1).product();
    if shape.len() < 2 || per_sample != data.ncols() || shape[0] == 0 {
        bail!(
            "--noise {}: shape {:?} does not match the data: it must be B x {} (or B x C x H x W with C*H*W = {}), B >= 1",
            noise_path.display(),
            shape,
            data.ncols(),
            data.ncols()
        );
    }
    let z: Array2<f64> = z
        .into_shape_with_order((shape[0], per_sample))
        .context("--noise: flattening")?;
    // On any error the trajectory written so far is removed again (and its folder, if this run made it).
    let trajectory = Trajectory {
        dir: args.save_trajectory.clone(),
        created: args.save_trajectory.as_ref().is_some_and(|d| !d.exists()),
        written: std::cell::Cell::new(None),
        keep: std::cell::Cell::new(false),
    };
    if let Some(dir) = &args.save_trajectory {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--save-trajectory {}", dir.display()))?;
        let scale = if plan.axis == TimeAxis::Sigma {
            plan.grid[0]
        } else {
            1.0
        };
        trajectory.written.set(Some(0));
        write_step(dir, 0, (&z * scale).view(), &shape)?;
    }
    let mut noise = NoiseStream::new(args.seed);
    let mut saved = 0usize;
    let start = Instant::now();
    let out = match args.backend {
        Backend::Reference => {
            if args.device != DeviceArg::Cpu {
                bail!("--device: the reference backend runs on the CPU only; use --backend accel");
            }
            let mut model = OracleModel {
                denoiser: OptimalDenoiser::new(data.view())?,
            };
            let dir = args.save_trajectory.clone();
            solver::execute(
                plan,
                z.view(),
                &mut model,
                &mut noise,
                &mut |step, _t, x| {
                    if let Some(dir) = &dir {
                        trajectory.written.set(Some(step));
                        write_step(dir, step, x, &shape)
                            .map_err(|e| solver::SolverError::Config(format!("{e:#}")))?;
                        saved += 1;
                    }
                    Ok(())
                },
            )?
        }
        Backend::Accel => {
            let device = open_device(args.device)?;
            let den = accel::OptimalDenoiser::new(&bridge::to_tensor(&data, &device)?)?;
            let zt = bridge::to_tensor(&z, &device)?;
            let dir = args.save_trajectory.clone();
            let x = accel::sampler::execute(
                plan,
                &zt,
                &mut accel::sampler::OracleModel { denoiser: &den },
                &mut noise,
                &mut |step, _t, x| {
                    if let Some(dir) = &dir {
                        let a = bridge::to_array(x)?;
                        trajectory.written.set(Some(step));
                        write_step(dir, step, a.view(), &shape)
                            .map_err(|e| accel::AccelError::Shape(format!("{e:#}")))?;
                        saved += 1;
                    }
                    Ok(())
                },
            )?;
            bridge::to_array(&x)?
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let out_nd = out
        .into_shape_with_order(IxDyn(&shape))
        .expect("same element count");
    npy::write_f64(&args.out, &out_nd).context("--out")?;
    trajectory.keep.set(true);
    let per_stage = match &built.partition {
        Some(p) => nfe_per_stage(plan, p)?,
        None => vec![plan.nfe()],
    };
    let summary = Summary {
        n: data.nrows(),
        d: data.ncols(),
        b: shape[0],
        plan: plan.name.clone(),
        nfe: plan.nfe(),
        nfe_per_stage: per_stage,
        stochastic: plan.is_stochastic(),
        seed: args.seed,
        backend: args.backend,
        seconds,
        out: args.out.clone(),
        trajectory_steps: saved,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "sampled {} points with {} ({} NFE) on {} training points (d = {}) in {:.3} s -> {}",
            summary.b,
            summary.plan,
            summary.nfe,
            summary.n,
            summary.d,
            seconds,
            args.out.display()
        );
    }
    Ok(())
}
