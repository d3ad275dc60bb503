//! The optimal denoiser of an empirical dataset (the paper's Proposition 1), exact in f64.
//!
//! For data {y_i} (N × d) and x = α·y + σ·ε, the minimiser of E‖ε − ε_θ(x)‖² is
//! ε*(x) = (x − α·x̂₀(x))/σ with the posterior mean x̂₀(x) = Σ_i w_i y_i, w = softmax_i(−‖x − α y_i‖² / 2σ²).
//! (The paper writes s_t = α and s_t·σ_t = σ.)
//!
//! How it is computed, and why:
//! - ‖x − α y‖² = ‖x‖² − 2α⟨x, y⟩ + α²‖y‖². The ‖x‖² term is the same for every i, so it cancels in the softmax
//!   and is never formed: the score is r_i = α⟨x, y_i⟩ − ½α²‖y_i‖², and w = softmax(r/σ²). Leaving ‖x‖² out
//!   removes the cancellation (and the negative round-off) the expanded distance would suffer; the result is
//!   identical in exact arithmetic.
//! - ⟨x, y_i⟩ for a block of queries against a chunk of the data is one GEMM (BLAS), and Σ w_i y_i another.
//! - The softmax is a streaming log-sum-exp over data chunks with a per-query running maximum, so memory is
//!   O((B + N)·d + block·chunk) and never N × B × d. Differences r_i − max are taken before dividing by σ², so
//!   σ → 0 cannot overflow; σ = 0 exactly gives the t → 0 limit (the nearest point; the average of exact ties).
//! - The per-row softmax update runs on all cores (rayon); the GEMMs use BLAS's own threads.

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};
use thiserror::Error;

use crate::schedule::{Schedule, ScheduleError};

/// Errors of the optimal denoiser: every message names the offending input.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DenoiserError {
    #[error(
        "the dataset is empty (N = {n}, d = {d}): it needs at least one point of dimension >= 1"
    )]
    EmptyData { n: usize, d: usize },
    #[error("{what} has dimension {got} but the dataset has dimension {expected}")]
    DimensionMismatch {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("{what} contains a non-finite value ({value}) at row {row}, column {col}")]
    NonFinite {
        what: &'static str,
        row: usize,
        col: usize,
        value: f64,
    },
    #[error("invalid noise level alpha = {alpha}, sigma = {sigma}: {why}")]
    BadNoiseLevel {
        alpha: f64,
        sigma: f64,
        why: &'static str,
    },
    #[error("eps* is undefined at sigma = 0 (t = 0): it is (x - alpha*x0)/sigma; ask for the x0 prediction instead")]
    EpsAtZeroSigma,
    #[error(
        "the result overflowed to a non-finite value; the inputs' magnitudes are too large for f64"
    )]
    Overflow,
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

/// The coefficients of x = α·x₀ + σ·ε at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    pub alpha: f64,
    pub sigma: f64,
}

impl NoiseLevel {
    /// A validated noise level: α ≥ 0, σ ≥ 0, both finite, not both zero.
    pub fn new(alpha: f64, sigma: f64) -> Result<Self, DenoiserError> {
        let bad = |why| DenoiserError::BadNoiseLevel { alpha, sigma, why };
        if !(alpha.is_finite() && sigma.is_finite()) {
            return Err(bad("both must be finite"));
        }
        if alpha < 0.0 || sigma < 0.0 {
            return Err(bad("both must be >= 0"));
        }
        if alpha == 0.0 && sigma == 0.0 {
            return Err(bad("alpha and sigma cannot both be 0"));
        }
        Ok(Self { alpha, sigma })
    }

    /// The noise level of a schedule at time t (t must lie in the schedule's domain).
    pub fn at<S: Schedule + ?Sized>(schedule: &S, t: f64) -> Result<Self, DenoiserError> {
        let t = schedule.check_time(t)?;
        Self::new(schedule.alpha(t), schedule.sigma(t))
    }

