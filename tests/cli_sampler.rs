//! End-to-end tests of `msd plan` and `msd sample`: the paper's three NFE splits, samples that land on the
//! training points of the oracle, backends and trajectories, and bad input answered with one clear line.

mod common;
use common::*;

// Every artifact must link OpenBLAS (see reference/src/lib.rs).
use ndarray_linalg as _;

use msd::npy;
use ndarray::{array, Array2, ArrayD, IxDyn};

fn per_stage(v: &serde_json::Value) -> Vec<u64> {
    v["nfe_per_stage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn plan_reproduces_the_papers_three_nfe_splits() {
    let ds = json(&msd(&[
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
    ]));
    assert_eq!(ds["nfe"], 20);
    assert_eq!(per_stage(&ds), vec![12, 2, 6]);
    assert_eq!(ds["times"].as_array().unwrap().len(), 20);
    assert_eq!(ds["times"][0], 1.0);

    let edm = json(&msd(&[
        "plan",
        "--solver",
        "heun",
        "--steps",
        "18",
        "--sigma-min",
        "0.002",
        "--sigma-max",
        "80",
        "--rho",
        "7",
        "--sigma-boundaries",
        "2.5103,7.6577",
        "--json",
    ]));
    assert_eq!(edm["nfe"], 35);
    assert_eq!(per_stage(&edm), vec![18, 4, 13]);

    let ldm = json(&msd(&[
        "plan",
        "--solver",
        "dpm-solver++",
        "--order",
        "2",
        "--method",
        "multistep",
        "--skip",
        "time-uniform",
        "--steps",
        "20",
        "--schedule",
        "ldm",
        "--step-boundaries",
        "442,631",
        "--json",
    ]));
    assert_eq!(ldm["nfe"], 20);
    assert_eq!(per_stage(&ldm), vec![8, 4, 8]);
    // docs/paper-notes.md §4.3: the network sees steps 999, 949.05, …, 49.95.
    let steps = ldm["model_steps"].as_array().unwrap();
    assert!((steps[0].as_f64().unwrap() - 999.0).abs() < 1e-9);
    assert!((steps[19].as_f64().unwrap() - 49.95).abs() < 1e-9);

    // The same DPM-Solver split through SNR-equivalent sigma boundaries (t = 0.4420 <-> 2.5103).
    let ds_sigma = json(&msd(&[
        "plan",
        "--nfe",
        "20",
        "--t-end",
        "1e-4",
        "--sigma-boundaries",
        "2.5103,7.4046",
        "--json",
    ]));
    assert_eq!(per_stage(&ds_sigma), vec![12, 2, 6]);
}

#[test]
fn plan_bad_input_is_one_clear_error() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "plan",
                "--method",
                "multistep",
                "--order",
                "3",
                "--nfe",
                "2",
            ],
            "smaller than order 3",
        ),
        (
            &[
                "plan",
                "--method",
                "singlestep-fixed",
                "--order",
                "2",
                "--nfe",
                "1",
            ],
            "smaller than order 2",
        ),
        (
            &["plan", "--order", "4"],
            "--order <ORDER>': must be an integer from 1 to 3",
        ),
        (
            &["plan", "--boundaries", "0.6308,0.4420"],
            "not strictly increasing",
        ),
        (&["plan", "--boundaries", "0.4,1.2"], "outside (0, 1)"),
        (&["plan", "--boundaries", "0,0.5"], "outside (0, 1)"),
        (
            &[
                "plan",
                "--solver",
                "heun",
                "--sigma-min",
                "80",
                "--sigma-max",
                "1",
            ],
            "sigma_max",
        ),
        (
            &[
                "plan",
                "--solver",
                "heun",
                "--sigma-min",
                "2",
                "--sigma-max",
                "2",
            ],
            "sigma_max",
        ),
        (
            &["plan", "--solver", "heun", "--boundaries", "0.4"],
            "--sigma-boundaries",
        ),
        (
            &["plan", "--solver", "heun", "--steps", "1"],
            "at least 2 steps",
        ),
        (&["plan", "--t-end", "0"], "finite lambda"),
        (&["plan", "--nfe", "20", "--steps", "10"], "disagree"),
        (&["plan", "--solver", "ddim", "--eta", "-1"], "--eta"),
    ];
    for (args, needle) in cases {
        assert_clean_error(&msd(args), needle);
    }
}

fn data() -> Array2<f64> {
    array![
        [1.0, -1.0, 0.5, 0.0],
        [-0.8, 0.9, 0.0, 0.3],
        [0.2, 0.3, -1.0, -0.6]
    ]
}

