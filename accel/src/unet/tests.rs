//! Exact parameter counts and paper GFLOPs against the paper's tables (docs/paper-notes.md §2.5, §5), and
//! forward/routing/gradient/weights tests on the tiny presets.

use super::*;

fn info(name: &str) -> ModelInfo {
    let m = MultistageUNet::shapes_only(&preset(name).unwrap()).unwrap();
    model_info(&m).unwrap()
}

#[test]
fn ncsnpp_multistage_exact() {
    let i = info("cifar10-ncsnpp-multistage");
    assert_eq!(i.encoder.params, 43_482_624);
    assert_eq!(
        i.decoders.iter().map(|d| d.params).collect::<Vec<_>>(),
        [125_995_843, 64_038_787, 3_652_083]
    );
    assert_eq!(i.total_params, 237_169_337);
    let g: Vec<f64> = i.stages.iter().map(|s| s.paper_gmacs).collect();
    eprintln!("{g:?} enc {}", i.encoder.paper_gmacs);
    for (got, want) in g.iter().zip([29.945, 17.647, 6.310]) {
        assert!((got - want).abs() < 0.0005, "{got} vs {want}");
    }
    assert!((i.encoder.paper_gmacs - 5.749).abs() < 0.0005);
}

/// (params, paper GFLOPs) per stage, compared to the paper's rounding: params to 1M (0.1M where
/// docs/paper-notes.md gives one decimal), GFLOPs to 0.01.
fn check_stages(name: &str, params_m: &[f64], pm_digits: i32, gflops: &[f64]) -> ModelInfo {
    let i = info(name);
    assert_eq!(i.stages.len(), params_m.len(), "{name}");
    let scale = 10f64.powi(pm_digits);
    for (k, (s, (&p, &g))) in i.stages.iter().zip(params_m.iter().zip(gflops)).enumerate() {
        let got_p = (s.params as f64 / 1e6 * scale).round() / scale;
        assert_eq!(got_p, p, "{name} stage {k} params {}", s.params);
        assert!(
            (s.paper_gmacs - g).abs() <= 0.005 + 1e-9,
            "{name} stage {k} GFLOPs {} vs {g}",
            s.paper_gmacs
        );
    }
    i
}

fn check_shared(i: &ModelInfo, enc_m: f64, enc_g: f64, total_m: f64) {
    assert_eq!((i.encoder.params as f64 / 1e6).round(), enc_m);
    assert!(
        (i.encoder.paper_gmacs - enc_g).abs() <= 0.005 + 1e-9,
        "{}",
        i.encoder.paper_gmacs
    );
    assert_eq!((i.total_params as f64 / 1e6).round(), total_m);
}

#[test]
fn ncsnpp_unified_exact() {
    let i = info("cifar10-ncsnpp-unified");
    assert_eq!(i.total_params, 107_521_411);
    assert_eq!(i.stages[0].params, 107_521_411);
    assert!((i.stages[0].paper_gmacs - 17.65).abs() <= 0.005);
}

#[test]
fn ncsnpp_separate_is_three_unified() {
    let i = info("cifar10-ncsnpp-separate");
    assert_eq!(i.total_params, 3 * 107_521_411);
    assert!(i.stages.iter().all(|s| s.params == 107_521_411));
}

#[test]
fn table7_archs() {
    // Paper Table 7 (params in M, GFLOPs; shared; total).
    let i = check_stages(
        "cifar10-ncsnpp-multistage",
        &[169.0, 108.0, 47.0],
        0,
        &[29.95, 17.65, 6.31],
    );
    check_shared(&i, 43.0, 5.75, 237.0);
    let i = check_stages(
        "cifar10-ncsnpp-table7-arch2",
        &[168.0, 138.0, 72.0],
        0,
        &[27.57, 21.73, 9.65],
    );
    check_shared(&i, 68.0, 8.98, 242.0);
    let i = check_stages(
        "cifar10-ncsnpp-table7-arch3",
        &[189.0, 160.0, 103.0],
        0,
        &[29.43, 23.91, 13.70],
    );
    check_shared(&i, 98.0, 12.93, 256.0);
    let i = check_stages(
        "cifar10-ncsnpp-table7-arch4",
        &[174.0, 126.0, 103.0],
        0,
        &[26.54, 17.62, 13.70],
    );
    check_shared(&i, 98.0, 12.93, 207.0);
    // Total GFLOPs of arch 1 with the weights the paper used (0.45, 0.15, 0.40; docs/paper-notes.md §5).
    let w = weighted_total(&i_stages("cifar10-ncsnpp-multistage"), &[0.45, 0.15, 0.40]).unwrap();
    assert!((w.paper_gmacs - 18.65).abs() <= 0.005, "{}", w.paper_gmacs);
}

