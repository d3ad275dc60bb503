//! The training losses of the three families, per sample (so per-stage losses can be logged), and the noise
//! levels they draw within a stage. The scalar parts (α/σ, preconditioning, weights, the truncated log-normal)
//! are computed on the host in f64 and mirrored by `msd_reference::training`, which the tests compare against.
//!
//! - VP continuous (NCSN++): t uniform within the stage's part of [ε_t, 1], x_t = α_t·x₀ + σ_t·ε, loss
//!   mean over pixels of (ε̂(x_t, t) − ε)² (the network applies its 999·t label itself).
//! - EDM (DDPM++): σ from the log-normal restricted to the stage, x = x₀ + σ·ε, loss λ(σ)·mean((D(x; σ) − x₀)²)
//!   with the preconditioned denoiser D. (The authors sum over pixels; the mean differs by the constant C·H·W,
//!   which Adam ignores up to its ε.)
//! - LDM discrete: integer step n uniform within the stage, x_n = √ᾱ_n·x₀ + √(1 − ᾱ_n)·ε, loss mean((ε̂ − ε)²).

use std::sync::Mutex;

use candle_core::Tensor;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::unet::precond::{edm_denoise, per_sample};
use crate::unet::{Family, MultistageUNet, UNetConfig};

/// Settings of the losses (defaults: the authors').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossParams {
    /// Smallest training time of the VP loss.
    pub eps_t: f64,
    /// EDM log-normal of ln σ.
    pub p_mean: f64,
    pub p_std: f64,
    /// EDM σ_data (the preconditioning inside the DDPM++ wrapper uses 0.5).
    pub sigma_data: f64,
    /// LDM discrete schedule: steps and β range ("linear" = sqrt-linear).
    pub ldm_steps: usize,
    pub ldm_beta_start: f64,
    pub ldm_beta_end: f64,
}

impl Default for LossParams {
    fn default() -> Self {
        Self {
            eps_t: 1e-5,
            p_mean: -1.2,
            p_std: 1.2,
            sigma_data: 0.5,
            ldm_steps: 1000,
            ldm_beta_start: 0.0015,
            ldm_beta_end: 0.0195,
        }
    }
}

/// The loss of one network family, with its precomputed scalars.
#[derive(Debug, Clone)]
pub enum LossFamily {
    Vp {
        eps_t: f64,
    },
    Edm {
        p_mean: f64,
        p_std: f64,
        sigma_data: f64,
    },
    Ldm {
        alphas_cumprod: Vec<f64>,
    },
}

/// (α_t, σ_t) of the linear VP schedule (β 0.1 → 20): log α = −¼·β_d·t² − ½·β_min·t.
pub fn vp_alpha_sigma(t: f64) -> (f64, f64) {
    let (bmin, bd) = (0.1, 19.9);
    let log_a = -0.25 * bd * t * t - 0.5 * bmin * t;
    (log_a.exp(), (-(2.0 * log_a).exp_m1()).sqrt())
}

/// The interval (lo, hi] of stage k with outer ends lo0 and hi_last.
fn interval(boundaries: &[f64], k: usize, lo0: f64, hi_last: f64) -> (f64, f64) {
    let lo = if k == 0 { lo0 } else { boundaries[k - 1] };
    let hi = boundaries.get(k).copied().unwrap_or(hi_last);
    (lo, hi)
}

fn std_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("valid standard normal")
}

impl LossFamily {
    pub fn for_config(cfg: &UNetConfig, p: &LossParams) -> Self {
        match cfg.family {
            Family::Ncsnpp(_) => LossFamily::Vp { eps_t: p.eps_t },
            Family::Ddpmpp(_) => LossFamily::Edm {
                p_mean: p.p_mean,
                p_std: p.p_std,
                sigma_data: p.sigma_data,
            },
            Family::Ldm(_) => {
                let (a, b) = (p.ldm_beta_start.sqrt(), p.ldm_beta_end.sqrt());
                let mut acc = 1.0;
                let n = p.ldm_steps;
                let alphas_cumprod = (0..n)
                    .map(|i| {
                        let r = a + i as f64 / (n - 1) as f64 * (b - a);
                        acc *= 1.0 - r * r;
                        acc
                    })
                    .collect();
                LossFamily::Ldm { alphas_cumprod }
            }
        }
    }

