//! `msd train`, `msd sample --checkpoint` and `msd plot-metrics` end to end, on a tiny preset and 8
//! Fashion-MNIST images (the tests skip when the dataset is not installed).

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{assert_clean_error as clean_error, Run, MEM_LIMIT};

/// Runs `msd ARGS` under the shared harness's memory limit; training and sampling get a longer wall-clock
/// limit than the harness default (CI runs the tests in parallel on 2 cores).
fn msd(args: &[&str]) -> Output {
    Run::new(args)
        .limits(MEM_LIMIT, Duration::from_secs(600))
        .output()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "msd failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
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
        &msd(&["plot-metrics", a.to_str().unwrap(), "--out", "x.pdf"]),
        "must be a .svg or .png file",
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

/// Writes N random 28x28 grey images in [0, 1] as a float64 .npy (training and reference data that need no
/// installed dataset).
fn random_images(path: &Path, n: usize, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let a = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[n, 28, 28]), |_| rng.random::<f64>());
    msd::npy::write_f64(path, &a).unwrap();
}

/// A Fashion-MNIST feature checkpoint with seeded random weights (its features are a fixed function of
/// the images, which is all the scoring code needs).
fn feature_checkpoint(path: &Path) {
    use candle_core::{DType, Device};
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    msd::accel::fmnist_features::FmnistNet::new(&vb).unwrap();
    msd::accel::fmnist_features::init_seeded(&vm, 1).unwrap();
    vm.save(path).unwrap();
}

/// A tiny trained run on random 28x28 images (2 steps), for eval and gradient clustering.
fn tiny_run(dir: &Path, data: &Path) {
    let spec = format!("npy:{}", data.display());
    ok(&msd(&[
        "train",
        "--preset",
        "tiny-ncsnpp-multistage",
        "--data",
        &spec,
        "--out",
        dir.to_str().unwrap(),
        "--batch",
        "2",
        "--steps",
        "2",
        "--sample-num",
        "1",
        "--seed",
        "5",
        "--quiet",
    ]));
}

