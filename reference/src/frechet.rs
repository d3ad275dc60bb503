//! Fréchet distance between two Gaussians (the FID formula), and running feature statistics in f64.
//!
//! d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}.
//! The trace of the matrix square root of Σ₁Σ₂ is taken through symmetric matrices only: S = Σ₁^{1/2} from the
//! eigendecomposition of Σ₁, then the eigenvalues of the symmetric M = S Σ₂ S, whose square roots sum to
//! tr (Σ₁Σ₂)^{1/2} (M is similar to Σ₁Σ₂). Eigenvalues that round-off pushed below zero are clamped to 0, so
//! near-singular covariances (fewer samples than dimensions) give a finite, non-negative answer; a final
//! negative value can only be round-off of a true 0 and is clamped as well.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::symeig::symmetric_eigen;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FrechetError {
    #[error("{what}: expected {expected}, got shape {got:?}")]
    Shape {
        what: &'static str,
        expected: String,
        got: Vec<usize>,
    },
    #[error("{0} contains a non-finite value")]
    NonFinite(&'static str),
    #[error("covariance needs at least 2 samples, got {0}")]
    TooFewSamples(u64),
    #[error("linear algebra failed: {0}")]
    Linalg(String),
}

fn check_gaussian(
    what: &'static str,
    mu: ArrayView1<f64>,
    sigma: ArrayView2<f64>,
) -> Result<(), FrechetError> {
    let d = mu.len();
    if sigma.dim() != (d, d) {
        return Err(FrechetError::Shape {
            what,
            expected: format!("a {d} x {d} covariance"),
            got: sigma.shape().to_vec(),
        });
    }
    if mu.iter().chain(sigma.iter()).any(|v| !v.is_finite()) {
        return Err(FrechetError::NonFinite(what));
    }
    Ok(())
}

/// (A + Aᵀ)/2: covariances built in floating point are symmetric only up to round-off.
fn symmetrised(a: ArrayView2<f64>) -> Array2<f64> {
    (&a + &a.t()) * 0.5
}

/// The Fréchet distance d² between N(μ₁, Σ₁) and N(μ₂, Σ₂).
pub fn frechet_distance(
    mu1: ArrayView1<f64>,
    sigma1: ArrayView2<f64>,
    mu2: ArrayView1<f64>,
    sigma2: ArrayView2<f64>,
) -> Result<f64, FrechetError> {
    check_gaussian("the first statistics", mu1, sigma1)?;
    check_gaussian("the second statistics", mu2, sigma2)?;
    if mu1.len() != mu2.len() {
        return Err(FrechetError::Shape {
            what: "the second statistics",
            expected: format!("dimension {}", mu1.len()),
            got: vec![mu2.len()],
        });
    }
    let (s1, s2) = (symmetrised(sigma1), symmetrised(sigma2));
    let (vals, vecs) = symmetric_eigen(s1.view(), true).map_err(FrechetError::Linalg)?;
    let vecs = vecs.expect("eigenvectors were asked for");
    let root_vals = vals.mapv(|v| v.max(0.0).sqrt());
    let sqrt_s1 = (&vecs * &root_vals.insert_axis(Axis(0))).dot(&vecs.t());
    let m = symmetrised(sqrt_s1.dot(&s2).dot(&sqrt_s1).view());
    let (m_vals, _) = symmetric_eigen(m.view(), false).map_err(FrechetError::Linalg)?;
    let tr_sqrt: f64 = m_vals.iter().map(|v| v.max(0.0).sqrt()).sum();
    let diff = &mu1 - &mu2;
    let d2 = diff.dot(&diff) + s1.diag().sum() + s2.diag().sum() - 2.0 * tr_sqrt;
    Ok(d2.max(0.0))
}

/// Mean and covariance of feature rows accumulated batch by batch in f64 (Chan et al.'s pairwise update),
/// so that features never need to be held all at once. The covariance is the unbiased one (ddof = 1), as
/// `numpy.cov` and pytorch-fid compute it.
#[derive(Debug, Clone)]
pub struct RunningStats {
    n: u64,
    mean: Array1<f64>,
    /// Σ (x − mean)(x − mean)ᵀ over the rows seen.
    scatter: Array2<f64>,
}

impl RunningStats {
    pub fn new(dim: usize) -> Self {
        Self {
            n: 0,
            mean: Array1::zeros(dim),
            scatter: Array2::zeros((dim, dim)),
        }
    }