    /// A noise level (the network's time input: t, σ or step) in stage k from a uniform u ∈ (0, 1).
    pub fn level_in_stage(&self, u: f64, boundaries: &[f64], k: usize) -> f64 {
        match self {
            LossFamily::Vp { eps_t } => {
                let (lo, hi) = interval(boundaries, k, *eps_t, 1.0);
                let lo = lo.max(*eps_t);
                lo + u * (hi - lo)
            }
            LossFamily::Edm { p_mean, p_std, .. } => {
                // Inverse-CDF sampling of the log-normal restricted to (lo, hi].
                let (lo, hi) = interval(boundaries, k, 0.0, f64::INFINITY);
                let n = std_normal();
                let z = |s: f64| (s.ln() - p_mean) / p_std;
                let (fa, fb) = (n.cdf(z(lo)), n.cdf(z(hi)));
                let s = (p_mean + p_std * n.inverse_cdf(fa + u * (fb - fa))).exp();
                s.clamp(lo.max(f64::MIN_POSITIVE), hi)
            }
            LossFamily::Ldm { alphas_cumprod } => {
                let steps = alphas_cumprod.len();
                let in_k = |s: usize| msd_plan::stage_of(boundaries, s as f64) == k;
                let first = (0..steps).find(|&s| in_k(s)).unwrap_or(0);
                let last = (0..steps).rev().find(|&s| in_k(s)).unwrap_or(steps - 1);
                let count = last + 1 - first;
                (first + ((u * count as f64) as usize).min(count - 1)) as f64
            }
        }
    }

    /// Probability of each stage under the family's training noise distribution (the `proportional` schedule).
    pub fn stage_probabilities(&self, boundaries: &[f64]) -> Vec<f64> {
        let n = boundaries.len() + 1;
        (0..n)
            .map(|k| match self {
                LossFamily::Vp { eps_t } => {
                    let (lo, hi) = interval(boundaries, k, *eps_t, 1.0);
                    ((hi.min(1.0) - lo.max(*eps_t)) / (1.0 - eps_t)).max(0.0)
                }
                LossFamily::Edm { p_mean, p_std, .. } => {
                    let (lo, hi) = interval(boundaries, k, 0.0, f64::INFINITY);
                    let nd = std_normal();
                    let z = |s: f64| (s.ln() - p_mean) / p_std;
                    nd.cdf(z(hi)) - nd.cdf(z(lo))
                }
                LossFamily::Ldm { alphas_cumprod } => {
                    let steps = alphas_cumprod.len();
                    let c = (0..steps)
                        .filter(|&s| msd_plan::stage_of(boundaries, s as f64) == k)
                        .count();
                    c as f64 / steps as f64
                }
            })
            .collect()
    }

    /// (α, σ) of x = α·x₀ + σ·ε at a level.
    pub fn alpha_sigma(&self, level: f64) -> (f64, f64) {
        match self {
            LossFamily::Vp { .. } => vp_alpha_sigma(level),
            LossFamily::Edm { .. } => (1.0, level),
            LossFamily::Ldm { alphas_cumprod } => {
                let ab = alphas_cumprod[level as usize];
                (ab.sqrt(), (1.0 - ab).sqrt())
            }
        }
    }

    /// The loss weight at a level: EDM λ(σ) = (σ² + σ_d²)/(σ·σ_d)², 1 otherwise.
    pub fn weight(&self, level: f64) -> f64 {
        match self {
            LossFamily::Edm { sigma_data, .. } => {
                (level * level + sigma_data * sigma_data) / (level * sigma_data).powi(2)
            }
            _ => 1.0,
        }
    }
}

/// Per-sample losses [B] of a batch of clean images `x0` [B, C, H, W] with noise `eps` (same shape) at the
/// per-sample `levels`, through `net` in training mode (dropout from `rng`; per-sample routing), or in
/// evaluation mode (no dropout) when `rng` is None.
pub fn per_sample_loss(
    fam: &LossFamily,
    net: &MultistageUNet,
    x0: &Tensor,
    eps: &Tensor,
    levels: &[f64],
    rng: Option<&Mutex<StdRng>>,
) -> crate::unet::Result<Tensor> {
    let dev = x0.device();
    let (a, s): (Vec<f64>, Vec<f64>) = levels.iter().map(|&l| fam.alpha_sigma(l)).unzip();
    let xt =
        (x0.broadcast_mul(&per_sample(&a, dev)?)? + eps.broadcast_mul(&per_sample(&s, dev)?)?)?;
    let (out, target) = match fam {
        LossFamily::Edm { .. } => (edm_denoise(net, &xt, levels, rng)?, x0.clone()),
        _ => (
            match rng {
                Some(r) => net.forward_train(&xt, levels, r)?,
                None => net.forward(&xt, levels)?,
            },
            eps.clone(),
        ),
    };
    let w: Vec<f64> = levels.iter().map(|&l| fam.weight(l)).collect();
    let sq = (out - target)?.sqr()?.flatten_from(1)?.mean(1)?;
    let w = Tensor::from_vec(
        w.iter().map(|&x| x as f32).collect::<Vec<f32>>(),
        levels.len(),
        dev,
    )?;
    Ok((sq * w)?)
}
