//! Time of the Fréchet distance (FID formula, f64, two LAPACK dsyevd decompositions plus three d × d GEMMs)
//! at the Inception feature dimension d = 2048 (MSD_BENCH_FD_D to change it), for full-rank covariances
//! from n = 2d samples and for rank-deficient ones from n = d/4 samples.
//!
//!     cargo bench --bench frechet

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use msd::reference::frechet::{frechet_distance, RunningStats};
use ndarray::{Array1, Array2};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

// Every artifact must link OpenBLAS (see src/lib.rs).
use ndarray_linalg as _;

fn stats(n: usize, d: usize, seed: u64) -> (Array1<f64>, Array2<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((n, d), |_| rng.sample::<f64, _>(StandardNormal));
    let mut s = RunningStats::new(d);
    s.update(x.view()).unwrap();
    (s.mean().clone(), s.covariance().unwrap())
}

fn bench(c: &mut Criterion) {
    // `cargo test --all-targets` runs each benchmark once as a smoke test: keep that small.
    let full = std::env::args().any(|a| a == "--bench");
    let d: usize = std::env::var("MSD_BENCH_FD_D")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 2048 } else { 64 });
    let mut g = c.benchmark_group("frechet");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    for (label, n) in [("full_rank", 2 * d), ("rank_deficient", (d / 4).max(2))] {
        let (m1, s1) = stats(n, d, 1);
        let (m2, s2) = stats(n, d, 2);
        g.bench_with_input(
            BenchmarkId::new(label, format!("d{d}_n{n}")),
            &(),
            |b, _| b.iter(|| frechet_distance(m1.view(), s1.view(), m2.view(), s2.view()).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
