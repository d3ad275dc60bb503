//! Samplers written once: each sampler's scalar math, in f64, as a [`Plan`] (see the `msd-plan` crate), and
//! the reference executor of plans on ndarray states.
//!
//! - [`dpm`]: DPM-Solver (noise prediction) and DPM-Solver++ (data prediction), orders 1–3, singlestep
//!   (including the "fast" order schedule), singlestep-fixed and multistep (Lu et al. 2022a, 2022b).
//! - [`edm`]: EDM's Euler and Heun samplers on the Karras σ grid (Karras et al. 2022, Algorithm 2).
//! - [`sde`]: DDIM (η ≥ 0), DDPM ancestral sampling and Euler–Maruyama on the reverse VP SDE.
//! - [`discrete`]: the discrete-step VP schedule of LDM as DPM-Solver reads it (piecewise-linear log α).
//! - [`exec`]: running a plan with a [`Model`] on an `ndarray` state, and the model adapters (the Proposition 1
//!   oracle, a Gaussian data distribution with a closed-form score).
//!
//! Per-stage accounting of a plan's evaluations is in [`crate::stage`].

pub mod discrete;
pub mod dpm;
pub mod edm;
pub mod exec;
pub mod sde;

pub use discrete::DiscreteVp;
pub use dpm::{dpm_solver_plan, Algorithm, DpmSolverConfig, Method};
pub use edm::{edm_plan, EdmConfig, EdmSolver};
pub use exec::{execute, GaussianModel, Model, OracleModel};
pub use msd_plan::{EvalPoint, NoiseStream, Op, Plan, TimeAxis, Want};
pub use sde::{ancestral_plan, ddim_plan, euler_maruyama_plan, VpGridConfig};

use thiserror::Error;

use crate::denoiser::DenoiserError;
use crate::schedule::{Schedule, ScheduleError};

/// Errors of plan construction and execution; each message names the offending setting.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SolverError {
    #[error("{0}")]
    Config(String),
    #[error("{what} has shape {got:?} but {expected}")]
    Shape {
        what: &'static str,
        got: Vec<usize>,
        expected: String,
    },
    #[error("the plan is malformed: {0}")]
    Plan(String),
    #[error("the model returned a non-finite value at t = {t}")]
    NonFiniteOutput { t: f64 },
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Denoiser(#[from] DenoiserError),
}

pub(crate) fn config_err<T>(msg: impl Into<String>) -> Result<T, SolverError> {
    Err(SolverError::Config(msg.into()))
}

/// How the outer time grid is spaced (DPM-Solver's `skip_type`). With the `clap` feature it is also the
/// `--skip` value of `msd plan`/`msd sample` (`logsnr`, `time-uniform`, `time-quadratic`, and the
/// reference's spellings as aliases); the command-line help is the ASCII text in the `value` attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Skip {
    /// Uniform in the half-log-SNR λ (`logSNR`).
    #[cfg_attr(
        feature = "clap",
        value(
            name = "logsnr",
            alias = "logSNR",
            help = "Uniform in lambda = log(alpha/sigma)"
        )
    )]
    LogSnr,
    /// Uniform in t (`time_uniform`).
    #[cfg_attr(feature = "clap", value(alias = "time_uniform", help = None))]
    TimeUniform,
    /// Uniform in √t, then squared (`time_quadratic`).
    #[cfg_attr(feature = "clap", value(alias = "time_quadratic", help = None))]
    TimeQuadratic,
}

/// `n + 1` points from `start` to `end` inclusive, spaced as torch.linspace does (the first half counted from
/// `start`, the second half from `end`, so both end points are exact).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 0 {
        return vec![start];
    }
    let step = (end - start) / n as f64;
    let half = n.div_ceil(2);
    (0..=n)
        .map(|i| {
            if i < half {
                start + step * i as f64
            } else {
                end - step * (n - i) as f64
            }
        })
        .collect()
}

