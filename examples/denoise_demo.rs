//! A look at the Proposition 1 optimal denoiser on a synthetic dataset (used by the README's quick start).
//!
//! Draws N random "images" (d pixels in [0, 1]), noises some of them at several VP-linear times, and reports
//! how far the optimal ε* is from the true noise ε and how often x̂₀ is the source image: near t = 0 the
//! optimal denoiser memorises (ε* = ε, x̂₀ = y), near t = 1 it knows only the dataset mean. Writes
//! `data.npy` (N × d) and `x.npy` (queries at t = 0.5) into the output folder for `msd denoise`.
//!
//!     cargo run --release --example denoise_demo -- OUT_DIR [N] [D]

use std::path::PathBuf;

use msd::npy;
use msd::reference::{NoiseLevel, OptimalDenoiser, Schedule, VpLinear};
use ndarray::{Array2, Axis};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "demo".into()));
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(4000);
    let d: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    std::fs::create_dir_all(&out)?;
    let mut rng = StdRng::seed_from_u64(0);
    let data = Array2::from_shape_fn((n, d), |_| rng.random::<f64>());
    let den = OptimalDenoiser::new(data.view())?;
    let vp = VpLinear::default();
    let b = 200.min(n);
    println!(
        "optimal denoiser of {n} random points in {d} dimensions, {b} noised training points per t"
    );
    println!(
        "{:>6} {:>8} {:>8} {:>14} {:>16}",
        "t", "alpha", "sigma", "|eps*-eps|/|eps|", "x0 = source (%)"
    );
    for t in [0.05, 0.1, 0.2, 0.3, 0.4420, 0.5, 0.6308, 0.8, 1.0] {
        let level = NoiseLevel::at(&vp, t)?;
        let eps = Array2::from_shape_fn((b, d), |_| rng.sample::<f64, _>(StandardNormal));
        let y = data.slice(ndarray::s![..b, ..]);
        let x = &y * level.alpha + &eps * level.sigma;
        let x0 = den.posterior_mean(x.view(), level)?;
        let eps_star = msd::reference::denoiser::eps_from_x0(x.view(), x0.view(), level);
        let rel =
            (&eps_star - &eps).mapv(|v| v * v).sum().sqrt() / eps.mapv(|v| v * v).sum().sqrt();
        let hits = x0
            .axis_iter(Axis(0))
            .zip(y.axis_iter(Axis(0)))
            .filter(|(a, b)| (a - b).iter().all(|e| e.abs() < 1e-3))
            .count();
        println!(
            "{t:>6.4} {:>8.4} {:>8.4} {rel:>14.4} {:>16.1}",
            vp.alpha(t),
            vp.sigma(t),
            100.0 * hits as f64 / b as f64
        );
        if t == 0.5 {
            npy::write_f64(&out.join("x.npy"), &x)?;
        }
    }
    npy::write_f64(&out.join("data.npy"), &data)?;
    println!(
        "wrote {0}/data.npy ({n} x {d}) and {0}/x.npy ({b} x {d}, noised at t = 0.5)",
        out.display()
    );
    Ok(())
}
