//! The discrete-step VP schedule of LDM, read as a continuous schedule the way DPM-Solver's
//! `NoiseScheduleVP('discrete')` does.
//!
//! LDM's "linear" schedule: β_n = (√β_start + n/(N−1)·(√β_end − √β_start))², n = 0..N−1 (β 0.0015 → 0.0195,
//! N = 1000), ᾱ_n = Π_{k≤n}(1 − β_k). DPM-Solver puts step n at continuous time t_n = (n+1)/N with
//! log α(t_n) = ½·log ᾱ_n, interpolates log α linearly in t between those points, and feeds the network the
//! fractional step N·(t − 1/N). The time domain is [1/N, 1] (sampling runs from t = 1 to t = 1/N).
//!
//! The vendored sampler holds ᾱ in float32; this schedule keeps f64 (a difference of ~1e-7 relative).

use super::SolverError;
use crate::schedule::Schedule;

#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteVp {
    /// ½·log ᾱ_n for n = 0..N−1.
    log_alpha: Vec<f64>,
}

impl DiscreteVp {
    /// LDM's `make_beta_schedule('linear', N, linear_start, linear_end)`.
    pub fn ldm_linear(steps: usize, beta_start: f64, beta_end: f64) -> Result<Self, SolverError> {
        if steps < 2 {
            return super::config_err(format!(
                "the discrete schedule needs at least 2 steps, got {steps}"
            ));
        }
        let ok = |b: f64| b.is_finite() && b > 0.0 && b < 1.0;
        if !(ok(beta_start) && ok(beta_end)) {
            return super::config_err(format!(
                "discrete beta range [{beta_start}, {beta_end}]: both must lie in (0, 1)"
            ));
        }
        let (a, b) = (beta_start.sqrt(), beta_end.sqrt());
        let betas: Vec<f64> = (0..steps)
            .map(|n| {
                let r = a + n as f64 / (steps - 1) as f64 * (b - a);
                r * r
            })
            .collect();
        Self::from_betas(&betas)
    }

    /// From the per-step β_n (each in (0, 1)).
    pub fn from_betas(betas: &[f64]) -> Result<Self, SolverError> {
        let mut acc = 0.0;
        let mut log_alpha = Vec::with_capacity(betas.len());
        for &b in betas {
            if !(b.is_finite() && b > 0.0 && b < 1.0) {
                return super::config_err(format!("discrete beta {b}: must lie in (0, 1)"));
            }
            acc += (-b).ln_1p();
            log_alpha.push(0.5 * acc);
        }
        Ok(Self { log_alpha })
    }

    /// The LDM CelebA-HQ setting (β 0.0015 → 0.0195, N = 1000).
    pub fn ldm_default() -> Self {
        Self::ldm_linear(1000, 0.0015, 0.0195).expect("valid constants")
    }

    /// Number of discrete steps N.
    pub fn steps(&self) -> usize {
        self.log_alpha.len()
    }

    /// The network's fractional step input N·(t − 1/N).
    pub fn model_step(&self, t: f64) -> f64 {
        let n = self.steps() as f64;
        n * (t - 1.0 / n)
    }
}

impl Schedule for DiscreteVp {
    fn name(&self) -> &'static str {
        "vp-discrete"
    }
    fn domain(&self) -> (f64, f64) {
        (1.0 / self.steps() as f64, 1.0)
    }
    fn log_alpha(&self, t: f64) -> f64 {
        // Linear interpolation on t_n = (n+1)/N, extended linearly beyond the ends as the reference does.
        let n = self.steps();
        let x = t * n as f64 - 1.0;
        let i = (x.floor().max(0.0) as usize).min(n - 2);
        let frac = x - i as f64;
        self.log_alpha[i] + frac * (self.log_alpha[i + 1] - self.log_alpha[i])
    }
    fn sigma(&self, t: f64) -> f64 {
        (-(2.0 * self.log_alpha(t)).exp_m1()).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_cumulative_product_at_the_steps() {
        let s = DiscreteVp::ldm_default();
        let mut abar = 1.0;
        for n in 0..1000 {
            let r = 0.0015f64.sqrt() + n as f64 / 999.0 * (0.0195f64.sqrt() - 0.0015f64.sqrt());
            abar *= 1.0 - r * r;
            let t = (n + 1) as f64 / 1000.0;
            assert!(
                (s.alpha(t) * s.alpha(t) - abar).abs() < 1e-12 * abar.max(1e-6),
                "n = {n}"
            );
        }
        assert!((s.model_step(1.0) - 999.0).abs() < 1e-12);
        // λ is decreasing, so λ⁻¹ (bisection) round-trips between grid points.
        let t = 0.4237;
        assert!((s.lambda_inv(s.lambda(t)).unwrap() - t).abs() < 1e-12);
        assert!(DiscreteVp::ldm_linear(1, 0.1, 0.2).is_err());
        assert!(DiscreteVp::ldm_linear(10, 0.1, 1.5).is_err());
    }
}
