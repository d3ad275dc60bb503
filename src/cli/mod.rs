//! The `msd` command line: clap definitions and dispatch. Each subcommand is a thin layer over library calls.

mod cluster;
mod cluster_plot;
mod denoise;
mod fid;
mod model_info;
mod plan;
mod plot_metrics;
mod prdc;
mod sample;
mod sample_checkpoint;
mod schedule;
mod train;
mod train_features;

use clap::{Parser, Subcommand};

pub use cluster::{ClusterArgs, DataArgs};
pub use denoise::DenoiseArgs;
pub use fid::{FidArgs, FidStatsArgs};
pub use model_info::ModelInfoArgs;
pub use plan::{PlanArgs, PlanCmdArgs};
pub use plot_metrics::PlotMetricsArgs;
pub use prdc::PrdcArgs;
pub use sample::SampleArgs;
pub use schedule::{ScheduleArgs, ScheduleKind, ScheduleParams};
pub use train::TrainArgs;
pub use train_features::TrainFeaturesArgs;

/// Multistage diffusion models (CVPR 2024): exact reference math, a candle backend, and tools.
///
/// Conventions: continuous time t in [0, 1]; x_t = alpha(t)*x0 + sigma(t)*eps; half-log-SNR
/// lambda = log(alpha/sigma). VE/EDM use x = x0 + sigma*n, with SNR-equivalence sigma = sigma_VP/alpha_VP.
#[derive(Debug, Parser)]
#[command(name = "msd", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a noise schedule's quantities at one time (alpha, sigma, lambda, the paper's s and sigma~,
    /// SNR, the VE-equivalent sigma).
    Schedule(ScheduleArgs),
    /// Evaluate the Proposition 1 optimal denoiser of a dataset (.npy, N x d) at queries (.npy, B x d).
    Denoise(DenoiseArgs),
    /// A sampler's evaluation times and their NFE split over stage boundaries (DPM-Solver, DPM-Solver++,
    /// EDM Euler/Heun, DDIM, ancestral, Euler-Maruyama).
    Plan(PlanCmdArgs),
    /// Run a sampler with the Proposition 1 optimal denoiser of a dataset as the model, from given noise.
    Sample(SampleArgs),
    /// Parameters and GFLOPs per stage of a multistage U-Net (preset or TOML config), as a table or JSON.
    ModelInfo(ModelInfoArgs),
    /// Fréchet distance (FID) between two sets: images through a feature extractor, features, or
    /// mu/sigma statistics files.
    Fid(FidArgs),
    /// Write the mu/sigma statistics (.npz, pytorch-fid/clean-fid format) of a set.
    FidStats(FidStatsArgs),
    /// k-NN precision and recall (Kynkäänniemi et al., k = 3), with density and coverage.
    Prdc(PrdcArgs),
    /// Train the Fashion-MNIST feature classifier used for FID-style distances on 28x28 grey images.
    TrainFeatures(TrainFeaturesArgs),
    /// Choose stage boundaries: the optimal-denoiser clustering (Algorithms 1 and 2) or a Table-4 baseline.
    Cluster(ClusterArgs),
    /// Train a multistage U-Net (presets for Fashion-MNIST), with resumable checkpoints and sample grids.
    Train(TrainArgs),
    /// Plot a training run's loss per stage against steps and training FLOPs (SVG).
    PlotMetrics(PlotMetricsArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Schedule(args) => schedule::run(&args),
        Command::Denoise(args) => denoise::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Sample(args) => sample::run(&args),
        Command::ModelInfo(args) => model_info::run(&args),
        Command::Fid(args) => fid::run_fid(&args),
        Command::FidStats(args) => fid::run_fid_stats(&args),
        Command::Prdc(args) => prdc::run(&args),
        Command::TrainFeatures(args) => train_features::run(&args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Train(args) => train::run(&args),
        Command::PlotMetrics(args) => plot_metrics::run(&args),
    }
}
