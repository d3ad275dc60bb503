//! A stable, uninstrumented stand-in for the fuzz targets of `fuzz/` that runs in every `cargo test`: each
//! byte-level parser gets a few thousand random mutations of a valid input (bit flips, byte overwrites,
//! truncations, insertions, header fields set to extremes) and must answer each with a value or an error,
//! never a panic. `scripts/fuzz.sh` runs the coverage-guided version.

use std::io::Write;
use std::path::Path;

use ndarray::array;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
// Every test binary must link OpenBLAS (see src/lib.rs).
use ndarray_linalg as _;

const ROUNDS: usize = 20_000;

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..6) {
            0 => b[i] ^= 1 << rng.random_range(0..8),
            1 => b[i] = rng.random(),
            2 => b.truncate(i),
            3 => b.insert(i, rng.random()),
            // Extremes in 4-byte fields (IDX dims, zip sizes, header lengths).
            4 => {
                let v: [u8; 4] = [0xff, 0x00, 0x7f, 0x80][rng.random_range(0..4)..][..1]
                    .repeat(4)
                    .try_into()
                    .unwrap();
                for (k, x) in v.iter().enumerate() {
                    if let Some(t) = b.get_mut(i + k) {
                        *t = *x;
                    }
                }
            }
            _ => {
                // Digits into text headers (shapes of .npy).
                let digits = b"99999999999999999999";
                let n = rng.random_range(1..digits.len());
                for (k, d) in digits[..n].iter().enumerate() {
                    if let Some(t) = b.get_mut(i + k) {
                        *t = *d;
                    }
                }
            }
        }
    }
    b
}

fn run(seed: &[u8], mut parse: impl FnMut(&[u8])) {
    let mut rng = StdRng::seed_from_u64(12);
    parse(seed);
    parse(&[]);
    for _ in 0..ROUNDS {
        let m = mutate(&mut rng, seed);
        parse(&m);
    }
}

fn npy_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    msd::npy::write_f32(&p, &array![[0.5f32, 0.25], [1.0, 0.0]]).unwrap();
    std::fs::read(p).unwrap()
}

#[test]
fn npy_reader() {
    run(&npy_bytes(), |b| {
        let p = Path::new("r.npy");
        if let Ok((a, dtype)) = msd::npy::parse_f64(b, p) {
            if let Ok((m, _)) = msd::npy::into_matrix(a, dtype, p) {
                assert!(m.iter().all(|v| v.is_finite()));
            }
        }
    });
}

#[test]
fn npz_stats_reader() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.npz");
    msd::stats::write_npz(
        &p,
        &msd::stats::FeatureStats {
            mu: array![0.5, 1.0],
            sigma: array![[1.0, 0.1], [0.1, 2.0]],
        },
    )
    .unwrap();
    let seed = std::fs::read(&p).unwrap();
    run(&seed, |b| {
        let _ = msd::stats::parse_npz(std::io::Cursor::new(b), Path::new("r.npz"));
    });
}

fn idx_bytes() -> Vec<u8> {
    let mut b = 0x0803u32.to_be_bytes().to_vec();
    for d in [2u32, 3, 3] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend((0..18).map(|i| i as u8 * 10));
    b
}

#[test]
fn idx_readers() {
    let raw = idx_bytes();
    run(&raw, |b| {
        let _ = msd::data::parse_idx_u8(b, 3, Path::new("r-idx"));
        let _ = msd::data::parse_idx_u8(b, 1, Path::new("r-idx"));
    });
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&raw).unwrap();
    let gz = e.finish().unwrap();
    run(&gz, |b| {
        let _ = msd::data::parse_idx_u8_gz(b, 3, Path::new("r-idx.gz"));
    });
}

#[test]
fn cifar_batches_and_images() {
    let mut rec = vec![3u8];
    rec.extend((0..3072).map(|i| (i % 251) as u8));
    run(&rec, |b| {
        let _ = msd::data::parse_cifar_batch(b, Path::new("r.bin"));
    });
    let img = image::GrayImage::from_fn(5, 4, |x, y| image::Luma([(x * 40 + y) as u8]));
    let mut png = Vec::new();
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    run(&png, |b| {
        let _ = msd::data::decode_image(b, Path::new("r.png"), None);
        let _ = msd::data::decode_image(b, Path::new("r.png"), Some(3));
    });
}

#[test]
fn text_inputs() {
    // Data specs.
    run(b"cifar10:/some/dir:test", |b| {
        if let Ok(t) = std::str::from_utf8(b) {
            if let Ok(spec) = t.parse::<msd::data::DataSpec>() {
                assert_eq!(
                    spec.to_string().parse::<msd::data::DataSpec>().unwrap(),
                    spec
                );
            }
        }
    });
    // Model configs: validation and the shape-only accounting.
    let cfg = msd::accel::unet::preset("cifar10-ncsnpp-multistage")
        .unwrap()
        .to_toml()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..3000 {
        let m = mutate(&mut rng, cfg.as_bytes());
        if let Ok(t) = std::str::from_utf8(&m) {
            if let Ok(c) = msd::accel::unet::UNetConfig::from_toml(t) {
                if let Ok(model) = msd::accel::unet::MultistageUNet::shapes_only(&c) {
                    let _ = msd::accel::unet::model_info(&model);
                }
            }
        }
    }
    // Plan JSON as model-info --plan reads it.
    let model = msd::accel::unet::MultistageUNet::shapes_only(
        &msd::accel::unet::preset("cifar10-ncsnpp-multistage").unwrap(),
    )
    .unwrap();
    run(
        br#"{"solver":"dpm-solver","times":[1.0,0.5,0.25,0.001],"nfe":4}"#,
        |b| {
            if let Ok(t) = std::str::from_utf8(b) {
                let _ = msd::cli::plan_nfe_per_stage_from_json(t, Path::new("p.json"), &model);
            }
        },
    );
}
