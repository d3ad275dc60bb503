//! End-to-end tests of the `msd` binary: outputs checked against closed forms, and bad input answered with
//! one clear line and a non-zero exit.

mod common;
use common::*;

use std::path::Path;

use msd::npy;
use ndarray::{array, Array2};

#[test]
fn schedule_json_gives_the_papers_sigma() {
    let o = msd(&[
        "schedule",
        "--schedule",
        "vp-linear",
        "--t",
        "0.4420",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Footnote 3 of the paper: t = 0.4420 ↔ σ = 2.5103.
    assert!(
        (v["ve_sigma"].as_f64().unwrap() - 2.5103).abs() < 5e-4,
        "{v}"
    );
    for key in ["alpha", "sigma", "lambda", "s", "sigma_tilde", "snr"] {
        assert!(v[key].as_f64().is_some(), "missing {key}: {v}");
    }
    let (a, sg) = (v["alpha"].as_f64().unwrap(), v["sigma"].as_f64().unwrap());
    assert!((a * a + sg * sg - 1.0).abs() < 1e-12);
    // The inverse direction: EDM σ = 2.5103 is VP-linear t ≈ 0.4420.
    let o = msd(&[
        "schedule",
        "--schedule",
        "edm",
        "--sigma",
        "2.5103",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        (v["vp_linear_t"].as_f64().unwrap() - 0.4420).abs() < 1e-4,
        "{v}"
    );
}

#[test]
fn denoise_matches_the_two_point_closed_form() {
    // Data {−1, +1} in 1-D: x̂₀(x) = tanh(α·x/σ²) and ε* = (x − α·x̂₀)/σ.
    let dir = tempfile::tempdir().unwrap();
    let data = write_npy(dir.path(), "d.npy", &array![[-1.0], [1.0]]);
    let xs = array![[-2.0], [-0.3], [0.0], [0.7], [3.0]];
    let x = write_npy(dir.path(), "x.npy", &xs);
    let out = dir.path().join("out.npy");
    let t = 0.3;
    let sched = msd::reference::VpLinear::default();
    use msd::reference::Schedule;
    let (alpha, sigma) = (sched.alpha(t), sched.sigma(t));
    for (predict, backend, tol) in [
        ("x0", "reference", 1e-14),
        ("eps", "reference", 1e-13),
        ("x0", "accel", 1e-5),
        ("eps", "accel", 1e-5),
    ] {
        let o = msd(&[
            "denoise",
            "--data",
            s(&data),
            "--x",
            s(&x),
            "--t",
            "0.3",
            "--schedule",
            "vp-linear",
            "--predict",
            predict,
            "--backend",
            backend,
            "--out",
            s(&out),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let (got, dtype) = npy::read_matrix(&out).unwrap();
        assert_eq!(dtype, npy::NpyDtype::F64);
        for (g, xv) in got.iter().zip(xs.iter()) {
            let x0 = (alpha * xv / (sigma * sigma)).tanh();
            let want = if predict == "x0" {
                x0
            } else {
                (xv - alpha * x0) / sigma
            };
            assert!(
                (g - want).abs() <= tol * (1.0 + want.abs()),
                "{predict}/{backend}: {g} vs {want}"
            );
        }
    }
    // VE: σ given directly, α = 1.
    let o = msd(&[
        "denoise",
        "--data",
        s(&data),
        "--x",
        s(&x),
        "--sigma",
        "0.5",
        "--schedule",
        "edm",
        "--predict",
        "x0",
        "--out",
        s(&out),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["b"], 5);
    let (got, _) = npy::read_matrix(&out).unwrap();
    for (g, xv) in got.iter().zip(xs.iter()) {
        assert!((g - (xv / 0.25).tanh()).abs() < 1e-14);
    }
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = write_npy(d, "d.npy", &array![[0.0, 1.0], [1.0, 0.0]]);
    let x = write_npy(d, "x.npy", &array![[0.5, 0.5]]);
    let out = d.join("out.npy");
    let run = |data: &Path, x: &Path, extra: &[&str]| {
        let mut args = vec!["denoise", "--data", s(data), "--x", s(x), "--out", s(&out)];
        args.extend_from_slice(extra);
        msd(&args)
    };
    let vp = ["--schedule", "vp-linear", "--t", "0.5"];

    let text = d.join("text.npy");
    std::fs::write(&text, "not an array").unwrap();
    assert_clean_error(&run(&text, &x, &vp), "not a .npy file");

    let full = std::fs::read(&data).unwrap();
    let cut = d.join("cut.npy");
    std::fs::write(&cut, &full[..full.len() - 3]).unwrap();
    assert_clean_error(&run(&cut, &x, &vp), "cut.npy: truncated");

    let nan = write_npy(d, "nan.npy", &array![[0.0, f64::NAN]]);
    assert_clean_error(&run(&nan, &x, &vp), "nan.npy: contains a non-finite value");

    let empty = write_npy(d, "empty.npy", &Array2::zeros((0, 2)));
    assert_clean_error(&run(&empty, &x, &vp), "empty");

    let wide = write_npy(d, "wide.npy", &array![[0.0, 1.0, 2.0]]);
    assert_clean_error(&run(&data, &wide, &vp), "dimension 3");

    let bad_levels: [(&[&str], &str); 7] = [
        (&["--schedule", "vp-linear", "--t", "1.5"], "--t 1.5"),
        (&["--schedule", "vp-linear", "--t", "-0.1"], "outside"),
        (&["--schedule", "edm", "--sigma", "0"], "--sigma 0"),
        (&["--schedule", "ve", "--sigma", "-2"], "--sigma -2"),
        (&["--schedule", "vp-linear", "--t", "0"], "--predict x0"),
        (&["--schedule", "vp-linear", "--sigma", "1"], "--t"),
        (
            &["--schedule", "vp-linear", "--t", "0.5", "--beta-max", "-1"],
            "beta_max",
        ),
    ];
    for (args, needle) in bad_levels {
        assert_clean_error(&run(&data, &x, args), needle);
    }
    assert_clean_error(&run(&d.join("missing.npy"), &x, &vp), "missing.npy");
    assert!(!out.exists(), "no output may be written on error");

    // t = 0 with the x0 prediction is defined: the nearest training point.
    let o = run(
        &data,
        &x,
        &["--schedule", "vp-linear", "--t", "0", "--predict", "x0"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(npy::read_matrix(&out).unwrap().0, array![[0.5, 0.5]]);

    assert_clean_error(
        &msd(&["schedule", "--schedule", "vp-cosine", "--t", "2"]),
        "--t",
    );
}

#[test]
fn help_is_there_for_every_subcommand() {
    // Every subcommand the top-level help lists (and only those: a new subcommand must be added here).
    let top = msd(&["--help"]);
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout);
    let listed: Vec<&str> = text
        .split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .lines()
        .skip(1) // the rest of the "Commands:" line
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    let expected = [
        "schedule",
        "denoise",
        "plan",
        "sample",
        "model-info",
        "fid",
        "fid-stats",
        "prdc",
        "train-features",
        "cluster",
        "train",
        "plot-metrics",
        "eval",
    ];
    assert_eq!(listed, expected, "{text}");
    for name in expected {
        let o = msd(&[name, "--help"]);
        assert!(o.status.success(), "{name} --help");
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(
            help.contains(&format!("Usage: msd {name}")) && help.contains("Options:"),
            "{name}: {help}"
        );
    }
}
