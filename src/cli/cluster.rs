//! `msd cluster`: choose stage boundaries with the optimal-denoiser methods (Algorithms 1 and 2) or the
//! Table-4 baselines.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

pub use super::args::DataArgs;
use super::args::{ScheduleKind, ScheduleParams};
use crate::reference::cluster::baselines::{gradient_baseline, snr_baseline, timestep_baseline};
use crate::reference::cluster::optimal::{
    self, Alg1Config, Alg2Config, Comparison, Criterion, Objective, Space,
};
use crate::reference::{OptimalDenoiser, Schedule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The paper's optimal-denoiser clustering (Algorithm 1 for 3 stages, Algorithm 2 otherwise).
    OptimalDenoiser,
    /// Baseline: uniform timesteps, through the authors' size-constrained DP (cost: |t - median|).
    Timestep,
    /// Baseline: log-SNR, through the authors' size-constrained DP (cost: |2(lambda(median) - lambda(t))|).
    Snr,
    /// Baseline: gradient task affinity (G x G cosine similarities on t = j/G), read from --gradient A.npy or
    /// computed from a trained network (--gradient-checkpoint DIR).
    Gradient,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum AlgorithmArg {
    /// Algorithm 1 when --stages is 3, Algorithm 2 otherwise (the paper's practice).
    Auto,
    /// Algorithm 1 (t1, t2; --stages must be 3).
    #[value(name = "1")]
    One,
    /// Algorithm 2 (similarity matrix on a grid, exact DP).
    #[value(name = "2")]
    Two,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GradParamsArg {
    /// The parameters every stage uses: the shared encoder (all parameters of a one-stage model).
    Shared,
    /// Every parameter (a stage's loss has zero gradient on the other stages' decoders).
    All,
}

/// Arguments of `msd cluster`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  msd cluster --data fashion-mnist --stages 3 --samples 50000 --json      (Algorithm 1, paper settings)
  msd cluster --data fashion-mnist --stages 4 --grid-step 0.05 --objective authors --space x0
  msd cluster --method snr --stages 3                                     (Table 4: 0.348, 0.709)

Defaults follow the paper: eta = 2/256 on [0, 1] pixels, <= eta, eps* space, alpha = 0.9, K = 5e4 draws with
t ~ U[t-min, 1], 1e4 tau values (tau = j/1e4), Algorithm-2 grid step 0.025 from t-min = 0.001.
The authors' code differs: < eta (and 2/255 in one notebook), x0 space for Algorithm 2, grid step 0.05, and
the 'authors' objective. Boundaries are times t of --schedule; sigma_boundaries are their SNR-equivalent VE
sigmas (sigma/alpha). With --schedule edm the clustering runs on the vp-linear time axis (--beta-min/--beta-max)
and sigma_boundaries are the EDM sigmas.")]
pub struct ClusterArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Clustering method.
    #[arg(long, value_enum, default_value_t = Method::OptimalDenoiser)]
    pub method: Method,
    /// Number of stages n (2 to 1000).
    #[arg(long, default_value_t = 3, value_parser = super::args::stages_count, allow_negative_numbers = true)]
    pub stages: usize,
    /// optimal-denoiser: which algorithm.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::Auto)]
    pub algorithm: AlgorithmArg,
    /// Algorithm 1: the mean-similarity threshold alpha, in (0, 1].
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Per-pixel threshold eta on the [0, 1] pixel scale (2/256 = 0.0078125).
    #[arg(long, default_value_t = 2.0 / 256.0, allow_negative_numbers = true)]
    pub eta: f64,
    /// Draws K [default: 50000 for Algorithm 1 (y, eps, t); 1000 for Algorithm 2 (y, eps), each evaluated at
    /// every grid time].
    #[arg(long, value_name = "K", value_parser = super::args::draws_count, allow_negative_numbers = true)]
    pub samples: Option<usize>,
    /// Random seed (same seed, same result).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Algorithm 2: grid step (paper 0.025, authors 0.05); the grid is t-min, t-min + step, ..., then 1.
    #[arg(long, default_value_t = 0.025, allow_negative_numbers = true)]
    pub grid_step: f64,
    /// Smallest time eps_t: t ~ U[t-min, 1] (Algorithm 1) and the first grid node (Algorithm 2).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub t_min: f64,
    /// Algorithm 1: number of tau values of the grid search (tau = j/G, j = 1..G; at most 10^7).
    #[arg(long, default_value_t = 10_000, value_parser = super::args::draws_count, allow_negative_numbers = true)]
    pub tau_grid: usize,
    /// Space of the functional distance.
    #[arg(long, value_enum, default_value_t = Space::Eps)]
    pub space: Space,
    /// Comparison with eta.
    #[arg(long, value_enum, default_value_t = Comparison::Le)]
    pub compare: Comparison,
    /// Algorithm 2 objective.
    #[arg(long, value_enum, default_value_t = Objective::Paper)]
    pub objective: Objective,
    /// timestep/snr baselines: number of grid points t = j/G (the authors' 1000; 2 to 5000).
    #[arg(long, default_value_t = 1000, value_parser = super::args::grid_count, allow_negative_numbers = true)]
    pub baseline_grid: usize,
    /// gradient baseline: the G x G affinity matrix (.npy).
    #[arg(long, value_name = "A.npy")]
    pub gradient: Option<PathBuf>,
    /// gradient baseline: compute the matrix from a trained network instead: a run directory (its newest
    /// checkpoint) or a checkpoint directory. The fixed batch comes from --data (default: the run's data).
    #[arg(long, value_name = "DIR", conflicts_with = "gradient")]
    pub gradient_checkpoint: Option<PathBuf>,
    /// With --gradient-checkpoint: grid points t = j/G (the authors' 100; 2 to 5000).
    #[arg(long, default_value_t = 100, value_parser = super::args::grid_count, allow_negative_numbers = true)]
    pub gradient_grid: usize,
    /// With --gradient-checkpoint: images of the fixed batch, drawn from the data with --seed (1 to 65536).
    #[arg(long, default_value_t = 8, value_parser = super::args::batch_count, allow_negative_numbers = true)]
    pub gradient_batch: usize,
    /// With --gradient-checkpoint: the parameters whose gradients are compared.
    #[arg(long, value_enum, default_value_t = GradParamsArg::Shared)]
    pub gradient_params: GradParamsArg,
    /// With --gradient-checkpoint: use the EMA weights.
    #[arg(long)]
    pub gradient_ema: bool,
    /// Algorithm 2: write the similarity matrix (G x G float64 .npy) for later runs. Written through a temporary file; an existing symlink, FIFO or device here is refused, not replaced.
    #[arg(long, value_name = "S.npy")]
    pub save_similarity: Option<PathBuf>,
    /// Algorithm 2: read the similarity matrix from an earlier --save-similarity (same --grid-step/--t-min)
    /// instead of computing it; --data is then not needed.
    #[arg(long, value_name = "S.npy", conflicts_with = "save_similarity")]
    pub similarity: Option<PathBuf>,
    /// Noise schedule of the clustering.
    #[arg(long, value_enum, default_value_t = ScheduleKind::VpLinear)]
    pub schedule: ScheduleKind,
    #[command(flatten)]
    pub params: ScheduleParams,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write a plot (SVG): S0(t), S1(t) with t1/t2 (Algorithm 1) or the S heat map (Algorithm 2).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Everything `msd cluster --json` prints: the fields every method has, then those of its outcome.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub method: Method,
    pub stages: usize,
    /// Interior boundaries in t (a boundary belongs to the lower stage).
    pub boundaries: Vec<f64>,
    pub schedule: ScheduleKind,
    /// The schedule whose time axis the boundaries are on (vp-linear for --schedule edm).
    pub time_axis: String,
    /// SNR-equivalent VE/EDM sigma of each boundary (sigma/alpha on the time axis).
    pub sigma_boundaries: Vec<f64>,
    /// Draws of the optimal-denoiser methods (null for the baselines and a reused similarity matrix).
    pub samples: Option<usize>,
    pub seed: u64,
    pub seconds: f64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What a method produced, tagged `"outcome"` in the JSON; the other field names are those of earlier
/// versions (`algorithm` stays the number 1 or 2).
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// A Table-4 baseline through the authors' size-constrained DP.
    Baseline {
        /// The DP's start index of each stage after the first, on its grid.
        start_indices: Vec<usize>,
        /// The DP's cost at the optimum.
        objective_value: f64,
        /// The gradient baseline computed from a checkpoint: how, and the matrix.
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        gradient: Option<GradientRun>,
    },
    /// Algorithm 1 (t1, t2).
    Algorithm1 {
        /// Always 1.
        algorithm: u8,
        #[serde(flatten)]
        run: DataRun,
        alpha: f64,
        t1: f64,
        t2: f64,
    },
    /// Algorithm 2: the similarity matrix on a grid and its optimal segmentation.
    Algorithm2 {
        /// Always 2.
        algorithm: u8,
        /// The data and criterion the matrix was computed from; absent when it was read with --similarity.
        #[serde(flatten)]
        run: Option<DataRun>,
        objective: Objective,
        /// The objective's value at the optimum.
        objective_value: f64,
        grid: Vec<f64>,
        similarity: Vec<Vec<f64>>,
        /// First grid index of each stage after the first.
        start_indices: Vec<usize>,
    },
}

/// How a gradient-affinity matrix was computed from a checkpoint.
#[derive(Debug, Serialize)]
pub struct GradientRun {
    pub checkpoint: PathBuf,
    /// The checkpoint's training step.
    pub step: u64,
    pub ema: bool,
    pub data: String,
    /// Images of the fixed batch.
    pub batch: usize,
    pub parameters: String,
    /// Length of each flattened gradient.
    pub n_params: usize,
    /// The grid t_j = j/G and each point's network noise level (t, sigma or step).
    pub grid: Vec<f64>,
    pub levels: Vec<f64>,
    pub similarity: Vec<Vec<f64>>,
}

/// The data and criterion of an optimal-denoiser run.
#[derive(Debug, Serialize)]
pub struct DataRun {
    pub data: String,
    pub n_data: usize,
    pub dim: usize,
    pub eta: f64,
    pub space: Space,
    pub comparison: Comparison,
    pub t_min: f64,
    /// Denoiser throughput (the two GEMMs, 4*K*N*d flops) over the whole run.
    pub gflops: f64,
}

fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Validates the options every method shares.
fn check_common(args: &ClusterArgs) -> anyhow::Result<()> {
    if args.stages < 2 {
        bail!("--stages {}: needs at least 2 stages", args.stages);
    }
    if !(args.alpha.is_finite() && args.alpha > 0.0 && args.alpha <= 1.0) {
        bail!("--alpha {}: must lie in (0, 1]", args.alpha);
    }
    if !(args.eta.is_finite() && args.eta > 0.0) {
        bail!("--eta {}: must be finite and > 0", args.eta);
    }
    if !(args.t_min.is_finite() && args.t_min > 0.0 && args.t_min < 1.0) {
        bail!("--t-min {}: must lie in (0, 1)", args.t_min);
    }
    if args.samples == Some(0) {
        bail!("--samples must be at least 1");
    }
    if args.grid_step.is_finite() && args.grid_step > 0.0 {
        // The grid t-min, t-min + step, ..., 1 must stay small (it is built, and S is G x G).
        let points = ((1.0 - args.t_min) / args.grid_step).ceil() + 1.0;
        if points > super::args::MAX_GRID as f64 {
            bail!(
                "--grid-step {}: the grid from --t-min {} would have {points:.0} points, more than the limit of {}",
                args.grid_step,
                args.t_min,
                super::args::MAX_GRID
            );
        }
    }
    // Outputs are checked before the work: an unusable path fails now, not after the clustering.
    for (opt, p) in [
        ("--plot", &args.plot),
        ("--save-similarity", &args.save_similarity),
    ] {
        if let Some(p) = p {
            crate::output::check(p).with_context(|| opt.to_string())?;
        }
    }
    if args.plot.is_some() && args.method != Method::OptimalDenoiser {
        bail!("--plot draws the optimal-denoiser analyses; the baselines have no plot");
    }
    if let Some(p) = &args.plot {
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => {}
            Some("png") => bail!(
                "--plot {}: PNG output is not built (it needs a font rasteriser); write .svg instead",
                p.display()
            ),
            _ => bail!("--plot {}: the file must end in .svg", p.display()),
        }
    }
    Ok(())
}