    /// A VE/EDM noise level: x = x₀ + σ·n.
    pub fn ve(sigma: f64) -> Result<Self, DenoiserError> {
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(DenoiserError::BadNoiseLevel {
                alpha: 1.0,
                sigma,
                why: "sigma must be finite and > 0",
            });
        }
        Self::new(1.0, sigma)
    }
}

/// Which output of the denoiser to return. With the `clap` feature it is also the `--predict` value of
/// `msd denoise` (serialised as `eps`/`x0` in its JSON report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Prediction {
    /// ε*(x) = (x − α·x̂₀)/σ.
    #[cfg_attr(
        feature = "clap",
        value(
            help = "eps*(x) = (x - alpha * x0_hat(x)) / sigma, the paper's optimal noise prediction"
        )
    )]
    Eps,
    /// The posterior mean x̂₀(x).
    #[cfg_attr(
        feature = "clap",
        value(help = "The posterior mean x0_hat(x) = E[x0 | x]")
    )]
    X0,
}

/// Returns an error naming the first non-finite entry of `a`.
pub fn check_finite(what: &'static str, a: ArrayView2<f64>) -> Result<(), DenoiserError> {
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((row, col), &value)) => Err(DenoiserError::NonFinite {
            what,
            row,
            col,
            value,
        }),
        None => Ok(()),
    }
}

/// Weight e^{diff/σ²} of a score `diff` = r_i − max ≤ 0; `inv_var` = 1/σ² (+∞ at σ = 0, where only exact
/// maxima keep weight 1).
#[inline]
fn weight(diff: f64, inv_var: f64) -> f64 {
    if diff == 0.0 {
        1.0
    } else {
        (diff * inv_var).exp()
    }
}

/// The Proposition 1 optimal denoiser of a dataset held in memory (borrowed, N × d, f64).
#[derive(Debug, Clone)]
pub struct OptimalDenoiser<'a> {
    data: ArrayView2<'a, f64>,
    sq_norms: Array1<f64>,
    /// Rows of the dataset per streaming step.
    chunk_rows: usize,
    /// Queries per block.
    query_block: usize,
}

impl<'a> OptimalDenoiser<'a> {
    /// Default data rows per chunk and queries per block: the block × chunk weight matrix is 8 MiB.
    pub const DEFAULT_CHUNK_ROWS: usize = 2048;
    pub const DEFAULT_QUERY_BLOCK: usize = 512;

    /// Checks the dataset (N ≥ 1, d ≥ 1, all finite) and precomputes ‖y_i‖².
    pub fn new(data: ArrayView2<'a, f64>) -> Result<Self, DenoiserError> {
        let (n, d) = data.dim();
        if n == 0 || d == 0 {
            return Err(DenoiserError::EmptyData { n, d });
        }
        check_finite("the dataset", data)?;
        let sq_norms = data.map_axis(Axis(1), |row| row.dot(&row));
        Ok(Self {
            data,
            sq_norms,
            chunk_rows: Self::DEFAULT_CHUNK_ROWS,
            query_block: Self::DEFAULT_QUERY_BLOCK,
        })
    }

    /// Sets the streaming chunk sizes (both at least 1). Results do not depend on them beyond rounding.
    pub fn with_chunks(mut self, chunk_rows: usize, query_block: usize) -> Self {
        self.chunk_rows = chunk_rows.max(1);
        self.query_block = query_block.max(1);
        self
    }

