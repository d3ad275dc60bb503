//! Algorithm 1's throughput against the machine's own dgemm, and its speed-up over the authors' one-query-at-a-time
//! loop, all measured in the same run (a plain timing harness: each row is one long run, not worth repeating).
//!
//!     cargo bench --bench cluster                          # Fashion-MNIST train (N = 60000, d = 784)
//!     MSD_BENCH_K=20000 MSD_BENCH_K_SLOW=32 cargo bench --bench cluster
//!
//! Rows: dgemm of the distance shape (2048 × 784)·(784 × N), best of 3; Algorithm 1 on K draws (4·K·N·d flops:
//! the two GEMMs of the denoiser); the one-at-a-time loop (`algorithm1_samples_one_at_a_time`) on K_SLOW draws,
//! and the batched path on the same K_SLOW draws. Under `cargo test --all-targets` it runs once on a tiny
//! synthetic problem as a smoke test.

use std::time::Instant;

use msd::reference::cluster::optimal::{
    algorithm1, algorithm1_samples, algorithm1_samples_one_at_a_time, Alg1Config,
};
use msd::reference::{OptimalDenoiser, VpLinear};
use ndarray::linalg::general_mat_mul;
use ndarray::Array2;
use ndarray_linalg as _;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let data = if full {
        let opts = msd::data::LoadOptions {
            limit: std::env::var("MSD_BENCH_N")
                .ok()
                .and_then(|v| v.parse().ok()),
            ..Default::default()
        };
        msd::data::load(&"fashion-mnist:train".parse().unwrap(), &opts)
            .expect("Fashion-MNIST")
            .to_f64()
    } else {
        Array2::from_shape_fn((500, 64), |(i, j)| ((i * 31 + j * 17) % 256) as f64 / 255.0)
    };
    let (n, d) = data.dim();
    let k = env_usize("MSD_BENCH_K", if full { 10_000 } else { 64 });
    let k_slow = env_usize("MSD_BENCH_K_SLOW", if full { 32 } else { 4 });
    println!(
        "cluster bench: N = {n}, d = {d}, K = {k}, K_slow = {k_slow}, threads: rayon {}",
        rayon_threads()
    );

    // dgemm of the distance GEMM's shape, best of 3.
    let b = 2048.min(k.max(1));
    let x = Array2::from_shape_fn((b, d), |(i, j)| data[[(i * 7) % n, j]] * 0.5 + 0.1);
    let mut out = Array2::<f64>::zeros((b, n));
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        general_mat_mul(1.0, &x, &data.t(), 0.0, &mut out);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let gemm_rate = 2.0 * (b * n * d) as f64 / best / 1e9;
    println!("dgemm ({b} x {d}) . ({d} x {n}): {best:.3} s, {gemm_rate:.1} GFLOP/s");
    drop(out);

    let den = OptimalDenoiser::new(data.view()).unwrap();
    let sched = VpLinear::default();
    let cfg = Alg1Config {
        samples: k,
        seed: 0,
        ..Alg1Config::default()
    };
    let t = Instant::now();
    let res = algorithm1(&den, &sched, &cfg, &mut |_| {}).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let rate = den.flops(k) / secs / 1e9;
    println!(
        "algorithm 1, K = {k}: {secs:.2} s, {rate:.1} GFLOP/s = {:.0} % of dgemm; t1 = {:?}, t2 = {:?}",
        100.0 * rate / gemm_rate,
        res.t1,
        res.t2
    );

    let slow_cfg = Alg1Config {
        samples: k_slow,
        ..cfg
    };
    let t = Instant::now();
    let slow = algorithm1_samples_one_at_a_time(data.view(), &sched, &slow_cfg).unwrap();
    let slow_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let fast = algorithm1_samples(&den, &sched, &slow_cfg, &mut |_| {}).unwrap();
    let fast_small_s = t.elapsed().as_secs_f64();
    assert_eq!(slow.len(), fast.len());
    let per_query_slow = slow_s / k_slow as f64;
    let per_query_fast = secs / k as f64;
    println!(
        "one query at a time, K = {k_slow}: {slow_s:.2} s ({:.1} ms/query); batched on the same {k_slow} draws: {fast_small_s:.2} s; \
         batched at K = {k}: {:.2} ms/query; speed-up {:.0}x (per query, batched at K = {k} vs one at a time)",
        1e3 * per_query_slow,
        1e3 * per_query_fast,
        per_query_slow / per_query_fast
    );
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
