//! Integration tests of `msd cluster` (runs the built binary).

mod common;
use common::*;

use std::path::Path;

use ndarray::Array2;
use ndarray_linalg as _;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// VP-linear (β 0.1, 20) SNR-equivalent VE σ at t: sqrt(exp(β_d t²/2 + β_min t) − 1) (docs/conventions.md §1).
fn vp_sigma(t: f64) -> f64 {
    (0.5 * 19.9 * t * t + 0.1 * t).exp_m1().sqrt()
}

#[test]
fn baselines_reproduce_table_4() {
    let v = json_ok(&["cluster", "--method", "snr", "--stages", "3", "--json"]);
    assert_eq!(floats(&v["boundaries"]), vec![0.348, 0.709]);
    for key in [
        "method",
        "stages",
        "boundaries",
        "schedule",
        "samples",
        "seed",
        "seconds",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["method"], "snr");
    assert_eq!(v["schedule"], "vp-linear");
    let v = json_ok(&["cluster", "--method", "timestep", "--json"]);
    assert_eq!(floats(&v["boundaries"]), vec![0.334, 0.667]);
    let v = json_ok(&[
        "cluster",
        "--method",
        "timestep",
        "--baseline-grid",
        "100",
        "--json",
    ]);
    assert_eq!(floats(&v["boundaries"]), vec![0.34, 0.67]);
    // EDM: the same boundaries on the vp-linear axis, with their SNR-equivalent sigmas.
    let v = json_ok(&["cluster", "--method", "snr", "--schedule", "edm", "--json"]);
    assert_eq!(v["time_axis"], "vp-linear");
    let sig = floats(&v["sigma_boundaries"]);
    assert!(
        (sig[0] - vp_sigma(0.348)).abs() < 1e-9 && (sig[1] - vp_sigma(0.709)).abs() < 1e-9,
        "{sig:?}"
    );
}