fn noise(b: usize, shape: &[usize], seed: u64) -> ArrayD<f64> {
    let n: usize = shape.iter().product::<usize>() * b;
    let mut full = vec![b];
    full.extend_from_slice(shape);
    ArrayD::from_shape_vec(
        IxDyn(&full),
        msd::reference::solver::NoiseStream::new(seed).draw(n),
    )
    .unwrap()
}

fn nearest(x: &ArrayD<f64>, data: &Array2<f64>) -> Vec<f64> {
    let b = x.shape()[0];
    let x = x
        .to_owned()
        .into_shape_with_order((b, data.ncols()))
        .unwrap();
    x.rows()
        .into_iter()
        .map(|r| {
            data.rows()
                .into_iter()
                .map(|y| (&r - &y).mapv(|v| v * v).sum().sqrt())
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

#[test]
fn sample_lands_on_training_points_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let d = write_npy(dir.path(), "d.npy", &data().into_dyn());
    // NCHW noise (1 x 2 x 2 per sample = d 4): the output keeps the shape.
    let z = write_npy(dir.path(), "z.npy", &noise(5, &[1, 2, 2], 3));
    let mut outs = Vec::new();
    for backend in ["reference", "accel"] {
        let out = dir.path().join(format!("x_{backend}.npy"));
        let traj = dir.path().join(format!("traj_{backend}"));
        let v = json(&msd(&[
            "sample",
            "--model",
            "optimal",
            "--data",
            s(&d),
            "--noise",
            s(&z),
            "--solver",
            "heun",
            "--steps",
            "18",
            "--sigma-boundaries",
            "2.5103,7.6577",
            "--out",
            s(&out),
            "--save-trajectory",
            s(&traj),
            "--backend",
            backend,
            "--json",
        ]));
        assert_eq!(v["nfe"], 35);
        assert_eq!(per_stage(&v), vec![18, 4, 13]);
        assert_eq!(v["trajectory_steps"], 18);
        let (x, _) = npy::read_f64(&out).unwrap();
        assert_eq!(x.shape(), &[5, 1, 2, 2]);
        // EDM's last step returns D(x; 0.002): a training point to within the posterior's spread there.
        for dist in nearest(&x, &data()) {
            assert!(dist < 1e-3, "{backend}: {dist}");
        }
        let (x0, _) = npy::read_f64(&traj.join("step_0000.npy")).unwrap();
        let (z_in, _) = npy::read_f64(&z).unwrap();
        assert!(
            (&x0 - &(&z_in * 80.0)).iter().all(|v| v.abs() < 1e-9),
            "x_T = 80 z"
        );
        assert!(traj.join("step_0018.npy").exists());
        outs.push(x);
    }
    let diff = (&outs[0] - &outs[1])
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(diff < 1e-3, "reference vs accel: {diff}");
}

#[test]
fn stochastic_sampling_is_reproducible_from_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let d = write_npy(dir.path(), "d.npy", &data().into_dyn());
    let z = write_npy(dir.path(), "z.npy", &noise(4, &[4], 5));
    let run = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        let o = msd(&[
            "sample",
            "--data",
            s(&d),
            "--noise",
            s(&z),
            "--solver",
            "ancestral",
            "--steps",
            "30",
            "--seed",
            seed,
            "--out",
            s(&out),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        npy::read_f64(&out).unwrap().0
    };
    let (a, b, c) = (run("7", "a.npy"), run("7", "b.npy"), run("8", "c.npy"));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn sample_bad_input_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = write_npy(dir.path(), "d.npy", &data().into_dyn());
    let z_bad = write_npy(dir.path(), "z.npy", &noise(3, &[5], 1));
    let out = dir.path().join("x.npy");
    assert_clean_error(
        &msd(&[
            "sample",
            "--data",
            s(&d),
            "--noise",
            s(&z_bad),
            "--out",
            s(&out),
        ]),
        "does not match the data",
    );
    let z = write_npy(dir.path(), "z4.npy", &noise(3, &[4], 1));
    let missing = dir.path().join("missing.npy");
    assert_clean_error(
        &msd(&[
            "sample",
            "--data",
            s(&missing),
            "--noise",
            s(&z),
            "--out",
            s(&out),
        ]),
        "--data",
    );
    let mut nan = noise(3, &[4], 1);
    nan[[0, 0]] = f64::NAN;
    let z_nan = write_npy(dir.path(), "znan.npy", &nan);
    assert_clean_error(
        &msd(&[
            "sample",
            "--data",
            s(&d),
            "--noise",
            s(&z_nan),
            "--out",
            s(&out),
        ]),
        "non-finite",
    );
}
