//! Times the forward pass of U-Net presets on the CPU (evaluation mode, one stage per batch):
//! `cargo run --release -p msd-accel --example unet_forward -- PRESET BATCH STAGE [REPEATS]`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use msd_accel::unet::{preset, MultistageUNet};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: unet_forward PRESET BATCH STAGE [REPEATS]".into());
    }
    let cfg = preset(&args[0])?;
    let batch: usize = args[1].parse()?;
    let stage: usize = args[2].parse()?;
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let t0 = Instant::now();
    let m = MultistageUNet::new(&cfg, &Device::Cpu, 0)?;
    let build = t0.elapsed().as_secs_f64();
    let (c, r) = cfg.input_chw();
    let x = Tensor::randn(0f32, 1.0, (batch, c, r, r), &Device::Cpu)?;
    // A time inside the requested stage: the midpoint of its interval (ends clamped to the family's range).
    let mut edges = vec![match cfg.family_name() {
        "ddpmpp" => 0.002,
        _ => 0.0,
    }];
    edges.extend(&cfg.boundaries);
    edges.push(match cfg.family_name() {
        "ncsnpp" => 1.0,
        "ddpmpp" => 80.0,
        _ => 999.0,
    });
    let tv = 0.5 * (edges[stage] + edges[stage + 1]);
    let t = vec![tv; batch];
    let mut times = Vec::new();
    for _ in 0..reps {
        let s = Instant::now();
        let y = m.forward(&x, &t)?;
        let _ = y.sum_all()?.to_scalar::<f32>()?;
        times.push(s.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{} batch {batch} stage {stage} (t = {tv}): build {build:.2} s, forward median {:.3} s (min {:.3}, {reps} runs)",
        args[0],
        times[reps / 2],
        times[0]
    );
    Ok(())
}
