//! Optimal-denoiser timestep clustering: Algorithm 1 (t1, t2) and Algorithm 2 (n stages).
//!
//! The functional distance (paper §4.2) between the optimal denoiser at two times, for one draw (y, ε), is
//! D = (1/d) Σ_i 1(|ε*_{t_a}(x_{t_a}) − ε*_{t_b}(x_{t_b})|_i ≤ η), with x_t = α_t·y + σ_t·ε; it is a
//! *similarity* (the fraction of pixels that agree).
//!
//! With x = α y + σ ε and the posterior mean m(x), ε*(x) = (x − α m)/σ = ε + α(y − m)/σ, so in ε space the
//! common ε cancels and every difference is formed from f_t = α_t(y − m_t)/σ_t without that cancellation.
//! - ε*₀ (t → 0): the posterior collapses onto y, so ε*₀ = ε and ε*_t − ε*₀ = α(y − m)/σ.
//! - ε*₁ (t → 1): the authors' surrogate (notes §1.2) — the denoiser of the one-point dataset {ȳ} (the data
//!   mean) *at the same x_t and t*: (x − α ȳ)/σ, so ε*_t − ε*₁ = α(ȳ − m)/σ. The paper does not say how ε*₁ is
//!   evaluated; this is the authors' convention.
//! - [`Space::X0`] (the authors' variant, notes §1.2, §7.2): compare posterior means instead, |y − m| and
//!   |ȳ − m| for Algorithm 1, |m_a − m_b| for Algorithm 2 (the 1/σ factor is dropped).
//! - [`Comparison`]: the paper's ≤ η (default) or the authors' strict < η.
//! - η is on the scale of the data; the authors' data are pixels in [0, 1] and η = 2/256.
//!
//! Randomness: one seeded ChaCha12 stream ([`rand::rngs::StdRng`]) drawn in sample order, so the same seed
//! gives the same samples whatever the batch size or thread count.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::segment::optimal_segmentation;
use super::ClusterError;
use crate::denoiser::{NoiseLevel, OptimalDenoiser};
use crate::schedule::Schedule;

/// Where functional distances are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Space {
    /// The paper: ε*-prediction space.
    Eps,
    /// The authors' code for Algorithm 2: x₀ (posterior-mean) space.
    X0,
}

/// How |difference| is compared with η.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Comparison {
    /// The paper: |·| ≤ η.
    Le,
    /// The authors' code: |·| < η.
    Lt,
}

/// The per-draw similarity D: the fraction of entries with |diff| within η.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criterion {
    pub eta: f64,
    pub space: Space,
    pub comparison: Comparison,
}

impl Criterion {
    /// Paper defaults: η = 2/256 (on [0, 1] pixels), ε space, ≤.
    pub const PAPER: Criterion = Criterion {
        eta: 2.0 / 256.0,
        space: Space::Eps,
        comparison: Comparison::Le,
    };

    fn check(&self) -> Result<(), ClusterError> {
        if !(self.eta.is_finite() && self.eta > 0.0) {
            return Err(ClusterError::BadParameter {
                name: "eta",
                value: self.eta,
                why: "must be finite and > 0",
            });
        }
        Ok(())
    }

    /// D for one difference vector.
    pub fn fraction(&self, diff: impl Iterator<Item = f64>) -> f64 {
        let (mut hit, mut n) = (0usize, 0usize);
        for v in diff {
            let a = v.abs();
            hit += usize::from(match self.comparison {
                Comparison::Le => a <= self.eta,
                Comparison::Lt => a < self.eta,
            });
            n += 1;
        }
        hit as f64 / n as f64
    }
}

fn check_t_min(t_min: f64) -> Result<(), ClusterError> {
    if !(t_min.is_finite() && t_min > 0.0 && t_min < 1.0) {
        return Err(ClusterError::BadParameter {
            name: "t_min",
            value: t_min,
            why: "must lie in (0, 1)",
        });
    }
    Ok(())
}

