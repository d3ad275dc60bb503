//! DPM-Solver (Lu et al. 2022, noise prediction) and DPM-Solver++ (Lu et al. 2022b, data prediction).
//!
//! The formulas are those of the authors' reference implementation (`dpm_solver_pytorch.py`, the version the
//! multistage authors vendored), with `solver_type = 'dpmsolver'`:
//! - singlestep orders 2 and 3 with the reference's inner points: `order + 1` points from s to t spaced by
//!   the skip type (uniform in λ, t or √t between the two outer points), and r₁, r₂ the λ fractions of the
//!   inner points, r_k = (λ(s_k) − λ(s))/h. With `logSNR` spacing this is r₁ = ½ (order 2) and r₁ = ⅓,
//!   r₂ = ⅔ (order 3); with the time spacings the fractions depend on the step;
//! - multistep orders 2 and 3 built on the previous model outputs (lower orders while warming up). Order 3
//!   is the reference's formula exactly: it weights the second difference D₂ ≈ h²·x⁽²⁾/2 by φ₃, the
//!   coefficient of h²·x⁽²⁾ itself, so its local error stays O(h³) and it is globally second order
//!   (docs/paper-notes.md §4.1; the tests pin its coefficients);
//! - `singlestep` uses the order schedule of `get_orders_and_timesteps_for_singlestep_solver` ("DPM-Solver-fast"
//!   for order 3: K = ⌊NFE/3⌋ + 1 outer steps); `singlestep-fixed` uses K = ⌊NFE/order⌋ steps of one order;
//! - with `logSNR` spacing, singlestep outer points are uniform in λ over K steps; with the time spacings they
//!   are taken from the NFE-point grid at the cumulative orders (as the reference does);
//! - `lower_order_final` lowers the multistep order on the last steps when there are fewer than 15 steps
//!   (the threshold of the vendored version; DPM-Solver v2 uses 10);
//! - an optional final denoising step evaluates x̂₀ at t_end (one more NFE) and returns it.

use super::{config_err, point, time_steps, Lin, Skip, SolverError};
use crate::schedule::Schedule;
use msd_plan::{Op, Plan, TimeAxis, Want};

/// Noise prediction (DPM-Solver) or data prediction (DPM-Solver++).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Algorithm {
    DpmSolver,
    DpmSolverPlusPlus,
}

/// DPM-Solver's `method`. With the `clap` feature it is also the `--method` value of `msd plan`/`msd sample`
/// (spellings `singlestep`, `singlestep-fixed`, `multistep`, listed without help text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Method {
    /// The reference's `singlestep`: a mix of orders so that the NFE is used exactly (order 3 = "fast").
    #[cfg_attr(feature = "clap", value(help = None))]
    Singlestep,
    /// The reference's `singlestep_fixed`: ⌊NFE/order⌋ steps all of one order.
    #[cfg_attr(feature = "clap", value(help = None))]
    SinglestepFixed,
    Multistep,
}

/// Below this many steps, `lower_order_final` lowers the order of the last multistep updates.
pub const LOWER_ORDER_FINAL_BELOW: usize = 15;

#[derive(Debug, Clone, PartialEq)]
pub struct DpmSolverConfig {
    pub algorithm: Algorithm,
    pub method: Method,
    pub order: usize,
    /// The reference's `steps`: the number of model evaluations (without the final denoising one).
    pub steps: usize,
    pub skip: Skip,
    /// t_T; `None` = the schedule's largest time.
    pub t_start: Option<f64>,
    /// t_ε, the end time (the paper: 1e-3 or 1e-4).
    pub t_end: f64,
    pub lower_order_final: bool,
    /// Evaluate x̂₀ at t_end and return it (the reference's `denoise_to_zero`).
    pub denoise: bool,
}

impl Default for DpmSolverConfig {
    /// The multistage paper's CIFAR-10 sampler: DPM-Solver-3 singlestep ("fast"), logSNR, 20 NFE, t_ε = 1e-4.
    fn default() -> Self {
        Self {
            algorithm: Algorithm::DpmSolver,
            method: Method::Singlestep,
            order: 3,
            steps: 20,
            skip: Skip::LogSnr,
            t_start: None,
            t_end: 1e-4,
            lower_order_final: false,
            denoise: false,
        }
    }
}

