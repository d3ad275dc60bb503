//! End-to-end tests of `msd model-info`: the paper's numbers through the binary (JSON and table), config
//! files, and clean errors.

mod common;
use common::*;

use ndarray_linalg as _;

#[test]
fn ncsnpp_multistage_json_matches_the_paper() {
    let v = json_ok(&[
        "model-info",
        "--preset",
        "cifar10-ncsnpp-multistage",
        "--json",
    ]);
    assert_eq!(v["encoder"]["params"], 43_482_624);
    assert!((v["encoder"]["paper_gmacs"].as_f64().unwrap() - 5.75).abs() <= 0.005);
    assert!(v["encoder"]["flops"].as_u64().unwrap() > 0);
    assert_eq!(v["total_params"], 237_169_337);
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3);
    for (s, (p, g)) in stages
        .iter()
        .zip([(169.48, 29.95), (107.52, 17.65), (47.13, 6.31)])
    {
        assert_eq!((s["params"].as_f64().unwrap() / 1e4).round() / 100.0, p);
        assert!((s["paper_gmacs"].as_f64().unwrap() - g).abs() <= 0.005);
        assert!(s["flops"].as_u64().unwrap() as f64 > 2e9 * g);
    }
}

#[test]
fn ldm_quirk_switch_and_nfe_weights() {
    let v = json_ok(&[
        "model-info",
        "--preset",
        "celebahq-ldm-multistage",
        "--ldm-attention-quirk",
        "--json",
        "--nfe-per-stage",
        "8,4,8",
    ]);
    assert_eq!(v["total_params"], 493_841_449);
    assert!((v["weighted"]["paper_gmacs"].as_f64().unwrap() - 76.19).abs() <= 0.005);
    let v = json_ok(&[
        "model-info",
        "--preset",
        "celebahq-ldm-multistage",
        "--json",
    ]);
    assert_eq!(
        (v["total_params"].as_f64().unwrap() / 1e5).round() / 10.0,
        512.4
    );
}

#[test]
fn table_output_and_interval_weights() {
    let o = msd(&[
        "model-info",
        "--preset",
        "cifar10-ncsnpp-table9-4stage",
        "--interval-weights",
    ]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("stage 3"), "{out}");
    assert!(out.contains("283,654,812"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("weighted by interval lengths"))
        .expect("weighted line");
    let g: f64 = line
        .split("paper GMACs ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((g - 17.33).abs() <= 0.005, "{line}");
}

#[test]
fn config_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let o = msd(&[
        "model-info",
        "--preset",
        "cifar10-ddpmpp-edm-unified",
        "--print-config",
    ]);
    assert!(o.status.success());
    let path = dir.path().join("edm.toml");
    std::fs::write(&path, &o.stdout).unwrap();
    let v = json_ok(&["model-info", "--config", path.to_str().unwrap(), "--json"]);
    assert_eq!(v["total_params"], 55_733_891);
    // Edit the file: a bad config is one clear error.
    let text = String::from_utf8_lossy(&o.stdout).replace("boundaries = []", "boundaries = [1.0]");
    std::fs::write(&path, text).unwrap();
    assert_clean_error(
        &msd(&["model-info", "--config", path.to_str().unwrap()]),
        "boundaries",
    );
    std::fs::write(&path, "this is = = not toml").unwrap();
    assert_clean_error(
        &msd(&["model-info", "--config", path.to_str().unwrap()]),
        "config",
    );
}

#[test]
fn errors_are_clean() {
    assert_clean_error(
        &msd(&["model-info", "--preset", "no-such-model"]),
        "unknown preset",
    );
    assert_clean_error(
        &msd(&["model-info", "--preset", "cifar10-ncsnpp-table9-2stage"]),
        "inconsistent",
    );
    assert_clean_error(
        &msd(&[
            "model-info",
            "--preset",
            "cifar10-ncsnpp-multistage",
            "--nfe-per-stage",
            "1,2",
        ]),
        "2 values for a 3-stage model",
    );
    assert_clean_error(
        &msd(&[
            "model-info",
            "--preset",
            "cifar10-ncsnpp-multistage",
            "--ldm-attention-quirk",
        ]),
        "LDM models only",
    );
    assert_clean_error(
        &msd(&[
            "model-info",
            "--preset",
            "cifar10-ncsnpp-multistage",
            "--stage-weights",
            "1,-1,1",
        ]),
        "weights",
    );
}

/// `--plan` routes the evaluation points of a `msd plan --json` file with the model's own boundaries:
/// the 20-NFE DPM-Solver-3 plan at the paper's split gives the 12/2/6 NFE split of docs/paper-notes.md
/// §4.1, and the EDM Heun plan 18/4/13 (both derived by the sampler code, not written here).
#[test]
fn plan_json_gives_nfe_weights() {
    let dir = tempfile::tempdir().unwrap();
    let plan = |name: &str, args: &[&str]| {
        let o = msd(args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let p = dir.path().join(name);
        std::fs::write(&p, &o.stdout).unwrap();
        p.to_str().unwrap().to_string()
    };
    let dpm = plan(
        "dpm.json",
        &[
            "plan",
            "--solver",
            "dpm-solver",
            "--order",
            "3",
            "--method",
            "singlestep",
            "--skip",
            "logsnr",
            "--nfe",
            "20",
            "--t-end",
            "1e-4",
            "--boundaries",
            "0.4420,0.6308",
            "--json",
        ],
    );
    let v = json_ok(&[
        "model-info",
        "--preset",
        "cifar10-ncsnpp-multistage",
        "--plan",
        &dpm,
        "--json",
    ]);
    let w: Vec<f64> = v["weighted"]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let expect = [12.0 / 20.0, 2.0 / 20.0, 6.0 / 20.0];
    for (a, b) in w.iter().zip(expect) {
        assert!((a - b).abs() < 1e-12, "{w:?}");
    }
    // 0.6·29.945 + 0.1·17.647 + 0.3·6.310 (the paper's per-stage GFLOPs).
    let g = v["weighted"]["paper_gmacs"].as_f64().unwrap();
    assert!((g - 21.625).abs() < 0.01, "{g}");

    let heun = plan(
        "heun.json",
        &[
            "plan",
            "--solver",
            "heun",
            "--steps",
            "18",
            "--sigma-boundaries",
            "2.5103,7.6577",
            "--json",
        ],
    );
    let v = json_ok(&[
        "model-info",
        "--preset",
        "cifar10-ddpmpp-edm-multistage",
        "--plan",
        &heun,
        "--json",
    ]);
    let w = v["weighted"]["weights"].as_array().unwrap();
    assert!(
        (w[0].as_f64().unwrap() - 18.0 / 35.0).abs() < 1e-12,
        "{w:?}"
    );
    assert!(
        (w[2].as_f64().unwrap() - 13.0 / 35.0).abs() < 1e-12,
        "{w:?}"
    );

    // A sigma-axis plan cannot weight a model conditioned on VP time.
    let o = msd(&[
        "model-info",
        "--preset",
        "cifar10-ncsnpp-multistage",
        "--plan",
        &heun,
    ]);
    assert_clean_error(&o, "cannot be routed");
}