/// Settings of Algorithm 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alg1Config {
    /// K, the number of (y, ε, t) draws (paper: 5·10⁴).
    pub samples: usize,
    pub seed: u64,
    /// ε_t: t ~ U[t_min, 1] (authors: 10⁻³ for VP).
    pub t_min: f64,
    /// α: the mean-similarity threshold of lines 8–9 (paper: 0.9).
    pub alpha: f64,
    /// Number of τ values of the grid search, τ_j = j/G for j = 1..=G (paper: 10⁴).
    pub tau_grid: usize,
    pub criterion: Criterion,
    /// Queries per denoiser call (memory: batch × d f64 several times, plus the denoiser's own blocks).
    pub batch: usize,
}

impl Default for Alg1Config {
    /// The paper's settings: K = 5·10⁴, ε_t = 10⁻³, α = 0.9, 10⁴ τ values, η = 2/256, ε space, ≤.
    fn default() -> Self {
        Self {
            samples: 50_000,
            seed: 0,
            t_min: 1e-3,
            alpha: 0.9,
            tau_grid: 10_000,
            criterion: Criterion::PAPER,
            batch: 2048,
        }
    }
}

/// One Algorithm-1 draw: its time and its similarities to ε*₀ and ε*₁.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alg1Sample {
    pub t: f64,
    pub s0: f64,
    pub s1: f64,
}

/// The result of Algorithm 1. `t1`/`t2` are `None` when no τ of the grid meets α.
#[derive(Debug, Clone, PartialEq)]
pub struct Alg1Result {
    pub t1: Option<f64>,
    pub t2: Option<f64>,
    /// Every draw, in draw order.
    pub samples: Vec<Alg1Sample>,
}

fn check_alpha(alpha: f64) -> Result<(), ClusterError> {
    if !(alpha.is_finite() && alpha > 0.0 && alpha <= 1.0) {
        return Err(ClusterError::BadParameter {
            name: "alpha",
            value: alpha,
            why: "must lie in (0, 1]",
        });
    }
    Ok(())
}