pub fn report(args: &ClusterArgs) -> anyhow::Result<ClusterReport> {
    check_common(args)?;
    // EDM's time is sigma itself: cluster on the vp-linear axis and convert (the paper's footnote 3).
    let (axis, axis_kind): (Box<dyn Schedule>, ScheduleKind) = match args.schedule {
        ScheduleKind::Edm => (
            args.params.build(ScheduleKind::VpLinear)?,
            ScheduleKind::VpLinear,
        ),
        k => (args.params.build(k)?, k),
    };
    let axis_name = serde_json::to_value(axis_kind)?
        .as_str()
        .unwrap_or_default()
        .to_string();
    let start = Instant::now();
    if args.gradient_checkpoint.is_some() && args.method != Method::Gradient {
        bail!("--gradient-checkpoint belongs to --method gradient");
    }
    let (boundaries, samples, outcome) = match args.method {
        Method::Timestep | Method::Snr | Method::Gradient => {
            let mut gradient_run = None;
            let res = match args.method {
                Method::Timestep => timestep_baseline(args.baseline_grid, args.stages)?,
                Method::Snr => snr_baseline(axis.as_ref(), args.baseline_grid, args.stages)?,
                _ if args.gradient_checkpoint.is_some() => {
                    let (res, run) = gradient_from_checkpoint(args)?;
                    gradient_run = Some(run);
                    res
                }
                _ => {
                    let Some(path) = &args.gradient else {
                        bail!("--method gradient needs --gradient A.npy (the G x G task-affinity matrix) or --gradient-checkpoint DIR (a trained network)");
                    };
                    let (a, _) = crate::npy::read_matrix(path).context("--gradient")?;
                    if a.nrows() > super::args::MAX_GRID {
                        bail!(
                            "--gradient {}: a {} x {} matrix, more than the limit of {} grid points",
                            path.display(),
                            a.nrows(),
                            a.ncols(),
                            super::args::MAX_GRID
                        );
                    }
                    gradient_baseline(a.view(), args.stages)
                        .with_context(|| format!("{}", path.display()))?
                }
            };
            let outcome = Outcome::Baseline {
                start_indices: res.start_indices,
                objective_value: res.objective,
                gradient: gradient_run,
            };
            (res.boundaries, None, outcome)
        }
        Method::OptimalDenoiser => run_optimal(args, axis.as_ref())?,
    };
    let sigma_boundaries = boundaries
        .iter()
        .map(|&t| axis.ve_equivalent_sigma(t))
        .collect();
    Ok(ClusterReport {
        method: args.method,
        stages: args.stages,
        boundaries,
        schedule: args.schedule,
        time_axis: axis_name,
        sigma_boundaries,
        samples,
        seed: args.seed,
        seconds: start.elapsed().as_secs_f64(),
        outcome,
    })
}

