//! The backend comparison: the Proposition 1 denoiser on the reference (f64), the accel backend on the CPU
//! (f32) and, in a `cuda` build, on CUDA — next to the machine's own GEMM rates, measured in the same run.
//!
//! Throughput is reported in "elements"/s where one element is one floating-point operation, so criterion's
//! `Gelem/s` reads as GFLOP/s. The denoiser does two GEMMs of 2·B·N·d each: 4·B·N·d flops; a lone GEMM of
//! the distance shape is 2·B·N·d. Sizes: MSD_BENCH_N (60000), MSD_BENCH_D (784), MSD_BENCH_B (1000);
//! MSD_BENCH_SECONDS (10) is the measurement time of each row.
//!
//!     cargo bench --bench denoiser
//!     MSD_BENCH_N=6000 cargo bench --bench denoiser     # a quicker look
//!     cargo bench --features cuda --bench denoiser      # adds the CUDA rows

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use msd::reference::{NoiseLevel, OptimalDenoiser};
use msd::{accel, bridge};
use ndarray::linalg::general_mat_mul;
use ndarray::Array2;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pixel-like data in [0, 1] and queries noised at t = 0.5 of VP-linear (α ≈ 0.08, σ ≈ 1).
fn problem(n: usize, d: usize, b: usize) -> (Array2<f64>, Array2<f64>, NoiseLevel) {
    let mut rng = StdRng::seed_from_u64(7);
    let data = Array2::from_shape_fn((n, d), |_| rng.random::<f64>());
    let level = NoiseLevel::at(&msd::reference::VpLinear::default(), 0.5).unwrap();
    let x = Array2::from_shape_fn((b, d), |(i, j)| {
        level.alpha * data[[i % n, j]] + level.sigma * (rng.random::<f64>() * 2.0 - 1.0) * 1.7
    });
    (data, x, level)
}

fn bench(c: &mut Criterion) {
    // `cargo test --all-targets` runs each benchmark once as a smoke test: keep that small.
    let full = std::env::args().any(|a| a == "--bench");
    let (n, d, b) = (
        env_usize("MSD_BENCH_N", if full { 60_000 } else { 2_000 }),
        env_usize("MSD_BENCH_D", if full { 784 } else { 64 }),
        env_usize("MSD_BENCH_B", if full { 1_000 } else { 100 }),
    );
    let (data, x, level) = problem(n, d, b);
    let gemm_flops = 2 * b as u64 * n as u64 * d as u64;
    let id = format!("N{n}_d{d}_B{b}");
    let mut g = c.benchmark_group("denoiser");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(
            env_usize("MSD_BENCH_SECONDS", 10) as u64
        ));

    // The machine's own GEMM rates for the distance GEMM's shape (B × d)·(d × N).
    g.throughput(Throughput::Elements(gemm_flops));
    let mut out64 = Array2::<f64>::zeros((b, n));
    g.bench_function(BenchmarkId::new("dgemm_openblas", &id), |bch| {
        bch.iter(|| general_mat_mul(1.0, &x, &data.t(), 0.0, &mut out64))
    });
    drop(out64);
    let (x32, data32) = (x.mapv(|v| v as f32), data.mapv(|v| v as f32));
    let mut out32 = Array2::<f32>::zeros((b, n));
    g.bench_function(BenchmarkId::new("sgemm_openblas", &id), |bch| {
        bch.iter(|| general_mat_mul(1.0, &x32, &data32.t(), 0.0, &mut out32))
    });
    drop((out32, x32, data32));

    g.throughput(Throughput::Elements(2 * gemm_flops));
    let reference = OptimalDenoiser::new(data.view()).unwrap();
    g.bench_function(BenchmarkId::new("reference_f64", &id), |bch| {
        bch.iter(|| reference.posterior_mean(x.view(), level).unwrap())
    });

    let mut devices = vec![("cpu", Device::Cpu)];
    if cfg!(feature = "cuda") {
        devices.push(("cuda", accel::device(accel::DeviceKind::Cuda(0)).unwrap()));
    }
    for (name, dev) in devices {
        let yt = bridge::to_tensor(&data, &dev).unwrap();
        let xt = bridge::to_tensor(&x, &dev).unwrap();
        // candle's own f32 GEMM on this device, same shape.
        g.throughput(Throughput::Elements(gemm_flops));
        let ytt = yt.t().unwrap();
        g.bench_function(
            BenchmarkId::new(format!("candle_matmul_{name}"), &id),
            |bch| bch.iter(|| sync(xt.matmul(&ytt).unwrap(), &dev)),
        );
        g.throughput(Throughput::Elements(2 * gemm_flops));
        let den = accel::OptimalDenoiser::new(&yt).unwrap();
        g.bench_function(BenchmarkId::new(format!("accel_f32_{name}"), &id), |bch| {
            bch.iter(|| {
                sync(
                    den.posterior_mean(&xt, level.alpha, level.sigma).unwrap(),
                    &dev,
                )
            })
        });
    }
    g.finish();
}

/// Waits for the device to finish, so that GPU timings are not launch times. (Reading a value back would
/// copy the whole output buffer to the host and time that instead.)
fn sync(t: Tensor, dev: &Device) -> Tensor {
    dev.synchronize().unwrap();
    t
}

criterion_group!(benches, bench);
criterion_main!(benches);
