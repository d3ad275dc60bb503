//! Training runs on real data: training presets (model + training settings), preparing a dataset for a model,
//! sampling a trained network with any sampler plan, and PNG sample grids. The command line (`msd train`,
//! `msd sample --checkpoint`) is a thin layer over these.

use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};

use crate::accel::sampler::{self, NoiseStream, Plan};
use crate::accel::train::{StageSchedule, TrainConfig};
use crate::accel::unet::ncsnpp::NcsnppConfig;
use crate::accel::unet::precond::UNetSamplerModel;
use crate::accel::unet::{preset, Family, MultistageUNet, Sharing, UNetConfig};
use crate::data::Dataset;

/// Fashion-MNIST boundaries in t from Algorithm 1 on the full training set (t1, t2).
pub const FMNIST_BOUNDARIES: [f64; 2] = [0.2845, 0.6111];

/// Training presets: (name, description).
pub const TRAIN_PRESETS: &[(&str, &str)] = &[
    (
        "fmnist-ncsnpp-multistage",
        "Fashion-MNIST 1x32x32 (28x28 padded), NCSN++ en 16, de [24,16,8], boundaries 0.2845/0.6111 (Algorithm 1)",
    ),
    (
        "fmnist-ncsnpp-multistage-wide",
        "Fashion-MNIST 1x32x32, NCSN++ en 32, de [48,32,16] (4x the FLOPs of the default; for longer runs)",
    ),
    (
        "fmnist-ncsnpp-unified",
        "Fashion-MNIST 1x32x32, NCSN++ en 16, one decoder 16 (unified baseline of the same encoder)",
    ),
];

/// The Fashion-MNIST NCSN++: ch_mult (1, 2, 2), one residual block per level, attention at 8². The width
/// is sized to the CPU: en 16 is ~0.5 GFLOP per training image (en 32: ~2), which a 2-core machine trains
/// to recognisable samples in well under an hour (docs/training.md has the measured times and grids).
fn fmnist_ncsnpp(en: usize, de: &[usize]) -> UNetConfig {
    UNetConfig {
        sharing: Sharing::Shared,
        boundaries: FMNIST_BOUNDARIES[..de.len() - 1].to_vec(),
        family: Family::Ncsnpp(NcsnppConfig {
            in_channels: 1,
            resolution: 32,
            en_width: en,
            de_widths: de.to_vec(),
            ch_mult: vec![1, 2, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![8],
            dropout: 0.1,
            max_groups: 16,
        }),
    }
}

fn fmnist_train() -> TrainConfig {
    TrainConfig {
        steps: 2000,
        batch: 32,
        lr: 2e-3,
        warmup_steps: 100,
        grad_clip: Some(1.0),
        ema_half_life_images: 10_000.0,
        ema_rampup: Some(0.1),
        hflip: false,
        schedule: StageSchedule::Random,
        checkpoint_every: 250,
        keep_checkpoints: 2,
        sample_every: 250,
        ..TrainConfig::default()
    }
}

/// A training preset, or any model preset with default training settings.
pub fn train_preset(name: &str) -> anyhow::Result<(UNetConfig, TrainConfig)> {
    Ok(match name {
        "fmnist-ncsnpp-multistage" => (fmnist_ncsnpp(16, &[24, 16, 8]), fmnist_train()),
        "fmnist-ncsnpp-multistage-wide" => (fmnist_ncsnpp(32, &[48, 32, 16]), fmnist_train()),
        "fmnist-ncsnpp-unified" => (fmnist_ncsnpp(16, &[16]), fmnist_train()),
        other => match preset(other) {
            Ok(m) => (
                m,
                TrainConfig {
                    steps: 100,
                    batch: 4,
                    checkpoint_every: 50,
                    ..TrainConfig::default()
                },
            ),
            Err(_) => {
                let mut names: Vec<&str> = TRAIN_PRESETS.iter().map(|p| p.0).collect();
                names.extend(crate::accel::unet::preset_names());
                bail!(
                    "--preset {other:?} is unknown; known presets: {}",
                    names.join(", ")
                )
            }
        },
    })
}

/// The dataset as model input [N, C, R, R] in [−1, 1]: images of the model's size as they are, 28×28 images
/// padded to 32×32 with the background value (0 → −1).
pub fn prepare(data: &Dataset, model: &UNetConfig, device: &Device) -> anyhow::Result<Tensor> {
    let (c, r) = model.input_chw();
    let (dc, h, w) = (data.channels, data.height, data.width);
    if dc != c || h != w || !(h == r || (h == 28 && r == 32)) {
        bail!(
            "--data: images of {dc}x{h}x{w} do not fit the model, which takes {c}x{r}x{r}{}",
            if r == 32 { " (or 28x28, padded)" } else { "" }
        );
    }
    let n = data.len();
    let pad = (r - h) / 2;
    let mut out = vec![-1.0f32; n * c * r * r];
    for (i, row) in data.images.outer_iter().enumerate() {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((i * c + ch) * r + y + pad) * r + x + pad] =
                        2.0 * row[(ch * h + y) * w + x] - 1.0;
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (n, c, r, r), device)?)
}

