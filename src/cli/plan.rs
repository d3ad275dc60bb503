//! `msd plan`: a sampler's evaluation times and their split over the stages of a partition, and the sampler
//! options `msd sample` shares.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::args::ScheduleParams;
use crate::reference::schedule::{Edm, Schedule, VpCosine};
use crate::reference::solver::{
    self, Algorithm, DiscreteVp, DpmSolverConfig, EdmConfig, EdmSolver, Method, Plan, Skip,
    TimeAxis, VpGridConfig,
};
use crate::reference::stage::{nfe_per_stage, Partition};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SolverKind {
    /// DPM-Solver, noise prediction (Lu et al. 2022); default order 3, singlestep ("fast"), logSNR.
    #[value(name = "dpm-solver")]
    DpmSolver,
    /// DPM-Solver++, data prediction; default order 2, multistep (2M).
    #[value(name = "dpm-solver++")]
    DpmSolverPp,
    /// EDM Euler on the Karras sigma grid (steps NFE).
    Euler,
    /// EDM Heun on the Karras sigma grid, last step Euler (2*steps - 1 NFE).
    Heun,
    /// DDIM with --eta (0: deterministic).
    Ddim,
    /// DDPM ancestral sampling (the posterior q(x_t | x_s, x0_hat)).
    Ancestral,
    /// Euler-Maruyama on the reverse-time SDE.
    EulerMaruyama,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerSchedule {
    /// VP linear beta (--beta-min, --beta-max); t in [0, 1].
    VpLinear,
    /// VP cosine (--cosine-s).
    VpCosine,
    /// LDM's discrete schedule as DPM-Solver reads it (--ldm-steps, --ldm-beta-start, --ldm-beta-end);
    /// t in [1/N, 1], network step N (t - 1/N).
    Ldm,
    /// EDM: the time is sigma (--sigma-min, --sigma-max, --rho); used by euler and heun.
    Edm,
}

/// The sampler options shared by `msd plan` and `msd sample`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Which sampler.
    #[arg(long, value_enum, default_value_t = SolverKind::DpmSolver)]
    pub solver: SolverKind,
    /// DPM-Solver order (1, 2, 3). Default: 3 for dpm-solver, 2 for dpm-solver++.
    #[arg(long, value_parser = super::args::order_count, allow_negative_numbers = true)]
    pub order: Option<usize>,
    /// DPM-Solver method. Default: singlestep for dpm-solver, multistep for dpm-solver++.
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Time spacing of the grid. Default: logsnr for dpm-solver(++), time-uniform for ddim, ancestral,
    /// euler-maruyama.
    #[arg(long, value_enum)]
    pub skip: Option<Skip>,
    /// DPM-Solver: number of function evaluations (DPM-Solver's `steps`; same as --steps; 1 to 100000).
    /// Default 20.
    #[arg(long, value_parser = super::args::steps_count, allow_negative_numbers = true)]
    pub nfe: Option<usize>,
    /// Number of steps (DPM-Solver: = NFE; heun: 2*steps - 1 NFE). Defaults: 20 (dpm-solver), 18 (euler,
    /// heun), 100 (ddim, ancestral, euler-maruyama).
    #[arg(long, value_parser = super::args::steps_count, allow_negative_numbers = true)]
    pub steps: Option<usize>,
    /// End time t_eps (VP schedules). Default 1e-3 (1/N for ldm).
    #[arg(long, allow_negative_numbers = true)]
    pub t_end: Option<f64>,
    /// Start time t_T (VP schedules). Default: the schedule's largest time (1).
    #[arg(long, allow_negative_numbers = true)]
    pub t_start: Option<f64>,
    /// DPM-Solver multistep: lower the order of the final steps (only when steps < 15, as the reference).
    #[arg(long)]
    pub lower_order_final: bool,
    /// Finish with one more evaluation: the denoised x0_hat at t_end (VP samplers).
    #[arg(long)]
    pub denoise: bool,
    /// DDIM stochasticity eta (0 = deterministic, 1 = DDPM's variance).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub eta: f64,
    /// EDM S_churn (0 = deterministic).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub s_churn: f64,
    /// EDM S_noise.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub s_noise: f64,
    /// EDM S_tmin.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub s_tmin: f64,
    /// EDM S_tmax (default infinity).
    #[arg(long, allow_negative_numbers = true)]
    pub s_tmax: Option<f64>,
    /// Noise schedule. Default: vp-linear, or edm for euler and heun.
    #[arg(long, value_enum)]
    pub schedule: Option<SamplerSchedule>,
    #[command(flatten)]
    pub params: ScheduleParams,
    /// ldm: number of discrete steps N.
    #[arg(long, default_value_t = 1000, value_parser = super::args::ldm_steps_count, allow_negative_numbers = true)]
    pub ldm_steps: usize,
    /// ldm: first beta of the sqrt-linear schedule.
    #[arg(long, default_value_t = 0.0015)]
    pub ldm_beta_start: f64,
    /// ldm: last beta.
    #[arg(long, default_value_t = 0.0195)]
    pub ldm_beta_end: f64,
    /// Stage boundaries in t (comma-separated, increasing, in (0, 1)).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true,
          conflicts_with_all = ["sigma_boundaries", "step_boundaries"])]
    pub boundaries: Option<Vec<f64>>,
    /// Stage boundaries in sigma (VE/EDM sigma; for VP samplers the SNR-equivalent sigma/alpha).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        conflicts_with = "step_boundaries"
    )]
    pub sigma_boundaries: Option<Vec<f64>>,
    /// Stage boundaries in discrete steps of --ldm-steps (network step N (t - 1/N)).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub step_boundaries: Option<Vec<f64>>,
}

