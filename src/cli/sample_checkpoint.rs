//! `msd sample --checkpoint DIR`: sample a trained network with any sampler plan.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use ndarray::{ArrayD, IxDyn};
use serde::Serialize;

use super::denoise::DeviceArg;
use super::sample::SampleArgs;
use crate::accel::train::checkpoint;
use crate::accel::{self, DeviceKind};
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

pub fn run(args: &SampleArgs) -> anyhow::Result<()> {
    let ck = resolve_checkpoint(args.checkpoint.as_ref().expect("checked by the caller"))?;
    if args.num == 0 || args.batch == 0 {
        bail!("--num and --batch must be at least 1");
    }
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
    let device = accel::device(match args.device {
        DeviceArg::Cpu => DeviceKind::Cpu,
        DeviceArg::Cuda => DeviceKind::Cuda(0),
    })?;
    let net = checkpoint::load_model(&ck, args.ema, &device)?;
    let built = args.plan.build()?;
    let start = Instant::now();
    let (x, per_stage) = runs::sample(&net, &built.plan, args.num, args.batch, args.seed)?;
    let seconds = start.elapsed().as_secs_f64();
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
        runs::write_grid(g, &x)?;
    }
    let s = Summary {
        checkpoint: ck,
        ema: args.ema,
        num: args.num,
        plan: built.plan.name.clone(),
        nfe: built.plan.nfe(),
        nfe_per_stage: per_stage
            .iter()
            .map(|c| c / args.num.div_ceil(args.batch))
            .collect(),
        seed: args.seed,
        seconds,
        out: args.out.clone(),
        grid: args.grid.clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        eprintln!(
            "sampled {} images from {} with {} ({} NFE, per stage {:?}) in {:.2} s -> {}",
            s.num,
            s.checkpoint.display(),
            s.plan,
            s.nfe,
            s.nfe_per_stage,
            seconds,
            s.out.display()
        );
    }
    Ok(())
}