    /// Adds a batch of rows (B × d).
    pub fn update(&mut self, batch: ArrayView2<f64>) -> Result<(), FrechetError> {
        let d = self.mean.len();
        if batch.ncols() != d {
            return Err(FrechetError::Shape {
                what: "a feature batch",
                expected: format!("B x {d}"),
                got: batch.shape().to_vec(),
            });
        }
        if batch.iter().any(|v| !v.is_finite()) {
            return Err(FrechetError::NonFinite("a feature batch"));
        }
        let nb = batch.nrows() as u64;
        if nb == 0 {
            return Ok(());
        }
        let batch_mean = batch.mean_axis(Axis(0)).expect("non-empty batch");
        let centred = &batch - &batch_mean.view().insert_axis(Axis(0));
        let batch_scatter = centred.t().dot(&centred);
        let (na, nbf) = (self.n as f64, nb as f64);
        let total = na + nbf;
        let delta = &batch_mean - &self.mean;
        let outer = delta
            .view()
            .insert_axis(Axis(1))
            .dot(&delta.view().insert_axis(Axis(0)));
        self.scatter = &self.scatter + &batch_scatter + &(outer * (na * nbf / total));
        self.mean = &self.mean + &(delta * (nbf / total));
        self.n += nb;
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn mean(&self) -> &Array1<f64> {
        &self.mean
    }

    /// The unbiased covariance (needs at least 2 rows).
    pub fn covariance(&self) -> Result<Array2<f64>, FrechetError> {
        if self.n < 2 {
            return Err(FrechetError::TooFewSamples(self.n));
        }
        Ok(&self.scatter / (self.n - 1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};
    use ndarray_linalg::QR;
    use proptest::prelude::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use rand_distr::StandardNormal;

    fn random(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        Array2::from_shape_fn((rows, cols), |_| rng.sample(StandardNormal))
    }

    fn stats(x: &Array2<f64>) -> (Array1<f64>, Array2<f64>) {
        let mut s = RunningStats::new(x.ncols());
        s.update(x.view()).unwrap();
        (s.mean().clone(), s.covariance().unwrap())
    }

    fn fd(a: &(Array1<f64>, Array2<f64>), b: &(Array1<f64>, Array2<f64>)) -> f64 {
        frechet_distance(a.0.view(), a.1.view(), b.0.view(), b.1.view()).unwrap()
    }

    #[test]
    fn identical_statistics_give_zero() {
        let s = stats(&random(200, 16, 1));
        assert!(fd(&s, &s) < 1e-9, "{}", fd(&s, &s));
    }

    #[test]
    fn diagonal_covariances_match_the_closed_form() {
        // d² = Σ(μ₁ − μ₂)² + Σ(√a − √b)² for diagonal Σ₁ = diag(a), Σ₂ = diag(b).
        let (a, b) = (array![1.0, 4.0, 0.25, 9.0], array![2.0, 1.0, 0.25, 0.0]);
        let (m1, m2) = (array![0.0, 1.0, -2.0, 3.0], array![1.0, 1.0, 0.0, 3.5]);
        let want: f64 = (&m1 - &m2).mapv(|v| v * v).sum()
            + a.iter()
                .zip(&b)
                .map(|(x, y): (&f64, &f64)| (x.sqrt() - y.sqrt()).powi(2))
                .sum::<f64>();
        let got = frechet_distance(
            m1.view(),
            Array2::from_diag(&a).view(),
            m2.view(),
            Array2::from_diag(&b).view(),
        )
        .unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn near_singular_covariances_stay_finite_and_non_negative() {
        // 10 samples in 64 dimensions: rank-9 covariances.
        let (s1, s2) = (stats(&random(10, 64, 2)), stats(&random(10, 64, 3)));
        let d = fd(&s1, &s2);
        assert!(d.is_finite() && d >= 0.0, "{d}");
        let same = fd(&s1, &s1);
        assert!((0.0..1e-6).contains(&same), "{same}");
    }

    #[test]
    fn equal_rank_deficient_covariances_leave_the_mean_term() {
        // 20 samples in d = 512 (the FID regime of few samples, large d): Σ has rank 19. With Σ₁ = Σ₂ the
        // trace terms cancel exactly in exact arithmetic, so d² = ‖μ₁ − μ₂‖². Round-off on the ~493 zero
        // eigenvalues is ~u·‖Σ‖ each, and their square roots add up to ~d·√(u·‖Σ‖): the tolerance.
        let (mu, sigma) = stats(&random(20, 512, 7));
        let mu2 = &mu + 0.1;
        let want = 512.0 * 0.01;
        let got = frechet_distance(mu.view(), sigma.view(), mu2.view(), sigma.view()).unwrap();
        let tol = 512.0 * (f64::EPSILON * sigma.diag().sum()).sqrt();
        assert!(
            got.is_finite() && (got - want).abs() < tol,
            "{got} vs {want} (tol {tol})"
        );
        // Different rank-deficient covariances: finite, non-negative, symmetric to the same tolerance.
        let (mu3, sigma3) = stats(&random(20, 512, 8));
        let a = frechet_distance(mu.view(), sigma.view(), mu3.view(), sigma3.view()).unwrap();
        let b = frechet_distance(mu3.view(), sigma3.view(), mu.view(), sigma.view()).unwrap();
        assert!(
            a.is_finite() && a > 0.0 && (a - b).abs() < 2.0 * tol,
            "{a} vs {b}"
        );
    }

    #[test]
    fn running_statistics_equal_one_batch() {
        let x = random(101, 5, 4);
        let whole = stats(&x);
        let mut s = RunningStats::new(5);
        for (lo, hi) in [(0, 1), (1, 40), (40, 40), (40, 101)] {
            s.update(x.slice(ndarray::s![lo..hi, ..])).unwrap();
        }
        assert_eq!(s.count(), 101);
        assert!((s.mean() - &whole.0).iter().all(|e| e.abs() < 1e-13));
        assert!((s.covariance().unwrap() - &whole.1)
            .iter()
            .all(|e| e.abs() < 1e-12));
        // The unbiased covariance, written out.
        let c = &x - &whole.0.view().insert_axis(Axis(0));
        let direct = c.t().dot(&c) / 100.0;
        assert!((&whole.1 - &direct).iter().all(|e| e.abs() < 1e-12));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mu = array![0.0, 0.0];
        let eye = Array2::<f64>::eye(2);
        assert!(frechet_distance(
            mu.view(),
            eye.view(),
            array![0.0].view(),
            Array2::eye(1).view()
        )
        .is_err());
        assert!(frechet_distance(mu.view(), Array2::eye(3).view(), mu.view(), eye.view()).is_err());
        let nan = array![[f64::NAN, 0.0], [0.0, 1.0]];
        assert!(matches!(
            frechet_distance(mu.view(), nan.view(), mu.view(), eye.view()),
            Err(FrechetError::NonFinite(_))
        ));
        let mut s = RunningStats::new(2);
        assert!(s.update(array![[1.0, 2.0, 3.0]].view()).is_err());
        s.update(array![[1.0, 2.0]].view()).unwrap();
        assert!(matches!(
            s.covariance(),
            Err(FrechetError::TooFewSamples(1))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn symmetric_and_rotation_invariant(seed in 0u64..1_000_000, d in 1usize..7, n in 3usize..30) {
            let mut rng = StdRng::seed_from_u64(seed);
            let shift: f64 = rng.random::<f64>() * 2.0;
            let x = random(n, d, seed);
            let y = random(n + 3, d, seed + 1).mapv(|v| 1.5 * v + shift);
            let (sx, sy) = (stats(&x), stats(&y));
            let d_xy = fd(&sx, &sy);
            let d_yx = fd(&sy, &sx);
            // With n ≤ d the covariances are singular, where the matrix square root is not Lipschitz: an
            // eigenvalue that round-off moves by δ ≈ u·tr Σ moves its root by √δ. Hence the √u term.
            let trace = sx.1.diag().sum() + sy.1.diag().sum();
            let tol = 1e-9 * (1.0 + d_xy) + 4.0 * d as f64 * (f64::EPSILON * trace).sqrt();
            prop_assert!((d_xy - d_yx).abs() <= tol, "{d_xy} vs {d_yx}");
            // A common orthogonal transform of both feature sets leaves d² unchanged.
            let (q, _) = random(d, d, seed + 2).qr().unwrap();
            let (rx, ry) = (stats(&x.dot(&q)), stats(&y.dot(&q)));
            let d_rot = fd(&rx, &ry);
            prop_assert!((d_xy - d_rot).abs() <= tol, "{d_xy} vs rotated {d_rot}");
        }
    }
}
