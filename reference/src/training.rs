//! The scalar parts of training, in f64: noise levels and their densities restricted to a stage, the
//! loss weights and preconditioning, the stage probabilities of the `proportional` schedule, the learning
//! rate warm-up and the EMA decay. The candle training loop (`msd-accel`'s `train` module) computes the
//! same quantities on the host and is checked against these functions by property tests.
//!
//! Three families (docs/training.md):
//! - **VP continuous** (score-SDE / DPM-Solver): t ~ U within the stage's part of [ε_t, 1], x_t = α_t·x₀ + σ_t·ε,
//!   unit weight on (ε̂ − ε)².
//! - **EDM**: ln σ ~ N(P_mean, P_std²) restricted to the stage's σ range, D = c_skip·x + c_out·F(c_in·x; c_noise),
//!   weight (σ² + σ_d²)/(σ·σ_d)² on (D − x₀)².
//! - **LDM discrete**: integer step n uniform within the stage, x_n = √ᾱ_n·x₀ + √(1 − ᾱ_n)·ε, unit weight.

use statrs::distribution::{ContinuousCDF, Normal};

use crate::schedule::{Schedule, VpLinear};

/// The EDM data standard deviation σ_data.
pub const SIGMA_DATA: f64 = 0.5;
/// EDM's training log-normal: ln σ ~ N(P_MEAN, P_STD²).
pub const P_MEAN: f64 = -1.2;
pub const P_STD: f64 = 1.2;
/// The smallest training time of the continuous VP loss.
pub const EPS_T: f64 = 1e-5;

/// (α_t, σ_t) of the linear VP schedule (β 0.1 → 20).
pub fn vp_alpha_sigma(t: f64) -> (f64, f64) {
    let s = VpLinear::default();
    (s.alpha(t), s.sigma(t))
}

/// EDM preconditioning (c_skip, c_out, c_in, c_noise) at noise level σ with data std `sigma_data`.
pub fn edm_precond(sigma: f64, sigma_data: f64) -> (f64, f64, f64, f64) {
    let s2 = sigma * sigma + sigma_data * sigma_data;
    (
        sigma_data * sigma_data / s2,
        sigma * sigma_data / s2.sqrt(),
        1.0 / s2.sqrt(),
        sigma.ln() / 4.0,
    )
}

/// EDM loss weight λ(σ) = (σ² + σ_d²)/(σ·σ_d)².
pub fn edm_loss_weight(sigma: f64, sigma_data: f64) -> f64 {
    (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data).powi(2)
}

/// ᾱ_n of LDM's "linear" (sqrt-linear) schedule, β 0.0015 → 0.0195 over `steps` steps, for n = 0..steps−1.
pub fn ldm_alphas_cumprod(steps: usize, beta_start: f64, beta_end: f64) -> Vec<f64> {
    let (a, b) = (beta_start.sqrt(), beta_end.sqrt());
    let mut acc = 1.0;
    (0..steps)
        .map(|n| {
            let r = a + n as f64 / (steps - 1) as f64 * (b - a);
            acc *= 1.0 - r * r;
            acc
        })
        .collect()
}

fn std_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("valid standard normal")
}

/// The interval (lo, hi] of stage `k` of a partition with interior `boundaries`, with the outer ends
/// `lo0` and `hi_last`.
pub fn stage_interval(boundaries: &[f64], k: usize, lo0: f64, hi_last: f64) -> (f64, f64) {
    let lo = if k == 0 { lo0 } else { boundaries[k - 1] };
    let hi = if k == boundaries.len() {
        hi_last
    } else {
        boundaries[k]
    };
    (lo, hi)
}

/// A VP training time of stage k from a uniform draw u ∈ [0, 1): t ~ U over the stage's part of [ε_t, 1].
pub fn vp_time_in_stage(u: f64, boundaries: &[f64], k: usize, eps_t: f64) -> f64 {
    let (lo, hi) = stage_interval(boundaries, k, eps_t, 1.0);
    let lo = lo.max(eps_t);
    lo + u * (hi - lo)
}

/// An EDM σ of stage k from a uniform draw u ∈ (0, 1): the log-normal restricted to the stage's σ range
/// (boundaries in σ), drawn by inverse-CDF sampling: ln σ = P_mean + P_std·Φ⁻¹(Φ(a) + u·(Φ(b) − Φ(a))) with
/// a, b the standardised log ends.
pub fn edm_sigma_in_stage(u: f64, boundaries: &[f64], k: usize, p_mean: f64, p_std: f64) -> f64 {
    let (lo, hi) = stage_interval(boundaries, k, 0.0, f64::INFINITY);
    let n = std_normal();
    let z = |s: f64| (s.ln() - p_mean) / p_std;
    let (fa, fb) = (n.cdf(z(lo)), n.cdf(z(hi)));
    let p = fa + u * (fb - fa);
    let sigma = (p_mean + p_std * n.inverse_cdf(p)).exp();
    // Round-off at the ends of a very thin tail: keep the draw inside the stage.
    sigma.clamp(lo.max(f64::MIN_POSITIVE), hi)
}

