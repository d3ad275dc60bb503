//! `msd fid` and `msd fid-stats`: the Fréchet distance between two feature sets, and statistics files.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

pub(crate) use super::args::open_device;
use super::args::DeviceArg;
use crate::eval::{self, Extractor, FeatureSpec};
use crate::reference::frechet::frechet_distance;
use crate::stats;

pub(crate) const SPEC_HELP: &str = "\
A SPEC is one of:
  STATS.npz                   mu/sigma statistics (pytorch-fid, clean-fid, or `msd fid-stats`); also stats:FILE
  FEATURES.npy                N x d features (2-D float32/float64); also features:FILE
  IMAGES.npy                  N x H x W or N x C x H x W images (uint8, or floats in [0, 1])
  DIR                         a folder of PNG/JPEG images
  fashion-mnist[:train|:test], cifar10:DIR[:train|:test], images:DIR, npy:FILE   (msd's dataset specs)
Images need --features: inception:WEIGHTS.safetensors (FID Inception-v3, 2048-d pool3; images are resized
to 299 x 299 bilinearly and grey is repeated to RGB, as pytorch-fid does; see README for the weights),
fmnist:CKPT.safetensors (the 128-d features of `msd train-features`, for 28 x 28 grey images) or fmnist
(the same with the checkpoint built into msd; docs/evaluation.md).";

pub(crate) fn load_extractor(
    spec: &Option<FeatureSpec>,
    device: &candle_core::Device,
) -> anyhow::Result<Option<Extractor>> {
    spec.as_ref()
        .map(|s| Extractor::load(s, device))
        .transpose()
}

/// Arguments of `msd fid`.
#[derive(Debug, Clone, Args)]
#[command(after_help = SPEC_HELP)]
pub struct FidArgs {
    /// The first set (e.g. the reference/real data).
    #[arg(long, value_name = "SPEC")]
    pub a: String,
    /// The second set (e.g. generated samples).
    #[arg(long, value_name = "SPEC")]
    pub b: String,
    /// Feature extractor for image SPECs: inception:WEIGHTS.safetensors, fmnist or fmnist:CKPT.safetensors (built in).
    #[arg(long, value_name = "EXTRACTOR")]
    pub features: Option<FeatureSpec>,
    /// Where the extractor runs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct SetSummary {
    spec: String,
    kind: &'static str,
    /// Samples behind the statistics (null for a statistics file, which does not record it).
    n: Option<u64>,
}

#[derive(Debug, Serialize)]
struct FidSummary {
    fid: f64,
    dim: usize,
    features: Option<String>,
    a: SetSummary,
    b: SetSummary,
    seconds: f64,
}

pub fn run_fid(args: &FidArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let device = open_device(args.device)?;
    let ex = load_extractor(&args.features, &device)?;
    let mut sets = Vec::new();
    for (name, spec) in [("--a", &args.a), ("--b", &args.b)] {
        let input = eval::resolve(spec).context(name)?;
        let kind = input.kind();
        let (s, n) = eval::to_stats(input, ex.as_ref(), &device, &format!("{name} {spec}"))?;
        sets.push((
            s,
            SetSummary {
                spec: spec.clone(),
                kind,
                n,
            },
        ));
    }
    let (sb, bsum) = sets.pop().expect("two sets");
    let (sa, asum) = sets.pop().expect("two sets");
    if sa.dim() != sb.dim() {
        bail!(
            "feature dimensions differ: --a has {} and --b has {} (were both made with the same extractor?)",
            sa.dim(),
            sb.dim()
        );
    }
    let fid = frechet_distance(sa.mu.view(), sa.sigma.view(), sb.mu.view(), sb.sigma.view())?;
    let summary = FidSummary {
        fid,
        dim: sa.dim(),
        features: args.features.as_ref().map(|f| f.to_string()),
        a: asum,
        b: bsum,
        seconds: start.elapsed().as_secs_f64(),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        outln!("fid: {fid}");
        outln!("dim: {}", summary.dim);
    }
    Ok(())
}

/// Arguments of `msd fid-stats`.
#[derive(Debug, Clone, Args)]
#[command(after_help = SPEC_HELP)]
pub struct FidStatsArgs {
    /// The set to summarise.
    #[arg(value_name = "SPEC")]
    pub spec: String,
    /// Output statistics file (.npz with float64 `mu` and `sigma`, readable by pytorch-fid and clean-fid). Written through a temporary file; an existing symlink, FIFO or device here is refused, not replaced.
    #[arg(long, value_name = "STATS.npz")]
    pub out: PathBuf,
    /// Feature extractor for image SPECs: inception:WEIGHTS.safetensors, fmnist or fmnist:CKPT.safetensors (built in).
    #[arg(long, value_name = "EXTRACTOR")]
    pub features: Option<FeatureSpec>,
    /// Where the extractor runs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct StatsSummary {
    out: String,
    dim: usize,
    n: Option<u64>,
    kind: &'static str,
}

pub fn run_fid_stats(args: &FidStatsArgs) -> anyhow::Result<()> {
    crate::output::check(&args.out).context("--out")?;
    let device = open_device(args.device)?;
    let ex = load_extractor(&args.features, &device)?;
    let input = eval::resolve(&args.spec)?;
    let kind = input.kind();
    let (s, n) = eval::to_stats(input, ex.as_ref(), &device, &args.spec)?;
    stats::write_npz(&args.out, &s).context("--out")?;
    let summary = StatsSummary {
        out: args.out.display().to_string(),
        dim: s.dim(),
        n,
        kind,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        outln!(
            "wrote {} (dim {}, {} samples)",
            summary.out,
            summary.dim,
            n.map_or("unknown".into(), |n| n.to_string())
        );
    }
    Ok(())
}