fn i_stages(name: &str) -> Vec<PartInfo> {
    info(name).stages
}

#[test]
fn table9_stage_counts() {
    let i = check_stages(
        "cifar10-ncsnpp-table9-4stage",
        &[159.0, 95.0, 71.0, 32.0],
        0,
        &[29.78, 16.85, 11.97, 4.41],
    );
    assert_eq!((i.total_params as f64 / 1e6).round(), 284.0);
    let w = weighted_total(
        &i.stages,
        &accounting::interval_weights(&i.boundaries, 0.0, 1.0).unwrap(),
    )
    .unwrap();
    assert!((w.paper_gmacs - 17.33).abs() <= 0.005, "{}", w.paper_gmacs);
    let i = check_stages(
        "cifar10-ncsnpp-table9-5stage",
        &[154.0, 88.0, 88.0, 27.0, 21.0],
        0,
        &[30.38, 16.82, 16.82, 4.42, 3.28],
    );
    assert_eq!((i.total_params as f64 / 1e6).round(), 336.0);
    // The paper weighted its rounded per-stage GFLOPs (17.026 → 17.03); unrounded: 17.022.
    let w = weighted_total(
        &i.stages,
        &accounting::interval_weights(&i.boundaries, 0.0, 1.0).unwrap(),
    )
    .unwrap();
    assert!((w.paper_gmacs - 17.03).abs() <= 0.01, "{}", w.paper_gmacs);
    assert!(matches!(
        preset("cifar10-ncsnpp-table9-2stage"),
        Err(UNetError::Config(_))
    ));
}

#[test]
fn edm_ddpmpp_counts() {
    let i = info("cifar10-ddpmpp-edm-unified");
    assert_eq!(i.total_params, 55_733_891);
    let i = check_stages(
        "cifar10-ddpmpp-edm-multistage",
        &[87.92, 55.73, 24.41],
        2,
        &[35.58, 21.03, 7.59],
    );
    assert_eq!((i.encoder.params as f64 / 1e4).round() / 100.0, 19.63);
    assert_eq!((i.total_params as f64 / 1e4).round() / 100.0, 128.79);
    // docs/paper-notes.md §2.5's all-ops GMACs (attention included): 35.75 / 21.19 / 7.73.
    for (s, want) in i.stages.iter().zip([35.75, 21.19, 7.73]) {
        assert!(
            (s.flops as f64 / 2e9 - want).abs() <= 0.005,
            "{} vs {want}",
            s.flops
        );
    }
}

#[test]
fn ldm_quirk_counts_table8() {
    let mut c = preset("celebahq-ldm-multistage").unwrap();
    let Family::Ldm(l) = &mut c.family else {
        panic!("not ldm")
    };
    assert!(
        !l.decoder_attention_quirk,
        "default must be the correct attention"
    );
    l.decoder_attention_quirk = true;
    let i = model_info(&MultistageUNet::shapes_only(&c).unwrap()).unwrap();
    assert_eq!(i.total_params, 493_841_449);
    assert_eq!(i.encoder.params, 107_911_776);
    assert!((i.encoder.paper_gmacs - 22.71).abs() <= 0.005);
    for (k, (s, (p, g))) in i
        .stages
        .iter()
        .zip([(316.0, 105.82), (223.8, 72.97), (169.9, 48.17)])
        .enumerate()
    {
        assert_eq!((s.params as f64 / 1e5).round() / 10.0, p, "stage {k}");
        assert!(
            (s.paper_gmacs - g).abs() <= 0.005,
            "stage {k}: {}",
            s.paper_gmacs
        );
    }
    // Table 8 total 76.19 with the 8/4/8 NFE split.
    let w = weighted_total(&i.stages, &[8.0, 4.0, 8.0]).unwrap();
    assert!((w.paper_gmacs - 76.19).abs() <= 0.005);
    // The same preset with the quirk named in it.
    assert_eq!(
        info("celebahq-ldm-multistage-quirk").total_params,
        493_841_449
    );
}