    /// Number of points N.
    /// The dataset (N × d) whose posterior mean this denoiser computes.
    pub fn data(&self) -> ArrayView2<'a, f64> {
        self.data
    }

    pub fn len(&self) -> usize {
        self.data.nrows()
    }

    /// Always false: construction rejects empty datasets.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Dimension d.
    pub fn dim(&self) -> usize {
        self.data.ncols()
    }

    /// Floating-point operations of one call on B queries (the two GEMMs: 4·B·N·d), for throughput reports.
    pub fn flops(&self, queries: usize) -> f64 {
        4.0 * queries as f64 * self.len() as f64 * self.dim() as f64
    }

    /// ε*(x) or x̂₀(x) for each row of `x` (B × d), as chosen by `predict`.
    pub fn predict(
        &self,
        x: ArrayView2<f64>,
        level: NoiseLevel,
        predict: Prediction,
    ) -> Result<Array2<f64>, DenoiserError> {
        if predict == Prediction::Eps && level.sigma == 0.0 {
            return Err(DenoiserError::EpsAtZeroSigma);
        }
        let x0 = self.posterior_mean(x, level)?;
        Ok(match predict {
            Prediction::X0 => x0,
            Prediction::Eps => eps_from_x0(x, x0.view(), level),
        })
    }

    /// ε*(x) = (x − α·x̂₀(x))/σ; σ must be > 0.
    pub fn eps(&self, x: ArrayView2<f64>, level: NoiseLevel) -> Result<Array2<f64>, DenoiserError> {
        self.predict(x, level, Prediction::Eps)
    }

    /// The posterior mean x̂₀(x) = E[y | x] for each row of `x` (B × d).
    pub fn posterior_mean(
        &self,
        x: ArrayView2<f64>,
        level: NoiseLevel,
    ) -> Result<Array2<f64>, DenoiserError> {
        self.posterior_mean_per_row(x, &vec![level; x.nrows()])
    }

    /// The posterior mean of each row of `x` at its own noise level: row b uses `levels[b]`. The distance
    /// GEMM does not depend on the level, so a batch of queries at different times (Algorithm 1's t_k) costs
    /// the same as a batch at one time.
    pub fn posterior_mean_per_row(
        &self,
        x: ArrayView2<f64>,
        levels: &[NoiseLevel],
    ) -> Result<Array2<f64>, DenoiserError> {
        for l in levels {
            NoiseLevel::new(l.alpha, l.sigma)?;
        }
        if levels.len() != x.nrows() {
            return Err(DenoiserError::DimensionMismatch {
                what: "the list of noise levels",
                got: levels.len(),
                expected: x.nrows(),
            });
        }
        if x.ncols() != self.dim() {
            return Err(DenoiserError::DimensionMismatch {
                what: "the queries",
                got: x.ncols(),
                expected: self.dim(),
            });
        }
        check_finite("the queries", x)?;
        let mut out = Array2::<f64>::zeros(x.dim());
        let mut start = 0;
        while start < x.nrows() {
            let end = (start + self.query_block).min(x.nrows());
            let block = x.slice(s![start..end, ..]);
            let mean = self.block_posterior_mean(block, &levels[start..end]);
            out.slice_mut(s![start..end, ..]).assign(&mean);
            start = end;
        }
        if out.iter().any(|v| !v.is_finite()) {
            return Err(DenoiserError::Overflow);
        }
        Ok(out)
    }

    /// One query block: stream over data chunks with a running max, a running weight sum and a running
    /// weighted sum of data rows.
    fn block_posterior_mean(&self, x: ArrayView2<f64>, levels: &[NoiseLevel]) -> Array2<f64> {
        let (b, d) = x.dim();
        // BLAS wants contiguous operands; a block of a standard-layout array already is one.
        let x = x.as_standard_layout();
        let mut run_max = Array1::from_elem(b, f64::NEG_INFINITY);
        let mut run_sum = Array1::<f64>::zeros(b);
        let mut acc = Array2::<f64>::zeros((b, d));
        let mut scores = Array2::<f64>::zeros((b, self.chunk_rows.min(self.len())));
        let mut start = 0;
        while start < self.len() {
            let end = (start + self.chunk_rows).min(self.len());
            let y = self.data.slice(s![start..end, ..]);
            let y_sq = self.sq_norms.slice(s![start..end]);
            let mut w = scores.slice_mut(s![.., ..end - start]);
            // w ← ⟨x, y⟩ (GEMM), then scores, running max, and weights, row by row in parallel.
            general_mat_mul(1.0, &x, &y.t(), 0.0, &mut w);
            Zip::from(w.rows_mut())
                .and(&mut run_max)
                .and(&mut run_sum)
                .and(acc.rows_mut())
                .and(ArrayView1::from(levels))
                .par_for_each(|mut row, m, sum, mut acc_row, level| {
                    let (alpha, inv_var) = (level.alpha, 1.0 / (level.sigma * level.sigma));
                    let mut chunk_max = f64::NEG_INFINITY;
                    for (r, &yy) in row.iter_mut().zip(y_sq.iter()) {
                        *r = alpha * *r - 0.5 * alpha * alpha * yy;
                        chunk_max = chunk_max.max(*r);
                    }
                    let new_max = m.max(chunk_max);
                    // Rescale what was accumulated under the old maximum (0 on the first chunk).
                    let rescale = weight(*m - new_max, inv_var);
                    if rescale != 1.0 {
                        *sum *= rescale;
                        acc_row.mapv_inplace(|a| a * rescale);
                    }
                    let mut chunk_sum = 0.0;
                    for r in row.iter_mut() {
                        *r = weight(*r - new_max, inv_var);
                        chunk_sum += *r;
                    }
                    *sum += chunk_sum;
                    *m = new_max;
                });
            // acc += W · Y (GEMM).
            general_mat_mul(1.0, &w, &y, 1.0, &mut acc);
            start = end;
        }
        // The maximum's own weight is 1, so every sum is ≥ 1: the division is always safe.
        acc /= &run_sum.insert_axis(Axis(1));
        acc
    }
}