#[test]
fn eval_scores_a_checkpoint_and_logs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("d.npy");
    random_images(&data, 8, 1);
    let run = t.join("run");
    tiny_run(&run, &data);
    let feats = t.join("f.safetensors");
    feature_checkpoint(&feats);
    let fspec = format!("fmnist:{}", feats.display());
    let rspec = format!("npy:{}", data.display());
    let r = run.to_str().unwrap();
    let eval = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--checkpoint",
            r,
            "--ema",
            "--nfe",
            "4",
            "--num",
            "5",
            "--batch",
            "3",
            "--features",
            &fspec,
            "--k",
            "2",
        ];
        a.extend_from_slice(extra);
        msd(&a)
    };
    let o = eval(&["--ref", &rspec, "--json"]);
    let printed = common::json(&o);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(printed, last);
    assert_eq!(
        metrics.lines().count(),
        3,
        "2 training lines and 1 eval line"
    );
    assert_eq!(last["kind"], "eval");
    assert_eq!(last["step"], 2);
    assert_eq!(last["num"], 5);
    assert_eq!(last["ref_n"], 8);
    assert_eq!(last["feature_dim"], 128);
    assert!(last["fid"].as_f64().unwrap() >= 0.0);
    for k in ["precision", "recall"] {
        let v = last[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} {v}");
    }
    // NFE per stage: DPM-Solver-3 with 4 NFE on the tiny model's 3 stages; they add up to the plan's NFE.
    let per: Vec<u64> = last["nfe_per_stage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(per.len(), 3);
    assert_eq!(per.iter().sum::<u64>(), last["nfe"].as_u64().unwrap());
    // Sampling GFLOPs = Σ_k NFE_k · (stage k's forward FLOPs) from model-info's accounting.
    let mi = msd(&["model-info", "--preset", "tiny-ncsnpp-multistage", "--json"]);
    ok(&mi);
    let mi: serde_json::Value = serde_json::from_slice(&mi.stdout).unwrap();
    let want: f64 = per
        .iter()
        .zip(mi["stages"].as_array().unwrap())
        .map(|(&n, s)| n as f64 * s["flops"].as_f64().unwrap())
        .sum::<f64>()
        / 1e9;
    let got = last["sampling_gflops_per_image"].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    assert!((last["sampling_gflops"].as_f64().unwrap() - 5.0 * got).abs() <= 1e-9 * got);
    // The same seed gives the same samples, hence the same distance.
    let o = eval(&["--ref", &rspec, "--json", "--no-log"]);
    let again = common::json(&o);
    assert_eq!(again["fid"], last["fid"]);
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    // Reference statistics instead of images: the distance is the same, precision/recall are null.
    let st = t.join("ref.npz");
    ok(&msd(&[
        "fid-stats",
        &rspec,
        "--out",
        st.to_str().unwrap(),
        "--features",
        &fspec,
    ]));
    let o = eval(&["--ref", st.to_str().unwrap(), "--json", "--no-log"]);
    let v = common::json(&o);
    let (a, b) = (v["fid"].as_f64().unwrap(), last["fid"].as_f64().unwrap());
    assert!((a - b).abs() <= 1e-9 * b.max(1.0), "{a} vs {b}");
    assert!(v["precision"].is_null() && v["ref_n"].is_null());
    // plot-metrics reads past the eval lines.
    let svg = t.join("loss.svg");
    ok(&msd(&["plot-metrics", r, "--out", svg.to_str().unwrap()]));

    // Bad input: one line each.
    clean_error(
        &msd(&[
            "eval",
            "--checkpoint",
            t.join("nope").to_str().unwrap(),
            "--ref",
            &rspec,
            "--features",
            &fspec,
        ]),
        "no such directory",
    );
    clean_error(&eval(&["--ref", &rspec, "--num", "0"]), "--num");
    let big = t.join("big.npy");
    let a = ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[3, 3, 32, 32]));
    msd::npy::write_f64(&big, &a).unwrap();
    clean_error(
        &eval(&["--ref", big.to_str().unwrap()]),
        "do not match the checkpoint's samples of 1x32x32",
    );
    let small = t.join("small.npy");
    let a = ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[3, 16, 16]));
    msd::npy::write_f64(&small, &a).unwrap();
    clean_error(&eval(&["--ref", small.to_str().unwrap()]), "1x16x16");
    clean_error(
        &msd(&["eval", "--checkpoint", r, "--ref", &rspec]),
        "--features is required",
    );
}

#[test]
fn plot_metrics_writes_a_png() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // A metrics file as `msd train` writes it (3 stages, one trained per step), with an eval line between.
    let mut text = String::new();
    for step in 1..=30u64 {
        let mut per = vec![serde_json::Value::Null; 3];
        per[(step % 3) as usize] = serde_json::json!(1.0 / step as f64 + 0.1 * (step % 3) as f64);
        let line = serde_json::json!({"kind": "train", "step": step, "loss": 0.5, "loss_per_stage": per,
            "lr": 1e-3, "train_flops": 1e9 * step as f64, "images": 4 * step, "seconds": 0.1 * step as f64});
        text.push_str(&format!("{line}\n"));
        if step == 10 {
            text.push_str("{\"kind\":\"eval\",\"step\":10,\"fid\":12.5}\n");
        }
    }
    std::fs::write(t.join("metrics.jsonl"), text).unwrap();
    let png = t.join("loss.png");
    let d = t.to_str().unwrap();
    ok(&msd(&[
        "plot-metrics",
        d,
        "--out",
        png.to_str().unwrap(),
        "--smooth",
        "2",
    ]));
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1000, 420));
    // Not blank: the stage lines are drawn in their colours (blue, red, green) and there is dark text/axes.
    let count = |f: &dyn Fn(&image::Rgb<u8>) -> bool| img.pixels().filter(|p| f(p)).count();
    let blue = count(&|p| p[2] > 200 && p[0] < 80 && p[1] < 80);
    let red = count(&|p| p[0] > 200 && p[1] < 80 && p[2] < 80);
    let green = count(&|p| p[1] > 100 && p[0] < 80 && p[2] < 80);
    let dark = count(&|p| p[0] < 60 && p[1] < 60 && p[2] < 60);
    assert!(
        blue > 200 && red > 200 && green > 200,
        "{blue} {red} {green}"
    );
    // Axes, grid and labels (818 dark pixels with DejaVu Sans; a blank plot has none).
    assert!(dark > 400, "{dark}");
    // The SVG of the same data is the source of the PNG.
    let svg = t.join("loss.svg");
    ok(&msd(&[
        "plot-metrics",
        d,
        "--out",
        svg.to_str().unwrap(),
        "--smooth",
        "2",
    ]));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("stage 2"));
    // An output folder that does not exist: one line, nothing written.
    let bad = t.join("no/such/dir/x.png");
    clean_error(
        &msd(&["plot-metrics", d, "--out", bad.to_str().unwrap()]),
        "--out",
    );
}