/// The order of each outer singlestep update for `steps` NFE (the reference's singlestep order schedule).
pub fn singlestep_orders(steps: usize, order: usize) -> Vec<usize> {
    match order {
        3 => {
            let k = steps / 3 + 1;
            match steps % 3 {
                0 => [vec![3; k - 2], vec![2, 1]].concat(),
                1 => [vec![3; k - 1], vec![1]].concat(),
                _ => [vec![3; k - 1], vec![2]].concat(),
            }
        }
        2 => {
            if steps % 2 == 0 {
                vec![2; steps / 2]
            } else {
                [vec![2; steps / 2], vec![1]].concat()
            }
        }
        _ => vec![1; steps],
    }
}

/// Register layout: 0 state, 1 model(s), 2 x_s1, 3 model(s1), 4 x_s2, 5 model(s2); multistep keeps its
/// history of model outputs in registers 1..=order.
struct Builder<'a> {
    schedule: &'a dyn Schedule,
    algorithm: Algorithm,
    /// How singlestep updates place their inner points between the outer ones.
    skip: Skip,
    ops: Vec<Op>,
    registers: usize,
}

impl Builder<'_> {
    fn want(&self) -> Want {
        match self.algorithm {
            Algorithm::DpmSolver => Want::Eps,
            Algorithm::DpmSolverPlusPlus => Want::X0,
        }
    }

    fn eval(&mut self, dst: usize, src: usize, t: f64) {
        self.registers = self.registers.max(dst + 1);
        let want = self.want();
        self.ops.push(Op::Eval {
            dst,
            src,
            at: point(self.schedule, t),
            want,
        });
    }

    fn combine(&mut self, dst: usize, l: Lin) {
        self.registers = self.registers.max(dst + 1);
        self.ops.push(l.into_op(dst));
    }

    /// The first-order part shared by every update from s to t: the coefficient of x_s, and the
    /// "φ₁-weight" w with x_t = coef·x_s − w·m_s (+ higher-order corrections), as functions of the
    /// algorithm. For DPM-Solver: coef = e^{log α_t − log α_s}, w = σ_t·expm1(h); for DPM-Solver++:
    /// coef = σ_t/σ_s, w = α_t·expm1(−h).
    fn first_order(&self, s: f64, t: f64) -> (f64, f64, f64) {
        let h = self.schedule.lambda(t) - self.schedule.lambda(s);
        self.first_order_h(s, t, h)
    }

    /// As [`Self::first_order`] with the λ-step h given (inside a singlestep update the reference uses r·h,
    /// not λ(s₁) − λ(s), for the intermediate points).
    fn first_order_h(&self, s: f64, t: f64, h: f64) -> (f64, f64, f64) {
        let sc = self.schedule;
        match self.algorithm {
            Algorithm::DpmSolver => (
                (sc.log_alpha(t) - sc.log_alpha(s)).exp(),
                sc.sigma(t) * h.exp_m1(),
                h,
            ),
            Algorithm::DpmSolverPlusPlus => {
                (sc.sigma(t) / sc.sigma(s), sc.alpha(t) * (-h).exp_m1(), h)
            }
        }
    }

    /// The inner points of a singlestep update of `order` from s to t, as the reference places them:
    /// `order + 1` points from s to t spaced by the skip type, returned with their λ fractions
    /// r_k = (λ(s_k) − λ(s))/h (k = 1, …, order − 1).
    fn inner_points(&self, order: usize, s: f64, t: f64) -> Result<Vec<(f64, f64)>, SolverError> {
        if order < 2 {
            return Ok(Vec::new());
        }
        let sc = self.schedule;
        let inner = time_steps(sc, self.skip, s, t, order)?;
        let (lam_s, h) = (sc.lambda(s), sc.lambda(t) - sc.lambda(s));
        Ok(inner[1..order]
            .iter()
            .map(|&u| (u, (sc.lambda(u) - lam_s) / h))
            .collect())
    }

    /// One singlestep update of `order` from s to t; the state is register 0.
    fn singlestep(&mut self, order: usize, s: f64, t: f64) -> Result<(), SolverError> {
        let sc = self.schedule;
        let (lam_s, lam_t) = (sc.lambda(s), sc.lambda(t));
        let h = lam_t - lam_s;
        let inner = self.inner_points(order, s, t)?;
        self.eval(1, 0, s);
        let (coef_t, w_t, _) = self.first_order(s, t);
        let pp = self.algorithm == Algorithm::DpmSolverPlusPlus;
        match order {
            1 => self.combine(0, Lin::of(&[(0, coef_t), (1, -w_t)])),
            2 => {
                let (s1, r1) = inner[0];
                let (coef_1, w_1, _) = self.first_order_h(s, s1, r1 * h);
                self.combine(2, Lin::of(&[(0, coef_1), (1, -w_1)]));
                self.eval(3, 2, s1);
                // x_t = coef·x − w·m_s − (0.5/r1)·w·(m_s1 − m_s) (both algorithms; w carries the sign of h).
                let c = 0.5 / r1 * w_t;
                self.combine(0, Lin::of(&[(0, coef_t), (1, -w_t + c), (3, -c)]));
            }
            3 => {
                let ((s1, r1), (s2, r2)) = (inner[0], inner[1]);
                let (coef_1, w_1, _) = self.first_order_h(s, s1, r1 * h);
                self.combine(2, Lin::of(&[(0, coef_1), (1, -w_1)]));
                self.eval(3, 2, s1);
                let (coef_2, w_2, _) = self.first_order_h(s, s2, r2 * h);
                // φ₂₂ and φ₂ as in the reference: expm1(±r₂h)/(r₂h) ∓ 1 and φ₁/h ∓ 1 (− for DPM-Solver, with
                // positive h; + for DPM-Solver++, whose φ's are built on −h).
                let (phi_22, phi_2) = if pp {
                    ((-r2 * h).exp_m1() / (r2 * h) + 1.0, (-h).exp_m1() / h + 1.0)
                } else {
                    ((r2 * h).exp_m1() / (r2 * h) - 1.0, h.exp_m1() / h - 1.0)
                };
                // DPM-Solver:   x_s2 = coef·x − σ_s2 φ₁₂ m_s − (r₂/r₁) σ_s2 φ₂₂ (m_s1 − m_s)
                // DPM-Solver++: x_s2 = coef·x − α_s2 φ₁₂ m_s + (r₂/r₁) α_s2 φ₂₂ (m_s1 − m_s)
                let scale_2 = if pp { sc.alpha(s2) } else { -sc.sigma(s2) };
                let c2 = r2 / r1 * scale_2 * phi_22;
                self.combine(4, Lin::of(&[(0, coef_2), (1, -w_2 - c2), (3, c2)]));
                self.eval(5, 4, s2);
                // DPM-Solver:   x_t = coef·x − σ_t φ₁ m_s − (1/r₂) σ_t φ₂ (m_s2 − m_s)
                // DPM-Solver++: x_t = coef·x − α_t φ₁ m_s + (1/r₂) α_t φ₂ (m_s2 − m_s)
                let scale_t = if pp { sc.alpha(t) } else { -sc.sigma(t) };
                let ct = scale_t * phi_2 / r2;
                self.combine(0, Lin::of(&[(0, coef_t), (1, -w_t - ct), (5, ct)]));
            }
            _ => return config_err(format!("order {order}: DPM-Solver has orders 1, 2 and 3")),
        }
        Ok(())
    }

    /// One multistep update of `order` to t from the history (times `prev`, registers `regs`, oldest first).
    fn multistep(&mut self, order: usize, prev: &[f64], regs: &[usize], t: f64) {
        let sc = self.schedule;
        let n = prev.len();
        let (t0, m0) = (prev[n - 1], regs[n - 1]);
        let (coef, w, h) = self.first_order(t0, t);
        let pp = self.algorithm == Algorithm::DpmSolverPlusPlus;
        let mut l = Lin::of(&[(0, coef), (m0, -w)]);
        match order {
            1 => {}
            2 => {
                let (t1, m1) = (prev[n - 2], regs[n - 2]);
                let h0 = sc.lambda(t0) - sc.lambda(t1);
                let r0 = h0 / h;
                // D1_0 = (m0 − m1)/r0; x_t = coef·x − w·m0 − 0.5·w·D1_0 (both algorithms).
                let d10 = Lin::of(&[(m0, 1.0 / r0), (m1, -1.0 / r0)]);
                l = l.add(&d10, -0.5 * w);
            }
            _ => {
                let (t1, m1) = (prev[n - 2], regs[n - 2]);
                let (t2, m2) = (prev[n - 3], regs[n - 3]);
                let h1 = sc.lambda(t1) - sc.lambda(t2);
                let h0 = sc.lambda(t0) - sc.lambda(t1);
                let (r0, r1) = (h0 / h, h1 / h);
                let d10 = Lin::of(&[(m0, 1.0 / r0), (m1, -1.0 / r0)]);
                let d11 = Lin::of(&[(m1, 1.0 / r1), (m2, -1.0 / r1)]);
                let diff = d10.clone().add(&d11, -1.0);
                let d1 = d10.add(&diff, r0 / (r0 + r1));
                let d2 = Lin::default().add(&diff, 1.0 / (r0 + r1));
                if pp {
                    // x_t = (σ_t/σ_0)x − α_t φ₁ m0 + α_t φ₂ D1 − α_t φ₃ D2, φ on −h.
                    let phi_1 = (-h).exp_m1();
                    let phi_2 = phi_1 / h + 1.0;
                    let phi_3 = phi_2 / h - 0.5;
                    let a = sc.alpha(t);
                    l = l.add(&d1, a * phi_2).add(&d2, -a * phi_3);
                } else {
                    // x_t = e^{Δlog α}x − σ_t φ₁ m0 − σ_t φ₂ D1 − σ_t φ₃ D2.
                    let phi_1 = h.exp_m1();
                    let phi_2 = phi_1 / h - 1.0;
                    let phi_3 = phi_2 / h - 0.5;
                    let s = sc.sigma(t);
                    l = l.add(&d1, -s * phi_2).add(&d2, -s * phi_3);
                }
            }
        }
        self.combine(0, l);
    }
}

