//! EDM's samplers (Karras et al. 2022, Algorithm 2, as in `generate.py`'s `edm_sampler`): Euler or Heun on
//! the Karras σ grid σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, then σ_N = 0.
//!
//! Step i: γ_i = min(S_churn/N, √2 − 1) if S_tmin ≤ σ_i ≤ S_tmax else 0; σ̂ = σ_i + γ_i σ_i;
//! x̂ = x + √(σ̂² − σ_i²)·S_noise·n; d = (x̂ − D(x̂; σ̂))/σ̂; x_{i+1} = x̂ + (σ_{i+1} − σ̂)·d; for Heun and
//! i < N − 1 the correction d' = (x_{i+1} − D(x_{i+1}; σ_{i+1}))/σ_{i+1}, x_{i+1} = x̂ + (σ_{i+1} − σ̂)(d + d')/2.
//! So Heun with N steps costs 2N − 1 evaluations (the last step is Euler). The initial state is σ_0·z.
//! Noise n is drawn (from the plan's noise stream) only in steps with γ_i > 0; EDM's code draws it every step
//! and multiplies by 0, which changes nothing but the stream position.

use super::{config_err, Lin, SolverError};
use crate::schedule::Edm;
use msd_plan::{EvalPoint, Op, Plan, TimeAxis, Want};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EdmSolver {
    Euler,
    Heun,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EdmConfig {
    pub solver: EdmSolver,
    pub steps: usize,
    pub schedule: Edm,
    pub s_churn: f64,
    pub s_noise: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
}

impl Default for EdmConfig {
    /// EDM's deterministic CIFAR-10 sampler: Heun, 18 steps (35 NFE), σ ∈ [0.002, 80], ρ = 7.
    fn default() -> Self {
        Self {
            solver: EdmSolver::Heun,
            steps: 18,
            schedule: Edm::default(),
            s_churn: 0.0,
            s_noise: 1.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
        }
    }
}

fn at(sigma: f64) -> EvalPoint {
    EvalPoint {
        t: sigma,
        alpha: 1.0,
        sigma,
    }
}

/// The plan of an EDM sampler. Registers: 0 state x / x̂, 1 D(x̂; σ̂), 2 the Euler point, 3 D at the Euler
/// point, 4 churn noise.
pub fn edm_plan(cfg: &EdmConfig) -> Result<Plan, SolverError> {
    let n = cfg.steps;
    if n < 2 {
        return config_err(format!(
            "--steps {n}: the Karras grid needs at least 2 steps"
        ));
    }
    for (name, v) in [("--s-churn", cfg.s_churn), ("--s-noise", cfg.s_noise)] {
        if !(v.is_finite() && v >= 0.0) {
            return config_err(format!("{name} {v}: must be finite and >= 0"));
        }
    }
    if cfg.s_tmin.is_nan() || cfg.s_tmax.is_nan() || cfg.s_tmin > cfg.s_tmax {
        return config_err(format!(
            "--s-tmin {} / --s-tmax {}: need s_tmin <= s_tmax",
            cfg.s_tmin, cfg.s_tmax
        ));
    }
    let mut grid = cfg.schedule.karras_sigmas(n)?;
    grid.push(0.0);
    let mut ops = vec![Op::Combine {
        dst: 0,
        terms: vec![(0, grid[0])],
    }];
    let mut registers = 4;
    for i in 0..n {
        let (t_cur, t_next) = (grid[i], grid[i + 1]);
        let gamma = if cfg.s_tmin <= t_cur && t_cur <= cfg.s_tmax {
            (cfg.s_churn / n as f64).min(std::f64::consts::SQRT_2 - 1.0)
        } else {
            0.0
        };
        let t_hat = t_cur + gamma * t_cur;
        if gamma > 0.0 {
            registers = 5;
            ops.push(Op::Noise { dst: 4 });
            let c = (t_hat * t_hat - t_cur * t_cur).sqrt() * cfg.s_noise;
            ops.push(Lin::of(&[(0, 1.0), (4, c)]).into_op(0));
        }
        ops.push(Op::Eval {
            dst: 1,
            src: 0,
            at: at(t_hat),
            want: Want::X0,
        });
        // x_e = x̂ + Δ·(x̂ − D)/σ̂
        let k = (t_next - t_hat) / t_hat;
        let euler = Lin::of(&[(0, 1.0 + k), (1, -k)]);
        if cfg.solver == EdmSolver::Heun && i < n - 1 {
            ops.push(euler.into_op(2));
            ops.push(Op::Eval {
                dst: 3,
                src: 2,
                at: at(t_next),
                want: Want::X0,
            });
            // x̂ + Δ·(½(x̂ − D₁)/σ̂ + ½(x_e − D₂)/σ_next)
            let k2 = 0.5 * (t_next - t_hat) / t_next;
            ops.push(Lin::of(&[(0, 1.0 + 0.5 * k), (1, -0.5 * k), (2, k2), (3, -k2)]).into_op(0));
        } else {
            ops.push(euler.into_op(0));
        }
        ops.push(Op::Record {
            step: i + 1,
            t: t_next,
        });
    }
    let plan = Plan {
        name: format!("edm-{:?} steps {n}", cfg.solver).to_lowercase(),
        axis: TimeAxis::Sigma,
        registers,
        ops,
        grid,
    };
    plan.validate().map_err(SolverError::Plan)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heun_18_is_35_nfe_on_the_karras_grid() {
        let plan = edm_plan(&EdmConfig::default()).unwrap();
        assert_eq!(plan.nfe(), 35);
        assert!(!plan.is_stochastic());
        // docs/paper-notes.md §4.2: 80, 57.6, 40.8, 28.4, 19.35, 12.9, 8.40, 5.32, 3.26, 1.92, 1.09, ..., 0.002, then 0.
        let expect = [
            80.0, 57.6, 40.8, 28.4, 19.35, 12.9, 8.40, 5.32, 3.26, 1.92, 1.09,
        ];
        for (g, e) in plan.grid.iter().zip(expect) {
            assert!((g - e).abs() < 0.006 * e, "{:?}", plan.grid);
        }
        assert_eq!(plan.grid.len(), 19);
        assert_eq!(plan.grid[18], 0.0);
        // Each σ_i (i ≥ 1) is evaluated twice, σ_0 once.
        let times = plan.times();
        assert_eq!(times[0], 80.0);
        assert_eq!(times.iter().filter(|&&s| s == plan.grid[5]).count(), 2);
        let euler = edm_plan(&EdmConfig {
            solver: EdmSolver::Euler,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(euler.nfe(), 18);
    }

    #[test]
    fn churn_draws_noise_and_bad_settings_fail() {
        let plan = edm_plan(&EdmConfig {
            s_churn: 40.0,
            s_tmin: 0.05,
            s_tmax: 50.0,
            ..Default::default()
        })
        .unwrap();
        assert!(plan.is_stochastic());
        // γ only for 0.05 ≤ σ_i ≤ 50: σ_0 = 80 and the smallest ones get no noise.
        let noises = plan
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Noise { .. }))
            .count();
        let inside = plan.grid[..18]
            .iter()
            .filter(|&&s| (0.05..=50.0).contains(&s))
            .count();
        assert_eq!(noises, inside);
        assert!(edm_plan(&EdmConfig {
            steps: 1,
            ..Default::default()
        })
        .is_err());
        assert!(edm_plan(&EdmConfig {
            s_churn: -1.0,
            ..Default::default()
        })
        .is_err());
        assert!(edm_plan(&EdmConfig {
            s_tmin: 2.0,
            s_tmax: 1.0,
            ..Default::default()
        })
        .is_err());
    }
}