/// A built plan with its schedule and partition.
pub struct Built {
    pub plan: Plan,
    pub schedule: Box<dyn Schedule>,
    pub partition: Option<Partition>,
    /// The LDM schedule's network step per evaluation.
    pub model_steps: Option<Vec<f64>>,
}

impl PlanArgs {
    fn is_edm(&self) -> bool {
        matches!(self.solver, SolverKind::Euler | SolverKind::Heun)
    }

    fn steps_or(&self, default: usize) -> anyhow::Result<usize> {
        match (self.nfe, self.steps) {
            (Some(n), Some(s)) if n != s => bail!(
                "--nfe {n} and --steps {s} disagree (for DPM-Solver they are the same number)"
            ),
            (Some(n), _) | (None, Some(n)) => Ok(n),
            (None, None) => Ok(default),
        }
    }

    fn edm_schedule(&self) -> anyhow::Result<Edm> {
        let d = Edm::default();
        Edm::new(
            self.params.sigma_min.unwrap_or(d.sigma_min),
            self.params.sigma_max.unwrap_or(d.sigma_max),
            self.params.rho,
        )
        .context("--sigma-min/--sigma-max/--rho")
    }

    /// The VP schedule and its time axis.
    fn vp_schedule(&self) -> anyhow::Result<(Box<dyn Schedule>, TimeAxis)> {
        Ok(match self.schedule.unwrap_or(SamplerSchedule::VpLinear) {
            SamplerSchedule::VpLinear => (Box::new(self.params.vp_linear()?), TimeAxis::Time),
            SamplerSchedule::VpCosine => (
                Box::new(VpCosine::new(self.params.cosine_s).context("--cosine-s")?),
                TimeAxis::Time,
            ),
            SamplerSchedule::Ldm => (
                Box::new(
                    DiscreteVp::ldm_linear(self.ldm_steps, self.ldm_beta_start, self.ldm_beta_end)
                        .context("--ldm-steps/--ldm-beta-start/--ldm-beta-end")?,
                ),
                TimeAxis::DiscreteTime {
                    steps: self.ldm_steps,
                },
            ),
            SamplerSchedule::Edm => bail!(
                "--schedule edm: {} runs on a VP schedule (vp-linear, vp-cosine, ldm); EDM's samplers are --solver euler|heun",
                self.solver.to_possible_value().expect("named").get_name()
            ),
        })
    }