/// x = α y + σ ε for a batch of draws (row r: data row idx[r], noise row r, level r).
fn noisy_batch(
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

/// Algorithm 1's draws for `b` samples, in the order index, time, then the d normals of each sample.
fn draw_alg1(
    rng: &mut StdRng,
    n: usize,
    d: usize,
    b: usize,
    t_min: f64,
) -> (Vec<usize>, Vec<f64>, Array2<f64>) {
    let mut idx = Vec::with_capacity(b);
    let mut ts = Vec::with_capacity(b);
    let mut eps = Array2::<f64>::zeros((b, d));
    for r in 0..b {
        idx.push(rng.random_range(0..n));
        ts.push(t_min + (1.0 - t_min) * rng.random::<f64>());
        for e in eps.row_mut(r).iter_mut() {
            *e = rng.sample(StandardNormal);
        }
    }
    (idx, ts, eps)
}

/// S0 and S1 of one draw from its posterior mean m (see the module docs for the algebra).
fn alg1_sample(
    crit: &Criterion,
    y: ArrayView1<f64>,
    mean: ArrayView1<f64>,
    m: ArrayView1<f64>,
    t: f64,
    l: NoiseLevel,
) -> Alg1Sample {
    let scale = match crit.space {
        Space::Eps => l.alpha / l.sigma,
        Space::X0 => 1.0,
    };
    let s0 = crit.fraction(y.iter().zip(m).map(|(a, b)| scale * (a - b)));
    let s1 = crit.fraction(mean.iter().zip(m).map(|(a, b)| scale * (a - b)));
    Alg1Sample { t, s0, s1 }
}

/// The same draws as [`algorithm1_samples`], each posterior mean computed the way the authors' script does
/// (notes §1.2): one query at a time, a pass over the data for the maximum log-weight, a second pass for the
/// weights and the weighted sum, distances summed pixel by pixel. For the speed-up measurement and as an
/// independent check of the batched path.
pub fn algorithm1_samples_one_at_a_time<S: Schedule + ?Sized>(
    data: ArrayView2<f64>,
    schedule: &S,
    cfg: &Alg1Config,
) -> Result<Vec<Alg1Sample>, ClusterError> {
    cfg.criterion.check()?;
    check_t_min(cfg.t_min)?;
    let (n, d) = data.dim();
    let mean = data
        .mean_axis(Axis(0))
        .ok_or(ClusterError::NonFinite("the data mean"))?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut out = Vec::with_capacity(cfg.samples);
    let batch = cfg.batch.max(1);
    while out.len() < cfg.samples {
        let b = batch.min(cfg.samples - out.len());
        let (idx, ts, eps) = draw_alg1(&mut rng, n, d, b, cfg.t_min);
        for r in 0..b {
            let l = NoiseLevel::at(schedule, ts[r])?;
            let y = data.row(idx[r]);
            let x: Array1<f64> = y
                .iter()
                .zip(eps.row(r))
                .map(|(&yv, &e)| l.alpha * yv + l.sigma * e)
                .collect();
            let logw: Vec<f64> = data
                .rows()
                .into_iter()
                .map(|yi| {
                    let dist: f64 = x
                        .iter()
                        .zip(yi)
                        .map(|(a, b)| (a - l.alpha * b).powi(2))
                        .sum();
                    -dist / (2.0 * l.sigma * l.sigma)
                })
                .collect();
            let max = logw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut m = Array1::<f64>::zeros(d);
            let mut total = 0.0;
            for (yi, lw) in data.rows().into_iter().zip(&logw) {
                let w = (lw - max).exp();
                total += w;
                m.scaled_add(w, &yi);
            }
            m /= total;
            out.push(alg1_sample(
                &cfg.criterion,
                y,
                mean.view(),
                m.view(),
                ts[r],
                l,
            ));
        }
    }
    Ok(out)
}

/// Algorithm 1, lines 3–7: K draws of (y_k, ε_k, t_k) with the similarities S0_k, S1_k. `progress` is called
/// with the number of draws done after each batch.
pub fn algorithm1_samples<S: Schedule + ?Sized>(
    denoiser: &OptimalDenoiser,
    data: ArrayView2<f64>,
    schedule: &S,
    cfg: &Alg1Config,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Alg1Sample>, ClusterError> {
    cfg.criterion.check()?;
    check_t_min(cfg.t_min)?;
    if cfg.samples == 0 {
        return Err(ClusterError::BadParameter {
            name: "samples",
            value: 0.0,
            why: "must be >= 1",
        });
    }
    let (n, d) = data.dim();
    let mean = data
        .mean_axis(Axis(0))
        .ok_or(ClusterError::NonFinite("the data mean"))?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut out = Vec::with_capacity(cfg.samples);
    let batch = cfg.batch.max(1);
    while out.len() < cfg.samples {
        let b = batch.min(cfg.samples - out.len());
        let (idx, ts, eps) = draw_alg1(&mut rng, n, d, b, cfg.t_min);
        let levels = ts
            .iter()
            .map(|&t| NoiseLevel::at(schedule, t))
            .collect::<Result<Vec<_>, _>>()?;
        let x = noisy_batch(data, &idx, eps.view(), &levels);
        let m = denoiser.posterior_mean_per_row(x.view(), &levels)?;
        for r in 0..b {
            out.push(alg1_sample(
                &cfg.criterion,
                data.row(idx[r]),
                mean.view(),
                m.row(r),
                ts[r],
                levels[r],
            ));
        }
        progress(out.len());
    }
    Ok(out)
}

/// Algorithm 1, lines 8–9, on the τ grid τ_j = j/G (j = 1..=G):
/// t1 = max τ with mean{S0_k : t_k ≤ τ} ≥ α; t2 = min τ with mean{S1_k : t_k ≥ τ} ≥ α.
/// A τ with no draw on its side has no mean and never qualifies.
pub fn algorithm1_thresholds(
    samples: &[Alg1Sample],
    alpha: f64,
    tau_grid: usize,
) -> Result<(Option<f64>, Option<f64>), ClusterError> {
    check_alpha(alpha)?;
    if tau_grid == 0 {
        return Err(ClusterError::BadParameter {
            name: "tau_grid",
            value: 0.0,
            why: "must be >= 1",
        });
    }
    let mut sorted: Vec<Alg1Sample> = samples.to_vec();
    sorted.sort_by(|a, b| a.t.total_cmp(&b.t));
    let k = sorted.len();
    // prefix[i] = Σ_{j < i} S0_j; suffix[i] = Σ_{j ≥ i} S1_j (in t order).
    let mut prefix = vec![0.0; k + 1];
    for i in 0..k {
        prefix[i + 1] = prefix[i] + sorted[i].s0;
    }
    let mut suffix = vec![0.0; k + 1];
    for i in (0..k).rev() {
        suffix[i] = suffix[i + 1] + sorted[i].s1;
    }
    let taus = (1..=tau_grid).map(|j| j as f64 / tau_grid as f64);
    let mut t1 = None;
    let mut t2 = None;
    for tau in taus {
        // Draws with t ≤ τ are sorted[..le]; draws with t ≥ τ are sorted[ge..].
        let le = sorted.partition_point(|s| s.t <= tau);
        let ge = sorted.partition_point(|s| s.t < tau);
        if le > 0 && prefix[le] / le as f64 >= alpha {
            t1 = Some(tau);
        }
        if t2.is_none() && ge < k && suffix[ge] / (k - ge) as f64 >= alpha {
            t2 = Some(tau);
        }
    }
    Ok((t1, t2))
}

/// Algorithm 1 end to end.
pub fn algorithm1<S: Schedule + ?Sized>(
    denoiser: &OptimalDenoiser,
    data: ArrayView2<f64>,
    schedule: &S,
    cfg: &Alg1Config,
    progress: &mut dyn FnMut(usize),
) -> Result<Alg1Result, ClusterError> {
    check_alpha(cfg.alpha)?;
    let samples = algorithm1_samples(denoiser, data, schedule, cfg, progress)?;
    let (t1, t2) = algorithm1_thresholds(&samples, cfg.alpha, cfg.tau_grid)?;
    Ok(Alg1Result { t1, t2, samples })
}

/// Mean of (S0, S1) over draws in each of `bins` equal bins of t ∈ [0, 1] (NaN for an empty bin), for plots.
pub fn binned_means(samples: &[Alg1Sample], bins: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut sum0 = vec![0.0; bins];
    let mut sum1 = vec![0.0; bins];
    let mut cnt = vec![0usize; bins];
    for s in samples {
        let b = ((s.t * bins as f64) as usize).min(bins - 1);
        sum0[b] += s.s0;
        sum1[b] += s.s1;
        cnt[b] += 1;
    }
    let centers = (0..bins).map(|b| (b as f64 + 0.5) / bins as f64).collect();
    let div = |s: Vec<f64>| {
        s.iter()
            .zip(&cnt)
            .map(|(v, &c)| if c == 0 { f64::NAN } else { v / c as f64 })
            .collect()
    };
    (centers, div(sum0), div(sum1))
}

// -------------------------------------------------------------------------------------------------
// Algorithm 2

/// The t-grid of Algorithm 2: t_min, t_min + step, … (every value < 1), then 1.
/// Paper: t_min = 0.001, step = 0.025 → {0.001, 0.026, …, 0.976, 1} (41 nodes); authors: step 0.05 (21 nodes).
pub fn similarity_grid(t_min: f64, step: f64) -> Result<Vec<f64>, ClusterError> {
    check_t_min(t_min)?;
    if !(step.is_finite() && step > 0.0 && step < 1.0) {
        return Err(ClusterError::BadParameter {
            name: "grid_step",
            value: step,
            why: "must lie in (0, 1)",
        });
    }
    let mut grid = Vec::new();
    let mut j = 0usize;
    loop {
        // Index times step (not repeated addition), so 0.001 + 39·0.025 is 0.976 up to one rounding.
        let t = t_min + j as f64 * step;
        // Values within 1e-9 of 1 are 1 itself.
        if t >= 1.0 - 1e-9 {
            break;
        }
        grid.push(t);
        j += 1;
    }
    grid.push(1.0);
    Ok(grid)
}

/// Settings of Algorithm 2's similarity matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alg2Config {
    /// Number of (y, ε) draws; each is evaluated at every grid time (shared y, ε for all pairs).
    pub draws: usize,
    pub seed: u64,
    pub criterion: Criterion,
    /// Draws per denoiser call (each call holds draws × grid queries).
    pub batch: usize,
}

/// The similarity matrix S[a][b] = mean over draws of D(ε*_{t_a}, ε*_{t_b}, y, ε) on `grid` (symmetric,
/// diagonal 1). `progress` gets the number of draws done.
pub fn similarity_matrix<S: Schedule + ?Sized>(
    denoiser: &OptimalDenoiser,
    data: ArrayView2<f64>,
    schedule: &S,
    grid: &[f64],
    cfg: &Alg2Config,
    progress: &mut dyn FnMut(usize),
) -> Result<Array2<f64>, ClusterError> {
    cfg.criterion.check()?;
    if cfg.draws == 0 {
        return Err(ClusterError::BadParameter {
            name: "samples",
            value: 0.0,
            why: "must be >= 1",
        });
    }
    let (n, d) = data.dim();
    let g = grid.len();
    let levels_g = grid
        .iter()
        .map(|&t| NoiseLevel::at(schedule, t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut sums = Array2::<f64>::zeros((g, g));
    let mut done = 0;
    let batch = cfg.batch.max(1);
    while done < cfg.draws {
        let b = batch.min(cfg.draws - done);
        let mut idx = Vec::with_capacity(b);
        let mut eps = Array2::<f64>::zeros((b, d));
        for r in 0..b {
            idx.push(rng.random_range(0..n));
            for e in eps.row_mut(r).iter_mut() {
                *e = rng.sample(StandardNormal);
            }
        }
        // Rows g·b + r: draw r at grid time g.
        let mut all_idx = Vec::with_capacity(g * b);
        let mut all_levels = Vec::with_capacity(g * b);
        let mut all_eps = Array2::<f64>::zeros((g * b, d));
        for (gi, l) in levels_g.iter().enumerate() {
            all_idx.extend_from_slice(&idx);
            all_levels.extend(std::iter::repeat_n(*l, b));
            all_eps.slice_mut(s![gi * b..(gi + 1) * b, ..]).assign(&eps);
        }
        let x = noisy_batch(data, &all_idx, all_eps.view(), &all_levels);
        drop(all_eps);
        let m = denoiser.posterior_mean_per_row(x.view(), &all_levels)?;
        drop(x);
        // f_t: α(y − m)/σ in ε space (ε*_t − ε, the common ε cancels in differences), m in x₀ space.
        let mut f = m;
        for (row, (&i, l)) in f
            .rows_mut()
            .into_iter()
            .zip(all_idx.iter().zip(&all_levels))
        {
            match cfg.criterion.space {
                Space::Eps => {
                    let sc = l.alpha / l.sigma;
                    for (v, &y) in row.into_iter().zip(data.row(i)) {
                        *v = sc * (y - *v);
                    }
                }
                Space::X0 => {}
            }
        }
        for r in 0..b {
            for a in 0..g {
                let fa: ArrayView1<f64> = f.row(a * b + r);
                for c in a + 1..g {
                    let fc = f.row(c * b + r);
                    let dv = cfg
                        .criterion
                        .fraction(fa.iter().zip(fc).map(|(p, q)| p - q));
                    sums[[a, c]] += dv;
                    sums[[c, a]] += dv;
                }
            }
        }
        done += b;
        progress(done);
    }
    let mut sim = sums / cfg.draws as f64;
    sim.diag_mut().fill(1.0);
    Ok(sim)
}

/// Algorithm 2's objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Paper eq. (20): minimise Σ_k ∫∫_{segment k}² (1 − S) dt_a dt_b, the within-segment functional *distance*
    /// (D counts agreeing pixels, so 1 − S is the distance; minimising S itself would pick the least similar
    /// segments). The integral is the quadrature Σ_{i,j ∈ seg} w_i w_j (1 − S_ij), w = each node's cell width.
    Paper,
    /// The authors' Gurobi model (notes §1.4): maximise Σ_k mean_{i,j ∈ seg k} S_ij (diagonal included).
    Authors,
}

/// Cell widths of a grid on [0, 1]: node i owns [mid(i−1, i), mid(i, i+1)], the ends clipped to 0 and 1.
pub fn cell_widths(grid: &[f64]) -> Vec<f64> {
    let g = grid.len();
    (0..g)
        .map(|i| {
            let lo = if i == 0 {
                0.0
            } else {
                0.5 * (grid[i - 1] + grid[i])
            };
            let hi = if i + 1 == g {
                1.0
            } else {
                0.5 * (grid[i] + grid[i + 1])
            };
            hi - lo
        })
        .collect()
}

/// 2-D prefix sums P[i][j] = Σ_{a<i, b<j} M[a][b], for O(1) block sums.
fn prefix2(m: ArrayView2<f64>) -> Array2<f64> {
    let (r, c) = m.dim();
    let mut p = Array2::<f64>::zeros((r + 1, c + 1));
    for i in 0..r {
        for j in 0..c {
            p[[i + 1, j + 1]] = m[[i, j]] + p[[i, j + 1]] + p[[i + 1, j]] - p[[i, j]];
        }
    }
    p
}

fn block(p: &Array2<f64>, a: usize, b: usize) -> f64 {
    p[[b + 1, b + 1]] - p[[a, b + 1]] - p[[b + 1, a]] + p[[a, a]]
}

/// Algorithm 2's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Alg2Result {
    /// Interior boundaries: the midpoint between the last node of one segment and the first of the next.
    pub boundaries: Vec<f64>,
    /// First grid index of segments 1..n.
    pub start_indices: Vec<usize>,
    /// The objective's value at the optimum (paper: the distance, minimised; authors: the similarity, maximised).
    pub objective: f64,
}

/// The exact optimum of Algorithm 2's segmentation of `grid` into `stages` segments, by dynamic programming.
pub fn segment_similarity(
    sim: ArrayView2<f64>,
    grid: &[f64],
    stages: usize,
    objective: Objective,
) -> Result<Alg2Result, ClusterError> {
    let g = grid.len();
    if sim.dim() != (g, g) {
        return Err(ClusterError::NotSquare {
            rows: sim.nrows(),
            cols: sim.ncols(),
        });
    }
    if sim.iter().any(|v| !v.is_finite()) {
        return Err(ClusterError::NonFinite("the similarity matrix"));
    }
    if stages < 2 || stages > g {
        return Err(ClusterError::TooManyStages { stages, points: g });
    }
    let (starts, value) = match objective {
        Objective::Paper => {
            let w = Array1::from(cell_widths(grid));
            let dist = Array2::from_shape_fn((g, g), |(i, j)| w[i] * w[j] * (1.0 - sim[[i, j]]));
            let p = prefix2(dist.view());
            optimal_segmentation(g, stages, |a, b| block(&p, a, b))?
        }
        Objective::Authors => {
            let p = prefix2(sim);
            let (s, v) = optimal_segmentation(g, stages, |a, b| {
                let len = (b - a + 1) as f64;
                -block(&p, a, b) / (len * len)
            })?;
            (s, -v)
        }
    };
    Ok(Alg2Result {
        boundaries: starts
            .iter()
            .map(|&s| 0.5 * (grid[s - 1] + grid[s]))
            .collect(),
        start_indices: starts,
        objective: value,
    })
}

#[cfg(test)]
mod tests;