/// The gradient baseline from a checkpoint: the fixed batch from --data (or the run's data), the gradient
/// similarity matrix on t = j/G (`msd_accel::train::grad_similarity`), then the authors' DP.
fn gradient_from_checkpoint(
    args: &ClusterArgs,
) -> anyhow::Result<(
    crate::reference::cluster::baselines::BaselineResult,
    GradientRun,
)> {
    use crate::accel::train::grad_similarity::{self, ParamSet};
    use crate::accel::train::{checkpoint, LossFamily};
    use crate::reference::cluster::baselines::baseline_grid;
    let dir = args
        .gradient_checkpoint
        .as_ref()
        .expect("checked by the caller");
    let g = args.gradient_grid;
    if 2 * args.stages > g {
        bail!(
            "--gradient-grid {g}: the authors' DP needs at least 2 points per stage ({} for --stages {})",
            2 * args.stages,
            args.stages
        );
    }
    if let Some(p) = &args.save_similarity {
        crate::output::check(p).context("--save-similarity")?;
    }
    let ck = super::sample_checkpoint::resolve_checkpoint(dir).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.to_string()
                .replace("--checkpoint", "--gradient-checkpoint")
        )
    })?;
    let device = candle_core::Device::Cpu;
    let state = checkpoint::read_state(&ck)?;
    let net = checkpoint::load_model(&ck, args.gradient_ema, &device)?;
    // The data: --data, else the data the run was trained on (run.json beside checkpoints/).
    let (spec, ds) = if args.data.data.is_some() {
        let (spec, ds) = args.data.load()?;
        (spec.to_string(), ds)
    } else {
        let run_json = ck
            .parent()
            .and_then(|p| p.parent())
            .map(|r| r.join("run.json"))
            .filter(|p| p.exists())
            .with_context(|| {
                format!(
                    "--gradient-checkpoint {}: not inside a run directory; give --data",
                    dir.display()
                )
            })?;
        let info: checkpoint::RunInfo = serde_json::from_str(
            &std::fs::read_to_string(&run_json)
                .with_context(|| format!("cannot read {}", run_json.display()))?,
        )
        .with_context(|| format!("{} is corrupt", run_json.display()))?;
        let mut data = args.data.clone();
        data.data = Some(info.data.clone());
        data.limit = data.limit.or(info.limit);
        let (_, ds) = data.load()?;
        (info.data, ds)
    };
    let x = crate::runs::prepare(&ds, net.config(), &device)?;
    let (x0, eps) = grad_similarity::fixed_batch(&x, args.gradient_batch, args.seed)?;
    let fam = LossFamily::for_config(net.config(), &state.train.loss);
    let set = match args.gradient_params {
        GradParamsArg::Shared => ParamSet::Shared,
        GradParamsArg::All => ParamSet::All,
    };
    let grid = baseline_grid(g);
    let pb = progress_bar(g, "gradients");
    let sim =
        grad_similarity::gradient_similarity(&net, &fam, &x0, &eps, &grid, set, |_| pb.inc(1))
            .map_err(|e| {
                anyhow::anyhow!(
                    "--gradient-checkpoint {}: {}",
                    ck.display(),
                    e.to_string()
                        .replace("use all parameters", "use --gradient-params all")
                )
            })?;
    pb.finish_and_clear();
    let a = ndarray::Array2::from_shape_vec((g, g), sim.matrix.clone()).expect("G x G");
    let res = gradient_baseline(a.view(), args.stages)?;
    // Written only after the segmentation succeeded; `--gradient FILE` reads it back.
    if let Some(p) = &args.save_similarity {
        crate::npy::write_f64(p, &a).context("--save-similarity")?;
    }
    let run = GradientRun {
        checkpoint: ck,
        step: state.step,
        ema: args.gradient_ema,
        data: spec,
        batch: x0.dims()[0],
        parameters: format!("{:?}", args.gradient_params).to_lowercase(),
        n_params: sim.params,
        similarity: a.outer_iter().map(|r| r.to_vec()).collect(),
        grid,
        levels: sim.levels,
    };
    Ok((res, run))
}