/// An LDM training step of stage k from a uniform draw u ∈ [0, 1): the integers n ∈ [0, steps) whose stage
/// (number of boundaries strictly below n) is k, chosen uniformly.
pub fn ldm_step_in_stage(u: f64, boundaries: &[f64], k: usize, steps: usize) -> usize {
    let (first, last) = ldm_stage_steps(boundaries, k, steps);
    let count = last + 1 - first;
    first + ((u * count as f64) as usize).min(count - 1)
}

/// The first and last integer step of stage k (inclusive).
pub fn ldm_stage_steps(boundaries: &[f64], k: usize, steps: usize) -> (usize, usize) {
    let first = (0..steps)
        .find(|&n| msd_plan::stage_of(boundaries, n as f64) == k)
        .unwrap_or(0);
    let last = (0..steps)
        .rev()
        .find(|&n| msd_plan::stage_of(boundaries, n as f64) == k)
        .unwrap_or(steps - 1);
    (first, last)
}

/// The family whose training noise distribution the `proportional` schedule follows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseDist {
    /// t ~ U[ε_t, 1] (boundaries in t).
    VpUniform { eps_t: f64 },
    /// ln σ ~ N(p_mean, p_std²) (boundaries in σ).
    EdmLogNormal { p_mean: f64, p_std: f64 },
    /// n uniform on {0, …, steps − 1} (boundaries in steps).
    Discrete { steps: usize },
}

/// Stage probabilities of the `proportional` schedule: the mass of the family's training noise distribution in
/// each stage (the authors' EDM code draws one σ per step and trains the stage holding it).
pub fn proportional(boundaries: &[f64], dist: NoiseDist) -> Vec<f64> {
    let n = boundaries.len() + 1;
    (0..n)
        .map(|k| match dist {
            NoiseDist::VpUniform { eps_t } => {
                let (lo, hi) = stage_interval(boundaries, k, eps_t, 1.0);
                ((hi.min(1.0) - lo.max(eps_t)) / (1.0 - eps_t)).max(0.0)
            }
            NoiseDist::EdmLogNormal { p_mean, p_std } => {
                let (lo, hi) = stage_interval(boundaries, k, 0.0, f64::INFINITY);
                let nd = std_normal();
                let z = |s: f64| (s.ln() - p_mean) / p_std;
                nd.cdf(z(hi)) - nd.cdf(z(lo))
            }
            NoiseDist::Discrete { steps } => {
                let c = (0..steps)
                    .filter(|&s| msd_plan::stage_of(boundaries, s as f64) == k)
                    .count();
                c as f64 / steps as f64
            }
        })
        .collect()
}

/// Linear warm-up: lr·min(step/warmup, 1) (step counted from 0, as the authors' DPM-Solver code: the first
/// step has lr 0 when warmup > 0).
pub fn warmup_lr(base: f64, step: u64, warmup: u64) -> f64 {
    if warmup == 0 {
        base
    } else {
        base * (step as f64 / warmup as f64).min(1.0)
    }
}

