//! `msd train`: train a multistage U-Net, with a progress bar, JSONL metrics, PNG sample grids and resumable
//! checkpoints (layout in `msd_accel::train::checkpoint`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context};
use clap::{Args, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use super::denoise::DeviceArg;
use super::plan::PlanArgs;
use crate::accel::train::checkpoint::{self, RunInfo, MSD_VERSION};
use crate::accel::train::{StageSchedule, TrainConfig, TrainError, Trainer};
use crate::accel::unet::{Family, MultistageUNet, UNetConfig};
use crate::accel::{self, DeviceKind};
use crate::data::{self, DataSpec, LoadOptions, DATA_SPEC_HELP};
use crate::runs;

/// Arguments of `msd train`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  msd train --preset fmnist-ncsnpp-multistage --data fashion-mnist --out runs/fm --steps 2000
  msd train --resume runs/fm --steps 4000

Presets: fmnist-ncsnpp-multistage, fmnist-ncsnpp-multistage-wide, fmnist-ncsnpp-unified, or any model preset of `msd model-info`
(with small default training settings). --config FILE.toml holds [model] (a model config as in
`msd model-info --config`) and optionally [train] (training settings; see docs/training.md).
The run directory gets run.json, metrics.jsonl, samples/ and checkpoints/step-XXXXXXXX/.
Ctrl-C (or SIGTERM) writes a checkpoint and exits with status 130; a second Ctrl-C stops at once.
--resume DIR continues bit-identically on the CPU (from step 0 if the run has no checkpoint yet).")]
pub struct TrainArgs {
    /// A training preset (model and training settings).
    #[arg(long, conflicts_with_all = ["config", "resume"])]
    pub preset: Option<String>,
    /// A TOML file with [model] and optional [train] tables.
    #[arg(long, value_name = "FILE.toml", conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Continue the run in DIR from its newest checkpoint.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Training data (default fashion-mnist; on --resume, the run's data).
    #[arg(long, help = format!("Training data: {DATA_SPEC_HELP} (default fashion-mnist; on --resume the run's)"))]
    pub data: Option<String>,
    /// Use only the first N images of the data.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The run directory (must not exist or be empty).
    #[arg(long, value_name = "DIR", required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Total optimiser steps.
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub batch: Option<usize>,
    /// Gradient accumulation rounds per step.
    #[arg(long)]
    pub accum: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Stage schedule: random, round-robin, all, proportional, mixed.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Stage boundaries in the model's time unit (comma-separated, increasing).
    #[arg(long, value_delimiter = ',')]
    pub boundaries: Option<Vec<f64>>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Keep the last K checkpoints.
    #[arg(long)]
    pub keep: Option<usize>,
    /// Write a sample grid every N steps (0: only at the end).
    #[arg(long)]
    pub sample_every: Option<u64>,
    /// Images per sample grid.
    #[arg(long, default_value_t = 36)]
    pub sample_num: usize,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// No progress bar (one line every 10% instead).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    model: UNetConfig,
    #[serde(default)]
    train: Option<TrainConfig>,
}

static STOP: AtomicBool = AtomicBool::new(false);

/// The first SIGINT/SIGTERM asks the loop to write a checkpoint and stop; a second one stops at once (by
/// the signal; an unfinished checkpoint directory is removed by the next run).
extern "C" fn on_stop(sig: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: signal and raise are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

fn install_stop_handler() {
    // SAFETY: the handler only touches an atomic and calls async-signal-safe functions.
    unsafe {
        let h = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }
}

/// A default sampler plan for the grids of a family (DPM-Solver-3 on VP, Heun on EDM, DPM-Solver on LDM).
pub fn default_plan(model: &UNetConfig) -> anyhow::Result<crate::accel::sampler::Plan> {
    #[derive(Parser)]
    struct P {
        #[command(flatten)]
        plan: PlanArgs,
    }
    let args: &[&str] = match model.family {
        Family::Ncsnpp(_) => &["p", "--solver", "dpm-solver", "--nfe", "20"],
        Family::Ddpmpp(_) => &["p", "--solver", "heun", "--steps", "18"],
        Family::Ldm(_) => &[
            "p",
            "--solver",
            "dpm-solver",
            "--schedule",
            "ldm",
            "--nfe",
            "20",
        ],
    };
    Ok(P::try_parse_from(args)?.plan.build()?.plan)
}

/// Free bytes on the file system of `dir` (None where unknown).
#[allow(clippy::unnecessary_cast)] // the statvfs field types differ between platforms
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and s a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then_some(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Checks the run directory before any training: creatable, writable, enough space for two checkpoints.
fn check_out_dir(dir: &Path, fresh: bool, param_bytes: u64) -> anyhow::Result<()> {
    if fresh && dir.exists() {
        if dir.join("run.json").exists() {
            bail!(
                "--out {}: this directory already holds a run (run.json); continue it with --resume {} or choose another directory",
                dir.display(),
                dir.display()
            );
        }
        if fs::read_dir(dir)
            .with_context(|| format!("--out {}", dir.display()))?
            .next()
            .is_some()
        {
            bail!("--out {}: the directory is not empty", dir.display());
        }
    }
    fs::create_dir_all(dir.join("samples"))
        .with_context(|| format!("--out {}: cannot create the run directory", dir.display()))?;
    let probe = dir.join(".msd-write-probe");
    fs::write(&probe, b"probe")
        .with_context(|| format!("--out {}: the directory is not writable", dir.display()))?;
    fs::remove_file(&probe).ok();
    // A checkpoint holds the weights, the EMA and two moments: 4 copies; keep room for two of them.
    let need = 8 * param_bytes + (1 << 20);
    if let Some(free) = free_bytes(dir) {
        if free < need {
            bail!(
                "--out {}: only {} MB free, a checkpoint needs about {} MB (two are kept while writing)",
                dir.display(),
                free >> 20,
                need >> 20
            );
        }
    }
    Ok(())
}

fn load_data(
    spec: &str,
    limit: Option<usize>,
    model: &UNetConfig,
    device: &candle_core::Device,
) -> anyhow::Result<candle_core::Tensor> {
    let spec: DataSpec = spec.parse()?;
    let opts = LoadOptions {
        limit,
        ..LoadOptions::default()
    };
    let ds = data::load(&spec, &opts)?;
    runs::prepare(&ds, model, device)
}

fn apply_overrides(args: &TrainArgs, cfg: &mut TrainConfig) -> anyhow::Result<()> {
    if let Some(v) = args.steps {
        cfg.steps = v;
    }
    if let Some(v) = args.batch {
        cfg.batch = v;
    }
    if let Some(v) = args.accum {
        cfg.accum = v;
    }
    if let Some(v) = args.lr {
        cfg.lr = v;
    }
    if let Some(v) = args.warmup {
        cfg.warmup_steps = v;
    }
    if let Some(s) = &args.schedule {
        cfg.schedule = StageSchedule::parse(s).with_context(|| {
            format!(
                "--schedule {s:?} is unknown; expected one of {}",
                StageSchedule::NAMES
            )
        })?;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = args.checkpoint_every {
        cfg.checkpoint_every = v;
    }
    if let Some(v) = args.keep {
        cfg.keep_checkpoints = v;
    }
    if let Some(v) = args.sample_every {
        cfg.sample_every = v;
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("training settings: {e}"))
}

fn write_grid(tr: &Trainer, dir: &Path, name: &str, num: usize) -> anyhow::Result<PathBuf> {
    let ema = tr.ema_model()?;
    let plan = default_plan(ema.config())?;
    let (x, _) = runs::sample(&ema, &plan, num, num.min(64), 0)?;
    let p = dir.join("samples").join(name);
    runs::write_grid(&p, &x)?;
    Ok(p)
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let device = accel::device(match args.device {
        DeviceArg::Cpu => DeviceKind::Cpu,
        DeviceArg::Cuda => DeviceKind::Cuda(0),
    })?;
    let (mut tr, dir) = if let Some(dir) = &args.resume {
        if args.boundaries.is_some() {
            bail!("--boundaries cannot change when resuming a run");
        }
        if !dir.join("run.json").exists() {
            bail!("--resume {}: no run here (no run.json)", dir.display());
        }
        let info = checkpoint::read_run_info(dir)?;
        let spec = args.data.clone().unwrap_or_else(|| info.data.clone());
        let x = load_data(&spec, args.limit.or(info.limit), &info.model, &device)?;
        let mut tr = match checkpoint::latest_checkpoint(dir)? {
            Some(ck) => {
                let tr = checkpoint::resume(&ck, x, &device, args.steps)?;
                eprintln!("resuming {} at step {}", ck.display(), tr.progress.step);
                tr
            }
            None => {
                // Stopped before its first checkpoint: the run starts over from run.json, which gives the
                // same run (initialisation and data order are functions of the seed).
                eprintln!(
                    "{}: no checkpoint yet; starting the run from step 0",
                    dir.display()
                );
                let net = MultistageUNet::new(&info.model, &device, info.train.seed)?;
                let mut cfg = info.train.clone();
                if let Some(s) = args.steps {
                    cfg.steps = s;
                }
                Trainer::new(net, cfg, x)?
            }
        };
        let mut cfg = tr.cfg.clone();
        apply_overrides(args, &mut cfg)?;
        if cfg.seed != tr.cfg.seed || cfg.batch != tr.cfg.batch || cfg.schedule != tr.cfg.schedule {
            bail!("--seed, --batch and --schedule cannot change when resuming (bit-identical continuation)");
        }
        tr.cfg = cfg;
        check_out_dir(dir, false, 0)?;
        (tr, dir.clone())
    } else {
        let (mut model, mut cfg) = match (&args.preset, &args.config) {
            (Some(p), None) => runs::train_preset(p)?,
            (None, Some(path)) => {
                let text = fs::read_to_string(path)
                    .with_context(|| format!("--config {}", path.display()))?;
                let c: ConfigFile = toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
                (c.model, c.train.unwrap_or_default())
            }
            _ => bail!("give --preset NAME or --config FILE.toml (or --resume DIR)"),
        };
        if let Some(b) = &args.boundaries {
            model.boundaries = b.clone();
        }
        model
            .validate()
            .map_err(|e| anyhow::anyhow!("model config: {e}"))?;
        apply_overrides(args, &mut cfg)?;
        let dir = args.out.clone().expect("clap requires --out");
        let spec = args.data.clone().unwrap_or_else(|| "fashion-mnist".into());
        let x = load_data(&spec, args.limit, &model, &device)?;
        let net = MultistageUNet::new(&model, &device, cfg.seed)?;
        let param_bytes: u64 = net.store().params().iter().map(|p| 4 * p.numel()).sum();
        check_out_dir(&dir, true, param_bytes)?;
        let info = RunInfo {
            msd_version: MSD_VERSION.to_string(),
            model: model.clone(),
            train: cfg.clone(),
            data: spec,
            limit: args.limit,
        };
        checkpoint::write_atomic(&dir.join("run.json"), &serde_json::to_string_pretty(&info)?)?;
        (Trainer::new(net, cfg, x)?, dir)
    };
    install_stop_handler();
    let metrics_path = dir.join("metrics.jsonl");
    let mut metrics = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot open {}", metrics_path.display()))?;
    let total = tr.cfg.steps;
    let start = tr.progress.step;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}")
                .expect("valid template"),
        );
        b.set_position(start);
        b
    };
    let keep = tr.cfg.keep_checkpoints;
    let mut last_ck: Option<PathBuf> = checkpoint::latest_checkpoint(&dir)?;
    while tr.progress.step < total {
        if STOP.load(Ordering::SeqCst) {
            let ck = checkpoint::save_checkpoint(&dir, &tr, keep)?;
            bar.abandon();
            eprintln!(
                "interrupted: checkpoint {} written; continue with: msd train --resume {}",
                ck.display(),
                dir.display()
            );
            return Err(super::Interrupted.into());
        }
        let rep = match tr.step() {
            Ok(r) => r,
            Err(e @ TrainError::NonFiniteLoss { .. }) => {
                bar.abandon();
                let kept = last_ck
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none yet".into());
                bail!("{e} (last good checkpoint: {kept})");
            }
            Err(e) => return Err(e.into()),
        };
        let p = &tr.progress;
        let line = serde_json::json!({
            "kind": "train",
            "step": rep.step,
            "loss": rep.loss,
            "loss_per_stage": rep.loss_per_stage,
            "lr": rep.lr,
            "train_flops": p.train_flops,
            "images": p.images,
            "seconds": p.seconds,
        });
        writeln!(metrics, "{line}")
            .with_context(|| format!("cannot write {}", metrics_path.display()))?;
        let per: Vec<String> = rep
            .loss_per_stage
            .iter()
            .map(|l| l.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into()))
            .collect();
        bar.set_message(format!("loss {:.4} [{}]", rep.loss, per.join(" ")));
        bar.set_position(rep.step);
        if args.quiet && (rep.step % (total / 10).max(1) == 0) {
            eprintln!(
                "step {}/{} loss {:.4} [{}]",
                rep.step,
                total,
                rep.loss,
                per.join(" ")
            );
        }
        if tr.cfg.checkpoint_every > 0
            && rep.step % tr.cfg.checkpoint_every == 0
            && rep.step < total
        {
            last_ck = Some(checkpoint::save_checkpoint(&dir, &tr, keep)?);
        }
        if tr.cfg.sample_every > 0 && rep.step % tr.cfg.sample_every == 0 && rep.step < total {
            write_grid(
                &tr,
                &dir,
                &format!("step-{:08}.png", rep.step),
                args.sample_num,
            )?;
        }
    }
    bar.finish();
    let ck = checkpoint::save_checkpoint(&dir, &tr, keep)?;
    let grid = write_grid(
        &tr,
        &dir,
        &format!("step-{:08}.png", tr.progress.step),
        args.sample_num,
    )?;
    eprintln!(
        "trained {} steps ({:.1} s of steps, {:.3e} training FLOPs)\n  checkpoint: {}\n  samples:    {}\n  metrics:    {}",
        tr.progress.step,
        tr.progress.seconds,
        tr.progress.train_flops,
        ck.display(),
        grid.display(),
        metrics_path.display()
    );
    Ok(())
}