    /// Builds the plan and the stage partition the options describe.
    pub fn build(&self) -> anyhow::Result<Built> {
        let (plan, schedule): (Plan, Box<dyn Schedule>) = if self.is_edm() {
            if let Some(s) = self.schedule.filter(|&s| s != SamplerSchedule::Edm) {
                bail!(
                    "--schedule {}: euler and heun are EDM's samplers and run on --schedule edm",
                    s.to_possible_value().expect("named").get_name()
                );
            }
            if self.nfe.is_some() {
                bail!("--nfe applies to dpm-solver and dpm-solver++; give EDM's --steps (heun: NFE = 2*steps - 1)");
            }
            let edm = self.edm_schedule()?;
            let cfg = EdmConfig {
                solver: if self.solver == SolverKind::Heun {
                    EdmSolver::Heun
                } else {
                    EdmSolver::Euler
                },
                steps: self.steps.unwrap_or(18),
                schedule: edm,
                s_churn: self.s_churn,
                s_noise: self.s_noise,
                s_tmin: self.s_tmin,
                s_tmax: self.s_tmax.unwrap_or(f64::INFINITY),
            };
            (solver::edm_plan(&cfg)?, Box::new(edm))
        } else {
            let (sched, axis) = self.vp_schedule()?;
            let t_end = self.t_end.unwrap_or(match axis {
                TimeAxis::DiscreteTime { steps } => 1.0 / steps as f64,
                _ => 1e-3,
            });
            let plan = match self.solver {
                SolverKind::DpmSolver | SolverKind::DpmSolverPp => {
                    let pp = self.solver == SolverKind::DpmSolverPp;
                    let cfg = DpmSolverConfig {
                        algorithm: if pp {
                            Algorithm::DpmSolverPlusPlus
                        } else {
                            Algorithm::DpmSolver
                        },
                        method: self.method.unwrap_or(if pp {
                            Method::Multistep
                        } else {
                            Method::Singlestep
                        }),
                        order: self.order.unwrap_or(if pp { 2 } else { 3 }),
                        steps: self.steps_or(20)?,
                        skip: self.skip.unwrap_or(Skip::LogSnr),
                        t_start: self.t_start,
                        t_end,
                        lower_order_final: self.lower_order_final,
                        denoise: self.denoise,
                    };
                    solver::dpm_solver_plan(sched.as_ref(), axis, &cfg)?
                }
                other => {
                    if self.nfe.is_some() {
                        bail!("--nfe applies to dpm-solver and dpm-solver++; give --steps");
                    }
                    if self.order.is_some() || self.method.is_some() {
                        bail!("--order/--method apply to dpm-solver and dpm-solver++ only");
                    }
                    let cfg = VpGridConfig {
                        steps: self.steps.unwrap_or(100),
                        skip: self.skip.unwrap_or(Skip::TimeUniform),
                        t_start: self.t_start,
                        t_end,
                        denoise: self.denoise,
                    };
                    match other {
                        SolverKind::Ddim => {
                            solver::ddim_plan(sched.as_ref(), axis, &cfg, self.eta)?
                        }
                        SolverKind::Ancestral => {
                            solver::ancestral_plan(sched.as_ref(), axis, &cfg)?
                        }
                        _ => solver::euler_maruyama_plan(sched.as_ref(), axis, &cfg)?,
                    }
                }
            };
            (plan, sched)
        };
        if self.eta != 0.0 && self.solver != SolverKind::Ddim {
            bail!("--eta applies to --solver ddim only");
        }
        let partition = self.partition(&plan)?;
        let model_steps = match plan.axis {
            TimeAxis::DiscreteTime { steps } => Some(
                plan.times()
                    .iter()
                    .map(|t| steps as f64 * (t - 1.0 / steps as f64))
                    .collect(),
            ),
            _ => None,
        };
        Ok(Built {
            plan,
            schedule,
            partition,
            model_steps,
        })
    }

