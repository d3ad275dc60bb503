//! End-to-end tests of `msd fid`, `msd fid-stats`, `msd prdc` and `msd train-features`: closed-form
//! answers, statistics files, and one clear error line for bad input.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use msd::npy;
use ndarray::{array, Array1, Array2, Array4};
use ndarray_npy::NpzReader;

// Every test binary must link OpenBLAS (see src/lib.rs).
use ndarray_linalg as _;

/// a = {(±1, 0), (0, ±1)}: mean 0, unbiased covariance (2/3)·I. b = 2a + (3, 0): mean (3, 0),
/// covariance (8/3)·I. FID = 3² + 2·(√(2/3) − √(8/3))² = 9 + 2·(2/3) = 31/3.
fn closed_form_sets(dir: &Path) -> (PathBuf, PathBuf) {
    let a = array![[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]];
    let b = a.mapv(|v| 2.0 * v) + &array![3.0, 0.0];
    let (pa, pb) = (dir.join("a.npy"), dir.join("b.npy"));
    npy::write_f64(&pa, &a).unwrap();
    npy::write_f32(&pb, &b.mapv(|v| v as f32)).unwrap();
    (pa, pb)
}

#[test]
fn fid_of_features_matches_the_closed_form() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = closed_form_sets(dir.path());
    let v = json(&msd(&["fid", "--a", s(&pa), "--b", s(&pb), "--json"]));
    let fid = v["fid"].as_f64().unwrap();
    assert!((fid - 31.0 / 3.0).abs() < 1e-12, "{fid}");
    assert_eq!(v["dim"], 2);
    assert_eq!(v["a"]["n"], 4);
    assert_eq!(v["a"]["kind"], "features");
    // Symmetric, and text output names the number.
    let back = json(&msd(&["fid", "--a", s(&pb), "--b", s(&pa), "--json"]));
    assert!((back["fid"].as_f64().unwrap() - fid).abs() < 1e-12);
    let text = stdout(&msd(&["fid", "--a", s(&pa), "--b", s(&pa)]));
    assert!(text.starts_with("fid: "), "{text}");
    let same: f64 = text.lines().next().unwrap()[5..].trim().parse().unwrap();
    assert!(same.abs() < 1e-12, "{same}");
}

#[test]
fn fid_stats_round_trip_through_npz() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = closed_form_sets(dir.path());
    let out = dir.path().join("a_stats.npz");
    let v = json(&msd(&["fid-stats", s(&pa), "--out", s(&out), "--json"]));
    assert_eq!((v["dim"].as_u64(), v["n"].as_u64()), (Some(2), Some(4)));
    // numpy's layout: members mu.npy and sigma.npy, float64, mu = 0 and sigma = (2/3)·I.
    let mut npz = NpzReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    let mu: Array1<f64> = npz.by_name("mu.npy").unwrap();
    let sigma: Array2<f64> = npz.by_name("sigma").unwrap();
    assert_eq!(mu, array![0.0, 0.0]);
    assert!((sigma - array![[2.0 / 3.0, 0.0], [0.0, 2.0 / 3.0]])
        .iter()
        .all(|e| e.abs() < 1e-15));
    // The statistics file stands in for the features.
    let v = json(&msd(&["fid", "--a", s(&out), "--b", s(&pb), "--json"]));
    assert!((v["fid"].as_f64().unwrap() - 31.0 / 3.0).abs() < 1e-12);
    assert_eq!(v["a"]["kind"], "stats");
    assert!(v["a"]["n"].is_null());
}

