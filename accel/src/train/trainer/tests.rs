use std::sync::Mutex;

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use super::*;
use crate::train::checkpoint::{resume, save_checkpoint};
use crate::train::loss::per_sample_loss;
use crate::unet::{preset, MultistageUNet};
use msd_reference::training as reft;

fn data(n: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 32 * 32)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    Tensor::from_vec(v, (n, 1, 32, 32), &Device::Cpu).unwrap()
}

fn cfg(schedule: StageSchedule) -> TrainConfig {
    TrainConfig {
        steps: 4,
        batch: 2,
        lr: 1e-3,
        schedule,
        seed: 7,
        hflip: true,
        ..Default::default()
    }
}

/// Per parameter: name, weight bits, first and second moment bits, Adam step count.
type Snapshot = Vec<(String, Vec<u32>, Vec<u32>, Vec<u32>, u32)>;

fn snapshot(tr: &Trainer) -> Snapshot {
    let bits = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect()
    };
    tr.optim()
        .names()
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (m, v, s) = tr.optim().moments(i);
            (
                n.clone(),
                bits(tr.optim().vars()[i].as_tensor()),
                bits(m),
                bits(v),
                s,
            )
        })
        .collect()
}

#[test]
fn a_step_touches_only_the_encoder_and_the_decoders_that_saw_samples() {
    // round-robin step 0 trains stage 0; mixed with 2 samples at step 0 trains stages 0 and 1.
    for (schedule, trained) in [
        (StageSchedule::RoundRobin, vec![0usize]),
        (StageSchedule::Mixed, vec![0, 1]),
    ] {
        let cfgm = preset("tiny-ncsnpp-multistage").unwrap();
        let net = MultistageUNet::new(&cfgm, &Device::Cpu, 3).unwrap();
        let mut tr = Trainer::new(net, cfg(schedule), data(4, 1)).unwrap();
        let before = snapshot(&tr);
        let rep = tr.step().unwrap();
        let after = snapshot(&tr);
        for k in 0..3 {
            assert_eq!(
                rep.loss_per_stage[k].is_some(),
                trained.contains(&k),
                "{schedule:?}"
            );
        }
        let mut changed_enc = false;
        let mut changed_dec = [false; 3];
        for (b, a) in before.iter().zip(&after) {
            let name = &b.0;
            let k = name
                .strip_prefix("decoders.")
                .map(|r| r[..1].parse::<usize>().unwrap());
            let used = k.is_none_or(|k| trained.contains(&k));
            if !used {
                assert_eq!(a.1, b.1, "{schedule:?}: weights of {name} changed");
                assert_eq!(a.2, b.2, "{schedule:?}: first moment of {name} changed");
                assert_eq!(a.3, b.3, "{schedule:?}: second moment of {name} changed");
                assert_eq!(a.4, 0, "{schedule:?}: {name} stepped");
            } else if a.1 != b.1 {
                match k {
                    None => changed_enc = true,
                    Some(k) => changed_dec[k] = true,
                }
            }
        }
        assert!(changed_enc, "{schedule:?}: encoder not updated");
        for &k in &trained {
            assert!(changed_dec[k], "{schedule:?}: decoder {k} not updated");
        }
    }
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted_bit_for_bit() {
    let cfgm = preset("tiny-ncsnpp-multistage").unwrap();
    let run = |c: TrainConfig| {
        let net = MultistageUNet::new(&cfgm, &Device::Cpu, 5).unwrap();
        Trainer::new(net, c, data(3, 2)).unwrap()
    };
    let mut c = cfg(StageSchedule::Random);
    c.accum = 2;
    c.warmup_steps = 2;
    let mut a = run(c.clone());
    let mut losses_a = Vec::new();
    for _ in 0..4 {
        losses_a.push(a.step().unwrap().loss);
    }
    let mut b = run(c);
    let mut losses_b = Vec::new();
    for _ in 0..2 {
        losses_b.push(b.step().unwrap().loss);
    }
    let dir = tempfile::tempdir().unwrap();
    let ck = save_checkpoint(dir.path(), &b, 2).unwrap();
    assert!(ck.ends_with("checkpoints/step-00000002"));
    drop(b);
    let mut b = resume(&ck, data(3, 2), &Device::Cpu, None).unwrap();
    for _ in 0..2 {
        losses_b.push(b.step().unwrap().loss);
    }
    assert_eq!(losses_a, losses_b);
    assert_eq!(snapshot(&a), snapshot(&b));
    let ema_bits = |t: &Trainer| -> Vec<Vec<f32>> {
        t.ema()
            .tensors()
            .iter()
            .map(|x| x.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    };
    assert_eq!(ema_bits(&a), ema_bits(&b));
    assert_eq!(a.progress, b.progress_without_time(&a));
}

impl Trainer {
    /// Progress with the wall time of `other` (time differs between runs).
    fn progress_without_time(&self, other: &Trainer) -> Progress {
        Progress {
            seconds: other.progress.seconds,
            ..self.progress.clone()
        }
    }
}

#[test]
fn checkpoints_keep_the_last_k_and_leave_no_temporaries() {
    let cfgm = preset("tiny-ncsnpp-unified").unwrap();
    let net = MultistageUNet::new(&cfgm, &Device::Cpu, 5).unwrap();
    let mut tr = Trainer::new(net, cfg(StageSchedule::Random), data(2, 3)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        tr.step().unwrap();
        save_checkpoint(dir.path(), &tr, 2).unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(dir.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, vec!["step-00000002", "step-00000003"]);
    // A truncated weights file is refused with the file named.
    let ck = dir.path().join("checkpoints/step-00000003");
    let w = ck.join("optim.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let err = resume(&ck, data(2, 3), &Device::Cpu, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("optim.safetensors"), "{err}");
}

#[test]
fn the_loop_reduces_the_loss_on_a_tiny_problem() {
    // One image, VP loss: 16 steps of Adam at lr 3e-3 must bring the mean loss well below its start.
    let cfgm = preset("tiny-ncsnpp-unified").unwrap();
    let net = MultistageUNet::new(&cfgm, &Device::Cpu, 5).unwrap();
    let mut c = cfg(StageSchedule::Random);
    c.lr = 3e-3;
    c.batch = 4;
    c.hflip = false;
    let mut tr = Trainer::new(net, c, data(1, 4).affine(0.0, 0.5).unwrap()).unwrap();
    let first: f64 = (0..4).map(|_| tr.step().unwrap().loss).sum::<f64>() / 4.0;
    for _ in 0..8 {
        tr.step().unwrap();
    }
    let last: f64 = (0..4).map(|_| tr.step().unwrap().loss).sum::<f64>() / 4.0;
    assert!(last < 0.7 * first, "loss {first} -> {last}");
}

/// f32 loss of a per-sample routed tiny network against the f64 formula on the same network output.
fn check_loss(preset_name: &str, levels: Vec<f64>, seed: u64) -> Result<(), TestCaseError> {
    let cfgm = preset(preset_name).unwrap();
    let net = MultistageUNet::new(&cfgm, &Device::Cpu, 9).unwrap();
    let fam = LossFamily::for_config(&cfgm, &LossParams::default());
    let b = levels.len();
    let x0 = data(b, seed);
    let mut rng = StdRng::seed_from_u64(seed + 1);
    let ev: Vec<f32> = (0..b * 1024)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect();
    let eps = Tensor::from_vec(ev.clone(), (b, 1, 32, 32), &Device::Cpu).unwrap();
    let drop = || Mutex::new(StdRng::seed_from_u64(seed + 2));
    let got = per_sample_loss(&fam, &net, &x0, &eps, &levels, Some(&drop()))
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let xv: Vec<f64> = x0
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let d = 1024;
    let edm = matches!(fam, LossFamily::Edm { .. });
    // Network input in f64, per sample.
    let ab = reft::ldm_alphas_cumprod(1000, 0.0015, 0.0195);
    let mut input = Vec::with_capacity(b * d);
    let mut pre = Vec::new();
    for (i, &l) in levels.iter().enumerate() {
        let (a, s) = match fam {
            LossFamily::Vp { .. } => reft::vp_alpha_sigma(l),
            LossFamily::Edm { .. } => (1.0, l),
            LossFamily::Ldm { .. } => (ab[l as usize].sqrt(), (1.0 - ab[l as usize]).sqrt()),
        };
        let p = reft::edm_precond(l, reft::SIGMA_DATA);
        pre.push(p);
        for j in 0..d {
            let x = a * xv[i * d + j] + s * ev[i * d + j] as f64;
            input.push(if edm { p.2 * x } else { x });
        }
    }
    let inp = Tensor::from_vec(
        input.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
        (b, 1, 32, 32),
        &Device::Cpu,
    )
    .unwrap();
    let out: Vec<f64> = net
        .forward_train(&inp, &levels, &drop())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    for i in 0..b {
        let mut acc = 0.0;
        for j in 0..d {
            let k = i * d + j;
            let r = if edm {
                let x = input[k] / pre[i].2;
                pre[i].0 * x + pre[i].1 * out[k] - xv[k]
            } else {
                out[k] - ev[k] as f64
            };
            acc += r * r;
        }
        let w = if edm {
            reft::edm_loss_weight(levels[i], reft::SIGMA_DATA)
        } else {
            1.0
        };
        let want = w * acc / d as f64;
        let tol = 2e-4 * want.abs() + 1e-6;
        prop_assert!(
            (got[i] as f64 - want).abs() <= tol,
            "{preset_name} sample {i} at {}: f32 {} vs f64 {want}",
            levels[i],
            got[i]
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn vp_loss_matches_the_f64_formula(t0 in 1e-5f64..1.0, t1 in 1e-5f64..1.0, seed in 0u64..1000) {
        check_loss("tiny-ncsnpp-multistage", vec![t0, t1], seed)?;
    }

    #[test]
    fn edm_loss_matches_the_f64_formula(s0 in -3.0f64..4.0, s1 in -3.0f64..4.0, seed in 0u64..1000) {
        check_loss("tiny-ddpmpp-multistage", vec![s0.exp(), s1.exp()], seed)?;
    }

    #[test]
    fn ldm_loss_matches_the_f64_formula(n0 in 0usize..1000, n1 in 0usize..1000, seed in 0u64..1000) {
        check_loss("tiny-ldm-multistage", vec![n0 as f64, n1 as f64], seed)?;
    }

    #[test]
    fn level_draws_and_stage_probabilities_match_the_reference(u in 0.0f64..1.0, k in 0usize..3) {
        let p = LossParams::default();
        for name in ["tiny-ncsnpp-multistage", "tiny-ddpmpp-multistage", "tiny-ldm-multistage"] {
            let c = preset(name).unwrap();
            let fam = LossFamily::for_config(&c, &p);
            let b = &c.boundaries;
            let (got, want, probs, dist) = match fam {
                LossFamily::Vp { .. } => (
                    fam.level_in_stage(u, b, k),
                    reft::vp_time_in_stage(u, b, k, p.eps_t),
                    fam.stage_probabilities(b),
                    reft::NoiseDist::VpUniform { eps_t: p.eps_t },
                ),
                LossFamily::Edm { .. } => (
                    fam.level_in_stage(u, b, k),
                    reft::edm_sigma_in_stage(u, b, k, p.p_mean, p.p_std),
                    fam.stage_probabilities(b),
                    reft::NoiseDist::EdmLogNormal { p_mean: p.p_mean, p_std: p.p_std },
                ),
                LossFamily::Ldm { .. } => (
                    fam.level_in_stage(u, b, k),
                    reft::ldm_step_in_stage(u, b, k, 1000) as f64,
                    fam.stage_probabilities(b),
                    reft::NoiseDist::Discrete { steps: 1000 },
                ),
            };
            prop_assert!((got - want).abs() <= 1e-12 * want.abs(), "{name}: {got} vs {want}");
            let rp = reft::proportional(b, dist);
            for (a, r) in probs.iter().zip(&rp) {
                prop_assert!((a - r).abs() < 1e-14, "{name}: {probs:?} vs {rp:?}");
            }
        }
        let t = u.max(1e-5);
        let (a, s) = crate::train::loss::vp_alpha_sigma(t);
        let (ra, rs) = reft::vp_alpha_sigma(t);
        prop_assert!((a - ra).abs() < 1e-14 && (s - rs).abs() < 1e-12 * rs.max(1e-3));
        prop_assert_eq!(super::warmup_lr(2e-4, k as u64 * 7, 10), reft::warmup_lr(2e-4, k as u64 * 7, 10));
        prop_assert!((crate::train::ema::ema_beta(5e4, Some(0.05), u * 1e5, 32.0)
            - reft::ema_beta(5e4, Some(0.05), u * 1e5, 32.0)).abs() < 1e-15);
    }
}