/// The plan of a DPM-Solver / DPM-Solver++ configuration on a schedule (any schedule with λ and its inverse).
pub fn dpm_solver_plan(
    schedule: &dyn Schedule,
    axis: TimeAxis,
    cfg: &DpmSolverConfig,
) -> Result<Plan, SolverError> {
    if !(1..=3).contains(&cfg.order) {
        return config_err(format!(
            "--order {}: DPM-Solver has orders 1, 2 and 3",
            cfg.order
        ));
    }
    if cfg.steps == 0 {
        return config_err("the number of function evaluations (--nfe/--steps) must be >= 1");
    }
    let needs = match cfg.method {
        Method::Singlestep => 1,
        Method::SinglestepFixed | Method::Multistep => cfg.order,
    };
    if cfg.steps < needs {
        return config_err(format!(
            "NFE {} is smaller than order {} needs with method {:?} (at least {needs})",
            cfg.steps, cfg.order, cfg.method
        ));
    }
    let t_start = cfg.t_start.unwrap_or(schedule.domain().1);
    let mut b = Builder {
        schedule,
        algorithm: cfg.algorithm,
        skip: cfg.skip,
        ops: Vec::new(),
        registers: 1,
    };
    let grid;
    match cfg.method {
        Method::Singlestep | Method::SinglestepFixed => {
            let orders = if cfg.method == Method::Singlestep {
                singlestep_orders(cfg.steps, cfg.order)
            } else {
                vec![cfg.order; cfg.steps / cfg.order]
            };
            let k = orders.len();
            grid = if cfg.skip == Skip::LogSnr || cfg.method == Method::SinglestepFixed {
                time_steps(schedule, cfg.skip, t_start, cfg.t_end, k)?
            } else {
                // The reference takes the outer points from the NFE-point grid at the cumulative orders.
                let fine = time_steps(schedule, cfg.skip, t_start, cfg.t_end, cfg.steps)?;
                let mut idx = 0;
                let mut g = vec![fine[0]];
                for o in &orders {
                    idx += o;
                    g.push(fine[idx]);
                }
                g
            };
            for (i, &o) in orders.iter().enumerate() {
                b.singlestep(o, grid[i], grid[i + 1])?;
                b.ops.push(Op::Record {
                    step: i + 1,
                    t: grid[i + 1],
                });
            }
        }
        Method::Multistep => {
            let order = cfg.order;
            grid = time_steps(schedule, cfg.skip, t_start, cfg.t_end, cfg.steps)?;
            // History registers 1..=order, oldest first; rotated instead of copied.
            let mut regs: Vec<usize> = vec![1];
            let mut prev = vec![grid[0]];
            b.eval(1, 0, grid[0]);
            for (step, &t) in grid.iter().enumerate().skip(1) {
                let step_order = if step < order {
                    step
                } else if cfg.lower_order_final && cfg.steps < LOWER_ORDER_FINAL_BELOW {
                    order.min(cfg.steps + 1 - step)
                } else {
                    order
                };
                b.multistep(step_order, &prev, &regs, t);
                b.ops.push(Op::Record { step, t });
                if step < cfg.steps {
                    let dst = if regs.len() < order {
                        regs.len() + 1
                    } else {
                        // The oldest output is no longer needed: reuse its register.
                        let r = regs.remove(0);
                        prev.remove(0);
                        r
                    };
                    b.eval(dst, 0, t);
                    regs.push(dst);
                    prev.push(t);
                }
            }
        }
    }
    if cfg.denoise {
        denoise_to(&mut b, cfg.t_end);
    }
    let alg = match cfg.algorithm {
        Algorithm::DpmSolver => "dpm-solver",
        Algorithm::DpmSolverPlusPlus => "dpm-solver++",
    };
    let plan = Plan {
        name: format!(
            "{alg} order {} {:?} {:?} nfe {}",
            cfg.order, cfg.method, cfg.skip, cfg.steps
        ),
        axis,
        registers: b.registers,
        ops: b.ops,
        grid,
    };
    plan.validate().map_err(SolverError::Plan)?;
    Ok(plan)
}

