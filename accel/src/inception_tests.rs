//! Tests of the FID Inception: hand-computed cases for the resize, the pools and the folded conv, each
//! Inception block type against a direct f64 evaluation (loops over the definition, batch norm unfolded),
//! the parameter count against torchvision's, and the whole network's shapes with random weights.

use std::collections::HashMap;

use super::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Random weights for every tensor whose name starts with `prefix`: He-scaled conv weights, batch-norm
/// parameters near (γ = 1, β = 0, mean = 0, var = 1) so activations stay O(1) through the depth.
fn random_weights(prefix: &str, seed: u64) -> Weights {
    let mut rng = StdRng::seed_from_u64(seed);
    tensor_specs()
        .into_iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(name, shape)| {
            let len: usize = shape.iter().product();
            let vals: Vec<f32> = if name.ends_with("conv.weight") {
                let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
                let std = (2.0 / fan_in).sqrt();
                (0..len)
                    .map(|_| (std * rng.sample::<f64, _>(StandardNormal)) as f32)
                    .collect()
            } else if name.ends_with("running_var") {
                (0..len).map(|_| rng.random_range(0.5f32..1.5)).collect()
            } else if name.ends_with("bn.weight") {
                (0..len).map(|_| rng.random_range(0.8f32..1.2)).collect()
            } else {
                (0..len).map(|_| rng.random_range(-0.1f32..0.1)).collect()
            };
            (name, (shape, vals))
        })
        .collect()
}

fn var_builder(w: &Weights) -> VarBuilder<'static> {
    let dev = Device::Cpu;
    let ts = w
        .iter()
        .map(|(n, (s, v))| {
            (
                n.clone(),
                Tensor::from_vec(v.clone(), s.as_slice(), &dev).unwrap(),
            )
        })
        .collect();
    VarBuilder::from_tensors(ts, DType::F32, &dev)
}

/// One image, C × H × W, f64.
#[derive(Debug, Clone)]
struct Img {
    c: usize,
    h: usize,
    w: usize,
    v: Vec<f64>,
}

impl Img {
    fn at(&self, c: usize, i: isize, j: isize) -> Option<f64> {
        if i < 0 || j < 0 || i as usize >= self.h || j as usize >= self.w {
            return None;
        }
        Some(self.v[(c * self.h + i as usize) * self.w + j as usize])
    }

    fn random(c: usize, h: usize, w: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let v = (0..c * h * w)
            .map(|_| rng.sample::<f64, _>(StandardNormal).abs())
            .collect();
        Img { c, h, w, v }
    }

    fn tensor(&self) -> Tensor {
        let v: Vec<f32> = self.v.iter().map(|&x| x as f32).collect();
        Tensor::from_vec(v, (1, self.c, self.h, self.w), &Device::Cpu).unwrap()
    }
}