    fn partition(&self, plan: &Plan) -> anyhow::Result<Option<Partition>> {
        Ok(
            match (
                &self.boundaries,
                &self.sigma_boundaries,
                &self.step_boundaries,
            ) {
                (Some(b), _, _) => {
                    if plan.axis == TimeAxis::Sigma {
                        bail!("--boundaries are in t, but {:?}'s time is sigma: give --sigma-boundaries", self.solver);
                    }
                    Some(Partition::in_time(b.clone()).context("--boundaries")?)
                }
                (_, Some(b), _) => {
                    Some(Partition::in_sigma(b.clone()).context("--sigma-boundaries")?)
                }
                (_, _, Some(b)) => {
                    if plan.axis == TimeAxis::Sigma {
                        bail!(
                            "--step-boundaries apply to VP samplers; EDM takes --sigma-boundaries"
                        );
                    }
                    Some(
                        Partition::in_steps(b.clone(), self.ldm_steps)
                            .context("--step-boundaries (in steps of --ldm-steps)")?,
                    )
                }
                _ => None,
            },
        )
    }
}

/// Arguments of `msd plan`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples (the paper's three samplers and their NFE split over the stages):
  msd plan --solver dpm-solver --order 3 --method singlestep --skip logsnr --nfe 20 --t-end 1e-4 \\
           --boundaries 0.4420,0.6308 --json                                  # [12, 2, 6]
  msd plan --solver heun --steps 18 --sigma-min 0.002 --sigma-max 80 --rho 7 \\
           --sigma-boundaries 2.5103,7.6577 --json                            # [18, 4, 13]
  msd plan --solver dpm-solver++ --order 2 --method multistep --skip time-uniform --steps 20 \\
           --schedule ldm --step-boundaries 442,631 --json                    # [8, 4, 8]

Stage of an evaluation = number of boundaries strictly below its time (a boundary belongs to the lower
stage). Every evaluation counts, including the intermediate points inside one solver step.")]
pub struct PlanCmdArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// With --json, include the plan's full program (evaluations and linear combinations).
    #[arg(long)]
    pub ops: bool,
}

/// What `msd plan --json` prints; `msd model-info --plan` reads it back with the same type.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlanReport {
    pub solver: SolverKind,
    pub name: String,
    /// Evaluation times (t; sigma for EDM), in order.
    pub times: Vec<f64>,
    pub nfe: usize,
    pub nfe_per_stage: Vec<usize>,
    /// The outer time grid.
    pub grid: Vec<f64>,
    /// ldm: the network's step input per evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_steps: Option<Vec<f64>>,
    /// The stage of each evaluation.
    pub stages: Vec<usize>,
    pub stochastic: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<Vec<solver::Op>>,
}

pub fn report(args: &PlanArgs, built: &Built, ops: bool) -> anyhow::Result<PlanReport> {
    let plan = &built.plan;
    let (per_stage, stages) = match &built.partition {
        Some(p) => (
            nfe_per_stage(plan, p)?,
            plan.evals()
                .map(|e| p.value_at(e, plan.axis).map(|v| p.stage_of(v)))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => (vec![plan.nfe()], vec![0; plan.nfe()]),
    };
    Ok(PlanReport {
        solver: args.solver,
        name: plan.name.clone(),
        times: plan.times(),
        nfe: plan.nfe(),
        nfe_per_stage: per_stage,
        grid: plan.grid.clone(),
        model_steps: built.model_steps.clone(),
        stages,
        stochastic: plan.is_stochastic(),
        ops: ops.then(|| plan.ops.clone()),
    })
}

pub fn run(args: &PlanCmdArgs) -> anyhow::Result<()> {
    let built = args.plan.build()?;
    let r = report(&args.plan, &built, args.ops)?;
    if args.json {
        outln!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    outln!(
        "{}: {} evaluations, per stage {:?}",
        r.name,
        r.nfe,
        r.nfe_per_stage
    );
    let var = if built.plan.axis == TimeAxis::Sigma {
        "sigma"
    } else {
        "t"
    };
    outln!("  {:>4}  {:>22}  {:>22}  stage", "eval", var, "sigma/alpha");
    for (i, (e, s)) in built.plan.evals().zip(&r.stages).enumerate() {
        outln!("  {i:>4}  {:>22}  {:>22}  {s}", e.t, e.ve_sigma());
    }
    Ok(())
}