/// ε = (x − α·x̂₀)/σ, row-wise; σ must be > 0.
pub fn eps_from_x0(x: ArrayView2<f64>, x0: ArrayView2<f64>, level: NoiseLevel) -> Array2<f64> {
    let (alpha, sigma) = (level.alpha, level.sigma);
    Zip::from(x)
        .and(x0)
        .map_collect(|&xv, &m| (xv - alpha * m) / sigma)
}

/// A-priori bound on |x̂₀ computed − x̂₀ exact|_∞ for each query, for arithmetic with unit roundoff `u`
/// (f64: 2⁻⁵³, f32: 2⁻²⁴) on the same inputs. Used to set test tolerances from the math rather than by trial.
///
/// The score r_i = α⟨x, y_i⟩ − ½α²‖y_i‖² is computed with an error below
/// (γ_d + 4u)·(α‖x‖‖y_i‖ + ½α²‖y_i‖²), γ_d = d·u/(1 − d·u) (dot products of length d); the exponent
/// (r_i − max)/σ² therefore carries at most δ = 2·that/σ². Perturbing every log-weight by at most δ moves the
/// normalised weights by at most e^{2δ} − 1 in ℓ₁, hence x̂₀ by that times max|y|; the exp, the sums and the
/// division add at most (N + d + 8)·u·max|y|.
pub fn posterior_mean_error_bound(
    data: ArrayView2<f64>,
    x: ArrayView2<f64>,
    level: NoiseLevel,
    u: f64,
) -> Array1<f64> {
    let (n, d) = data.dim();
    let gamma = |k: usize| k as f64 * u / (1.0 - k as f64 * u);
    let y_norm = data
        .rows()
        .into_iter()
        .map(|r| r.dot(&r).sqrt())
        .fold(0.0, f64::max);
    let y_abs = data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let a = level.alpha;
    x.rows()
        .into_iter()
        .map(|row| {
            let x_norm = row.dot(&row).sqrt();
            let score_err =
                (gamma(d) + 4.0 * u) * (a * x_norm * y_norm + 0.5 * a * a * y_norm * y_norm);
            let delta = 2.0 * score_err / (level.sigma * level.sigma);
            ((2.0 * delta).exp_m1() + (n + d + 8) as f64 * u) * y_abs
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{VpCosine, VpLinear};
    use approx::assert_abs_diff_eq;
    use ndarray::{array, Array2};
    use proptest::prelude::*;

    /// Rounding bound of [`naive_posterior_mean`] per query. Its log-weights −‖x − αy_i‖²/2σ² carry the full
    /// squared distance, so each has an error up to γ_{d+3}·‖x − αy_i‖²/2σ² (unlike the score form, which
    /// leaves ‖x‖² out); the weights then move by at most e^{2δ} − 1 in ℓ₁, with δ twice the largest such error.
    fn naive_error_bound(data: &Array2<f64>, x: &Array2<f64>, lv: NoiseLevel) -> Vec<f64> {
        let u = f64::EPSILON / 2.0;
        let gamma = (data.ncols() + 3) as f64 * u / (1.0 - (data.ncols() + 3) as f64 * u);
        let y_abs = data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        x.rows()
            .into_iter()
            .map(|xr| {
                let max_d2 = data
                    .rows()
                    .into_iter()
                    .map(|y| {
                        xr.iter()
                            .zip(y)
                            .map(|(a, b)| (a - lv.alpha * b).powi(2))
                            .sum::<f64>()
                    })
                    .fold(0.0, f64::max);
                let delta = 2.0 * gamma * max_d2 / (2.0 * lv.sigma * lv.sigma);
                ((2.0 * delta).exp_m1() + (data.nrows() + 8) as f64 * u) * y_abs
            })
            .collect()
    }

    /// Textbook evaluation of Proposition 1: explicit squared distances, log-sum-exp, weighted sum.
    fn naive_posterior_mean(data: &Array2<f64>, x: &Array2<f64>, lv: NoiseLevel) -> Array2<f64> {
        let mut out = Array2::zeros(x.dim());
        for (q, xr) in x.rows().into_iter().enumerate() {
            let logw: Vec<f64> = data
                .rows()
                .into_iter()
                .map(|y| {
                    let d2: f64 = xr
                        .iter()
                        .zip(y)
                        .map(|(a, b)| (a - lv.alpha * b).powi(2))
                        .sum();
                    -d2 / (2.0 * lv.sigma * lv.sigma)
                })
                .collect();
            let m = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = logw.iter().map(|l| (l - m).exp()).collect();
            let z: f64 = w.iter().sum();
            for (wi, y) in w.iter().zip(data.rows()) {
                out.row_mut(q).scaled_add(wi / z, &y);
            }
        }
        out
    }

    fn matrix(rows: usize, cols: usize, range: f64) -> impl Strategy<Value = Array2<f64>> {
        proptest::collection::vec(-range..range, rows * cols)
            .prop_map(move |v| Array2::from_shape_vec((rows, cols), v).unwrap())
    }

    /// (data N × d, queries B × d) with small random sizes.
    fn problem() -> impl Strategy<Value = (Array2<f64>, Array2<f64>)> {
        (1usize..40, 1usize..9, 1usize..7)
            .prop_flat_map(|(n, d, b)| (matrix(n, d, 3.0), matrix(b, d, 4.0)))
    }

    proptest! {
        #[test]
        fn agrees_with_naive_direct_sum(
            (data, x) in problem(),
            alpha in 0.0..1.0f64,
            log_sigma in -3.0..1.5f64,
            chunk in 1usize..8,
            block in 1usize..4,
        ) {
            let lv = NoiseLevel::new(alpha, 10f64.powf(log_sigma)).unwrap();
            let den = OptimalDenoiser::new(data.view()).unwrap().with_chunks(chunk, block);
            let got = den.posterior_mean(x.view(), lv).unwrap();
            let want = naive_posterior_mean(&data, &x, lv);
            // Both are f64 evaluations of the same softmax: they may differ by the rounding bound of each.
            let ours = posterior_mean_error_bound(data.view(), x.view(), lv, f64::EPSILON / 2.0);
            let naive = naive_error_bound(&data, &x, lv);
            for (q, (g, w)) in got.rows().into_iter().zip(want.rows()).enumerate() {
                let err = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                let tol = ours[q] + naive[q] + 1e-15;
                prop_assert!(err <= tol, "query {q}: err {err} > bound {tol}");
            }
            // The ε identity: ε* = (x − α·x̂₀)/σ.
            let eps = den.eps(x.view(), lv).unwrap();
            let back = &x - &(&eps * lv.sigma);
            let x0_scaled = &got * alpha;
            for (a, b) in back.iter().zip(x0_scaled.iter()) {
                prop_assert!((a - b).abs() <= 1e-12 * (1.0 + a.abs()));
            }
        }

        #[test]
        fn chunking_does_not_change_the_result(
            (data, x) in problem(), chunk in 1usize..8, block in 1usize..4,
        ) {
            let lv = NoiseLevel::new(0.7, 0.3).unwrap();
            let a = OptimalDenoiser::new(data.view()).unwrap().posterior_mean(x.view(), lv).unwrap();
            let b = OptimalDenoiser::new(data.view()).unwrap().with_chunks(chunk, block)
                .posterior_mean(x.view(), lv).unwrap();
            let bound = posterior_mean_error_bound(data.view(), x.view(), lv, f64::EPSILON / 2.0);
            for (q, (ra, rb)) in a.rows().into_iter().zip(b.rows()).enumerate() {
                let err = ra.iter().zip(rb).map(|(p, r)| (p - r).abs()).fold(0.0, f64::max);
                prop_assert!(err <= 2.0 * bound[q] + 1e-15);
            }
        }
    }

    #[test]
    fn small_t_collapses_to_the_nearest_point() {
        let data = array![[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]];
        let x = array![[0.9, 0.2], [0.1, 1.6], [-5.0, -5.0]];
        let den = OptimalDenoiser::new(data.view()).unwrap();
        let vp = VpLinear::default();
        for t in [0.0, 1e-12, 1e-8] {
            let lv = NoiseLevel::at(&vp, t).unwrap();
            let x0 = den.posterior_mean(x.view(), lv).unwrap();
            assert!(x0.iter().all(|v| v.is_finite()));
            assert_abs_diff_eq!(
                x0,
                array![[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]],
                epsilon = 1e-12
            );
        }
        // ε* at tiny but positive σ is finite (and huge); at σ = 0 it is undefined and says so.
        let tiny = NoiseLevel::at(&vp, 1e-12).unwrap();
        assert!(den
            .eps(x.view(), tiny)
            .unwrap()
            .iter()
            .all(|v| v.is_finite()));
        let zero = NoiseLevel::at(&vp, 0.0).unwrap();
        assert_eq!(den.eps(x.view(), zero), Err(DenoiserError::EpsAtZeroSigma));
        // Denormal σ² and exact σ = 0 agree with each other.
        let denormal = NoiseLevel::new(1.0, 1e-160).unwrap();
        assert_abs_diff_eq!(
            den.posterior_mean(x.view(), denormal).unwrap(),
            den.posterior_mean(x.view(), zero).unwrap(),
            epsilon = 0.0
        );
    }

    #[test]
    fn t_one_gives_the_dataset_mean() {
        let data = array![[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]];
        let mean = data.mean_axis(Axis(0)).unwrap();
        let x = array![[10.0, -3.0], [0.2, 0.1]];
        let den = OptimalDenoiser::new(data.view()).unwrap();
        // VP cosine reaches α = 0 at t = 1 exactly: the posterior is the prior.
        let lv = NoiseLevel::at(&VpCosine::default(), 1.0).unwrap();
        assert_eq!(lv.alpha, 0.0);
        let x0 = den.posterior_mean(x.view(), lv).unwrap();
        for row in x0.rows() {
            assert_abs_diff_eq!(row, mean.view(), epsilon = 1e-15);
        }
        // ε* = x/σ there.
        assert_abs_diff_eq!(
            den.eps(x.view(), lv).unwrap(),
            &x / lv.sigma,
            epsilon = 1e-15
        );
        // Very large VE σ: weights all ≈ 1.
        let x0 = den
            .posterior_mean(x.view(), NoiseLevel::ve(1e9).unwrap())
            .unwrap();
        for row in x0.rows() {
            assert_abs_diff_eq!(row, mean.view(), epsilon = 1e-12);
        }
    }

    #[test]
    fn one_point_dataset_is_that_point() {
        let data = array![[0.5, -1.5, 2.0]];
        let x = array![[3.0, 3.0, 3.0], [-100.0, 0.0, 7.0]];
        let den = OptimalDenoiser::new(data.view()).unwrap();
        for lv in [
            NoiseLevel::new(0.3, 0.9).unwrap(),
            NoiseLevel::new(1.0, 0.0).unwrap(),
        ] {
            let x0 = den.posterior_mean(x.view(), lv).unwrap();
            for row in x0.rows() {
                assert_abs_diff_eq!(row, data.row(0), epsilon = 0.0);
            }
        }
    }

    #[test]
    fn duplicated_points_count_twice() {
        // Duplicating y₀ doubles its prior weight: compare against a dataset with an explicit weight.
        let data = array![[0.0], [1.0], [1.0]];
        let x = array![[0.4]];
        let lv = NoiseLevel::new(1.0, 0.5).unwrap();
        let x0 = OptimalDenoiser::new(data.view())
            .unwrap()
            .posterior_mean(x.view(), lv)
            .unwrap();
        let w0 = (-(0.4f64).powi(2) / 0.5).exp();
        let w1 = 2.0 * (-(0.6f64).powi(2) / 0.5).exp();
        assert_abs_diff_eq!(x0[[0, 0]], w1 / (w0 + w1), epsilon = 1e-15);
        // At σ = 0 an exact tie between distinct points averages them.
        let tie = array![[0.0], [1.0]];
        let x0 = OptimalDenoiser::new(tie.view())
            .unwrap()
            .posterior_mean(array![[0.5]].view(), NoiseLevel::new(1.0, 0.0).unwrap())
            .unwrap();
        assert_eq!(x0[[0, 0]], 0.5);
    }

    #[test]
    fn far_queries_do_not_underflow() {
        // All Gaussian weights underflow without the max subtraction (distances² / 2σ² ≈ 10⁸).
        let data = array![[0.0, 0.0], [1.0, 1.0]];
        let x = array![[1e4, 1e4]];
        let x0 = OptimalDenoiser::new(data.view())
            .unwrap()
            .posterior_mean(x.view(), NoiseLevel::new(1.0, 1.0).unwrap())
            .unwrap();
        assert_abs_diff_eq!(x0, array![[1.0, 1.0]], epsilon = 1e-12);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let empty = Array2::<f64>::zeros((0, 3));
        assert!(matches!(
            OptimalDenoiser::new(empty.view()),
            Err(DenoiserError::EmptyData { n: 0, d: 3 })
        ));
        let nan = array![[0.0, f64::NAN]];
        assert!(matches!(
            OptimalDenoiser::new(nan.view()),
            Err(DenoiserError::NonFinite { row: 0, col: 1, .. })
        ));
        let data = array![[0.0, 1.0]];
        let den = OptimalDenoiser::new(data.view()).unwrap();
        let lv = NoiseLevel::new(1.0, 1.0).unwrap();
        assert!(matches!(
            den.posterior_mean(array![[1.0, 2.0, 3.0]].view(), lv),
            Err(DenoiserError::DimensionMismatch {
                got: 3,
                expected: 2,
                ..
            })
        ));
        assert!(matches!(
            den.posterior_mean(array![[1.0, f64::INFINITY]].view(), lv),
            Err(DenoiserError::NonFinite { .. })
        ));
        assert!(NoiseLevel::new(-1.0, 1.0).is_err());
        assert!(NoiseLevel::new(0.0, 0.0).is_err());
        assert!(NoiseLevel::ve(0.0).is_err());
        assert!(NoiseLevel::at(&VpLinear::default(), 1.2).is_err());
        let huge = array![[1e300, 1e300]];
        let den = OptimalDenoiser::new(huge.view()).unwrap();
        assert_eq!(
            den.posterior_mean(array![[1e300, 1e300]].view(), lv),
            Err(DenoiserError::Overflow)
        );
    }
}
