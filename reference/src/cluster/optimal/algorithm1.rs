//! Algorithm 1 (three stages): draws (y_k, ε_k, t_k) and their similarities to the t → 0 and t → 1 limits
//! (lines 3–7), then the thresholds t1, t2 on a τ grid (lines 8–9).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::{check_t_min, noisy_batch, ClusterError, Criterion, Space};
use crate::denoiser::{NoiseLevel, OptimalDenoiser};
use crate::schedule::Schedule;

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
/// (docs/paper-notes.md §1.2): one query at a time, a pass over the data for the maximum log-weight, a second pass for the
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

/// Algorithm 1, lines 3–7: K draws of (y_k, ε_k, t_k) with the similarities S0_k, S1_k, the y_k drawn from the
/// denoiser's own dataset. `progress` is called with the number of draws done after each batch.
pub fn algorithm1_samples<S: Schedule + ?Sized>(
    denoiser: &OptimalDenoiser,
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
    let data = denoiser.data();
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
    schedule: &S,
    cfg: &Alg1Config,
    progress: &mut dyn FnMut(usize),
) -> Result<Alg1Result, ClusterError> {
    check_alpha(cfg.alpha)?;
    let samples = algorithm1_samples(denoiser, schedule, cfg, progress)?;
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