#[test]
fn gradient_baseline_from_npy() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    let block = |i: usize| {
        if i < 30 {
            0
        } else if i < 65 {
            1
        } else {
            2
        }
    };
    let a = Array2::from_shape_fn(
        (100, 100),
        |(i, j)| if block(i) == block(j) { 0.9 } else { 0.1 },
    );
    msd::npy::write_f64(&p, &a).unwrap();
    let v = json_ok(&[
        "cluster",
        "--method",
        "gradient",
        "--gradient",
        p.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(floats(&v["boundaries"]), vec![0.31, 0.66]);
    fails_with(&["cluster", "--method", "gradient"], "--gradient");
    let bad = dir.path().join("bad.npy");
    msd::npy::write_f64(&bad, &Array2::<f64>::zeros((3, 4))).unwrap();
    fails_with(
        &[
            "cluster",
            "--method",
            "gradient",
            "--gradient",
            bad.to_str().unwrap(),
        ],
        "square",
    );
}

/// A small dataset: the first 300 Fashion-MNIST test images written as uint8 .npy.
fn small_npy(dir: &Path) -> String {
    let opts = msd::data::LoadOptions {
        limit: Some(300),
        ..Default::default()
    };
    let ds = msd::data::load(&"fashion-mnist:test".parse().unwrap(), &opts)
        .expect("Fashion-MNIST (scripts/setup.sh)");
    let u8s = ds.images.mapv(|v| (v * 255.0).round() as u8);
    let p = dir.join("fm300.npy");
    msd::npy::write_u8(&p, &u8s.into_shape_with_order((300, 28, 28)).unwrap()).unwrap();
    format!("npy:{}", p.display())
}

#[test]
fn algorithm1_and_2_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_npy(dir.path());
    let svg = dir.path().join("s.svg");
    let a1 = [
        "cluster",
        "--data",
        &data,
        "--samples",
        "600",
        "--seed",
        "3",
        "--json",
    ];
    let v = json_ok(&[&a1[..], &["--plot", svg.to_str().unwrap()]].concat());
    assert_eq!(v["algorithm"], 1);
    assert_eq!(v["n_data"], 300);
    assert_eq!(v["dim"], 784);
    let b = floats(&v["boundaries"]);
    assert_eq!(b.len(), 2);
    assert!(0.0 < b[0] && b[0] < b[1] && b[1] <= 1.0, "{b:?}");
    assert_eq!(
        (v["t1"].as_f64().unwrap(), v["t2"].as_f64().unwrap()),
        (b[0], b[1])
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("t1 = "), "plot");
    // Same seed, same result; another seed draws other samples. The draws show in the plot, whose curves
    // are the per-bin means of S0 and S1 over the draws (the boundaries alone could coincide).
    let svg_again = dir.path().join("s_again.svg");
    let again = json_ok(&[&a1[..], &["--plot", svg_again.to_str().unwrap()]].concat());
    assert_eq!(again["boundaries"], v["boundaries"]);
    assert_eq!(std::fs::read_to_string(&svg_again).unwrap(), text);
    let svg_other = dir.path().join("s_other.svg");
    let mut a_other = a1.to_vec();
    a_other[6] = "4";
    let other = json_ok(&[&a_other[..], &["--plot", svg_other.to_str().unwrap()]].concat());
    assert_eq!(other["seed"], 4);
    assert_ne!(std::fs::read_to_string(&svg_other).unwrap(), text);
    // Algorithm 2 on the authors' 0.05 grid: 21 nodes, boundaries of the node + 0.025 form.
    let heat = dir.path().join("h.svg");
    let v = json_ok(&[
        "cluster",
        "--data",
        &data,
        "--stages",
        "4",
        "--samples",
        "8",
        "--grid-step",
        "0.05",
        "--objective",
        "authors",
        "--space",
        "x0",
        "--compare",
        "lt",
        "--json",
        "--plot",
        heat.to_str().unwrap(),
    ]);
    assert_eq!(v["algorithm"], 2);
    let grid = floats(&v["grid"]);
    assert_eq!(grid.len(), 21);
    let b = floats(&v["boundaries"]);
    assert_eq!(b.len(), 3);
    // Each boundary is the midpoint of the nodes around its cut: node + 0.025 inside the uniform part.
    let starts: Vec<usize> = v["start_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    for (x, &s) in b.iter().zip(&starts) {
        assert!((x - 0.5 * (grid[s - 1] + grid[s])).abs() < 1e-12, "{x}");
        if s < 20 {
            let k = (x - 0.026) / 0.05;
            assert!((k - k.round()).abs() < 1e-9, "{x}");
        }
    }
    let s = v["similarity"].as_array().unwrap();
    assert_eq!(s.len(), 21);
    assert_eq!(s[3][7], s[7][3]);
    assert_eq!(s[5][5], 1.0);
    assert!(std::fs::read_to_string(&heat).unwrap().contains("<svg"));
    // The matrix saved by one run gives the same boundaries without the data, and serves other stage counts.
    let saved = dir.path().join("s.npy");
    let base = [
        "cluster",
        "--data",
        &data,
        "--samples",
        "8",
        "--grid-step",
        "0.05",
        "--seed",
        "5",
        "--json",
    ];
    let first = json_ok(
        &[
            &base[..],
            &[
                "--stages",
                "4",
                "--save-similarity",
                saved.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let reuse = [
        "cluster",
        "--grid-step",
        "0.05",
        "--json",
        "--similarity",
        saved.to_str().unwrap(),
    ];
    let second = json_ok(&[&reuse[..], &["--stages", "4"]].concat());
    assert_eq!(first["boundaries"], second["boundaries"]);
    assert_eq!(first["similarity"], second["similarity"]);
    let five = json_ok(&[&reuse[..], &["--stages", "5"]].concat());
    assert_eq!(floats(&five["boundaries"]).len(), 4);
    fails_with(
        &[
            "cluster",
            "--grid-step",
            "0.1",
            "--stages",
            "4",
            "--similarity",
            saved.to_str().unwrap(),
        ],
        "11 times",
    );
}

#[test]
fn bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_npy(dir.path());
    fails_with(&["cluster", "--data", &data, "--stages", "1"], "--stages");
    fails_with(&["cluster", "--data", &data, "--alpha", "1.5"], "--alpha");
    fails_with(&["cluster", "--data", &data, "--alpha", "0"], "--alpha");
    fails_with(&["cluster", "--data", &data, "--eta", "0"], "--eta");
    fails_with(&["cluster", "--data", &data, "--eta", "-1"], "--eta");
    fails_with(
        &[
            "cluster",
            "--data",
            &data,
            "--stages",
            "12",
            "--grid-step",
            "0.1",
        ],
        "only 11 times",
    );
    fails_with(
        &[
            "cluster",
            "--data",
            &data,
            "--stages",
            "4",
            "--algorithm",
            "1",
        ],
        "3 stages",
    );
    fails_with(&["cluster", "--data", &data, "--plot", "x.png"], "PNG");
    fails_with(
        &["cluster", "--method", "snr", "--stages", "600"],
        "600 stages",
    );
    fails_with(&["cluster"], "--data is required");
    fails_with(&["cluster", "--data", "mnist"], "unknown dataset kind");
    // Empty dataset, corrupt IDX (wrong magic, truncated), mismatched image sizes, missing folder.
    let empty = dir.path().join("empty.npy");
    msd::npy::write_f64(&empty, &Array2::<f64>::zeros((0, 4))).unwrap();
    fails_with(
        &["cluster", "--data", &format!("npy:{}", empty.display())],
        "empty dataset",
    );
    let idx = dir.path().join("idx");
    std::fs::create_dir(&idx).unwrap();
    std::fs::write(
        idx.join("train-images-idx3-ubyte"),
        [0u8, 0, 8, 1, 0, 0, 0, 1],
    )
    .unwrap();
    let fm = [
        "cluster",
        "--data",
        "fashion-mnist",
        "--fashion-mnist-dir",
        idx.to_str().unwrap(),
    ];
    fails_with(&fm, "wrong magic");
    std::fs::write(
        idx.join("train-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2],
    )
    .unwrap();
    fails_with(&fm, "truncated");
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    image::GrayImage::new(4, 4)
        .save(imgs.join("a.png"))
        .unwrap();
    image::GrayImage::new(5, 4)
        .save(imgs.join("b.png"))
        .unwrap();
    fails_with(
        &["cluster", "--data", &format!("images:{}", imgs.display())],
        "--size",
    );
    fails_with(
        &["cluster", "--data", "cifar10:/nonexistent/dir"],
        "/nonexistent/dir",
    );
}
