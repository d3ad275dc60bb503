//! The U-Net speed on the CPU: the fast kernels (`msd_accel::kernels`) against candle's plain ops, in one run,
//! on the NCSN++ "small config" (en 32, de [48, 32, 8], ch_mult (1, 2, 2), 2 res blocks, attention at 16²,
//! 1×32×32 images, f32): stage-0 forward at batch 8, and a training step's forward + backward of the ε-MSE
//! loss at batch 32 for stages 0 and 2 (no optimizer update: gradient clipping and Adam are element-wise
//! and belong to the training code).
//!
//! Throughput is in true FLOPs of the forward pass (2 × all multiply-accumulates at batch 1, × batch), so
//! criterion's `Gelem/s` reads as forward-GFLOP/s (a step does about 3× the forward's FLOPs).
//!
//!     cargo bench -p msd-accel --bench unet
//!     MSD_BENCH_PLAIN=0 cargo bench -p msd-accel --bench unet     # kernels only (plain candle is slow)
//!     MSD_BENCH_PAPER=1 cargo bench -p msd-accel --bench unet     # adds cifar10-ncsnpp-multistage, batch 8
//!
//! MSD_BENCH_SECONDS (5) is the measurement time of each row. Threads: RAYON_NUM_THREADS and
//! OPENBLAS_NUM_THREADS (both default to all cores).

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use msd_accel::kernels::with_kernels;
use msd_accel::unet::config::NCSNPP_BOUNDARIES;
use msd_accel::unet::ncsnpp::NcsnppConfig;
use msd_accel::unet::{model_info, preset, Family, MultistageUNet, Sharing, UNetConfig};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn env_flag(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("0") | Ok("false") | Ok("no") => false,
        Ok(_) => true,
        Err(_) => default,
    }
}

/// The small NCSN++ config (3.98M parameters).
pub fn small_ncsnpp() -> UNetConfig {
    UNetConfig {
        sharing: Sharing::Shared,
        boundaries: NCSNPP_BOUNDARIES.to_vec(),
        family: Family::Ncsnpp(NcsnppConfig {
            in_channels: 1,
            resolution: 32,
            en_width: 32,
            de_widths: vec![48, 32, 8],
            ch_mult: vec![1, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            dropout: 0.1,
            max_groups: 16,
        }),
    }
}

fn uniform(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A time inside stage `k` of the NCSN++ split.
fn time_of_stage(k: usize) -> f64 {
    [0.2, 0.5, 0.8][k]
}

/// Forward, ε-MSE against a fixed target, backward.
fn step(m: &MultistageUNet, x: &Tensor, target: &Tensor, t: &[f64], k: usize) {
    let y = m.forward_stage(x, t, k).unwrap();
    let loss = (y - target).unwrap().sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    std::hint::black_box(grads);
}

fn bench_model(
    c: &mut Criterion,
    label: &str,
    cfg: &UNetConfig,
    cases: &[(&str, usize, usize, bool)],
) {
    let m = MultistageUNet::new(cfg, &Device::Cpu, 0).unwrap();
    let info = model_info(&MultistageUNet::shapes_only(cfg).unwrap()).unwrap();
    let (ch, res) = cfg.input_chw();
    let plain = env_flag("MSD_BENCH_PLAIN", true);
    let secs = std::env::var("MSD_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut g = c.benchmark_group(label);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(secs))
        .warm_up_time(Duration::from_secs(1));
    for &(case, k, batch, train) in cases {
        let flops = info.stages[k].flops * batch as u64;
        eprintln!(
            "{label} {case}: stage {k}, batch {batch}, {} parameters in the stage, {:.2} forward GFLOP",
            info.stages[k].params,
            flops as f64 / 1e9
        );
        g.throughput(Throughput::Elements(flops));
        let x = uniform((batch, ch, res, res), 1);
        let target = uniform((batch, ch, res, res), 2);
        let t = vec![time_of_stage(k); batch];
        for (path, on) in [("kernels", true), ("plain", false)] {
            if !on && !plain {
                continue;
            }
            g.bench_function(BenchmarkId::new(case, path), |bch| {
                bch.iter(|| {
                    with_kernels(on, || {
                        if train {
                            step(&m, &x, &target, &t, k)
                        } else {
                            std::hint::black_box(m.forward_stage(&x, &t, k).unwrap());
                        }
                    })
                })
            });
        }
    }
    g.finish();
}

fn unet(c: &mut Criterion) {
    bench_model(
        c,
        "ncsnpp-small",
        &small_ncsnpp(),
        &[
            ("forward-s0-b8", 0, 8, false),
            ("step-s0-b32", 0, 32, true),
            ("step-s2-b32", 2, 32, true),
        ],
    );
    if env_flag("MSD_BENCH_PAPER", false) {
        bench_model(
            c,
            "cifar10-ncsnpp-multistage",
            &preset("cifar10-ncsnpp-multistage").unwrap(),
            &[
                ("forward-s0-b8", 0, 8, false),
                ("forward-s2-b8", 2, 8, false),
                ("step-s0-b8", 0, 8, true),
            ],
        );
    }
}

criterion_group!(benches, unet);

/// `cargo bench` passes `--bench` and gets the timings; `cargo test --all-targets` runs this binary without
/// it, and then only a smoke run of every path on the tiny preset (the timed cases take minutes).
fn main() {
    if std::env::args().any(|a| a == "--bench") {
        benches();
        Criterion::default().configure_from_args().final_summary();
        return;
    }
    let cfg = preset("tiny-ncsnpp-multistage").unwrap();
    let m = MultistageUNet::new(&cfg, &Device::Cpu, 0).unwrap();
    let (ch, res) = cfg.input_chw();
    let x = uniform((2, ch, res, res), 1);
    let target = uniform((2, ch, res, res), 2);
    for k in 0..m.num_stages() {
        let t = vec![time_of_stage(k); 2];
        for on in [true, false] {
            with_kernels(on, || step(&m, &x, &target, &t, k));
        }
    }
    println!("unet bench: smoke run of the tiny preset passed (cargo bench -p msd-accel --bench unet times it)");
}
