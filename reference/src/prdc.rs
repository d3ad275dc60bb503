//! Precision and recall of Kynkäänniemi et al. (NeurIPS 2019, "Improved precision and recall metric for
//! assessing generative models"), with the density and coverage of Naeem et al. (ICML 2020) that come from
//! the same k-NN radii.
//!
//! The manifold of a feature set Φ is the union of the balls B(φ, r_k(φ)), φ ∈ Φ, where r_k(φ) is the
//! distance from φ to its k-th nearest neighbour in Φ other than itself. With real features A (N rows) and
//! generated features B (M rows):
//! - precision = fraction of b ∈ B inside manifold(A), recall = fraction of a ∈ A inside manifold(B);
//! - density = (1/(kM)) Σ_b #{a : ‖b − a‖ ≤ r_k(a)}, coverage = fraction of a ∈ A whose ball holds some b.
//!
//! "Inside" is ‖x − φ‖ ≤ r_k(φ), as in Kynkäänniemi et al.'s definition (their code uses ≤; Naeem et al.'s
//! `prdc` package uses <, which differs only on exact ties). Distances are exact pairwise Euclidean
//! distances: ‖x − y‖² = ‖x‖² − 2⟨x, y⟩ + ‖y‖², the cross term a GEMM, clamped at 0 against round-off, and
//! computed in row chunks so that memory stays bounded. Comparisons are made on squared distances.

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PrdcError {
    #[error("k must be at least 1")]
    ZeroK,
    #[error("{what} has {n} rows: k = {k} nearest neighbours need at least k + 1 = {} rows", k + 1)]
    TooFewRows {
        what: &'static str,
        n: usize,
        k: usize,
    },
    #[error("feature dimensions differ: {a} (first set) vs {b} (second set)")]
    DimMismatch { a: usize, b: usize },
    #[error("{0} contains a non-finite value")]
    NonFinite(&'static str),
}

/// The four numbers, each in [0, 1] except density (≥ 0, 1 on average for B drawn like A).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prdc {
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
}

/// Bytes of f64 distance matrix per chunk (32 MiB).
const CHUNK_BYTES: usize = 32 << 20;

fn chunk_rows(cols: usize, budget: usize) -> usize {
    (budget / 8 / cols.max(1)).max(1)
}

fn sq_norms(x: ArrayView2<f64>) -> Array1<f64> {
    x.map_axis(Axis(1), |r| r.dot(&r))
}

/// Squared distances between the rows of `q` (a chunk) and the rows of `x`, with ‖x‖² precomputed.
fn sq_dists(q: ArrayView2<f64>, x: ArrayView2<f64>, x_norms: &Array1<f64>) -> Array2<f64> {
    let qn = sq_norms(q);
    let mut d = q.dot(&x.t()) * -2.0;
    for (mut row, &a) in d.axis_iter_mut(Axis(0)).zip(qn.iter()) {
        for (v, &b) in row.iter_mut().zip(x_norms.iter()) {
            *v = (*v + a + b).max(0.0);
        }
    }
    d
}

/// Squared distance from each row of `x` to its k-th nearest neighbour among the other rows.
pub fn kth_neighbour_sq_radii(x: ArrayView2<f64>, k: usize) -> Result<Array1<f64>, PrdcError> {
    radii_chunked(x, k, CHUNK_BYTES)
}

fn radii_chunked(x: ArrayView2<f64>, k: usize, budget: usize) -> Result<Array1<f64>, PrdcError> {
    if k == 0 {
        return Err(PrdcError::ZeroK);
    }
    let n = x.nrows();
    if n <= k {
        return Err(PrdcError::TooFewRows {
            what: "the feature set",
            n,
            k,
        });
    }
    let norms = sq_norms(x);
    let mut radii = Array1::zeros(n);
    let step = chunk_rows(n, budget);
    let mut lo = 0;
    while lo < n {
        let hi = (lo + step).min(n);
        let d = sq_dists(x.slice(s![lo..hi, ..]), x, &norms);
        for (r, row) in d.axis_iter(Axis(0)).enumerate() {
            let i = lo + r;
            // The row itself is excluded by index (not by "distance 0"), so duplicates count as neighbours.
            let mut others: Vec<f64> = row
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &v)| v)
                .collect();
            let (_, kth, _) = others.select_nth_unstable_by(k - 1, f64::total_cmp);
            radii[i] = *kth;
        }
        lo = hi;
    }
    Ok(radii)
}

