//! `msd eval --checkpoint DIR`: sample a trained network and score the samples against reference data
//! (FID-style distance, precision/recall), with the sampling cost; appends one `"kind": "eval"` line to the
//! run's `metrics.jsonl`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use ndarray::{s, Array2};
use serde::Serialize;

use super::args::DeviceArg;
use super::fid::{load_extractor, SPEC_HELP};
use super::plan::PlanArgs;
use super::sample_checkpoint::CheckpointSampler;
use crate::accel::unet::model_info;
use crate::eval::{self, Extractor, FeatureSpec, Input};
use crate::reference::frechet::frechet_distance;
use crate::reference::prdc::prdc;
use crate::runs;
use crate::stats::FeatureStats;

/// Arguments of `msd eval`.
#[derive(Debug, Clone, Args)]
#[command(after_help = format!("\
Examples:
  msd eval --checkpoint runs/fm --ema --nfe 20 --num 1000 --ref fashion-mnist:test --features fmnist:F.safetensors
  msd eval --checkpoint runs/fm --solver heun --steps 18 --num 500 --ref stats.npz --features fmnist:F.safetensors

The sampler plan options are those of `msd sample` (default: DPM-Solver, see `msd plan --help`).
Samples of a 32x32 model of 28x28 data (the Fashion-MNIST presets) are cropped back to 28x28.
A statistics .npz as --ref gives the distance only (precision/recall need feature vectors).
The result is appended to RUN/metrics.jsonl as one line with \"kind\": \"eval\" when the checkpoint
belongs to a run directory.