/// `msd cluster --method gradient ARGS`.
fn gradient_cluster(args: &[&str]) -> Output {
    let mut a = vec!["cluster", "--method", "gradient"];
    a.extend_from_slice(args);
    msd(&a)
}

#[test]
#[allow(clippy::needless_range_loop)] // index pairs (i, j) and (j, i) of the matrix
fn gradient_clustering_from_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("d.npy");
    random_images(&data, 6, 2);
    let run = t.join("run");
    tiny_run(&run, &data);
    let r = run.to_str().unwrap();
    let saved = t.join("a.npy");
    let o = gradient_cluster(&[
        "--gradient-checkpoint",
        r,
        "--gradient-grid",
        "6",
        "--gradient-batch",
        "2",
        "--stages",
        "3",
        "--seed",
        "4",
        "--save-similarity",
        saved.to_str().unwrap(),
        "--json",
    ]);
    let v = common::json(&o);
    assert_eq!(v["outcome"], "baseline");
    assert_eq!(v["step"], 2);
    assert_eq!(v["batch"], 2);
    assert_eq!(v["parameters"], "shared");
    let grid: Vec<f64> = v["grid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(grid.len(), 6);
    assert!((grid[0] - 1.0 / 6.0).abs() < 1e-15 && grid[5] == 1.0);
    let s: Vec<Vec<f64>> = v["similarity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    for i in 0..6 {
        assert_eq!(s[i][i], 1.0);
        for j in 0..6 {
            assert_eq!(s[i][j], s[j][i]);
            assert!((-1.0..=1.0).contains(&s[i][j]));
        }
    }
    let b = v["boundaries"].as_array().unwrap();
    assert_eq!(b.len(), 2);
    // The saved matrix is the printed one, and reading it back with --gradient gives the same boundaries.
    let (a, _) = msd::npy::read_f64(&saved).unwrap();
    assert_eq!(a.shape(), &[6, 6]);
    for i in 0..6 {
        for j in 0..6 {
            // serde_json's float parsing may be off by one ulp.
            assert!((a[[i, j]] - s[i][j]).abs() <= 1e-15, "{i} {j}");
        }
    }
    let o = gradient_cluster(&[
        "--gradient",
        saved.to_str().unwrap(),
        "--stages",
        "3",
        "--json",
    ]);
    let w = common::json(&o);
    assert_eq!(w["boundaries"], v["boundaries"]);
    assert!(w.get("similarity").is_none());
    // The same seed draws the same batch: the same matrix.
    let o = gradient_cluster(&[
        "--gradient-checkpoint",
        r,
        "--gradient-grid",
        "6",
        "--gradient-batch",
        "2",
        "--seed",
        "4",
        "--json",
    ]);
    let again = common::json(&o);
    assert_eq!(again["similarity"], v["similarity"]);

    // Bad input: one line each.
    clean_error(
        &gradient_cluster(&["--gradient-checkpoint", t.join("nope").to_str().unwrap()]),
        "--gradient-checkpoint",
    );
    clean_error(
        &gradient_cluster(&[
            "--gradient-checkpoint",
            r,
            "--gradient",
            saved.to_str().unwrap(),
        ]),
        "cannot be used with",
    );
    clean_error(
        &gradient_cluster(&["--gradient-checkpoint", r, "--gradient-grid", "5"]),
        "--gradient-grid 5",
    );
    clean_error(
        &msd(&["cluster", "--method", "snr", "--gradient-checkpoint", r]),
        "belongs to --method gradient",
    );
}
