//! `msd train`, `msd sample --checkpoint` and `msd plot-metrics` end to end, on a tiny preset and 8
//! Fashion-MNIST images (the tests skip when the dataset is not installed).

use std::path::Path;
use std::process::{Command, Output};

fn msd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_msd"))
        .args(args)
        .output()
        .expect("run msd")
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "msd failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A failed run with one error line mentioning `needle`.
fn clean_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "expected failure: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

fn have_fmnist() -> bool {
    msd::data::default_fashion_mnist_dir().exists()
}

fn train(dir: &Path, extra: &[&str]) -> Output {
    let d = dir.to_str().unwrap();
    let mut a = vec![
        "train",
        "--preset",
        "tiny-ncsnpp-multistage",
        "--data",
        "fashion-mnist",
        "--limit",
        "8",
        "--out",
        d,
        "--batch",
        "2",
        "--sample-num",
        "4",
        "--checkpoint-every",
        "2",
        "--seed",
        "3",
        "--quiet",
    ];
    a.extend_from_slice(extra);
    msd(&a)
}

#[test]
fn train_resume_sample_and_plot() {
    if !have_fmnist() {
        eprintln!("skipped: Fashion-MNIST is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    // Uninterrupted: 3 steps.
    ok(&train(&a, &["--steps", "3"]));
    for f in ["run.json", "metrics.jsonl", "samples/step-00000003.png"] {
        assert!(a.join(f).exists(), "{f}");
    }
    let ck = a.join("checkpoints/step-00000003");
    for f in [
        "model.safetensors",
        "ema.safetensors",
        "optim.safetensors",
        "state.json",
    ] {
        assert!(ck.join(f).exists(), "{f}");
    }
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["kind"], "train");
        assert_eq!(l["step"], i as u64 + 1);
        assert_eq!(l["loss_per_stage"].as_array().unwrap().len(), 3);
        for k in ["loss", "lr", "train_flops", "images", "seconds"] {
            assert!(l[k].is_number(), "{k}");
        }
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 3);
    assert!(state["model"]["family"].is_object());
    // A second run into the same directory is refused.
    clean_error(&train(&a, &["--steps", "3"]), "already holds a run");
    // Interrupted after 2 steps, resumed to 3: the same weights, bit for bit.
    ok(&train(&b, &["--steps", "2"]));
    ok(&msd(&[
        "train",
        "--resume",
        b.to_str().unwrap(),
        "--data",
        "fashion-mnist",
        "--limit",
        "8",
        "--steps",
        "3",
        "--sample-num",
        "4",
        "--quiet",
    ]));
    for f in ["model.safetensors", "ema.safetensors", "optim.safetensors"] {
        assert!(
            std::fs::read(ck.join(f)).unwrap()
                == std::fs::read(b.join("checkpoints/step-00000003").join(f)).unwrap(),
            "{f} differs after resume"
        );
    }
    // Sampling from the checkpoint.
    let npy = tmp.path().join("x.npy");
    let grid = tmp.path().join("g.png");
    ok(&msd(&[
        "sample",
        "--checkpoint",
        a.to_str().unwrap(),
        "--ema",
        "--num",
        "3",
        "--batch",
        "2",
        "--nfe",
        "6",
        "--out",
        npy.to_str().unwrap(),
        "--grid",
        grid.to_str().unwrap(),
    ]));
    let (x, _) = msd::npy::read_f64(&npy).unwrap();
    assert_eq!(x.shape(), &[3, 1, 32, 32]);
    assert!(grid.exists());
    // Loss plot.
    let svg = tmp.path().join("loss.svg");
    ok(&msd(&[
        "plot-metrics",
        a.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    clean_error(
        &msd(&["plot-metrics", a.to_str().unwrap(), "--out", "x.png"]),
        "font rasteriser",
    );
}

#[test]
fn bad_input_gets_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("r");
    clean_error(
        &msd(&["train", "--preset", "nope", "--out", d.to_str().unwrap()]),
        "--preset \"nope\" is unknown",
    );
    clean_error(
        &msd(&["train", "--resume", d.to_str().unwrap()]),
        "no run here",
    );
    clean_error(
        &msd(&[
            "sample",
            "--checkpoint",
            d.to_str().unwrap(),
            "--out",
            "x.npy",
        ]),
        "no such directory",
    );
    if have_fmnist() {
        // 28x28 grey data does not fit a 3-channel model.
        clean_error(
            &msd(&[
                "train",
                "--preset",
                "cifar10-ncsnpp-unified",
                "--limit",
                "2",
                "--out",
                d.to_str().unwrap(),
            ]),
            "do not fit the model",
        );
        assert!(!d.join("run.json").exists());
        clean_error(
            &train(&d, &["--schedule", "sideways"]),
            "--schedule \"sideways\" is unknown",
        );
    }
}
