use super::*;
use crate::cluster::segment::{all_segmentations, segmentation_cost};
use crate::denoiser::OptimalDenoiser;
use crate::schedule::VpLinear;
use ndarray::{Array1, Axis};
use proptest::prelude::*;

fn s(t: f64, s0: f64, s1: f64) -> Alg1Sample {
    Alg1Sample { t, s0, s1 }
}

#[test]
fn criterion_le_and_lt() {
    let v = [0.5, 0.25, 1.0, -0.5];
    let le = Criterion {
        eta: 0.5,
        space: Space::Eps,
        comparison: Comparison::Le,
    };
    let lt = Criterion {
        comparison: Comparison::Lt,
        ..le
    };
    assert_eq!(le.fraction(v.iter().copied()), 0.75);
    assert_eq!(lt.fraction(v.iter().copied()), 0.25);
}

/// Lines 8–9 on hand-made draws (means worked out by hand in the comments).
#[test]
fn thresholds_by_hand() {
    let samples = vec![
        s(0.9, 1.0, 0.9),
        s(0.1, 1.0, 0.0),
        s(0.2, 1.0, 0.0),
        s(0.3, 0.8, 0.0),
        s(0.4, 0.0, 0.5),
        s(0.6, 0.0, 1.0),
        s(0.8, 1.0, 1.0),
    ];
    // S0 means over t ≤ τ: 1, 1, 0.933 (τ ∈ [0.3, 0.4)), then 0.7, 0.56, 0.63, 0.69: t1 = the last τ < 0.4.
    // S1 means over t ≥ τ: 0.49 … 0.85 (τ ∈ (0.3, 0.4]), 0.967 (τ ∈ (0.4, 0.6]): t2 = the first τ > 0.4.
    assert_eq!(
        algorithm1_thresholds(&samples, 0.9, 10).unwrap(),
        (Some(0.3), Some(0.5))
    );
    assert_eq!(
        algorithm1_thresholds(&samples, 0.9, 20).unwrap(),
        (Some(0.35), Some(0.45))
    );
    assert_eq!(
        algorithm1_thresholds(&samples, 0.95, 20).unwrap(),
        (Some(0.25), Some(0.45))
    );
    // α = 1: S0 stays 1 up to τ < 0.3; no suffix of S1 reaches 1 except [0.6, 1] minus 0.9: none.
    assert_eq!(
        algorithm1_thresholds(&samples, 1.0, 20).unwrap(),
        (Some(0.25), None)
    );
    assert!(algorithm1_thresholds(&samples, 1.5, 20).is_err());
    assert!(algorithm1_thresholds(&samples, 0.0, 20).is_err());
}

/// The samples of a direct, one-query-at-a-time
/// evaluation of the same draws agree with the batched GEMM path.
#[test]
fn batched_equals_one_at_a_time() {
    let data = Array2::from_shape_fn((5, 6), |(i, j)| ((i * 7 + j * 3) % 11) as f64 / 10.0);
    let den = OptimalDenoiser::new(data.view()).unwrap().with_chunks(2, 3);
    let sched = VpLinear::default();
    for space in [Space::Eps, Space::X0] {
        let cfg = Alg1Config {
            samples: 37,
            batch: 8,
            seed: 7,
            criterion: Criterion {
                eta: 0.05,
                space,
                comparison: Comparison::Le,
            },
            ..Alg1Config::default()
        };
        let fast = algorithm1_samples(&den, &sched, &cfg, &mut |_| {}).unwrap();
        let slow = algorithm1_samples_one_at_a_time(data.view(), &sched, &cfg).unwrap();
        assert_eq!(fast.len(), 37);
        for (f, s) in fast.iter().zip(&slow) {
            assert_eq!(f.t, s.t);
            // Fractions of 6 pixels: allow one pixel to sit on the η edge after rounding.
            assert!(
                (f.s0 - s.s0).abs() <= 1.0 / 6.0 + 1e-12
                    && (f.s1 - s.s1).abs() <= 1.0 / 6.0 + 1e-12
            );
        }
        let exact = fast.iter().zip(&slow).filter(|(f, s)| f == s).count();
        assert!(exact >= 35, "{exact} of 37 identical");
        // Same seed, other batch size: the same draws.
        let again =
            algorithm1_samples(&den, &sched, &Alg1Config { batch: 5, ..cfg }, &mut |_| {}).unwrap();
        assert_eq!(
            fast.iter().map(|s| s.t).collect::<Vec<_>>(),
            again.iter().map(|s| s.t).collect::<Vec<_>>()
        );
        let other =
            algorithm1_samples(&den, &sched, &Alg1Config { seed: 8, ..cfg }, &mut |_| {}).unwrap();
        assert_ne!(fast[0].t, other[0].t);
    }
}

/// Limits: draws at small t memorise (S0 = 1) and differ from the data mean (S1 = 0); at t near 1 the posterior
/// mean is the data mean (S1 = 1).
#[test]
fn algorithm1_limits_on_two_points() {
    let data = ndarray::stack![Axis(0), Array1::<f64>::zeros(64), Array1::<f64>::ones(64)];
    let den = OptimalDenoiser::new(data.view()).unwrap();
    let cfg = Alg1Config {
        samples: 400,
        ..Alg1Config::default()
    };
    let r = algorithm1(&den, &VpLinear::default(), &cfg, &mut |_| {}).unwrap();
    for smp in &r.samples {
        assert!((cfg.t_min..=1.0).contains(&smp.t));
        if smp.t < 0.15 {
            assert_eq!((smp.s0, smp.s1), (1.0, 0.0), "t = {}", smp.t);
        }
        if smp.t > 0.95 {
            assert_eq!(smp.s1, 1.0, "t = {}", smp.t);
        }
    }
    let (t1, t2) = (r.t1.unwrap(), r.t2.unwrap());
    assert!(t1 > 0.2 && t2 < 0.95 && t2 > 0.2, "{t1} {t2}");
}