#[test]
fn ldm_correct_attention_counts() {
    // Without the quirk, decoders 1 and 2 keep their attention: 236.7M / 175.6M, 512.4M in all (docs/paper-notes.md §2.5).
    let i = info("celebahq-ldm-multistage");
    assert_eq!((i.stages[0].params as f64 / 1e5).round() / 10.0, 316.0);
    assert_eq!((i.stages[1].params as f64 / 1e5).round() / 10.0, 236.7);
    assert_eq!((i.stages[2].params as f64 / 1e5).round() / 10.0, 175.6);
    assert_eq!((i.total_params as f64 / 1e5).round() / 10.0, 512.4);
}

#[test]
fn ldm_baseline_and_table8_archs() {
    let i = info("celebahq-ldm-unified");
    assert_eq!(i.total_params, 274_056_163);
    assert!((i.stages[0].paper_gmacs - 88.39).abs() <= 0.005);
    let i = check_stages(
        "celebahq-ldm-table8-arch1",
        &[238.0, 189.0, 161.0],
        0,
        &[80.03, 64.95, 51.87],
    );
    check_shared(&i, 79.0, 16.69, 428.0);
    let i = check_stages(
        "celebahq-ldm-table8-arch2",
        &[206.0, 158.0, 108.0],
        0,
        &[72.61, 57.85, 34.38],
    );
    check_shared(&i, 55.0, 11.60, 361.0);
    let i = check_stages(
        "celebahq-ldm-table8-arch3",
        &[274.0, 224.0, 170.0],
        0,
        &[88.39, 72.97, 48.17],
    );
    check_shared(&i, 108.0, 22.71, 452.0);
}