/// The inverse of [`prepare`]: model-space images [N, C, R, R] in [−1, 1] as a [`Dataset`] of [0, 1] pixels
/// (clipped) of side `side`, which is R, or 28 for a 32×32 model (the 2-pixel padding is cut off again).
pub fn to_dataset(x: &Tensor, side: usize) -> anyhow::Result<Dataset> {
    let d = x.dims().to_vec();
    if d.len() != 4 || d[2] != d[3] || !(side == d[2] || (side == 28 && d[2] == 32)) {
        bail!("images of shape {d:?} cannot be cut to {side}x{side}");
    }
    let (n, c, r) = (d[0], d[1], d[2]);
    let pad = (r - side) / 2;
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    let mut rows = ndarray::Array2::<f32>::zeros((n, c * side * side));
    for (i, mut row) in rows.outer_iter_mut().enumerate() {
        for ch in 0..c {
            for y in 0..side {
                for xx in 0..side {
                    let p = v[((i * c + ch) * r + y + pad) * r + xx + pad];
                    row[(ch * side + y) * side + xx] = ((p + 1.0) * 0.5).clamp(0.0, 1.0);
                }
            }
        }
    }
    Ok(Dataset {
        images: rows,
        channels: c,
        height: side,
        width: side,
        labels: None,
    })
}

/// Samples `num` images with `plan` from a trained network, in batches of `batch`. The initial noise is the
/// first num·C·R·R draws of `NoiseStream::new(seed)` (row-major); stochastic samplers draw from
/// `NoiseStream::new(seed + 1)`. Returns [num, C, R, R] f32 and the evaluations per stage.
pub fn sample(
    net: &MultistageUNet,
    plan: &Plan,
    num: usize,
    batch: usize,
    seed: u64,
) -> anyhow::Result<(Tensor, Vec<usize>)> {
    let (c, r) = net.config().input_chw();
    let device = net.store().device();
    let mut model = UNetSamplerModel::new(net, plan.axis)?;
    let mut z_stream = NoiseStream::new(seed);
    let mut noise = NoiseStream::new(seed.wrapping_add(1));
    let mut outs = Vec::new();
    let mut done = 0;
    while done < num {
        let b = batch.min(num - done);
        let z: Vec<f32> = z_stream
            .draw(b * c * r * r)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let z = Tensor::from_vec(z, (b, c, r, r), &device)?;
        let x = sampler::execute(plan, &z, &mut model, &mut noise, &mut |_, _, _| Ok(()))?;
        outs.push(x);
        done += b;
    }
    Ok((Tensor::cat(&outs, 0)?, model.nfe_per_stage.clone()))
}

