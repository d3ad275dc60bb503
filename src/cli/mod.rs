//! The `msd` command line: clap definitions and dispatch. Each subcommand is a thin layer over library calls.

/// `println!` that fails with an error (one line, exit 1) instead of panicking when standard output cannot
/// be written, e.g. `> /dev/full`. A closed pipe ends msd quietly through SIGPIPE (see main).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::cli::stdout_error)?
    }};
}

/// `print!` with the same error handling as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*).map_err($crate::cli::stdout_error)?
    }};
}

mod args;
mod cluster;
mod cluster_plot;
mod denoise;
mod eval_checkpoint;
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

pub use args::{Backend, DataArgs, DeviceArg};
pub use cluster::ClusterArgs;
pub use denoise::DenoiseArgs;
pub use eval_checkpoint::EvalArgs;
pub use fid::{FidArgs, FidStatsArgs};
pub use model_info::{plan_nfe_per_stage_from_json, ModelInfoArgs};
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
    /// Run a sampler with a trained network (--checkpoint) or the Proposition 1 optimal denoiser of a dataset
    /// (--data, --noise) as the model.
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
    /// Plot a training run's loss per stage against steps and training FLOPs (SVG or PNG).
    PlotMetrics(PlotMetricsArgs),
    /// Sample a trained network and score it against reference data (FID-style distance, precision,
    /// recall, NFE and GFLOPs of sampling); appends the result to the run's metrics.jsonl.
    Eval(EvalArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    run_command(cli)?;
    use std::io::Write as _;
    std::io::stdout().flush().map_err(stdout_error)
}

/// A command stopped by SIGINT/SIGTERM after saving its state (`msd train` writes a checkpoint): the
/// message is already printed; the binary exits with [`Interrupted::EXIT_CODE`].
#[derive(Debug)]
pub struct Interrupted;

impl Interrupted {
    /// 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C: an interrupted run is not a
    /// finished one (`msd train … && msd sample …` stops).
    pub const EXIT_CODE: u8 = 130;
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// The error of a failed write to standard output.
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot write to standard output: {}",
        crate::limits::io_message(&e)
    )
}

/// Folds a message onto one line (candle and LAPACK errors can span several).
pub fn one_line(s: &str) -> String {
    let parts: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    parts.join("; ")
}

/// Rewrites numbers of more than 17 digits (what `{}` makes of 1e300) in scientific notation.
fn tidy_numbers(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit()
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
        {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                j += 1;
            }
            let tok = &s[i..j];
            let digits = tok.bytes().filter(u8::is_ascii_digit).count();
            match tok.parse::<f64>() {
                Ok(v) if digits > 17 => out.push_str(&format!("{v:e}")),
                _ => out.push_str(tok),
            }
            i = j;
        } else {
            let ch = s[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// An error and its causes as one line: causes whose text the message already holds are not repeated
/// (thiserror messages often quote their source), and I/O errors lose their "(os error N)" suffix.
pub fn error_line(err: &anyhow::Error) -> String {
    let strip = |t: String| match t.rfind(" (os error ") {
        Some(i) if t.ends_with(')') => t[..i].to_string(),
        _ => t,
    };
    let mut msg = strip(err.to_string());
    for cause in err.chain().skip(1) {
        let t = strip(cause.to_string());
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
    }
    tidy_numbers(&one_line(&msg))
}

/// Prints a clap error as one line (help and version print as usual) and gives the exit code.
pub fn clap_exit(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return match e.print() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(io) => {
                eprintln!("error: {}", one_line(&stdout_error(io).to_string()));
                std::process::ExitCode::FAILURE
            }
        };
    }
    let text = e.render().to_string();
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| {
            !l.is_empty() && !l.starts_with("tip:") && !l.starts_with("For more information")
        })
        .collect();
    let mut line = kept.join(" ");
    if !line.starts_with("error:") {
        line = format!("error: {line}");
    }
    eprintln!("{}", tidy_numbers(&line));
    std::process::ExitCode::from(2)
}

fn run_command(cli: Cli) -> anyhow::Result<()> {
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
        Command::Eval(args) => eval_checkpoint::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_numbers_become_scientific() {
        let big = format!("--eta {}: must be finite", 1e300);
        assert_eq!(tidy_numbers(&big), "--eta 1e300: must be finite");
        assert_eq!(tidy_numbers("shape [3, 4] at 0.5"), "shape [3, 4] at 0.5");
        assert_eq!(
            tidy_numbers("x1234567890123456789y"),
            "x1234567890123456789y"
        );
    }

    #[test]
    fn causes_are_not_repeated() {
        let io = std::io::Error::from_raw_os_error(2);
        let e = anyhow::Error::new(io).context("f.npy: cannot read: No such file or directory");
        assert_eq!(
            error_line(&e),
            "f.npy: cannot read: No such file or directory"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_line(&e), "outer: inner");
    }
}
