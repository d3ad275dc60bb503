//! Algorithm 2 (n stages): the similarity matrix of the optimal denoiser on a t-grid, and the exact optimum of
//! its contiguous segmentation (the paper's objective or the authors').

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::{check_t_min, noisy_batch, ClusterError, Criterion, Space};
use crate::cluster::segment::optimal_segmentation;
use crate::denoiser::{NoiseLevel, OptimalDenoiser};
use crate::schedule::Schedule;

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
/// diagonal 1), the y drawn from the denoiser's own dataset. `progress` gets the number of draws done.
pub fn similarity_matrix<S: Schedule + ?Sized>(
    denoiser: &OptimalDenoiser,
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
    let data = denoiser.data();
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

/// Algorithm 2's objective. With the `clap` feature it is also the `--objective` value of `msd cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Paper eq. (20): minimise Σ_k ∫∫_{segment k}² (1 − S) dt_a dt_b, the within-segment functional *distance*
    /// (D counts agreeing pixels, so 1 − S is the distance; minimising S itself would pick the least similar
    /// segments). The integral is the quadrature Σ_{i,j ∈ seg} w_i w_j (1 − S_ij), w = each node's cell width.
    #[cfg_attr(
        feature = "clap",
        value(
            help = "Paper eq. (20): minimise the within-segment functional distance, sum_k of the integral of (1 - S)"
        )
    )]
    Paper,
    /// The authors' Gurobi model (docs/paper-notes.md §1.4): maximise Σ_k mean_{i,j ∈ seg k} S_ij (diagonal included).
    #[cfg_attr(
        feature = "clap",
        value(
            help = "The authors' Gurobi model: maximise sum_k of the mean within-segment similarity"
        )
    )]
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
