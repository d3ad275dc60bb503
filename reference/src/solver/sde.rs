//! DDIM (Song et al. 2021, η ≥ 0), DDPM ancestral sampling (Ho et al. 2020) and Euler–Maruyama on the reverse
//! VP SDE (Song et al. 2021, score-SDE), for any schedule x_t = α_t x₀ + σ_t ε, on a grid from
//! [`super::time_steps`].
//!
//! Step from s to t < s (λ_t > λ_s), with ε̂ = ε̂(x_s, s) or x̂₀ = x̂₀(x_s, s):
//! - DDIM: x_t = α_t x̂₀ + √(σ_t² − c²)·ε̂ + c·z, x̂₀ = (x_s − σ_s ε̂)/α_s, c = η·σ_t·√(1 − e^{2(λ_s − λ_t)})
//!   (DDIM's σ_t(η) = η√((1−ᾱ_t)/(1−ᾱ_s))·√(1 − ᾱ_s/ᾱ_t) written with α, σ; η = 0 is DPM-Solver-1).
//! - Ancestral: the posterior q(x_t | x_s, x₀ = x̂₀): mean (α_t σ²_{s|t}/σ_s²)·x̂₀ + (α_{s|t} σ_t²/σ_s²)·x_s,
//!   variance σ²_{s|t} σ_t²/σ_s², with α_{s|t} = α_s/α_t and σ²_{s|t} = σ_s² − α²_{s|t} σ_t² (equal to DDIM η = 1).
//! - Euler–Maruyama: dx = [f x − g² ∇log p] dt + g dw̄ with f = d log α/dt, g² = dσ²/dt − 2fσ² = −2σ² dλ/dt,
//!   ∇log p = −ε̂/σ; with Δ = s − t: x_t = (1 − fΔ)·x_s − (g²Δ/σ_s)·ε̂ + g√Δ·z. The derivatives are 5-point
//!   central differences (exact for VP-linear's quadratic log α up to rounding).
//!
//! Every step draws one noise array (none when its coefficient is 0). `denoise` appends x̂₀ at t_end.

use super::{config_err, point, time_steps, Lin, Skip, SolverError};
use crate::schedule::Schedule;
use msd_plan::{Op, Plan, TimeAxis, Want};

/// The grid and ending of the VP samplers.
#[derive(Debug, Clone, PartialEq)]
pub struct VpGridConfig {
    pub steps: usize,
    pub skip: Skip,
    pub t_start: Option<f64>,
    pub t_end: f64,
    pub denoise: bool,
}

impl Default for VpGridConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            skip: Skip::TimeUniform,
            t_start: None,
            t_end: 1e-3,
            denoise: false,
        }
    }
}

fn grid(schedule: &dyn Schedule, cfg: &VpGridConfig) -> Result<Vec<f64>, SolverError> {
    if cfg.steps == 0 {
        return config_err("--steps must be >= 1");
    }
    let t_start = cfg.t_start.unwrap_or(schedule.domain().1);
    time_steps(schedule, cfg.skip, t_start, cfg.t_end, cfg.steps)
}

fn finish(
    schedule: &dyn Schedule,
    name: String,
    axis: TimeAxis,
    mut ops: Vec<Op>,
    grid: Vec<f64>,
    cfg: &VpGridConfig,
) -> Result<Plan, SolverError> {
    let mut registers = 3;
    if cfg.denoise {
        ops.push(Op::Eval {
            dst: 3,
            src: 0,
            at: point(schedule, cfg.t_end),
            want: Want::X0,
        });
        ops.push(Op::Combine {
            dst: 0,
            terms: vec![(3, 1.0)],
        });
        registers = 4;
    }
    let plan = Plan {
        name,
        axis,
        registers,
        ops,
        grid,
    };
    plan.validate().map_err(SolverError::Plan)?;
    Ok(plan)
}

/// Pushes "reg 2 = noise; state = Σ terms + c·noise" (the noise only when c > 0).
fn step_with_noise(ops: &mut Vec<Op>, l: Lin, c: f64) {
    if c > 0.0 {
        ops.push(Op::Noise { dst: 2 });
        ops.push(l.plus(2, c).into_op(0));
    } else {
        ops.push(l.into_op(0));
    }
}