/// Conv (kh × kw, stride, zero padding) then BatchNorm (γ(x − mean)/√(var + ε) + β) then ReLU, by loops.
fn basic(x: &Img, w: &Weights, p: &str, stride: usize, pad: (usize, usize)) -> Img {
    let (shape, k) = &w[&format!("{p}.conv.weight")];
    let (cout, cin, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
    assert_eq!(cin, x.c, "{p}");
    let bn = |t: &str| &w[&format!("{p}.bn.{t}")].1;
    let (gamma, beta, mean, var) = (
        bn("weight"),
        bn("bias"),
        bn("running_mean"),
        bn("running_var"),
    );
    let oh = (x.h + 2 * pad.0 - kh) / stride + 1;
    let ow = (x.w + 2 * pad.1 - kw) / stride + 1;
    let mut v = vec![0.0; cout * oh * ow];
    for o in 0..cout {
        for i in 0..oh {
            for j in 0..ow {
                let mut s = 0.0;
                for c in 0..cin {
                    for a in 0..kh {
                        for b in 0..kw {
                            let ii = (i * stride + a) as isize - pad.0 as isize;
                            let jj = (j * stride + b) as isize - pad.1 as isize;
                            if let Some(xv) = x.at(c, ii, jj) {
                                s += xv * f64::from(k[((o * cin + c) * kh + a) * kw + b]);
                            }
                        }
                    }
                }
                let y = (s - f64::from(mean[o])) / (f64::from(var[o]) + 1e-3).sqrt()
                    * f64::from(gamma[o])
                    + f64::from(beta[o]);
                v[(o * oh + i) * ow + j] = y.max(0.0);
            }
        }
    }
    Img {
        c: cout,
        h: oh,
        w: ow,
        v,
    }
}

/// 3 × 3 pool with padding 1 (stride 1) or 0 (stride 2) over the positions inside the image only.
fn pool(x: &Img, stride: usize, pad: usize, max: bool) -> Img {
    let oh = (x.h + 2 * pad - 3) / stride + 1;
    let ow = (x.w + 2 * pad - 3) / stride + 1;
    let mut v = Vec::with_capacity(x.c * oh * ow);
    for c in 0..x.c {
        for i in 0..oh {
            for j in 0..ow {
                let vals: Vec<f64> = (0..3)
                    .flat_map(|a| (0..3).map(move |b| (a, b)))
                    .filter_map(|(a, b)| {
                        x.at(
                            c,
                            (i * stride + a) as isize - pad as isize,
                            (j * stride + b) as isize - pad as isize,
                        )
                    })
                    .collect();
                v.push(if max {
                    vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                } else {
                    vals.iter().sum::<f64>() / vals.len() as f64
                });
            }
        }
    }
    Img {
        c: x.c,
        h: oh,
        w: ow,
        v,
    }
}

fn cat(parts: &[Img]) -> Img {
    let (h, w) = (parts[0].h, parts[0].w);
    assert!(parts.iter().all(|p| (p.h, p.w) == (h, w)));
    Img {
        c: parts.iter().map(|p| p.c).sum(),
        h,
        w,
        v: parts.iter().flat_map(|p| p.v.iter().cloned()).collect(),
    }
}

fn assert_close(got: &Tensor, want: &Img, what: &str) {
    assert_eq!(got.dims(), &[1, want.c, want.h, want.w], "{what}");
    let g: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let scale = want.v.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.1, "{what}: degenerate test output");
    // f32 dot products of a few thousand O(1) terms, a few layers deep: ~1e-6 relative each.
    let tol = 2e-5 * scale;
    for (i, (a, b)) in g.iter().zip(&want.v).enumerate() {
        assert!(
            (f64::from(*a) - b).abs() <= tol,
            "{what}[{i}]: {a} vs {b} (tol {tol})"
        );
    }
}

