//! The `msd` command line: clap definitions and dispatch. Each subcommand is a thin layer over library calls.

mod cluster;
mod cluster_plot;
mod denoise;
mod schedule;

use clap::{Parser, Subcommand};

pub use cluster::{ClusterArgs, DataArgs};
pub use denoise::DenoiseArgs;
pub use schedule::{ScheduleArgs, ScheduleKind, ScheduleParams};

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
    /// Choose stage boundaries: the optimal-denoiser clustering (Algorithms 1 and 2) or a Table-4 baseline.
    Cluster(ClusterArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Schedule(args) => schedule::run(&args),
        Command::Denoise(args) => denoise::run(&args),
        Command::Cluster(args) => cluster::run(&args),
    }
}