#[test]
fn prdc_of_features_matches_the_hand_example() {
    // A = {0, 1, 2, 10}, B = {0.5, 5, 20, 21}, k = 1 (worked out in reference/src/prdc.rs).
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    npy::write_f64(&pa, &array![[0.0], [1.0], [2.0], [10.0]]).unwrap();
    npy::write_f64(&pb, &array![[0.5], [5.0], [20.0], [21.0]]).unwrap();
    let v = json(&msd(&[
        "prdc",
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--k",
        "1",
        "--json",
    ]));
    assert_eq!(v["precision"], 0.5);
    assert_eq!(v["recall"], 0.75);
    assert_eq!(v["density"], 0.75);
    assert_eq!(v["coverage"], 0.75);
    assert_eq!((v["n_a"].as_u64(), v["k"].as_u64()), (Some(4), Some(1)));
    // The default k = 3 needs 4 rows per set: these have exactly 4.
    let v = json(&msd(&["prdc", "--a", s(&pa), "--b", s(&pb), "--json"]));
    assert_eq!(v["k"], 3);
    let o = msd(&["prdc", "--a", s(&pa), "--b", s(&pb), "--k", "4"]);
    assert_clean_error(&o, "k + 1 = 5 rows");
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, _) = closed_form_sets(dir.path());
    let d = dir.path();
    // Images without an extractor.
    let imgs = d.join("imgs.npy");
    npy::write_u8(&imgs, &Array4::<u8>::zeros((3, 1, 4, 4))).unwrap();
    assert_clean_error(&msd(&["fid", "--a", s(&imgs), "--b", s(&pa)]), "--features");
    // Dimension mismatch.
    let three = d.join("three.npy");
    npy::write_f64(&three, &Array2::<f64>::eye(3)).unwrap();
    assert_clean_error(
        &msd(&["fid", "--a", s(&pa), "--b", s(&three)]),
        "dimensions differ",
    );
    // Missing and corrupt files.
    assert_clean_error(
        &msd(&["fid", "--a", s(&d.join("nope.npy")), "--b", s(&pa)]),
        "nope.npy",
    );
    let junk = d.join("junk.npz");
    std::fs::write(&junk, b"PK not really").unwrap();
    assert_clean_error(&msd(&["fid", "--a", s(&junk), "--b", s(&pa)]), "junk.npz");
    // NaN features.
    let nan = d.join("nan.npy");
    npy::write_f64(&nan, &array![[0.0, f64::NAN], [1.0, 2.0]]).unwrap();
    assert_clean_error(&msd(&["fid", "--a", s(&nan), "--b", s(&pa)]), "non-finite");
    // One sample cannot have a covariance.
    let one = d.join("one.npy");
    npy::write_f64(&one, &array![[0.0, 1.0]]).unwrap();
    assert_clean_error(
        &msd(&["fid", "--a", s(&one), "--b", s(&pa)]),
        "at least 2 samples",
    );
    // Statistics where prdc needs samples.
    let st = d.join("st.npz");
    assert!(msd(&["fid-stats", s(&pa), "--out", s(&st)])
        .status
        .success());
    assert_clean_error(
        &msd(&["prdc", "--a", s(&st), "--b", s(&pa)]),
        "statistics file",
    );
    // Extractor specs.
    // A malformed option value is clap's usage error (exit 2, a usage hint on the following lines).
    let o = msd(&[
        "fid",
        "--a",
        s(&pa),
        "--b",
        s(&pa),
        "--features",
        "resnet:x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("error: ") && stderr(&o).contains("inception:WEIGHTS"));
    assert_clean_error(
        &msd(&[
            "fid",
            "--a",
            s(&imgs),
            "--b",
            s(&imgs),
            "--features",
            &format!("inception:{}", s(&junk)),
        ]),
        "Inception weights",
    );
    assert_clean_error(
        &msd(&[
            "fid",
            "--a",
            s(&imgs),
            "--b",
            s(&imgs),
            "--features",
            &format!("fmnist:{}", s(&d.join("absent.safetensors"))),
        ]),
        "absent.safetensors",
    );
}

#[test]
fn fid_with_the_builtin_fmnist_features_needs_no_checkpoint() {
    // `--features fmnist` uses the checkpoint built into msd: no file, no training first.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = |n: usize, shift: usize| {
        Array4::from_shape_fn((n, 1, 28, 28), |(i, _, r, c)| {
            (((r + shift) / 4 + c / 7 + i) % 3) as u8 * 100
        })
    };
    let (pa, pb) = (d.join("a.npy"), d.join("b.npy"));
    npy::write_u8(&pa, &img(6, 0)).unwrap();
    npy::write_u8(&pb, &img(5, 2)).unwrap();
    let v = json(&msd(&[
        "fid",
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--features",
        "fmnist",
        "--json",
    ]));
    assert_eq!(v["dim"], 128);
    assert_eq!(
        (v["a"]["n"].as_u64(), v["b"]["n"].as_u64()),
        (Some(6), Some(5))
    );
    assert_eq!(v["a"]["kind"], "images");
    let fid = v["fid"].as_f64().unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{v}");
    // The same set is at distance 0 (up to round-off in the matrix square root).
    let same = json(&msd(&[
        "fid",
        "--a",
        s(&pa),
        "--b",
        s(&pa),
        "--features",
        "fmnist",
        "--json",
    ]));
    assert!(same["fid"].as_f64().unwrap().abs() < 1e-6, "{same}");
    assert_only_files(d, &["a.npy", "b.npy"]);
}

/// Writes a tiny Fashion-MNIST look-alike in IDX format: class c is a bright horizontal bar at rows
/// 2c+2..2c+5 with a little deterministic texture.
fn fake_fashion_mnist(dir: &Path, n_train: usize, n_test: usize) {
    let write = |name: &str, n: usize, offset: usize| {
        let mut img = Vec::new();
        img.extend_from_slice(&0x0000_0803u32.to_be_bytes());
        for v in [n as u32, 28, 28] {
            img.extend_from_slice(&v.to_be_bytes());
        }
        let mut lab = Vec::new();
        lab.extend_from_slice(&0x0000_0801u32.to_be_bytes());
        lab.extend_from_slice(&(n as u32).to_be_bytes());
        for i in 0..n {
            let c = (i + offset) % 10;
            lab.push(c as u8);
            for r in 0..28 {
                for col in 0..28 {
                    let bar = r >= 2 * c + 2 && r < 2 * c + 5;
                    let tex = ((i * 7 + r * 3 + col * 5) % 13) as u8 * 4;
                    img.push(if bar { 200 + tex } else { tex });
                }
            }
        }
        std::fs::write(dir.join(format!("{name}-images-idx3-ubyte")), img).unwrap();
        std::fs::write(dir.join(format!("{name}-labels-idx1-ubyte")), lab).unwrap();
    };
    write("train", n_train, 0);
    write("t10k", n_test, 3);
}