/// DPM-Solver's `get_time_steps`: `n + 1` times from `t_start` down to `t_end` spaced by `skip`.
/// The end points are exactly `t_start` and `t_end` (the λ round trip would move them by an ulp).
pub fn time_steps(
    schedule: &dyn Schedule,
    skip: Skip,
    t_start: f64,
    t_end: f64,
    n: usize,
) -> Result<Vec<f64>, SolverError> {
    schedule.check_time(t_start)?;
    schedule.check_time(t_end)?;
    if t_end.partial_cmp(&t_start) != Some(std::cmp::Ordering::Less) {
        return config_err(format!(
            "the end time {t_end} must be smaller than the start time {t_start}"
        ));
    }
    if n == 0 {
        return config_err("the time grid needs at least one step");
    }
    let mut ts = match skip {
        Skip::TimeUniform => linspace(t_start, t_end, n),
        Skip::TimeQuadratic => linspace(t_start.sqrt(), t_end.sqrt(), n)
            .into_iter()
            .map(|u| u * u)
            .collect(),
        Skip::LogSnr => {
            let (l_start, l_end) = (schedule.lambda(t_start), schedule.lambda(t_end));
            if !(l_start.is_finite() && l_end.is_finite()) {
                return config_err(format!(
                    "logSNR spacing needs a finite lambda at both ends (lambda({t_start}) = {l_start}, lambda({t_end}) = {l_end}); move --t-start/--t-end inside the schedule"
                ));
            }
            linspace(l_start, l_end, n)
                .into_iter()
                .map(|l| schedule.lambda_inv(l))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    ts[0] = t_start;
    ts[n] = t_end;
    Ok(ts)
}

/// The evaluation point of a schedule at time t.
pub(crate) fn point(schedule: &dyn Schedule, t: f64) -> EvalPoint {
    EvalPoint {
        t,
        alpha: schedule.alpha(t),
        sigma: schedule.sigma(t),
    }
}

/// A linear combination of registers under construction; repeated registers are merged.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lin(pub Vec<(usize, f64)>);

impl Lin {
    pub fn of(terms: &[(usize, f64)]) -> Self {
        let mut l = Lin::default();
        for &(r, c) in terms {
            l = l.plus(r, c);
        }
        l
    }
    pub fn plus(mut self, reg: usize, c: f64) -> Self {
        match self.0.iter_mut().find(|(r, _)| *r == reg) {
            Some((_, acc)) => *acc += c,
            None => self.0.push((reg, c)),
        }
        self
    }
    pub fn add(mut self, other: &Lin, scale: f64) -> Self {
        for &(r, c) in &other.0 {
            self = self.plus(r, scale * c);
        }
        self
    }
    pub fn into_op(self, dst: usize) -> Op {
        Op::Combine { dst, terms: self.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::VpLinear;

    #[test]
    fn linspace_hits_both_ends_and_is_uniform() {
        let v = linspace(1.0, 1e-3, 20);
        assert_eq!(v.len(), 21);
        assert_eq!((v[0], v[20]), (1.0, 1e-3));
        for w in v.windows(2) {
            assert!((w[0] - w[1] - 0.999 / 20.0).abs() < 1e-15);
        }
    }

    #[test]
    fn logsnr_grid_is_uniform_in_lambda() {
        let vp = VpLinear::default();
        let ts = time_steps(&vp, Skip::LogSnr, 1.0, 1e-4, 7).unwrap();
        let ls: Vec<f64> = ts.iter().map(|&t| vp.lambda(t)).collect();
        let h = (ls[7] - ls[0]) / 7.0;
        for w in ls.windows(2) {
            assert!((w[1] - w[0] - h).abs() < 1e-9, "{ls:?}");
        }
        let q = time_steps(&vp, Skip::TimeQuadratic, 1.0, 1e-4, 4).unwrap();
        for (i, t) in q.iter().enumerate() {
            let u = 1.0 + i as f64 / 4.0 * (0.01 - 1.0);
            assert!((t - u * u).abs() < 1e-15);
        }
        assert!(time_steps(&vp, Skip::TimeUniform, 0.1, 0.2, 3).is_err());
        assert!(time_steps(&vp, Skip::TimeUniform, 1.0, 0.0, 0).is_err());
        assert!(time_steps(&vp, Skip::LogSnr, 1.0, 0.0, 3).is_err());
    }
}

#[cfg(test)]
mod convergence;