#[test]
fn bilinear_matches_pytorch_align_corners_false_by_hand() {
    // Upsampling 2 → 4: sources −0.25 (clamped to 0), 0.25, 0.75, 1.25 (upper neighbour clamped).
    assert_eq!(
        bilinear_matrix(2, 4),
        vec![1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]
    );
    // Downsampling 4 → 2: sources 0.5 and 2.5, no antialiasing.
    assert_eq!(
        bilinear_matrix(4, 2),
        vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5]
    );
    // Separable 2-D: a 2 × 2 image [[0, 1], [2, 3]] to 4 × 4; corner (1, 2) = 0.75·row0 + 0.25·row1 at
    // column weights (0.25, 0.75): 0.75·(0.25·0 + 0.75·1) + 0.25·(0.25·2 + 0.75·3) = 1.25.
    let x = Tensor::from_vec(vec![0f32, 1.0, 2.0, 3.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let y = resize_bilinear(&x, 4, 4).unwrap();
    let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(y.dims(), &[1, 1, 4, 4]);
    assert!((v[6] - 1.25).abs() < 1e-6, "{v:?}");
    assert_eq!((v[0], v[3], v[12], v[15]), (0.0, 1.0, 2.0, 3.0));
    // Identity size is a no-op.
    assert_eq!(
        resize_bilinear(&x, 2, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        vec![0.0, 1.0, 2.0, 3.0]
    );
}

#[test]
fn average_pool_excludes_the_padding_by_hand() {
    let x = Tensor::from_vec(
        (1..=9).map(|v| v as f32).collect(),
        (1, 1, 3, 3),
        &Device::Cpu,
    )
    .unwrap();
    let v: Vec<f32> = avg_pool3_exclude_pad(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // Corner: (1+2+4+5)/4 = 3; top edge: (1+2+3+4+5+6)/6 = 3.5; centre: 45/9 = 5.
    assert_eq!(v, vec![3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0]);
}

#[test]
fn max_pool_never_picks_the_padding_by_hand() {
    let x = Tensor::from_vec(vec![-1f32, -2.0, -3.0, -4.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let v: Vec<f32> = max_pool3_same(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(v, vec![-1.0; 4]);
    let x = Tensor::from_vec(
        (0..25).map(|v| v as f32).collect(),
        (1, 1, 5, 5),
        &Device::Cpu,
    )
    .unwrap();
    // Stride 2, no padding: windows end at columns/rows 2 and 4 → values 12, 14, 22, 24.
    let v: Vec<f32> = max_pool3_s2(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(v, vec![12.0, 14.0, 22.0, 24.0]);
}

#[test]
fn folded_basic_conv_by_hand() {
    // 1 → 1 channel, 1 × 1 kernel w = 2; BN γ = 3, β = 1, mean = 0.5, var = 4 − ε, so the scale is 3/2:
    // y = relu(1.5·(2x − 0.5) + 1) = relu(3x + 0.25).
    let dev = Device::Cpu;
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, &dev).unwrap();
    let ts = HashMap::from([
        ("c.conv.weight".to_string(), t(vec![2.0], &[1, 1, 1, 1])),
        ("c.bn.weight".to_string(), t(vec![3.0], &[1])),
        ("c.bn.bias".to_string(), t(vec![1.0], &[1])),
        ("c.bn.running_mean".to_string(), t(vec![0.5], &[1])),
        ("c.bn.running_var".to_string(), t(vec![4.0 - 1e-3], &[1])),
    ]);
    let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
    let conv = BasicConv::load(&vb.pp("c"), 1, 1, K1).unwrap();
    let x = t(vec![1.0, -1.0, 0.0], &[1, 1, 1, 3]);
    let v: Vec<f32> = conv
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(
        (v[0] - 3.25).abs() < 1e-6 && v[1] == 0.0 && (v[2] - 0.25).abs() < 1e-6,
        "{v:?}"
    );
    // A wrongly shaped weight is an error naming the tensor.
    let bad = HashMap::from([("c.conv.weight".to_string(), t(vec![2.0; 2], &[2, 1, 1, 1]))]);
    let vb = VarBuilder::from_tensors(bad, DType::F32, &dev);
    let err = BasicConv::load(&vb.pp("c"), 1, 1, K1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("c.conv.weight") || err.contains("shape"),
        "{err}"
    );
}

#[test]
fn parameter_count_is_torchvisions() {
    // torchvision's inception_v3 has 27,161,264 trainable parameters; without its fc (2048·1000 + 1000) and
    // aux classifier (768·128 + 2·128, 128·768·25 + 2·768, 768·1000 + 1000) that leaves 21,785,568, counting
    // each batch norm's γ and β (running statistics are buffers). The FID patches change no parameter.
    let trainable: usize = tensor_specs()
        .iter()
        .filter(|(n, _)| !n.contains("running_"))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(trainable, 21_785_568);
    assert_eq!(tensor_specs().len(), 94 * 5);
}

#[test]
fn block_a_matches_direct_evaluation() {
    let w = random_weights("Mixed_5c.", 1);
    let blk = BlockA::load(&var_builder(&w).pp("Mixed_5c"), 256, 64).unwrap();
    let x = Img::random(256, 5, 5, 2);
    let p = |s: &str| format!("Mixed_5c.{s}");
    let b5 = basic(
        &basic(&x, &w, &p("branch5x5_1"), 1, (0, 0)),
        &w,
        &p("branch5x5_2"),
        1,
        (2, 2),
    );
    let d = basic(&x, &w, &p("branch3x3dbl_1"), 1, (0, 0));
    let d = basic(&d, &w, &p("branch3x3dbl_2"), 1, (1, 1));
    let d = basic(&d, &w, &p("branch3x3dbl_3"), 1, (1, 1));
    let want = cat(&[
        basic(&x, &w, &p("branch1x1"), 1, (0, 0)),
        b5,
        d,
        basic(&pool(&x, 1, 1, false), &w, &p("branch_pool"), 1, (0, 0)),
    ]);
    assert_eq!(want.c, 288);
    assert_close(&blk.forward(&x.tensor()).unwrap(), &want, "InceptionA");
}

#[test]
fn block_b_matches_direct_evaluation() {
    let w = random_weights("Mixed_6a.", 3);
    let blk = BlockB::load(&var_builder(&w).pp("Mixed_6a"), 288).unwrap();
    let x = Img::random(288, 7, 7, 4);
    let p = |s: &str| format!("Mixed_6a.{s}");
    let d = basic(&x, &w, &p("branch3x3dbl_1"), 1, (0, 0));
    let d = basic(&d, &w, &p("branch3x3dbl_2"), 1, (1, 1));
    let d = basic(&d, &w, &p("branch3x3dbl_3"), 2, (0, 0));
    let want = cat(&[
        basic(&x, &w, &p("branch3x3"), 2, (0, 0)),
        d,
        pool(&x, 2, 0, true),
    ]);
    assert_eq!((want.c, want.h), (768, 3));
    assert_close(&blk.forward(&x.tensor()).unwrap(), &want, "InceptionB");
}

#[test]
fn block_c_matches_direct_evaluation() {
    let w = random_weights("Mixed_6b.", 5);
    let blk = BlockC::load(&var_builder(&w).pp("Mixed_6b"), 768, 128).unwrap();
    let x = Img::random(768, 5, 4, 6);
    let p = |s: &str| format!("Mixed_6b.{s}");
    let b = basic(&x, &w, &p("branch7x7_1"), 1, (0, 0));
    let b = basic(&b, &w, &p("branch7x7_2"), 1, (0, 3));
    let b = basic(&b, &w, &p("branch7x7_3"), 1, (3, 0));
    let mut c = basic(&x, &w, &p("branch7x7dbl_1"), 1, (0, 0));
    for (i, pad) in [(2, (3, 0)), (3, (0, 3)), (4, (3, 0)), (5, (0, 3))] {
        c = basic(&c, &w, &p(&format!("branch7x7dbl_{i}")), 1, pad);
    }
    let want = cat(&[
        basic(&x, &w, &p("branch1x1"), 1, (0, 0)),
        b,
        c,
        basic(&pool(&x, 1, 1, false), &w, &p("branch_pool"), 1, (0, 0)),
    ]);
    assert_eq!(want.c, 768);
    assert_close(&blk.forward(&x.tensor()).unwrap(), &want, "InceptionC");
}

#[test]
fn block_d_matches_direct_evaluation() {
    let w = random_weights("Mixed_7a.", 7);
    let blk = BlockD::load(&var_builder(&w).pp("Mixed_7a"), 768).unwrap();
    let x = Img::random(768, 7, 5, 8);
    let p = |s: &str| format!("Mixed_7a.{s}");
    let a = basic(&x, &w, &p("branch3x3_1"), 1, (0, 0));
    let a = basic(&a, &w, &p("branch3x3_2"), 2, (0, 0));
    let b = basic(&x, &w, &p("branch7x7x3_1"), 1, (0, 0));
    let b = basic(&b, &w, &p("branch7x7x3_2"), 1, (0, 3));
    let b = basic(&b, &w, &p("branch7x7x3_3"), 1, (3, 0));
    let b = basic(&b, &w, &p("branch7x7x3_4"), 2, (0, 0));
    let want = cat(&[a, b, pool(&x, 2, 0, true)]);
    assert_eq!((want.c, want.h, want.w), (1280, 3, 2));
    assert_close(&blk.forward(&x.tensor()).unwrap(), &want, "InceptionD");
}

fn block_e_case(name: &str, cin: usize, kind: EPool, seed: u64) {
    let w = random_weights(&format!("{name}."), seed);
    let blk = BlockE::load(&var_builder(&w).pp(name), cin, kind).unwrap();
    let x = Img::random(cin, 3, 4, seed + 1);
    let p = |s: &str| format!("{name}.{s}");
    let t = basic(&x, &w, &p("branch3x3_1"), 1, (0, 0));
    let b = cat(&[
        basic(&t, &w, &p("branch3x3_2a"), 1, (0, 1)),
        basic(&t, &w, &p("branch3x3_2b"), 1, (1, 0)),
    ]);
    let u = basic(&x, &w, &p("branch3x3dbl_1"), 1, (0, 0));
    let u = basic(&u, &w, &p("branch3x3dbl_2"), 1, (1, 1));
    let c = cat(&[
        basic(&u, &w, &p("branch3x3dbl_3a"), 1, (0, 1)),
        basic(&u, &w, &p("branch3x3dbl_3b"), 1, (1, 0)),
    ]);
    let pooled = pool(&x, 1, 1, kind == EPool::Max);
    let want = cat(&[
        basic(&x, &w, &p("branch1x1"), 1, (0, 0)),
        b,
        c,
        basic(&pooled, &w, &p("branch_pool"), 1, (0, 0)),
    ]);
    assert_eq!(want.c, 2048);
    assert_close(&blk.forward(&x.tensor()).unwrap(), &want, name);
}

#[test]
fn block_e1_matches_direct_evaluation() {
    block_e_case("Mixed_7b", 1280, EPool::Avg, 9);
}

#[test]
fn block_e2_matches_direct_evaluation() {
    block_e_case("Mixed_7c", 2048, EPool::Max, 11);
}

#[test]
fn whole_network_shapes_with_random_weights() {
    let w = random_weights("", 13);
    let net = FidInception::new(&var_builder(&w)).unwrap();
    // Two grey 28 × 28 images in [0, 1]: resized to 299, repeated to RGB, → 2 × 2048.
    let mut rng = StdRng::seed_from_u64(14);
    let px: Vec<f32> = (0..2 * 28 * 28).map(|_| rng.random::<f32>()).collect();
    let x = Tensor::from_vec(px, (2, 1, 28, 28), &Device::Cpu).unwrap();
    let f = net.features(&x).unwrap();
    assert_eq!(f.dims(), &[2, FEATURE_DIM]);
    let v: Vec<Vec<f32>> = f.to_vec2().unwrap();
    assert!(v.iter().flatten().all(|x| x.is_finite() && *x >= 0.0));
    assert!(v[0] != v[1], "different images gave the same features");
    // Features after ReLU and averaging: non-negative; with He-scaled weights not all zero.
    assert!(v[0].iter().any(|x| *x > 0.0));
    // Four channels is an error, not a panic.
    let bad = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(net.features(&bad).is_err());
    // A missing tensor is an error naming it.
    let mut partial = w.clone();
    partial.remove("Mixed_6e.branch_pool.bn.running_var");
    let err = FidInception::new(&var_builder(&partial))
        .unwrap_err()
        .to_string();
    assert!(err.contains("running_var"), "{err}");
}

/// PyTorch's bilinear (align_corners=False) sample of one output pixel, written per pixel in f64.
fn bilinear_pixel(x: &Img, c: usize, oi: usize, oj: usize, oh: usize, ow: usize) -> f64 {
    let src = |o: usize, n_out: usize, n_in: usize| {
        let s = ((o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0);
        let i0 = s.floor() as usize;
        let i1 = if i0 + 1 < n_in { i0 + 1 } else { i0 };
        (i0, i1, s - i0 as f64)
    };
    let (r0, r1, lr) = src(oi, oh, x.h);
    let (c0, c1, lc) = src(oj, ow, x.w);
    let p = |r: usize, q: usize| x.v[(c * x.h + r) * x.w + q];
    (1.0 - lr) * ((1.0 - lc) * p(r0, c0) + lc * p(r0, c1))
        + lr * ((1.0 - lc) * p(r1, c0) + lc * p(r1, c1))
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The f32 two-GEMM resize against the per-pixel f64 formula, up- and downsampling.
        #[test]
        fn resize_matches_the_per_pixel_formula(h in 1usize..12, w in 1usize..12, oh in 1usize..20,
                                                ow in 1usize..20, seed in 0u64..10_000) {
            let x = Img::random(2, h, w, seed);
            let y: Vec<f32> = resize_bilinear(&x.tensor(), oh, ow).unwrap().flatten_all().unwrap()
                .to_vec1().unwrap();
            let scale = x.v.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for c in 0..2 {
                for i in 0..oh {
                    for j in 0..ow {
                        let want = bilinear_pixel(&x, c, i, j, oh, ow);
                        let got = f64::from(y[(c * oh + i) * ow + j]);
                        prop_assert!((got - want).abs() <= 1e-6 * (1.0 + scale), "{got} vs {want}");
                    }
                }
            }
        }

        /// BasicConv (folded BN, explicit per-axis padding, stride) against the direct f64 loops, over random
        /// geometries.
        #[test]
        fn basic_conv_matches_direct_evaluation(cin in 1usize..5, cout in 1usize..5, kh in 1usize..4,
                                                kw in 1usize..4, stride in 1usize..3, ph in 0usize..2,
                                                pw in 0usize..2, h in 3usize..8, w in 3usize..8,
                                                seed in 0u64..10_000) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut t = |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..hi)).collect() };
            let mut wts = Weights::new();
            wts.insert("p.conv.weight".into(), (vec![cout, cin, kh, kw], t(cout * cin * kh * kw, -1.0, 1.0)));
            wts.insert("p.bn.weight".into(), (vec![cout], t(cout, 0.5, 1.5)));
            wts.insert("p.bn.bias".into(), (vec![cout], t(cout, -0.5, 0.5)));
            wts.insert("p.bn.running_mean".into(), (vec![cout], t(cout, -0.5, 0.5)));
            wts.insert("p.bn.running_var".into(), (vec![cout], t(cout, 0.2, 2.0)));
            let g = geom(kh, kw, stride, ph, pw);
            let conv = BasicConv::load(&var_builder(&wts).pp("p"), cin, cout, g).unwrap();
            let x = Img::random(cin, h, w, seed + 1);
            let want = basic(&x, &wts, "p", stride, (ph, pw));
            let got = conv.forward(&x.tensor()).unwrap();
            prop_assert_eq!(got.dims(), &[1, want.c, want.h, want.w]);
            let g: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let scale = 1.0 + want.v.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (a, b) in g.iter().zip(&want.v) {
                prop_assert!((f64::from(*a) - b).abs() <= 1e-5 * scale, "{a} vs {b}");
            }
        }

        /// The FID pools (average excluding padding, max with padding, max stride 2) against direct f64 loops.
        #[test]
        fn pools_match_direct_evaluation(h in 1usize..9, w in 1usize..9, seed in 0u64..10_000) {
            let mut x = Img::random(3, h, w, seed);
            // Negative values too, so that zero padding in the max-pool would show.
            x.v.iter_mut().enumerate().for_each(|(i, v)| if i % 2 == 0 { *v = -*v });
            let t = x.tensor();
            let check = |got: Tensor, want: Img| -> Result<(), TestCaseError> {
                prop_assert_eq!(got.dims(), &[1, want.c, want.h, want.w]);
                let g: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
                for (a, b) in g.iter().zip(&want.v) {
                    prop_assert!((f64::from(*a) - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
                }
                Ok(())
            };
            check(avg_pool3_exclude_pad(&t).unwrap(), pool(&x, 1, 1, false))?;
            check(max_pool3_same(&t).unwrap(), pool(&x, 1, 1, true))?;
            if h >= 3 && w >= 3 {
                check(max_pool3_s2(&t).unwrap(), pool(&x, 2, 0, true))?;
            }
        }
    }
}
