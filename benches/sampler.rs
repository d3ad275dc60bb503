//! Per-step overhead of the accel plan executor, against the cost of a model evaluation, in one run.
//!
//! The paper's CIFAR-10 sampler (DPM-Solver-3 singlestep, logSNR, 20 NFE, t_ε = 1e-4) runs on a
//! 1024 × 3 × 32 × 32 f32 batch on the CPU with a dummy identity model: everything it spends is the executor's
//! own work (linear combinations, register traffic). The same run times one evaluation of a real model, the
//! accel optimal denoiser of MSD_BENCH_N (5000) CIFAR-sized images on the same batch, and reports the
//! overhead per NFE as a fraction of it. Plan construction is timed too.
//!
//!     cargo bench --bench sampler
//!     MSD_BENCH_N=2000 MSD_BENCH_B=256 cargo bench --bench sampler
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs once on a tiny batch.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use msd::accel::sampler::{self, IdentityModel, TensorModel};
use msd::reference::schedule::VpLinear;
use msd::reference::solver::{dpm_solver_plan, DpmSolverConfig, NoiseStream, TimeAxis};
use ndarray_linalg as _;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median of `reps` timings of `f`, in seconds.
fn time<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ts[ts.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let b = env_usize("MSD_BENCH_B", if full { 1024 } else { 8 });
    let n = env_usize("MSD_BENCH_N", if full { 5000 } else { 50 });
    let reps = env_usize("MSD_BENCH_REPS", if full { 3 } else { 1 });
    let (c, h, w) = (3, 32, 32);
    let d = c * h * w;
    let device = Device::Cpu;

    let vp = VpLinear::default();
    let cfg = DpmSolverConfig::default();
    let plan_s = time(reps.max(5), || {
        dpm_solver_plan(&vp, TimeAxis::Time, &cfg).unwrap();
    });
    let plan = dpm_solver_plan(&vp, TimeAxis::Time, &cfg).unwrap();
    let nfe = plan.nfe();
    let outer = plan.grid.len() - 1;

    let z = Tensor::from_vec(
        NoiseStream::new(0)
            .draw(b * d)
            .into_iter()
            .map(|v| v as f32)
            .collect::<Vec<_>>(),
        (b, c, h, w),
        &device,
    )
    .unwrap();
    let identity_s = time(reps, || {
        let x = sampler::execute(
            &plan,
            &z,
            &mut IdentityModel,
            &mut NoiseStream::new(1),
            &mut |_, _, _| Ok(()),
        )
        .unwrap();
        device.synchronize().unwrap();
        drop(x);
    });

    // A real model on the same batch: the accel optimal denoiser of n CIFAR-sized points.
    let data = Tensor::from_vec(
        NoiseStream::new(2)
            .draw(n * d)
            .into_iter()
            .map(|v| (0.5 * v) as f32)
            .collect::<Vec<_>>(),
        (n, d),
        &device,
    )
    .unwrap()
    .to_dtype(DType::F32)
    .unwrap();
    let den = msd::accel::OptimalDenoiser::new(&data).unwrap();
    let mut oracle = sampler::OracleModel { denoiser: &den };
    let at = plan.evals().nth(10).copied().unwrap();
    let eval_s = time(reps, || {
        let y = oracle
            .predict(&z, &at, msd::accel::sampler::Want::Eps)
            .unwrap();
        device.synchronize().unwrap();
        drop(y);
    });

    let per_nfe = identity_s / nfe as f64;
    let per_outer = identity_s / outer as f64;
    println!("sampler overhead, accel on CPU, batch {b} x {c} x {h} x {w} f32, {} ({nfe} NFE, {outer} outer steps)", plan.name);
    println!(
        "  plan construction                      {:>10.3} ms",
        plan_s * 1e3
    );
    println!(
        "  whole plan, identity model             {:>10.1} ms",
        identity_s * 1e3
    );
    println!(
        "  executor overhead per NFE              {:>10.2} ms",
        per_nfe * 1e3
    );
    println!(
        "  executor overhead per outer step       {:>10.2} ms",
        per_outer * 1e3
    );
    println!(
        "  one oracle evaluation (N = {n:>6})      {:>10.1} ms",
        eval_s * 1e3
    );
    println!(
        "  overhead per NFE / oracle evaluation   {:>10.4}",
        per_nfe / eval_s
    );
}