/// Boundaries, number of draws and outcome of an optimal-denoiser run.
type OptimalRun = (Vec<f64>, Option<usize>, Outcome);

fn run_optimal(args: &ClusterArgs, axis: &dyn Schedule) -> anyhow::Result<OptimalRun> {
    let algorithm = match args.algorithm {
        AlgorithmArg::Auto if args.stages == 3 => 1,
        AlgorithmArg::Auto => 2,
        AlgorithmArg::One if args.stages != 3 => {
            bail!(
                "--algorithm 1 finds exactly 3 stages (t1, t2); use --algorithm 2 for --stages {}",
                args.stages
            )
        }
        AlgorithmArg::One => 1,
        AlgorithmArg::Two => 2,
    };
    let criterion = Criterion {
        eta: args.eta,
        space: args.space,
        comparison: args.compare,
    };
    // Check the grid before the (long) data load.
    let grid = if algorithm == 2 {
        let grid =
            optimal::similarity_grid(args.t_min, args.grid_step).context("--grid-step/--t-min")?;
        if args.stages > grid.len() {
            bail!(
                "--stages {}: the grid (step {}, from {}) has only {} times",
                args.stages,
                args.grid_step,
                args.t_min,
                grid.len()
            );
        }
        grid
    } else {
        vec![]
    };
    if algorithm == 2 {
        if let Some(path) = &args.similarity {
            let (sim, _) = crate::npy::read_matrix(path).context("--similarity")?;
            if sim.dim() != (grid.len(), grid.len()) {
                bail!(
                    "{}: a {} x {} matrix, but the grid (step {}, from {}) has {} times",
                    path.display(),
                    sim.nrows(),
                    sim.ncols(),
                    args.grid_step,
                    args.t_min,
                    grid.len()
                );
            }
            let (boundaries, outcome) = finish_alg2(args, sim, grid, None)?;
            return Ok((boundaries, None, outcome));
        }
    } else if args.similarity.is_some() || args.save_similarity.is_some() {
        bail!("--similarity/--save-similarity belong to Algorithm 2 (--stages other than 3, or --algorithm 2)");
    }
    let (spec, ds) = args.data.load()?;
    let data = ds.to_f64();
    let den = OptimalDenoiser::new(data.view())?;
    let run = |gflops: f64| DataRun {
        data: spec.to_string(),
        n_data: ds.len(),
        dim: ds.dim(),
        eta: args.eta,
        space: criterion.space,
        comparison: criterion.comparison,
        t_min: args.t_min,
        gflops,
    };
    let t0 = Instant::now();
    if algorithm == 1 {
        let cfg = Alg1Config {
            samples: args.samples.unwrap_or(50_000),
            seed: args.seed,
            t_min: args.t_min,
            alpha: args.alpha,
            tau_grid: args.tau_grid,
            criterion,
            ..Alg1Config::default()
        };
        let pb = progress_bar(cfg.samples, "Algorithm 1");
        let res = optimal::algorithm1(&den, axis, &cfg, &mut |done| pb.set_position(done as u64))?;
        pb.finish_and_clear();
        let gflops = den.flops(cfg.samples) / t0.elapsed().as_secs_f64() / 1e9;
        let opt = |t: Option<f64>| t.map_or("none".to_string(), |t| t.to_string());
        let (t1, t2) = match (res.t1, res.t2) {
            (Some(t1), Some(t2)) if t1 < t2 => (t1, t2),
            (Some(t1), Some(t2)) => bail!(
                "Algorithm 1 gives t1 = {t1} >= t2 = {t2}: no three-stage partition; lower --alpha or --eta \
                 changes the answer (the paper's data gave t1 < t2)"
            ),
            (t1, t2) => bail!(
                "Algorithm 1 found no tau meeting alpha = {} (t1 = {}, t2 = {}); lower --alpha",
                args.alpha,
                opt(t1),
                opt(t2)
            ),
        };
        // Only a successful run writes its plot.
        if let Some(p) = &args.plot {
            super::cluster_plot::plot_alg1(p, &res, args.alpha)?;
        }
        Ok((
            vec![t1, t2],
            Some(cfg.samples),
            Outcome::Algorithm1 {
                algorithm: 1,
                run: run(gflops),
                alpha: args.alpha,
                t1,
                t2,
            },
        ))
    } else {
        let cfg = Alg2Config {
            draws: args.samples.unwrap_or(1000),
            seed: args.seed,
            criterion,
            batch: 64,
        };
        let pb = progress_bar(cfg.draws, "Algorithm 2");
        let sim = optimal::similarity_matrix(&den, axis, &grid, &cfg, &mut |done| {
            pb.set_position(done as u64)
        })?;
        pb.finish_and_clear();
        let gflops = den.flops(cfg.draws * grid.len()) / t0.elapsed().as_secs_f64() / 1e9;
        let saved = args.save_similarity.as_ref().map(|_| sim.clone());
        let (boundaries, outcome) = finish_alg2(args, sim, grid, Some(run(gflops)))?;
        // Written only after the segmentation succeeded: a failed run leaves no file behind.
        if let (Some(path), Some(sim)) = (&args.save_similarity, &saved) {
            crate::npy::write_f64(path, sim).context("--save-similarity")?;
        }
        Ok((boundaries, Some(cfg.draws), outcome))
    }
}