/// For each row of `q`: how many balls B(x_i, r_i) (squared radii `sq_radii`) contain it.
fn ball_counts(
    q: ArrayView2<f64>,
    x: ArrayView2<f64>,
    sq_radii: &Array1<f64>,
    budget: usize,
) -> Vec<usize> {
    let norms = sq_norms(x);
    let mut counts = Vec::with_capacity(q.nrows());
    let step = chunk_rows(x.nrows(), budget);
    let mut lo = 0;
    while lo < q.nrows() {
        let hi = (lo + step).min(q.nrows());
        let d = sq_dists(q.slice(s![lo..hi, ..]), x, &norms);
        counts.extend(
            d.axis_iter(Axis(0))
                .map(|row| row.iter().zip(sq_radii).filter(|(v, r)| v <= r).count()),
        );
        lo = hi;
    }
    counts
}

/// For each row of `x`: whether its ball B(x_i, r_i) contains some row of `q`.
fn covered(
    q: ArrayView2<f64>,
    x: ArrayView2<f64>,
    sq_radii: &Array1<f64>,
    budget: usize,
) -> Vec<bool> {
    let q_norms = sq_norms(q);
    let mut out = Vec::with_capacity(x.nrows());
    let step = chunk_rows(q.nrows(), budget);
    let mut lo = 0;
    while lo < x.nrows() {
        let hi = (lo + step).min(x.nrows());
        let d = sq_dists(x.slice(s![lo..hi, ..]), q, &q_norms);
        out.extend(
            d.axis_iter(Axis(0))
                .zip(sq_radii.slice(s![lo..hi]))
                .map(|(row, r)| row.iter().any(|v| v <= r)),
        );
        lo = hi;
    }
    out
}

/// Precision, recall, density and coverage of generated features `b` against real features `a` (rows are
/// samples), with k-NN radii.
pub fn prdc(a: ArrayView2<f64>, b: ArrayView2<f64>, k: usize) -> Result<Prdc, PrdcError> {
    prdc_chunked(a, b, k, CHUNK_BYTES)
}