/// Appends the final denoising: state ← x̂₀(state, t_end).
fn denoise_to(b: &mut Builder, t_end: f64) {
    let r = b.registers;
    b.registers += 1;
    b.ops.push(Op::Eval {
        dst: r,
        src: 0,
        at: point(b.schedule, t_end),
        want: Want::X0,
    });
    b.ops.push(Op::Combine {
        dst: 0,
        terms: vec![(r, 1.0)],
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::VpLinear;

    #[test]
    fn fast_order_schedule() {
        assert_eq!(singlestep_orders(20, 3), vec![3, 3, 3, 3, 3, 3, 2]);
        assert_eq!(singlestep_orders(21, 3), vec![3, 3, 3, 3, 3, 3, 2, 1]);
        assert_eq!(singlestep_orders(22, 3), vec![3, 3, 3, 3, 3, 3, 3, 1]);
        assert_eq!(singlestep_orders(7, 2), vec![2, 2, 2, 1]);
        assert_eq!(singlestep_orders(3, 1), vec![1, 1, 1]);
        for n in 1..40 {
            for o in 1..=3 {
                assert_eq!(singlestep_orders(n, o).iter().sum::<usize>(), n);
            }
        }
    }

    /// The 20 evaluation times of the paper's CIFAR-10 sampler, as listed (3 digits) in docs/paper-notes.md
    /// §4.1, from an independent port of the reference.
    #[test]
    fn paper_dpm_solver_3_times() {
        let plan = dpm_solver_plan(
            &VpLinear::default(),
            TimeAxis::Time,
            &DpmSolverConfig::default(),
        )
        .unwrap();
        let expect = [
            "1.0", ".947", ".892", ".832", ".768", ".699", ".622", ".537", ".4419", ".339", ".239",
            ".155", ".0947", ".0557", ".0318", ".0174", ".0090", ".0043", ".0019", ".0005",
        ];
        let times = plan.times();
        assert_eq!(times.len(), 20);
        for (t, e) in times.iter().zip(expect) {
            // Within half a unit of the last digit given there.
            let decimals = e.split('.').nth(1).unwrap().len() as i32;
            let tol = 0.5 * 10f64.powi(-decimals) + 1e-12;
            assert!(
                (t - e.parse::<f64>().unwrap()).abs() <= tol,
                "{e}: {times:?}"
            );
        }
        assert_eq!(plan.grid.len(), 8);
    }

    /// With `time_uniform` (`time_quadratic`) spacing the reference places a singlestep update's inner points
    /// uniformly in t (√t) between the outer points, which themselves sit on the NFE-point grid: every
    /// evaluation lands on that grid, t_k = 1 − k·(1 − t_ε)/NFE. The λ fractions are then not ⅓, ⅔.
    #[test]
    fn time_spaced_singlestep_inner_points() {
        let vp = VpLinear::default();
        for (method, order, skip) in [
            (Method::Singlestep, 3, Skip::TimeUniform),
            (Method::SinglestepFixed, 2, Skip::TimeUniform),
            (Method::Singlestep, 3, Skip::TimeQuadratic),
        ] {
            let cfg = DpmSolverConfig {
                method,
                order,
                skip,
                steps: 20,
                t_end: 1e-3,
                ..Default::default()
            };
            let plan = dpm_solver_plan(&vp, TimeAxis::Time, &cfg).unwrap();
            let times = plan.times();
            assert_eq!(times.len(), 20);
            for (k, t) in times.iter().enumerate() {
                let expect = match skip {
                    Skip::TimeQuadratic => {
                        let u = 1.0 - k as f64 * (1.0 - 1e-3f64.sqrt()) / 20.0;
                        u * u
                    }
                    _ => 1.0 - k as f64 * 0.999 / 20.0,
                };
                assert!((t - expect).abs() < 1e-14, "{skip:?} {k}: {t} vs {expect}");
            }
        }
        // The first order-3 step of the time-uniform plan: 1 → 0.85015 through 0.95005 and 0.9001.
        let b = Builder {
            schedule: &vp,
            algorithm: Algorithm::DpmSolver,
            skip: Skip::TimeUniform,
            ops: Vec::new(),
            registers: 1,
        };
        let (s, t) = (1.0, 1.0 - 3.0 * 0.999 / 20.0);
        let inner = b.inner_points(3, s, t).unwrap();
        let frac = |u: f64| (vp.lambda(u) - vp.lambda(s)) / (vp.lambda(t) - vp.lambda(s));
        for (k, &(u, r)) in inner.iter().enumerate() {
            assert!((u - (1.0 - (k + 1) as f64 * 0.999 / 20.0)).abs() < 1e-15);
            assert!((r - frac(u)).abs() < 1e-15);
        }
        // The fractions are 0.35118 and 0.68450 (computed separately from the closed-form λ), not ⅓ and ⅔.
        assert!((inner[0].1 - 0.351178).abs() < 1e-6, "{inner:?}");
        assert!((inner[1].1 - 0.684496).abs() < 1e-6, "{inner:?}");
        // With logSNR spacing the same construction gives exactly the classical ⅓, ⅔.
        let b = Builder {
            skip: Skip::LogSnr,
            ..b
        };
        let inner = b.inner_points(3, 1.0, 0.5).unwrap();
        assert!((inner[0].1 - 1.0 / 3.0).abs() < 1e-12 && (inner[1].1 - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn nfe_and_errors() {
        let vp = VpLinear::default();
        for (method, order, steps, nfe) in [
            (Method::Multistep, 2, 20, 20),
            (Method::Multistep, 3, 10, 10),
            (Method::SinglestepFixed, 3, 20, 18),
            (Method::Singlestep, 2, 9, 9),
            (Method::Singlestep, 1, 5, 5),
        ] {
            let cfg = DpmSolverConfig {
                method,
                order,
                steps,
                skip: Skip::TimeUniform,
                ..Default::default()
            };
            assert_eq!(
                dpm_solver_plan(&vp, TimeAxis::Time, &cfg).unwrap().nfe(),
                nfe
            );
            let den = DpmSolverConfig {
                denoise: true,
                ..cfg
            };
            assert_eq!(
                dpm_solver_plan(&vp, TimeAxis::Time, &den).unwrap().nfe(),
                nfe + 1
            );
        }
        let bad = |c: DpmSolverConfig| {
            dpm_solver_plan(&vp, TimeAxis::Time, &c)
                .unwrap_err()
                .to_string()
        };
        let e = bad(DpmSolverConfig {
            method: Method::Multistep,
            steps: 2,
            ..Default::default()
        });
        assert!(e.contains("smaller than order 3"), "{e}");
        assert!(bad(DpmSolverConfig {
            order: 4,
            ..Default::default()
        })
        .contains("orders 1, 2 and 3"));
        assert!(bad(DpmSolverConfig {
            steps: 0,
            ..Default::default()
        })
        .contains(">= 1"));
        assert!(bad(DpmSolverConfig {
            t_end: 0.0,
            ..Default::default()
        })
        .contains("finite lambda"));
        assert!(bad(DpmSolverConfig {
            t_end: 1.5,
            ..Default::default()
        })
        .contains("outside"));
    }

    #[test]
    fn lower_order_final_only_below_15_steps() {
        let vp = VpLinear::default();
        let orders = |steps: usize| {
            let cfg = DpmSolverConfig {
                algorithm: Algorithm::DpmSolverPlusPlus,
                method: Method::Multistep,
                order: 3,
                steps,
                skip: Skip::TimeUniform,
                lower_order_final: true,
                ..Default::default()
            };
            let plan = dpm_solver_plan(&vp, TimeAxis::Time, &cfg).unwrap();
            // The last update's number of model terms = its order.
            let last = plan
                .ops
                .iter()
                .rev()
                .find_map(|op| match op {
                    Op::Combine { dst: 0, terms } => Some(terms.len() - 1),
                    _ => None,
                })
                .unwrap();
            last
        };
        assert_eq!(orders(10), 1);
        assert_eq!(orders(20), 3);
    }
}