/// Writes images [N, C, H, W] in [−1, 1] (clipped) as one PNG grid of ⌈√N⌉ columns with a 2-pixel gap.
pub fn write_grid(path: &Path, images: &Tensor) -> anyhow::Result<()> {
    let d = images.dims().to_vec();
    if d.len() != 4 || !(d[1] == 1 || d[1] == 3) || d[0] == 0 {
        bail!("a sample grid needs [N, 1|3, H, W] images, got {d:?}");
    }
    let (n, c, h, w) = (d[0], d[1], d[2], d[3]);
    let v = images.flatten_all()?.to_vec1::<f32>()?;
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let gap = 2;
    let (gw, gh) = (cols * (w + gap) + gap, rows * (h + gap) + gap);
    let mut img = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([255, 255, 255]));
    let px = |x: f32| (((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8;
    for i in 0..n {
        let (ox, oy) = (gap + (i % cols) * (w + gap), gap + (i / cols) * (h + gap));
        for y in 0..h {
            for x in 0..w {
                let at = |ch: usize| v[((i * c + ch) * h + y) * w + x];
                let rgb = if c == 1 {
                    [px(at(0)); 3]
                } else {
                    [px(at(0)), px(at(1)), px(at(2))]
                };
                img.put_pixel((ox + x) as u32, (oy + y) as u32, image::Rgb(rgb));
            }
        }
    }
    // Through a temporary file (removed on error and on Ctrl-C): never a half-written PNG.
    crate::output::write_with(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
    })
    .with_context(|| format!("cannot write the sample grid {}", path.display()))
}

/// Writes one image [1, C, H, W] in [−1, 1] as a PNG without a border.
pub fn write_grid_single(path: &Path, image: &Tensor) -> anyhow::Result<()> {
    let d = image.dims().to_vec();
    let (c, h, w) = (d[1], d[2], d[3]);
    let v = image.flatten_all()?.to_vec1::<f32>()?;
    let px = |x: f32| (((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8;
    let png = image::ImageFormat::Png;
    let res = if c == 1 {
        let img = image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
            image::Luma([px(v[y as usize * w + x as usize])])
        });
        crate::output::write_with(path, |tmp| img.save_with_format(tmp, png))
    } else {
        let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let at = |ch: usize| px(v[(ch * h + y as usize) * w + x as usize]);
            image::Rgb([at(0), at(1), at(2)])
        });
        crate::output::write_with(path, |tmp| img.save_with_format(tmp, png))
    };
    res.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(side: usize, n: usize) -> Dataset {
        let images = ndarray::Array2::from_shape_fn((n, side * side), |(i, j)| {
            ((i * 31 + j * 7) % 256) as f32 / 255.0
        });
        Dataset {
            images,
            channels: 1,
            height: side,
            width: side,
            labels: None,
        }
    }

    #[test]
    fn to_dataset_undoes_prepare() {
        let model = train_preset("fmnist-ncsnpp-multistage").unwrap().0;
        for side in [28, 32] {
            let d = data(side, 3);
            let x = prepare(&d, &model, &Device::Cpu).unwrap();
            assert_eq!(x.dims(), &[3, 1, 32, 32]);
            let back = to_dataset(&x, side).unwrap();
            assert_eq!((back.channels, back.height, back.width), (1, side, side));
            // 2p − 1 and back in f32: one rounding each way, |p| ≤ 1.
            for (a, b) in back.images.iter().zip(d.images.iter()) {
                assert!((a - b).abs() <= 2.0 * f32::EPSILON, "{a} vs {b}");
            }
        }
        // Out-of-range samples are clipped to [0, 1]; only R or 28 (from 32) are possible sides.
        let x = Tensor::full(3f32, (1, 1, 32, 32), &Device::Cpu).unwrap();
        let d = to_dataset(&x, 28).unwrap();
        assert!(d.images.iter().all(|&p| p == 1.0));
        assert!(to_dataset(&x, 30).is_err());
    }
}