/// EMA decay per step from a half-life in images (EDM): β = 0.5^(batch / h), where h is the half-life,
/// shortened during ramp-up to `rampup`·(images seen so far) when a ramp-up ratio is given.
pub fn ema_beta(half_life_images: f64, rampup: Option<f64>, images_seen: f64, batch: f64) -> f64 {
    let mut h = half_life_images;
    if let Some(r) = rampup {
        h = h.min(images_seen * r);
    }
    0.5f64.powf(batch / h.max(1e-8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edm_stage_probabilities_match_the_authors_split() {
        // The authors' EDM split 2.5103 / 7.6577 under ln σ ~ N(−1.2, 1.2²): 96.1% / 3.5% / 0.35%.
        let p = proportional(
            &[2.5103, 7.6577],
            NoiseDist::EdmLogNormal {
                p_mean: P_MEAN,
                p_std: P_STD,
            },
        );
        assert!((p[0] - 0.961).abs() < 1e-3, "{p:?}");
        assert!((p[1] - 0.035).abs() < 1e-3, "{p:?}");
        assert!((p[2] - 0.0035).abs() < 2e-4, "{p:?}");
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn vp_and_discrete_probabilities_are_interval_lengths() {
        let p = proportional(&[0.4420, 0.6308], NoiseDist::VpUniform { eps_t: 0.0 });
        assert!((p[0] - 0.4420).abs() < 1e-12 && (p[2] - (1.0 - 0.6308)).abs() < 1e-12);
        let p = proportional(&[441.5, 630.5], NoiseDist::Discrete { steps: 1000 });
        assert_eq!(p, vec![0.442, 0.189, 0.369]);
        assert_eq!(ldm_stage_steps(&[441.5, 630.5], 1, 1000), (442, 630));
    }

    #[test]
    fn precond_matches_the_edm_formulas_at_sigma_data() {
        // At σ = σ_d: c_skip = ½, c_out = σ_d/√2, c_in = 1/(σ_d√2), weight 2/σ_d².
        let (cs, co, ci, cn) = edm_precond(0.5, 0.5);
        assert!((cs - 0.5).abs() < 1e-15);
        assert!((co - 0.5 / 2f64.sqrt()).abs() < 1e-15);
        assert!((ci - 1.0 / (0.5 * 2f64.sqrt())).abs() < 1e-15);
        assert!((cn - 0.5f64.ln() / 4.0).abs() < 1e-15);
        assert!((edm_loss_weight(0.5, 0.5) - 8.0).abs() < 1e-12);
    }

    #[test]
    fn vp_schedule_at_the_design_example() {
        // t = 0.4420 ↔ σ/α = 2.5103 (design example, SNR-equivalent EDM σ).
        let (a, s) = vp_alpha_sigma(0.4420);
        assert!((s / a - 2.5103).abs() < 1e-3);
        assert!((a * a + s * s - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ema_beta_and_warmup() {
        // Half-life of 500k images at batch 512 after ramp-up: 0.5^(512/500000).
        let b = ema_beta(500_000.0, Some(0.05), 1e9, 512.0);
        assert!((b - 0.5f64.powf(512.0 / 500_000.0)).abs() < 1e-15);
        // During ramp-up the half-life is 5% of the images seen: 10k images → h = 500.
        let b = ema_beta(500_000.0, Some(0.05), 10_000.0, 500.0);
        assert!((b - 0.5).abs() < 1e-15);
        assert_eq!(warmup_lr(2e-4, 0, 5000), 0.0);
        assert!((warmup_lr(2e-4, 2500, 5000) - 1e-4).abs() < 1e-18);
        assert_eq!(warmup_lr(2e-4, 9000, 5000), 2e-4);
    }

    #[test]
    fn ldm_cumprod_matches_the_discrete_schedule() {
        let ab = ldm_alphas_cumprod(1000, 0.0015, 0.0195);
        let s = crate::solver::discrete::DiscreteVp::ldm_default();
        for n in [0usize, 1, 441, 999] {
            let a = s.alpha((n + 1) as f64 / 1000.0);
            assert!((a * a - ab[n]).abs() < 1e-12, "n = {n}");
        }
    }

    proptest! {
        #[test]
        fn edm_draws_stay_in_their_stage_and_follow_the_cdf(u in 0.0f64..1.0, k in 0usize..3) {
            let b = [2.5103, 7.6577];
            let s = edm_sigma_in_stage(u, &b, k, P_MEAN, P_STD);
            prop_assert_eq!(msd_plan::stage_of(&b, s), k);
            // The restricted CDF at the draw is u (inverse-CDF sampling).
            let n = std_normal();
            let (lo, hi) = stage_interval(&b, k, 0.0, f64::INFINITY);
            let z = |x: f64| (x.ln() - P_MEAN) / P_STD;
            let f = (n.cdf(z(s)) - n.cdf(z(lo))) / (n.cdf(z(hi)) - n.cdf(z(lo)));
            prop_assert!((f - u).abs() < 1e-6, "u {} f {}", u, f);
        }

        #[test]
        fn vp_and_ldm_draws_stay_in_their_stage(u in 0.0f64..1.0, k in 0usize..3) {
            let b = [0.4420, 0.6308];
            let t = vp_time_in_stage(u, &b, k, EPS_T);
            prop_assert!((EPS_T..=1.0).contains(&t));
            prop_assert!(msd_plan::stage_of(&b, t) == k || u == 0.0);
            let lb = [441.5, 630.5];
            let n = ldm_step_in_stage(u, &lb, k, 1000);
            prop_assert_eq!(msd_plan::stage_of(&lb, n as f64), k);
        }
    }
}