/// DDIM with stochasticity η ≥ 0 (η = 0: deterministic DDIM; η = 1: DDPM's posterior variance).
pub fn ddim_plan(
    schedule: &dyn Schedule,
    axis: TimeAxis,
    cfg: &VpGridConfig,
    eta: f64,
) -> Result<Plan, SolverError> {
    if !(eta.is_finite() && eta >= 0.0) {
        return config_err(format!("--eta {eta}: must be finite and >= 0"));
    }
    let g = grid(schedule, cfg)?;
    let mut ops = Vec::new();
    for i in 0..cfg.steps {
        let (s, t) = (g[i], g[i + 1]);
        let (ps, pt) = (point(schedule, s), point(schedule, t));
        ops.push(Op::Eval {
            dst: 1,
            src: 0,
            at: ps,
            want: Want::Eps,
        });
        let c = eta
            * pt.sigma
            * (-(2.0 * (ps.lambda() - pt.lambda())).exp_m1())
                .max(0.0)
                .sqrt();
        if c > pt.sigma {
            return config_err(format!(
                "--eta {eta}: the DDIM noise {c} exceeds sigma_t = {} at t = {t}",
                pt.sigma
            ));
        }
        let ratio = pt.alpha / ps.alpha;
        let l = Lin::of(&[
            (0, ratio),
            (1, (pt.sigma * pt.sigma - c * c).sqrt() - ratio * ps.sigma),
        ]);
        step_with_noise(&mut ops, l, c);
        ops.push(Op::Record { step: i + 1, t });
    }
    finish(
        schedule,
        format!("ddim eta {eta} steps {}", cfg.steps),
        axis,
        ops,
        g,
        cfg,
    )
}

/// DDPM ancestral sampling: x_t drawn from the posterior q(x_t | x_s, x̂₀(x_s, s)).
pub fn ancestral_plan(
    schedule: &dyn Schedule,
    axis: TimeAxis,
    cfg: &VpGridConfig,
) -> Result<Plan, SolverError> {
    let g = grid(schedule, cfg)?;
    let mut ops = Vec::new();
    for i in 0..cfg.steps {
        let (s, t) = (g[i], g[i + 1]);
        let (ps, pt) = (point(schedule, s), point(schedule, t));
        ops.push(Op::Eval {
            dst: 1,
            src: 0,
            at: ps,
            want: Want::X0,
        });
        let a_st = ps.alpha / pt.alpha;
        let var_st = ps.sigma * ps.sigma - a_st * a_st * pt.sigma * pt.sigma;
        let s2 = ps.sigma * ps.sigma;
        let l = Lin::of(&[
            (1, pt.alpha * var_st / s2),
            (0, a_st * pt.sigma * pt.sigma / s2),
        ]);
        let c = (var_st * pt.sigma * pt.sigma / s2).max(0.0).sqrt();
        step_with_noise(&mut ops, l, c);
        ops.push(Op::Record { step: i + 1, t });
    }
    finish(
        schedule,
        format!("ancestral steps {}", cfg.steps),
        axis,
        ops,
        g,
        cfg,
    )
}

/// d/dt of `f` at t by the 5-point central difference.
fn derivative(f: impl Fn(f64) -> f64, t: f64) -> f64 {
    let h = 1e-4 * t.abs().max(1e-2);
    (f(t - 2.0 * h) - 8.0 * f(t - h) + 8.0 * f(t + h) - f(t + 2.0 * h)) / (12.0 * h)
}