#[test]
fn grids() {
    let p = similarity_grid(0.001, 0.025).unwrap();
    assert_eq!(p.len(), 41);
    assert_eq!(p[0], 0.001);
    assert!((p[39] - 0.976).abs() < 1e-12 && p[40] == 1.0);
    let a = similarity_grid(0.001, 0.05).unwrap();
    assert_eq!(a.len(), 21);
    assert!((a[19] - 0.951).abs() < 1e-12);
    assert!(similarity_grid(0.001, 0.0).is_err() && similarity_grid(0.0, 0.05).is_err());
    let w = cell_widths(&a);
    assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!((w[0] - 0.026).abs() < 1e-12 && (w[5] - 0.05).abs() < 1e-12);
}

/// Block-structured S on the authors' 0.05 grid: both objectives cut at the blocks, and the boundaries take
/// the authors' node + 0.025 form (0.476, 0.726).
#[test]
fn alg2_blocks() {
    let grid = similarity_grid(0.001, 0.05).unwrap();
    let block = |i: usize| {
        if i < 10 {
            0
        } else if i < 15 {
            1
        } else {
            2
        }
    };
    let sim = Array2::from_shape_fn(
        (21, 21),
        |(i, j)| if block(i) == block(j) { 0.95 } else { 0.1 },
    );
    for obj in [Objective::Paper, Objective::Authors] {
        let r = segment_similarity(sim.view(), &grid, 3, obj).unwrap();
        assert_eq!(r.start_indices, vec![10, 15], "{obj:?}");
        assert!((r.boundaries[0] - 0.476).abs() < 1e-12 && (r.boundaries[1] - 0.726).abs() < 1e-12);
    }
    assert!(segment_similarity(sim.view(), &grid, 1, Objective::Paper).is_err());
    assert!(segment_similarity(sim.view(), &grid, 22, Objective::Paper).is_err());
}

/// S from the denoiser: symmetric, unit diagonal, in [0, 1]; one-point data agree everywhere; two far points in
/// x₀ space agree at small t and disagree between t = 0.001 and t = 1.
#[test]
fn similarity_matrix_properties() {
    let grid = similarity_grid(0.001, 0.1).unwrap();
    let sched = VpLinear::default();
    let one = Array2::<f64>::from_elem((1, 4), 0.3);
    let den = OptimalDenoiser::new(one.view()).unwrap();
    let cfg = Alg2Config {
        draws: 5,
        seed: 1,
        criterion: Criterion::PAPER,
        batch: 2,
    };
    let s1 = similarity_matrix(&den, &sched, &grid, &cfg, &mut |_| {}).unwrap();
    assert!(s1.iter().all(|&v| v == 1.0));
    let two = ndarray::stack![Axis(0), Array1::<f64>::zeros(4), Array1::<f64>::ones(4)];
    let den = OptimalDenoiser::new(two.view()).unwrap();
    let cfg = Alg2Config {
        draws: 20,
        criterion: Criterion {
            space: Space::X0,
            ..Criterion::PAPER
        },
        ..cfg
    };
    let sm = similarity_matrix(&den, &sched, &grid, &cfg, &mut |_| {}).unwrap();
    assert_eq!(sm, sm.t());
    assert!(sm.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert!(sm.diag().iter().all(|&v| v == 1.0));
    assert_eq!(sm[[0, 1]], 1.0);
    assert_eq!(sm[[0, grid.len() - 1]], 0.0);
}

/// The objectives straight from their definitions, for the brute-force comparison.
fn objective_direct(sim: &Array2<f64>, grid: &[f64], starts: &[usize], obj: Objective) -> f64 {
    let w = cell_widths(grid);
    segmentation_cost(grid.len(), starts, |a, b| {
        let mut tot = 0.0;
        for i in a..=b {
            for j in a..=b {
                tot += match obj {
                    Objective::Paper => w[i] * w[j] * (1.0 - sim[[i, j]]),
                    Objective::Authors => sim[[i, j]],
                };
            }
        }
        match obj {
            Objective::Paper => tot,
            Objective::Authors => tot / ((b - a + 1) * (b - a + 1)) as f64,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Algorithm 2's DP optimum equals brute-force enumeration on small random similarity matrices, for both objectives.
    #[test]
    fn alg2_dp_equals_brute_force(
        (g, n, vals, step) in (2usize..10).prop_flat_map(|g| (Just(g), 2..=g, proptest::collection::vec(0.0f64..=1.0, g * g), 0.09f64..0.11))
    ) {
        let grid: Vec<f64> = (0..g).map(|i| if i + 1 == g { 1.0 } else { 0.001 + step * i as f64 }).collect();
        let mut sim = Array2::from_shape_vec((g, g), vals).unwrap();
        sim = (&sim + &sim.t()) / 2.0;
        sim.diag_mut().fill(1.0);
        for obj in [Objective::Paper, Objective::Authors] {
            let r = segment_similarity(sim.view(), &grid, n, obj).unwrap();
            let all = all_segmentations(g, n);
            let vals: Vec<f64> = all.iter().map(|st| objective_direct(&sim, &grid, st, obj)).collect();
            let best = match obj {
                Objective::Paper => vals.iter().copied().fold(f64::INFINITY, f64::min),
                Objective::Authors => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            };
            prop_assert!((r.objective - best).abs() <= 1e-9, "{:?}: dp {} brute {}", obj, r.objective, best);
            let mine = objective_direct(&sim, &grid, &r.start_indices, obj);
            prop_assert!((mine - best).abs() <= 1e-9);
        }
    }
}
