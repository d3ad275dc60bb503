//! Optimal-denoiser timestep clustering: Algorithm 1 (t1, t2) and Algorithm 2 (n stages).
//!
//! - [`criterion`]: the per-draw similarity D (η, the space, ≤ or <);
//! - [`algorithm1`](mod@algorithm1): the draws of lines 3–7 and the thresholds of lines 8–9;
//! - [`algorithm2`]: the similarity matrix on a t-grid and its exact optimal segmentation.
//!
//! Both algorithms take the optimal denoiser alone: the dataset they draw y from is the denoiser's own.
//!
//! The functional distance (paper §4.2) between the optimal denoiser at two times, for one draw (y, ε), is
//! D = (1/d) Σ_i 1(|ε*_{t_a}(x_{t_a}) − ε*_{t_b}(x_{t_b})|_i ≤ η), with x_t = α_t·y + σ_t·ε; it is a
//! *similarity* (the fraction of pixels that agree).
//!
//! With x = α y + σ ε and the posterior mean m(x), ε*(x) = (x − α m)/σ = ε + α(y − m)/σ, so in ε space the
//! common ε cancels and every difference is formed from f_t = α_t(y − m_t)/σ_t without that cancellation.
//! - ε*₀ (t → 0): the posterior collapses onto y, so ε*₀ = ε and ε*_t − ε*₀ = α(y − m)/σ.
//! - ε*₁ (t → 1): the authors' surrogate (docs/paper-notes.md §1.2) — the denoiser of the one-point dataset {ȳ} (the data
//!   mean) *at the same x_t and t*: (x − α ȳ)/σ, so ε*_t − ε*₁ = α(ȳ − m)/σ. The paper does not say how ε*₁ is
//!   evaluated; this is the authors' convention.
//! - [`Space::X0`] (the authors' variant, docs/paper-notes.md §1.2, §6): compare posterior means instead, |y − m| and
//!   |ȳ − m| for Algorithm 1, |m_a − m_b| for Algorithm 2 (the 1/σ factor is dropped).
//! - [`Comparison`]: the paper's ≤ η (default) or the authors' strict < η.
//! - η is on the scale of the data; the authors' data are pixels in [0, 1] and η = 2/256.
//!
//! Randomness: one seeded ChaCha12 stream ([`rand::rngs::StdRng`]) drawn in sample order, so the same seed
//! gives the same samples whatever the batch size or thread count.

use ndarray::{Array2, ArrayView2};

use super::ClusterError;
use crate::denoiser::NoiseLevel;

pub mod algorithm1;
pub mod algorithm2;
pub mod criterion;

pub use algorithm1::*;
pub use algorithm2::*;
pub use criterion::*;

pub(crate) fn check_t_min(t_min: f64) -> Result<(), ClusterError> {
    if !(t_min.is_finite() && t_min > 0.0 && t_min < 1.0) {
        return Err(ClusterError::BadParameter {
            name: "t_min",
            value: t_min,
            why: "must lie in (0, 1)",
        });
    }
    Ok(())
}

/// x = α y + σ ε for a batch of draws (row r: data row idx[r], noise row r, level r).
pub(crate) fn noisy_batch(
    data: ArrayView2<f64>,
    idx: &[usize],
    eps: ArrayView2<f64>,
    levels: &[NoiseLevel],
) -> Array2<f64> {
    let mut x = Array2::<f64>::zeros(eps.dim());
    for (r, (&i, l)) in idx.iter().zip(levels).enumerate() {
        let y = data.row(i);
        let mut xr = x.row_mut(r);
        for ((xv, &yv), &ev) in xr.iter_mut().zip(y).zip(eps.row(r)) {
            *xv = l.alpha * yv + l.sigma * ev;
        }
    }
    x
}

#[cfg(test)]
mod tests;