/// Algorithm 2 after the similarity matrix: the exact DP, the plot, the outcome.
fn finish_alg2(
    args: &ClusterArgs,
    sim: ndarray::Array2<f64>,
    grid: Vec<f64>,
    run: Option<DataRun>,
) -> anyhow::Result<(Vec<f64>, Outcome)> {
    let res = optimal::segment_similarity(sim.view(), &grid, args.stages, args.objective)?;
    if let Some(p) = &args.plot {
        super::cluster_plot::plot_alg2(p, &sim, &grid, &res.boundaries)?;
    }
    let outcome = Outcome::Algorithm2 {
        algorithm: 2,
        run,
        objective: args.objective,
        objective_value: res.objective,
        grid,
        similarity: sim.rows().into_iter().map(|row| row.to_vec()).collect(),
        start_indices: res.start_indices,
    };
    Ok((res.boundaries, outcome))
}

pub fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    let r = report(args)?;
    if args.json {
        outln!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let name = serde_json::to_value(r.method)?;
    outln!(
        "method {} ({} stages, schedule {})",
        name.as_str().unwrap_or(""),
        r.stages,
        r.time_axis
    );
    let (algorithm, run) = match &r.outcome {
        Outcome::Baseline { .. } => (None, None),
        Outcome::Algorithm1 { run, .. } => (Some(1), Some(run)),
        Outcome::Algorithm2 { run, .. } => (Some(2), run.as_ref()),
    };
    if let Outcome::Baseline {
        gradient: Some(g), ..
    } = &r.outcome
    {
        outln!(
            "  gradients of {} at step {} ({} {} parameters, {} images of {}, {} grid points)",
            g.checkpoint.display(),
            g.step,
            g.n_params,
            g.parameters,
            g.batch,
            g.data,
            g.grid.len()
        );
    }
    if let Some(a) = algorithm {
        match run {
            Some(d) => outln!(
                "  algorithm {a}, data {} (N = {}, d = {})",
                d.data,
                d.n_data,
                d.dim
            ),
            None => outln!("  algorithm {a}, data  (N = 0, d = 0)"),
        }
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|b| format!("{b:.4}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    outln!("  boundaries (t)      {}", fmt(&r.boundaries));
    outln!("  boundaries (sigma)  {}", fmt(&r.sigma_boundaries));
    if let Some(s) = r.samples {
        outln!("  samples {s}, seed {}", r.seed);
    }
    if let Some(d) = run {
        outln!("  {:.1} s, denoiser {:.1} GFLOP/s", r.seconds, d.gflops);
    }
    if let Some(p) = &args.plot {
        outln!("  plot written to {}", p.display());
    }
    Ok(())
}
