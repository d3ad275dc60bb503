//! `msd sample --checkpoint DIR`: sample a trained network with any sampler plan. The opening and sampling
//! part ([`CheckpointSampler`]) is shared with `msd eval`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

use super::args::{open_device, DeviceArg};
use super::plan::{Built, PlanArgs};
use super::sample::SampleArgs;
use crate::accel::train::checkpoint::{self, CheckpointState};
use crate::accel::unet::MultistageUNet;
use crate::{npy, runs};

#[derive(Debug, Serialize)]
struct Summary {
    checkpoint: PathBuf,
    ema: bool,
    num: usize,
    plan: String,
    nfe: usize,
    nfe_per_stage: Vec<usize>,
    seed: u64,
    seconds: f64,
    out: PathBuf,
    grid: Option<PathBuf>,
}

/// A run directory (its newest checkpoint) or a checkpoint directory.
pub fn resolve_checkpoint(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.join("state.json").exists() {
        return Ok(dir.to_path_buf());
    }
    if !dir.is_dir() {
        bail!("--checkpoint {}: no such directory", dir.display());
    }
    checkpoint::latest_checkpoint(dir)?.with_context(|| {
        format!(
            "--checkpoint {}: neither a checkpoint (state.json) nor a run with checkpoints/",
            dir.display()
        )
    })
}

/// A trained network loaded from a checkpoint, with a sampler plan built for it.
pub(crate) struct CheckpointSampler {
    /// The checkpoint directory (`RUN/checkpoints/step-XXXXXXXX`).
    pub checkpoint: PathBuf,
    pub state: CheckpointState,
    pub net: MultistageUNet,
    pub built: Built,
    pub device: Device,
}

/// What [`CheckpointSampler::sample`] made.
pub(crate) struct Sampled {
    /// [num, C, R, R] f32 in [−1, 1] (not clipped).
    pub images: Tensor,
    /// Network evaluations per stage for one image (every batch runs the same plan).
    pub nfe_per_stage: Vec<usize>,
    pub seconds: f64,
}

impl CheckpointSampler {
    /// Loads the newest checkpoint of `dir` (or the checkpoint `dir`), its EMA weights if `ema`, and builds
    /// the plan of `plan`. Checks `num` and `batch` first, so bad counts fail before any loading.
    pub fn open(
        dir: &Path,
        ema: bool,
        plan: &PlanArgs,
        device: DeviceArg,
        num: usize,
        batch: usize,
    ) -> anyhow::Result<Self> {
        if num == 0 || batch == 0 {
            bail!("--num and --batch must be at least 1");
        }
        let ck = resolve_checkpoint(dir)?;
        let device = open_device(device)?;
        let state = checkpoint::read_state(&ck)?;
        let net = checkpoint::load_model(&ck, ema, &device)?;
        let built = plan.build()?;
        Ok(Self {
            checkpoint: ck,
            state,
            net,
            built,
            device,
        })
    }

    /// The run directory holding this checkpoint (`RUN/checkpoints/step-X` → `RUN`), if it is one.
    pub fn run_dir(&self) -> Option<PathBuf> {
        let run = self.checkpoint.parent()?.parent()?;
        run.join("run.json").exists().then(|| run.to_path_buf())
    }

    /// Samples `num` images in batches of `batch` (see [`runs::sample`] for the noise streams).
    pub fn sample(&self, num: usize, batch: usize, seed: u64) -> anyhow::Result<Sampled> {
        let start = Instant::now();
        let (images, per_stage) = runs::sample(&self.net, &self.built.plan, num, batch, seed)?;
        let batches = num.div_ceil(batch);
        Ok(Sampled {
            images,
            nfe_per_stage: per_stage.iter().map(|c| c / batches).collect(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

pub fn run(args: &SampleArgs) -> anyhow::Result<()> {
    // Output paths are checked before the (long) sampling: a PNG folder must be (or become) a writable
    // folder, a .npy or grid file a writable path.
    let is_npy = args.out.extension().and_then(|e| e.to_str()) == Some("npy");
    if is_npy || !args.out.is_dir() {
        crate::output::check(&args.out).context("--out")?;
    } else {
        crate::output::check(&args.out.join("000000.png")).context("--out")?;
    }
    if let Some(g) = &args.grid {
        crate::output::check(g).context("--grid")?;
    }
    let s = CheckpointSampler::open(
        args.checkpoint.as_ref().expect("checked by the caller"),
        args.ema,
        &args.plan,
        args.device,
        args.num,
        args.batch,
    )?;
    let out = s.sample(args.num, args.batch, args.seed)?;
    let x = &out.images;
    if is_npy {
        let a = ArrayD::from_shape_vec(
            IxDyn(x.dims()),
            x.flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect(),
        )?;
        npy::write_f64(&args.out, &a).context("--out")?;
    } else {
        std::fs::create_dir_all(&args.out).with_context(|| {
            format!("--out {}: cannot create the directory", args.out.display())
        })?;
        for i in 0..args.num {
            let p = args.out.join(format!("{i:06}.png"));
            runs::write_grid_single(&p, &x.narrow(0, i, 1)?)?;
        }
    }
    if let Some(g) = &args.grid {
        runs::write_grid(g, x)?;
    }
    let sum = Summary {
        checkpoint: s.checkpoint.clone(),
        ema: args.ema,
        num: args.num,
        plan: s.built.plan.name.clone(),
        nfe: s.built.plan.nfe(),
        nfe_per_stage: out.nfe_per_stage,
        seed: args.seed,
        seconds: out.seconds,
        out: args.out.clone(),
        grid: args.grid.clone(),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&sum)?);
    } else {
        eprintln!(
            "sampled {} images from {} with {} ({} NFE, per stage {:?}) in {:.2} s -> {}",
            sum.num,
            sum.checkpoint.display(),
            sum.plan,
            sum.nfe,
            sum.nfe_per_stage,
            sum.seconds,
            sum.out.display()
        );
    }
    Ok(())
}