#[test]
fn train_features_then_fid_and_prdc_with_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fake_fashion_mnist(d, 120, 60);
    let ckpt = d.join("f.safetensors");
    let env = [("MSD_FASHION_MNIST_DIR", d)];
    let v = json(&msd_env(
        &[
            "train-features",
            "--out",
            s(&ckpt),
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--json",
        ],
        &env,
    ));
    assert_eq!(v["arch"], "fmnist-cnn-v2");
    assert_eq!(v["lr_schedule"], "cosine");
    assert_eq!(
        (v["train_examples"].as_u64(), v["test_examples"].as_u64()),
        (Some(120), Some(60))
    );
    assert_eq!(v["epoch_losses"].as_array().unwrap().len(), 2);
    let acc = v["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(v["sanity"]["train_vs_test"].as_f64().unwrap() >= 0.0);
    assert!(v["features_per_second"].as_f64().unwrap() > 0.0);
    // The sidecar holds the same record.
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("f.json")).unwrap()).unwrap();
    assert_eq!(side["test_accuracy"], v["test_accuracy"]);

    // Identical image sets are at distance 0; features are 128-d.
    let feats = format!("fmnist:{}", s(&ckpt));
    let v = json(&msd_env(
        &[
            "fid",
            "--a",
            "fashion-mnist:test",
            "--b",
            "fashion-mnist:test",
            "--features",
            &feats,
            "--json",
        ],
        &env,
    ));
    assert_eq!(v["dim"], 128);
    assert_eq!(v["a"]["n"], 60);
    assert!(v["fid"].as_f64().unwrap().abs() < 1e-6, "{v}");
    // Stats of the images, then FID of stats vs images equals FID of images vs images.
    let st = d.join("test.npz");
    assert!(msd_env(
        &[
            "fid-stats",
            "fashion-mnist:test",
            "--out",
            s(&st),
            "--features",
            &feats
        ],
        &env
    )
    .status
    .success());
    let x = json(&msd_env(
        &[
            "fid",
            "--a",
            "fashion-mnist:train",
            "--b",
            s(&st),
            "--features",
            &feats,
            "--json",
        ],
        &env,
    ));
    let y = json(&msd_env(
        &[
            "fid",
            "--a",
            "fashion-mnist:train",
            "--b",
            "fashion-mnist:test",
            "--features",
            &feats,
            "--json",
        ],
        &env,
    ));
    let (fx, fy) = (x["fid"].as_f64().unwrap(), y["fid"].as_f64().unwrap());
    assert!((fx - fy).abs() <= 1e-9 * (1.0 + fy), "{fx} vs {fy}");
    // prdc of a set with itself: precision = recall = 1.
    let p = json(&msd_env(
        &[
            "prdc",
            "--a",
            "fashion-mnist:test",
            "--b",
            "fashion-mnist:test",
            "--features",
            &feats,
            "--json",
        ],
        &env,
    ));
    assert_eq!(
        (p["precision"].as_f64(), p["recall"].as_f64()),
        (Some(1.0), Some(1.0))
    );
    // 32 × 32 images are refused by the 28 × 28 network with a clear error.
    let big = d.join("big.npy");
    npy::write_u8(&big, &Array4::<u8>::zeros((2, 1, 32, 32))).unwrap();
    assert_clean_error(
        &msd(&["fid", "--a", s(&big), "--b", s(&big), "--features", &feats]),
        "28 x 28",
    );
}

/// Statistics files written by numpy itself (the pytorch-fid / clean-fid layout: `np.savez_compressed(mu=,
/// sigma=)`, and an uncompressed float32 variant); the expected values are the ones given to numpy
/// (tests/fixtures/README.md).
#[test]
fn numpy_written_stats_are_read() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mu = [0.5, -1.25, 3.0];
    let sigma = [[2.0, 0.5, 0.0], [0.5, 1.0, 0.25], [0.0, 0.25, 3.0]];
    for name in ["numpy-stats-f64-compressed.npz", "numpy-stats-f32.npz"] {
        let st = msd::stats::read_npz(&fixtures.join(name)).unwrap();
        assert_eq!(st.mu.to_vec(), mu, "{name}");
        for (i, row) in sigma.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert_eq!(st.sigma[[i, j]], *v, "{name} sigma[{i},{j}]");
            }
        }
    }
    // Same statistics in both files (every value is exact in f32): the Fréchet distance is 0 to rounding.
    let a = fixtures.join("numpy-stats-f64-compressed.npz");
    let b = fixtures.join("numpy-stats-f32.npz");
    let v = json(&msd(&["fid", "--a", s(&a), "--b", s(&b), "--json"]));
    assert!(v["fid"].as_f64().unwrap().abs() < 1e-12, "{v}");
}