{SPEC_HELP}"))]
pub struct EvalArgs {
    /// A run directory (its newest checkpoint) or a checkpoint directory.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Use the EMA weights.
    #[arg(long)]
    pub ema: bool,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Number of images to sample and score.
    #[arg(long, default_value_t = 1000, value_parser = super::args::limit_count)]
    pub num: usize,
    /// Images per sampling batch.
    #[arg(long, default_value_t = 64, value_parser = super::args::batch_count)]
    pub batch: usize,
    /// Seed of the initial noise (and of stochastic samplers).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The reference set (SPEC below): a dataset, images, features or a statistics .npz.
    #[arg(long = "ref", value_name = "SPEC")]
    pub reference: String,
    /// Use only the first N reference images (or feature rows).
    #[arg(long, value_name = "N", value_parser = super::args::limit_count)]
    pub ref_limit: Option<usize>,
    /// Feature extractor: fmnist:CKPT.safetensors or inception:WEIGHTS.safetensors.
    #[arg(long, value_name = "EXTRACTOR")]
    pub features: Option<FeatureSpec>,
    /// Neighbourhood size of precision/recall.
    #[arg(long, default_value_t = 3, value_parser = super::args::k_count)]
    pub k: usize,
    /// Where the network and the extractor run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Do not append the result to the run's metrics.jsonl.
    #[arg(long)]
    pub no_log: bool,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The metrics line of one evaluation.
#[derive(Debug, Serialize)]
pub struct EvalRecord {
    pub kind: &'static str,
    /// The checkpoint's training step and progress, so quality can be plotted against steps and FLOPs.
    pub step: u64,
    pub images: u64,
    pub train_flops: f64,
    pub checkpoint: PathBuf,
    pub ema: bool,
    pub plan: String,
    pub nfe: usize,
    pub nfe_per_stage: Vec<usize>,
    pub num: usize,
    pub seed: u64,
    pub features: String,
    pub feature_dim: usize,
    #[serde(rename = "ref")]
    pub reference: String,
    /// Reference samples behind the statistics (null for a statistics file).
    pub ref_n: Option<usize>,
    pub fid: f64,
    /// Null when the reference is a statistics file.
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub density: Option<f64>,
    pub coverage: Option<f64>,
    pub k: usize,
    /// True FLOPs of the network evaluations of one sample (2 × MACs of each stage run, per NFE), 10⁹.
    pub sampling_gflops_per_image: f64,
    pub sampling_gflops: f64,
    pub sampling_seconds: f64,
    pub seconds: f64,
}

/// Statistics (and, where known, the feature vectors) of a set.
struct Scored {
    stats: FeatureStats,
    features: Option<Array2<f64>>,
}

fn stats_of(f: Array2<f64>, name: &str) -> anyhow::Result<Scored> {
    let (stats, _) = eval::to_stats(
        Input::Features(f.clone()),
        None,
        &candle_core::Device::Cpu,
        name,
    )?;
    Ok(Scored {
        stats,
        features: Some(f),
    })
}

/// The side of the images the extractor sees: the reference's, checked against the model's samples.
fn image_side(
    input: &Input,
    model_chw: (usize, usize),
    ex: &Extractor,
    spec: &str,
) -> anyhow::Result<usize> {
    let (c, r) = model_chw;
    let fits = |h: usize| h == r || (h == 28 && r == 32);
    let side = match input {
        Input::Images(d) => {
            if d.channels != c || d.height != d.width || !fits(d.height) {
                bail!(
                    "--ref {spec}: images of {}x{}x{} do not match the checkpoint's samples of {c}x{r}x{r}{}",
                    d.channels,
                    d.height,
                    d.width,
                    if r == 32 { " (or 28x28, padded)" } else { "" }
                );
            }
            d.height
        }
        _ if matches!(ex, Extractor::Fmnist(_)) && r == 32 => 28,
        _ => r,
    };
    if matches!(ex, Extractor::Fmnist(_)) && (c != 1 || side != 28) {
        bail!(
            "--features fmnist takes 1x28x28 grey images; the checkpoint samples {c}x{r}x{r} images (use inception:WEIGHTS)"
        );
    }
    Ok(side)
}

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    // Checked before the checkpoint is loaded: nothing can be scored without a feature network.
    let Some(fspec) = &args.features else {
        bail!("--features is required: the samples are scored through a feature network (fmnist, fmnist:CKPT.safetensors or inception:WEIGHTS.safetensors)");
    };
    let sampler = CheckpointSampler::open(
        &args.checkpoint,
        args.ema,
        &args.plan,
        args.device,
        args.num,
        args.batch,
    )?;
    let ex = load_extractor(&args.features, &sampler.device)?.expect("given");
    let spec = &args.reference;
    let mut input = eval::resolve(spec).context("--ref")?;
    if let Some(n) = args.ref_limit {
        input = match input {
            Input::Images(mut d) if d.len() > n => {
                d.images = d.images.slice(s![..n, ..]).to_owned();
                d.labels = d.labels.map(|l| l[..n].to_vec());
                Input::Images(d)
            }
            Input::Features(f) if f.nrows() > n => Input::Features(f.slice(s![..n, ..]).to_owned()),
            other => other,
        };
    }
    let side = image_side(&input, sampler.net.config().input_chw(), &ex, spec)?;
    let name = format!("--ref {spec}");
    let ref_n = match &input {
        Input::Stats(_) => None,
        Input::Features(f) => Some(f.nrows()),
        Input::Images(d) => Some(d.len()),
    };
    let reference = match input {
        Input::Stats(st) => Scored {
            stats: st,
            features: None,
        },
        Input::Features(f) => stats_of(f, &name)?,
        Input::Images(d) => stats_of(
            ex.all_features(&d, &sampler.device)
                .with_context(|| name.clone())?,
            &name,
        )?,
    };
    if reference.stats.dim() != ex.dim() {
        bail!(
            "--ref {spec}: features of dimension {}, but --features {fspec} gives {}",
            reference.stats.dim(),
            ex.dim()
        );
    }
    let out = sampler.sample(args.num, args.batch, args.seed)?;
    let samples = runs::to_dataset(&out.images, side)?;
    let generated = stats_of(
        ex.all_features(&samples, &sampler.device)
            .context("features of the samples")?,
        "the samples",
    )?;
    let (a, b) = (&reference.stats, &generated.stats);
    let fid = frechet_distance(a.mu.view(), a.sigma.view(), b.mu.view(), b.sigma.view())?;
    let pr = match (&reference.features, &generated.features) {
        (Some(fa), Some(fb)) => {
            Some(prdc(fa.view(), fb.view(), args.k).context("precision/recall")?)
        }
        _ => None,
    };
    let info = model_info(&sampler.net)?;
    let per_image: f64 = out
        .nfe_per_stage
        .iter()
        .zip(&info.stages)
        .map(|(&n, s)| n as f64 * s.flops as f64)
        .sum();
    let st = &sampler.state;
    let rec = EvalRecord {
        kind: "eval",
        step: st.step,
        images: st.images,
        train_flops: st.train_flops,
        checkpoint: sampler.checkpoint.clone(),
        ema: args.ema,
        plan: sampler.built.plan.name.clone(),
        nfe: sampler.built.plan.nfe(),
        nfe_per_stage: out.nfe_per_stage.clone(),
        num: args.num,
        seed: args.seed,
        features: fspec.to_string(),
        feature_dim: ex.dim(),
        reference: spec.clone(),
        ref_n,
        fid,
        precision: pr.as_ref().map(|p| p.precision),
        recall: pr.as_ref().map(|p| p.recall),
        density: pr.as_ref().map(|p| p.density),
        coverage: pr.as_ref().map(|p| p.coverage),
        k: args.k,
        sampling_gflops_per_image: per_image / 1e9,
        sampling_gflops: per_image * args.num as f64 / 1e9,
        sampling_seconds: out.seconds,
        seconds: start.elapsed().as_secs_f64(),
    };
    let line = serde_json::to_string(&rec)?;
    let logged = match (args.no_log, sampler.run_dir()) {
        (false, Some(run)) => {
            let p = run.join("metrics.jsonl");
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .with_context(|| format!("cannot open {}", p.display()))?;
            writeln!(f, "{line}").with_context(|| format!("cannot write {}", p.display()))?;
            Some(p)
        }
        _ => None,
    };
    if args.json {
        outln!("{line}");
    } else {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        outln!(
            "checkpoint       {} (step {})",
            rec.checkpoint.display(),
            rec.step
        );
        outln!(
            "plan             {} ({} NFE, per stage {:?})",
            rec.plan,
            rec.nfe,
            rec.nfe_per_stage
        );
        outln!(
            "samples          {} (seed {}, {})",
            rec.num,
            rec.seed,
            if rec.ema { "EMA" } else { "raw weights" }
        );
        outln!(
            "reference        {} ({} samples)",
            rec.reference,
            rec.ref_n.map_or("stats".into(), |n| n.to_string())
        );
        outln!("features         {} ({}-d)", rec.features, rec.feature_dim);
        outln!("FID              {:.4}", rec.fid);
        outln!("precision        {}", opt(rec.precision));
        outln!("recall           {}", opt(rec.recall));
        outln!(
            "sampling GFLOPs  {:.4} per image, {:.4} in all",
            rec.sampling_gflops_per_image,
            rec.sampling_gflops
        );
        outln!(
            "wall time        {:.2} s sampling, {:.2} s in all",
            rec.sampling_seconds,
            rec.seconds
        );
    }
    match logged {
        Some(p) => eprintln!("appended to {}", p.display()),
        None if !args.no_log => eprintln!(
            "{} is not inside a run directory: nothing appended to a metrics.jsonl",
            rec.checkpoint.display()
        ),
        None => {}
    }
    Ok(())
}