fn prdc_chunked(
    a: ArrayView2<f64>,
    b: ArrayView2<f64>,
    k: usize,
    budget: usize,
) -> Result<Prdc, PrdcError> {
    if k == 0 {
        return Err(PrdcError::ZeroK);
    }
    if a.ncols() != b.ncols() {
        return Err(PrdcError::DimMismatch {
            a: a.ncols(),
            b: b.ncols(),
        });
    }
    for (what, x) in [("the first feature set", a), ("the second feature set", b)] {
        if x.nrows() <= k {
            return Err(PrdcError::TooFewRows {
                what,
                n: x.nrows(),
                k,
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(PrdcError::NonFinite(what));
        }
    }
    let ra = radii_chunked(a, k, budget)?;
    let rb = radii_chunked(b, k, budget)?;
    let in_a = ball_counts(b, a, &ra, budget);
    let precision = in_a.iter().filter(|&&c| c > 0).count() as f64 / b.nrows() as f64;
    let density = in_a.iter().sum::<usize>() as f64 / (k * b.nrows()) as f64;
    let in_b = ball_counts(a, b, &rb, budget);
    let recall = in_b.iter().filter(|&&c| c > 0).count() as f64 / a.nrows() as f64;
    let cov = covered(b, a, &ra, budget);
    let coverage = cov.iter().filter(|&&c| c).count() as f64 / a.nrows() as f64;
    Ok(Prdc {
        precision,
        recall,
        density,
        coverage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use proptest::prelude::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use rand_distr::StandardNormal;

    fn random(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        Array2::from_shape_fn((rows, cols), |_| rng.sample(StandardNormal))
    }

    /// The definition, written out with explicit loops and direct differences.
    fn naive(a: &Array2<f64>, b: &Array2<f64>, k: usize) -> Prdc {
        let dist = |x: ndarray::ArrayView1<f64>, y: ndarray::ArrayView1<f64>| {
            x.iter().zip(y).map(|(p, q)| (p - q).powi(2)).sum::<f64>()
        };
        let radii = |x: &Array2<f64>| -> Vec<f64> {
            (0..x.nrows())
                .map(|i| {
                    let mut d: Vec<f64> = (0..x.nrows())
                        .filter(|&j| j != i)
                        .map(|j| dist(x.row(i), x.row(j)))
                        .collect();
                    d.sort_by(f64::total_cmp);
                    d[k - 1]
                })
                .collect()
        };
        let (ra, rb) = (radii(a), radii(b));
        let inside = |y: ndarray::ArrayView1<f64>, x: &Array2<f64>, r: &[f64]| {
            (0..x.nrows())
                .filter(|&i| dist(y, x.row(i)) <= r[i])
                .count()
        };
        let m = b.nrows() as f64;
        let n = a.nrows() as f64;
        Prdc {
            precision: b
                .rows()
                .into_iter()
                .filter(|y| inside(*y, a, &ra) > 0)
                .count() as f64
                / m,
            recall: a
                .rows()
                .into_iter()
                .filter(|y| inside(*y, b, &rb) > 0)
                .count() as f64
                / n,
            density: b
                .rows()
                .into_iter()
                .map(|y| inside(y, a, &ra))
                .sum::<usize>() as f64
                / (k as f64 * m),
            coverage: (0..a.nrows())
                .filter(|&i| b.rows().into_iter().any(|y| dist(y, a.row(i)) <= ra[i]))
                .count() as f64
                / n,
        }
    }

    #[test]
    fn one_dimensional_hand_example() {
        // A = {0, 1, 2, 10}, k = 1: radii 1, 1, 1, 8. B = {0.5, 5, 20, 21}: radii 4.5, 4.5, 1, 1.
        // Precision: 0.5 ∈ B(0,1); 5 ∈ B(10, 8); 20, 21 are outside → 2/4.
        // Recall: 0, 1 ∈ B(0.5, 4.5); 2 ∈ B(0.5, 4.5) (1.5 ≤ 4.5); 10 ∈ B(5, 4.5)? 5 > 4.5, no → 3/4.
        // Density: 0.5 lies in B(0,1), B(1,1) (0.5 ≤ 1), B(2,1)? 1.5 > 1 no, B(10,8)? no → 2; 5 → 1 (B(10,8));
        // 20, 21 → 0. Density = 3 / (1·4).
        // Coverage: balls of 0 and 1 hold 0.5; ball of 2 holds nothing; ball of 10 holds 5 → 3/4.
        let a = array![[0.0], [1.0], [2.0], [10.0]];
        let b = array![[0.5], [5.0], [20.0], [21.0]];
        let got = prdc(a.view(), b.view(), 1).unwrap();
        assert_eq!(
            got,
            Prdc {
                precision: 0.5,
                recall: 0.75,
                density: 0.75,
                coverage: 0.75
            }
        );
    }

    #[test]
    fn identical_sets_have_full_precision_and_recall() {
        let a = random(50, 4, 1);
        let got = prdc(a.view(), a.view(), 3).unwrap();
        assert_eq!((got.precision, got.recall, got.coverage), (1.0, 1.0, 1.0));
    }

    #[test]
    fn disjoint_sets_have_zero_precision_and_recall() {
        let a = random(40, 3, 2);
        let b = random(40, 3, 3).mapv(|v| v + 100.0);
        let got = prdc(a.view(), b.view(), 3).unwrap();
        assert_eq!(
            got,
            Prdc {
                precision: 0.0,
                recall: 0.0,
                density: 0.0,
                coverage: 0.0
            }
        );
    }

    #[test]
    fn chunking_does_not_change_the_answer() {
        // A budget of 8·n bytes gives one query row per chunk; 200 bytes gives a few rows.
        let a = random(37, 3, 4);
        let b = random(23, 3, 5).mapv(|v| 0.7 * v + 0.3);
        let whole = prdc(a.view(), b.view(), 3).unwrap();
        for budget in [8, 200] {
            assert!(chunk_rows(37, budget) < 23);
            assert_eq!(prdc_chunked(a.view(), b.view(), 3, budget).unwrap(), whole);
        }
        assert_eq!(whole, naive(&a, &b, 3));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = random(5, 2, 5);
        assert!(matches!(prdc(a.view(), a.view(), 0), Err(PrdcError::ZeroK)));
        assert!(matches!(
            prdc(a.view(), a.view(), 5),
            Err(PrdcError::TooFewRows { n: 5, k: 5, .. })
        ));
        assert!(matches!(
            prdc(a.view(), random(5, 3, 6).view(), 1),
            Err(PrdcError::DimMismatch { a: 2, b: 3 })
        ));
        let mut bad = a.clone();
        bad[[1, 1]] = f64::NAN;
        assert!(matches!(
            prdc(a.view(), bad.view(), 1),
            Err(PrdcError::NonFinite(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_the_definition(seed in 0u64..1_000_000, n in 4usize..30, m in 4usize..30,
                                  d in 1usize..6, k in 1usize..4, shift in 0.0f64..2.0) {
            let a = random(n, d, seed);
            let b = random(m, d, seed + 1).mapv(|v| v + shift);
            let got = prdc(a.view(), b.view(), k).unwrap();
            let want = naive(&a, &b, k);
            // Random continuous data has no ties at the 1e-12 level, so the counts agree exactly.
            prop_assert_eq!(got, want);
        }
    }
}