#[test]
fn every_preset_builds_shape_only() {
    for name in preset_names() {
        match preset(name) {
            Ok(c) => {
                let i = model_info(&MultistageUNet::shapes_only(&c).unwrap()).unwrap();
                assert_eq!(i.stages.len(), c.num_stages());
                assert!(i.total_params > 0);
            }
            Err(e) => assert!(name.contains("2stage"), "{name}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Tiny presets: forward pass, routing, gradients, weights I/O.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;

fn dev() -> Device {
    crate::device(
        if std::env::var("MSD_TEST_DEVICE").as_deref() == Ok("cuda") {
            crate::DeviceKind::Cuda(0)
        } else {
            crate::DeviceKind::Cpu
        },
    )
    .unwrap()
}

/// Tiny model with every parameter redrawn from U(−0.15, 0.15) (biases and norms included), so that outputs
/// and gradients are O(1) despite the authors' near-zero output convs.
fn tiny(name: &str, seed: u64) -> MultistageUNet {
    let m = MultistageUNet::new(&preset(name).unwrap(), &dev(), seed).unwrap();
    let mut rng = StdRng::seed_from_u64(seed + 1000);
    for v in m.store().vars() {
        let n = v.elem_count();
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(-0.15f32..0.15)).collect();
        v.set(&Tensor::from_vec(data, v.shape(), v.device()).unwrap())
            .unwrap();
    }
    m
}

fn input(b: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let data: Vec<f32> = (0..b * 32 * 32)
        .map(|_| rng.random_range(-1f32..1.0))
        .collect();
    Tensor::from_vec(data, (b, 1, 32, 32), &dev()).unwrap()
}

/// One time per stage region of each family (the middle of each interval), mixed order.
fn mixed_times(family: &str) -> Vec<f64> {
    match family {
        "ncsnpp" => vec![0.9, 0.1, 0.5, 0.3, 0.7, 0.4420, 0.6308, 0.0],
        "ddpmpp" => vec![40.0, 0.02, 4.0, 1.0, 10.0, 2.5103, 7.6577, 0.5],
        _ => vec![900.0, 10.0, 500.0, 300.0, 700.0, 441.0, 442.0, 631.0],
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn tiny_presets_forward_shapes() {
    for name in preset_names()
        .into_iter()
        .filter(|n| n.starts_with("tiny-"))
    {
        let m = tiny(name, 3);
        let fam = m.config().family_name();
        let t: Vec<f64> = mixed_times(fam)[..3].to_vec();
        let y = m.forward(&input(3, 1), &t).unwrap();
        assert_eq!(y.dims(), &[3, 1, 32, 32], "{name}");
        let a = max_abs(&y);
        assert!(a.is_finite() && a > 1e-3, "{name}: max |y| = {a}");
    }
}

#[test]
fn stage_of_follows_the_convention() {
    let c = preset("cifar10-ncsnpp-multistage").unwrap();
    assert_eq!(c.stage_of(0.0), 0);
    assert_eq!(c.stage_of(0.4420), 0);
    assert_eq!(c.stage_of(0.44201), 1);
    assert_eq!(c.stage_of(0.6308), 1);
    assert_eq!(c.stage_of(1.0), 2);
    let l = preset("celebahq-ldm-multistage").unwrap();
    assert_eq!(
        (
            l.stage_of(441.0),
            l.stage_of(442.0),
            l.stage_of(630.0),
            l.stage_of(631.0)
        ),
        (0, 1, 1, 2)
    );
}

#[test]
fn routing_equals_each_sample_alone() {
    for name in [
        "tiny-ncsnpp-multistage",
        "tiny-ddpmpp-multistage",
        "tiny-ldm-multistage",
        "tiny-ncsnpp-separate",
    ] {
        let m = tiny(name, 5);
        let t = mixed_times(m.config().family_name());
        let x = input(t.len(), 2);
        let y = m.forward(&x, &t).unwrap();
        let stages: Vec<usize> = t.iter().map(|&v| m.stage_of(v)).collect();
        assert!((0..3).all(|k| stages.contains(&k)), "{name}: {stages:?}");
        for (i, &ti) in t.iter().enumerate() {
            let xi = x.narrow(0, i, 1).unwrap();
            let alone = m.forward_stage(&xi, &[ti], stages[i]).unwrap();
            let got = y.narrow(0, i, 1).unwrap();
            let d = max_abs_diff(&got, &alone);
            let scale = max_abs(&alone);
            assert!(
                scale > 1e-2,
                "{name}: output too small to compare ({scale})"
            );
            assert!(
                d <= 1e-5 * scale.max(1.0),
                "{name} sample {i}: diff {d} (scale {scale})"
            );
        }
        // Routing is not a no-op: another decoder gives another answer.
        let other = m.forward_stage(&x, &t, 1).unwrap();
        assert!(max_abs_diff(&y, &other) > 1e-3, "{name}: decoders agree");
    }
}

#[test]
fn single_stage_batch_matches_forward_stage() {
    let m = tiny("tiny-ncsnpp-multistage", 6);
    let x = input(3, 4);
    let t = [0.7, 0.8, 0.95];
    let a = m.forward(&x, &t).unwrap();
    let b = m.forward_stage(&x, &t, 2).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn gradient_reaches_encoder_and_only_used_decoders() {
    for name in [
        "tiny-ncsnpp-multistage",
        "tiny-ddpmpp-multistage",
        "tiny-ldm-multistage",
    ] {
        let m = tiny(name, 7);
        let all = mixed_times(m.config().family_name());
        // Samples of stages 0 and 2 only.
        let t: Vec<f64> = all
            .iter()
            .copied()
            .filter(|&v| m.stage_of(v) != 1)
            .take(3)
            .collect();
        let x = input(t.len(), 3);
        let y = m.forward(&x, &t).unwrap();
        let loss = y.sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let nonzero = |prefix: &str| -> (usize, usize) {
            let mut with = 0;
            let mut total = 0;
            for p in m
                .store()
                .params()
                .into_iter()
                .filter(|p| p.name.starts_with(prefix))
            {
                total += 1;
                if let Some(g) = grads.get(p.var.as_ref().unwrap().as_tensor()) {
                    if max_abs(g) > 0.0 {
                        with += 1;
                    }
                }
            }
            (with, total)
        };
        let (e, et) = nonzero("encoder.");
        let missing: Vec<String> = m
            .store()
            .params()
            .into_iter()
            .filter(|p| p.name.starts_with("encoder."))
            .filter(|p| {
                grads
                    .get(p.var.as_ref().unwrap().as_tensor())
                    .is_none_or(|g| max_abs(g) == 0.0)
            })
            .map(|p| p.name)
            .collect();
        eprintln!("{name}: {e} of {et} encoder tensors get a gradient; missing {missing:?}");
        assert_eq!(
            e, et,
            "{name}: encoder tensors without a gradient: {missing:?}"
        );
        for k in [0, 2] {
            let (d, dt) = nonzero(&format!("decoders.{k}."));
            assert_eq!(
                d, dt,
                "{name}: decoder {k}: {d} of {dt} tensors get a gradient"
            );
        }
        let (d1, _) = nonzero("decoders.1.");
        assert_eq!(d1, 0, "{name}: decoder 1 saw no sample but got gradients");
    }
}

#[test]
fn dropout_only_in_training() {
    let m = tiny("tiny-ncsnpp-multistage", 8);
    let x = input(2, 5);
    let t = [0.2, 0.9];
    let a = m.forward(&x, &t).unwrap();
    let b = m.forward(&x, &t).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let r1 = Mutex::new(StdRng::seed_from_u64(1));
    let r2 = Mutex::new(StdRng::seed_from_u64(1));
    let c = m.forward_train(&x, &t, &r1).unwrap();
    let d = m.forward_train(&x, &t, &r2).unwrap();
    assert_eq!(max_abs_diff(&c, &d), 0.0, "same seed, same dropout masks");
    assert!(
        max_abs_diff(&a, &c) > 1e-4,
        "dropout had no effect in training"
    );
}

#[test]
fn save_load_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    for name in [
        "tiny-ncsnpp-multistage",
        "tiny-ddpmpp-multistage",
        "tiny-ldm-multistage",
    ] {
        let a = tiny(name, 9);
        a.save_weights(&path).unwrap();
        let b = tiny(name, 10);
        b.load_weights(&path).unwrap();
        for (pa, pb) in a.store().params().iter().zip(b.store().params().iter()) {
            assert_eq!(pa.name, pb.name);
            let va: Vec<f32> = pa
                .var
                .as_ref()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let vb: Vec<f32> = pb
                .var
                .as_ref()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(
                va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{}",
                pa.name
            );
        }
        let t = mixed_times(a.config().family_name())[..3].to_vec();
        let x = input(t.len(), 6);
        assert_eq!(
            max_abs_diff(&a.forward(&x, &t).unwrap(), &b.forward(&x, &t).unwrap()),
            0.0
        );
    }
}

#[test]
fn load_lists_missing_unexpected_and_misshaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let m = tiny("tiny-ncsnpp-unified", 11);
    let mut map = std::collections::HashMap::new();
    for p in m.store().params() {
        map.insert(p.name.clone(), p.var.unwrap().as_tensor().clone());
    }
    map.remove("encoder.conv_in.weight");
    map.insert(
        "encoder.bogus".into(),
        Tensor::zeros(3, candle_core::DType::F32, &dev()).unwrap(),
    );
    map.insert(
        "decoders.0.head_conv.bias".into(),
        Tensor::zeros(5, candle_core::DType::F32, &dev()).unwrap(),
    );
    candle_core::safetensors::save(&map, &path).unwrap();
    let err = m.load_weights(&path).unwrap_err().to_string();
    assert!(err.contains("1 missing: encoder.conv_in.weight"), "{err}");
    assert!(err.contains("1 unexpected: encoder.bogus"), "{err}");
    assert!(
        err.contains("1 mis-shaped: decoders.0.head_conv.bias"),
        "{err}"
    );
    // A corrupt file is one clear error, not a panic.
    std::fs::write(&path, b"not a safetensors file").unwrap();
    assert!(matches!(
        m.load_weights(&path),
        Err(UNetError::Weights { .. })
    ));
}

#[test]
fn bad_inputs_are_errors() {
    let m = tiny("tiny-ncsnpp-multistage", 12);
    assert!(matches!(
        m.forward(&input(2, 1), &[0.5]),
        Err(UNetError::Input(_))
    ));
    assert!(matches!(
        m.forward(&input(1, 1), &[f64::NAN]),
        Err(UNetError::Input(_))
    ));
    assert!(matches!(
        m.forward(&input(1, 1), &[1.5]),
        Err(UNetError::Input(_))
    ));
    let x = Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, &dev()).unwrap();
    assert!(matches!(m.forward(&x, &[0.5]), Err(UNetError::Input(_))));
    let s = MultistageUNet::shapes_only(&preset("tiny-ncsnpp-unified").unwrap()).unwrap();
    assert!(matches!(
        s.forward(&input(1, 1), &[0.5]),
        Err(UNetError::ShapeOnly)
    ));
    let mut c = preset("tiny-ncsnpp-multistage").unwrap();
    c.boundaries = vec![0.6, 0.5];
    assert!(matches!(
        MultistageUNet::shapes_only(&c),
        Err(UNetError::Config(_))
    ));
    c.boundaries = vec![0.5];
    assert!(matches!(
        MultistageUNet::shapes_only(&c),
        Err(UNetError::Config(_))
    ));
}

#[test]
fn config_toml_round_trip() {
    for name in [
        "cifar10-ncsnpp-multistage",
        "cifar10-ddpmpp-edm-separate",
        "celebahq-ldm-multistage-quirk",
    ] {
        let c = preset(name).unwrap();
        let text = c.to_toml().unwrap();
        assert_eq!(UNetConfig::from_toml(&text).unwrap(), c, "{text}");
    }
    assert!(UNetConfig::from_toml(
        "sharing = \"shared\"\nboundaries = []\n[family]\nkind = \"nope\"\n"
    )
    .is_err());
}

/// The frozen view computes the same routed output bit for bit, records no ops (so a forward keeps no
/// graph), and sees later updates of the variables (shared storage, not a copy).
#[test]
fn frozen_view_matches_and_records_nothing() {
    for (name, fam) in [
        ("tiny-ncsnpp-multistage", "ncsnpp"),
        ("tiny-ddpmpp-multistage", "ddpmpp"),
        ("tiny-ldm-multistage", "ldm"),
    ] {
        let m = tiny(name, 7);
        let f = m.frozen().unwrap();
        let x = input(8, 3);
        let t = mixed_times(fam);
        let want = m.forward(&x, &t).unwrap();
        assert!(
            want.track_op(),
            "{name}: the trainable model records its forward"
        );
        let got = f.forward(&x, &t).unwrap();
        assert!(!got.track_op(), "{name}: the frozen view recorded ops");
        assert_eq!(max_abs_diff(&got, &want), 0.0, "{name}");
        // Move every variable; the view follows.
        for v in m.store().vars() {
            v.set(&v.as_tensor().affine(0.5, 0.01).unwrap()).unwrap();
        }
        let moved = m.forward(&x, &t).unwrap();
        assert!(
            max_abs_diff(&moved, &want) > 1e-3,
            "{name}: the update changed nothing"
        );
        assert_eq!(
            max_abs_diff(&f.forward(&x, &t).unwrap(), &moved),
            0.0,
            "{name}"
        );
    }
}

#[test]
fn init_is_the_authors() {
    let m = MultistageUNet::new(&preset("tiny-ncsnpp-unified").unwrap(), &dev(), 1).unwrap();
    let get = |n: &str| {
        let p = m
            .store()
            .params()
            .into_iter()
            .find(|p| p.name == n)
            .unwrap();
        max_abs(p.var.unwrap().as_tensor())
    };
    // Near-zero last convs (init_scale 0 → variance scale 1e-10: bound sqrt(3e-10/76.5) ≈ 2e-6 for the
    // 16→1 head), zero biases, fan-avg uniform elsewhere: bound sqrt(3/((16·9 + 16·9)/2)) = 0.144 for 16→16.
    assert!(get("decoders.0.head_conv.weight") < 2.0e-6);
    assert!(get("decoders.0.level0.block0.conv1.weight") < 1.5e-6);
    assert_eq!(get("encoder.conv_in.bias"), 0.0);
    let b = get("encoder.level0.block0.conv0.weight");
    assert!(b <= (3.0f32 / 144.0).sqrt() && b > 0.1, "{b}");
    let out = get("encoder.mid.attn.nin_out.W");
    assert!(out < 1e-5 && out > 0.0);
}

/// The fast CPU kernels (convolution, GroupNorm, FIR) against candle's plain ops on the whole network: the
/// routed mixed-stage output and every parameter's gradient, for each family's tiny preset.
#[test]
fn kernels_match_plain_candle_on_tiny_presets() {
    use crate::kernels::with_kernels;
    for name in [
        "tiny-ncsnpp-multistage",
        "tiny-ddpmpp-multistage",
        "tiny-ldm-multistage",
    ] {
        let m = tiny(name, 11);
        let t = mixed_times(m.config().family_name())[..6].to_vec();
        let x = input(t.len(), 12);
        let run = |on: bool| {
            with_kernels(on, || {
                let y = m.forward(&x, &t).unwrap();
                let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                let g: Vec<(String, Option<Tensor>)> = m
                    .store()
                    .params()
                    .into_iter()
                    .map(|p| {
                        let g = grads.get(p.var.as_ref().unwrap().as_tensor()).cloned();
                        (p.name.clone(), g)
                    })
                    .collect();
                (y, g)
            })
        };
        let (y_fast, g_fast) = run(true);
        let (y_plain, g_plain) = run(false);
        // Two f32 evaluations of the same sums in different orders: each layer adds a relative error of at
        // most ~K·ε (K ≤ 9·48 terms per output in these presets, ε = 6e-8, so ≈ 3e-5), and a few dozen layers
        // in sequence compound to ≲ 1e-3 relative to the tensor's scale in the worst case.
        let tol = 1e-3;
        let d = max_abs_diff(&y_fast, &y_plain);
        assert!(
            d <= tol * max_abs(&y_plain),
            "{name}: output differs by {d} (scale {})",
            max_abs(&y_plain)
        );
        let scale = g_plain
            .iter()
            .filter_map(|(_, g)| g.as_ref().map(max_abs))
            .fold(0.0f32, f32::max);
        for ((n, a), (_, b)) in g_fast.iter().zip(&g_plain) {
            match (a, b) {
                (Some(a), Some(b)) => {
                    let d = max_abs_diff(a, b);
                    assert!(
                        d <= tol * (max_abs(b) + 1e-3 * scale),
                        "{name}: gradient of {n} differs by {d} (scale {})",
                        max_abs(b)
                    );
                }
                (None, None) => {}
                _ => panic!("{name}: {n} has a gradient on one path only"),
            }
        }
    }
}

mod block_values;

/// A config within every size limit whose counts no longer fit u64: LDM at 4096², attention at full
/// resolution (t = 2^24 positions, 2·c·t² MACs per block) after each of 64 residual blocks in the encoder
/// and 65 in the decoder. The up-front estimate (convolutions only) lets it through; before the checked
/// accounting, a release build reported 2.9e17 FLOPs for its stage (the sum wrapped).
fn attention_heavy(width: usize) -> UNetConfig {
    let mut c = preset("tiny-ldm-unified").unwrap();
    match &mut c.family {
        Family::Ldm(l) => {
            l.in_channels = 1;
            l.resolution = 4096;
            l.en_width = width;
            l.de_widths = vec![width];
            l.channel_mult = vec![1];
            l.num_res_blocks = 64;
            l.attention_ds = vec![1];
        }
        _ => unreachable!("an LDM preset"),
    }
    c.boundaries.clear();
    c
}

#[test]
fn accounting_refuses_counts_that_do_not_fit_u64() {
    let c = attention_heavy(128);
    let m = MultistageUNet::shapes_only(&c).expect("within the config limits");
    let (enc, dec) = m.costs();
    // Each part alone fits (its true FLOPs 2·MACs too); their sum per stage does not.
    let (e, d) = (enc[0].macs as u128, dec[0].macs as u128);
    assert!(!enc[0].overflowed() && !dec[0].overflowed());
    assert!(2 * e <= u64::MAX as u128 && 2 * d <= u64::MAX as u128);
    assert!(2 * (e + d) > u64::MAX as u128, "{e} + {d}");
    let err = model_info(&m).unwrap_err().to_string();
    assert!(
        err.contains("model too large: the FLOP count of stage 0 does not fit in 64 bits"),
        "{err}"
    );
    // Half the width fits.
    assert!(model_info(&MultistageUNet::shapes_only(&attention_heavy(64)).unwrap()).is_ok());
}

#[test]
fn cost_counts_saturate_instead_of_wrapping() {
    assert_eq!(
        blocks::macs_of(&[1 << 20, 1 << 20, 1 << 20, 1 << 20]),
        u64::MAX
    );
    assert_eq!(blocks::macs_of(&[3, 5, 7]), 105);
    assert_eq!(blocks::macs_of(&[usize::MAX, 0]), 0);
    let mut c = Cost::default();
    c.add_macs(u64::MAX - 1);
    assert!(!c.overflowed());
    c.add_macs(2);
    assert_eq!(c.macs, u64::MAX);
    assert!(c.overflowed());
    c += Cost::default();
    assert!(c.overflowed(), "saturation sticks");
}
