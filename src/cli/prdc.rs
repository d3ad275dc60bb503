//! `msd prdc`: k-NN precision and recall (Kynkäänniemi et al.), with density and coverage (Naeem et al.).

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::args::{open_device, DeviceArg};
use super::fid::{load_extractor, SPEC_HELP};
use crate::eval::{self, FeatureSpec};
use crate::reference::prdc::prdc;

/// Arguments of `msd prdc`.
#[derive(Debug, Clone, Args)]
#[command(after_help = SPEC_HELP)]
pub struct PrdcArgs {
    /// The real (reference) set: precision is the fraction of --b inside its k-NN manifold.
    #[arg(long, value_name = "SPEC")]
    pub a: String,
    /// The generated set: recall is the fraction of --a inside its k-NN manifold.
    #[arg(long, value_name = "SPEC")]
    pub b: String,
    /// Neighbourhood size: each sample's ball reaches its k-th nearest neighbour (the paper uses 3; 1 to 10000).
    #[arg(long, default_value_t = 3, value_parser = super::args::k_count, allow_negative_numbers = true)]
    pub k: usize,
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
struct PrdcSummary {
    precision: f64,
    recall: f64,
    density: f64,
    coverage: f64,
    k: usize,
    n_a: usize,
    n_b: usize,
    dim: usize,
}

pub fn run(args: &PrdcArgs) -> anyhow::Result<()> {
    let device = open_device(args.device)?;
    let ex = load_extractor(&args.features, &device)?;
    let a = eval::to_features(
        eval::resolve(&args.a).context("--a")?,
        ex.as_ref(),
        &device,
        &format!("--a {}", args.a),
    )?;
    let b = eval::to_features(
        eval::resolve(&args.b).context("--b")?,
        ex.as_ref(),
        &device,
        &format!("--b {}", args.b),
    )?;
    let r = prdc(a.view(), b.view(), args.k)?;
    let s = PrdcSummary {
        precision: r.precision,
        recall: r.recall,
        density: r.density,
        coverage: r.coverage,
        k: args.k,
        n_a: a.nrows(),
        n_b: b.nrows(),
        dim: a.ncols(),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&s)?);
    } else {
        outln!("precision: {}", s.precision);
        outln!("recall: {}", s.recall);
        outln!("density: {}", s.density);
        outln!("coverage: {}", s.coverage);
    }
    Ok(())
}