/// Euler–Maruyama on the reverse-time SDE of the schedule.
pub fn euler_maruyama_plan(
    schedule: &dyn Schedule,
    axis: TimeAxis,
    cfg: &VpGridConfig,
) -> Result<Plan, SolverError> {
    let g = grid(schedule, cfg)?;
    let mut ops = Vec::new();
    for i in 0..cfg.steps {
        let (s, t) = (g[i], g[i + 1]);
        let ps = point(schedule, s);
        let f = derivative(|u| schedule.log_alpha(u), s);
        let g2 = -2.0 * ps.sigma * ps.sigma * derivative(|u| schedule.lambda(u), s);
        if !(f.is_finite() && g2.is_finite() && g2 >= 0.0) {
            return config_err(format!(
                "Euler-Maruyama: the SDE coefficients are not finite at t = {s} (f = {f}, g^2 = {g2})"
            ));
        }
        ops.push(Op::Eval {
            dst: 1,
            src: 0,
            at: ps,
            want: Want::Eps,
        });
        let dt = s - t;
        let l = Lin::of(&[(0, 1.0 - f * dt), (1, -g2 * dt / ps.sigma)]);
        step_with_noise(&mut ops, l, (g2 * dt).sqrt());
        ops.push(Op::Record { step: i + 1, t });
    }
    finish(
        schedule,
        format!("euler-maruyama steps {}", cfg.steps),
        axis,
        ops,
        g,
        cfg,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::VpLinear;

    fn combines(p: &Plan) -> Vec<Vec<(usize, f64)>> {
        p.ops
            .iter()
            .filter_map(|o| match o {
                Op::Combine { dst: 0, terms } => Some(terms.clone()),
                _ => None,
            })
            .collect()
    }

    /// DDPM's ancestral step and DDIM with η = 1 are the same Gaussian: same mean coefficients (after
    /// writing x̂₀ through ε̂) and the same noise scale — two derivations checked against each other.
    #[test]
    fn ancestral_equals_ddim_eta_1() {
        let vp = VpLinear::default();
        let cfg = VpGridConfig {
            steps: 7,
            ..Default::default()
        };
        let (a, d) = (
            ancestral_plan(&vp, TimeAxis::Time, &cfg).unwrap(),
            ddim_plan(&vp, TimeAxis::Time, &cfg, 1.0).unwrap(),
        );
        for (i, (ca, cd)) in combines(&a).iter().zip(combines(&d)).enumerate() {
            let (s, t) = (a.grid[i], a.grid[i + 1]);
            let ps = point(&vp, s);
            let _ = t;
            // ancestral: m0·x̂₀ + mx·x with x̂₀ = (x − σ_s ε̂)/α_s  →  x: mx + m0/α_s, ε̂: −m0 σ_s/α_s.
            let (m0, mx, c) = (ca[0].1, ca[1].1, ca[2].1);
            let x_coef = mx + m0 / ps.alpha;
            let e_coef = -m0 * ps.sigma / ps.alpha;
            assert!((x_coef - cd[0].1).abs() < 1e-12 * x_coef.abs(), "step {i}");
            assert!(
                (e_coef - cd[1].1).abs() < 1e-10 * e_coef.abs().max(1e-3),
                "step {i}: {e_coef} {}",
                cd[1].1
            );
            assert!((c - cd[2].1).abs() < 1e-12, "step {i}");
        }
    }

    #[test]
    fn ddim_eta_0_is_dpm_solver_1() {
        let vp = VpLinear::default();
        let cfg = VpGridConfig {
            steps: 5,
            skip: Skip::LogSnr,
            t_end: 1e-3,
            ..Default::default()
        };
        let d = ddim_plan(&vp, TimeAxis::Time, &cfg, 0.0).unwrap();
        assert!(!d.is_stochastic());
        for (i, c) in combines(&d).iter().enumerate() {
            let (s, t) = (d.grid[i], d.grid[i + 1]);
            let h = vp.lambda(t) - vp.lambda(s);
            assert!((c[0].1 - vp.alpha(t) / vp.alpha(s)).abs() < 1e-14);
            assert!((c[1].1 + vp.sigma(t) * h.exp_m1()).abs() < 1e-12);
        }
    }

    #[test]
    fn em_uses_beta_of_t_on_vp_linear() {
        let vp = VpLinear::default();
        let cfg = VpGridConfig {
            steps: 10,
            ..Default::default()
        };
        let p = euler_maruyama_plan(&vp, TimeAxis::Time, &cfg).unwrap();
        assert!(p.is_stochastic());
        for (i, c) in combines(&p).iter().enumerate() {
            let (s, t) = (p.grid[i], p.grid[i + 1]);
            let beta = 0.1 + 19.9 * s;
            let dt = s - t;
            assert!((c[0].1 - (1.0 + 0.5 * beta * dt)).abs() < 1e-9, "{i}");
            assert!((c[1].1 + beta * dt / vp.sigma(s)).abs() < 1e-8, "{i}");
            assert!((c[2].1 - (beta * dt).sqrt()).abs() < 1e-8, "{i}");
        }
        assert!(ddim_plan(&vp, TimeAxis::Time, &cfg, -1.0).is_err());
        assert!(ddim_plan(&vp, TimeAxis::Time, &VpGridConfig { steps: 0, ..cfg }, 0.0).is_err());
    }
}
