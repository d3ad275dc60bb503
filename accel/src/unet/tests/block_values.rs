//! Values of single NCSN++ blocks against a direct f64 evaluation written here, loop by loop, from the
//! authors' definitions (docs/paper-notes.md §2.1): GroupNorm (groups min(C/4, 16), eps 1e-6), the BigGAN
//! ResBlock with its 1/√2 skip rescale, the attention block (scale C^−½, NIN projections, 1/√2), the time
//! embedding of the label 999·t, and EDM's preconditioning (§2.2).
//!
//! Every parameter is redrawn from U(−0.5, 0.5) so that no term hides behind the authors' near-zero inits.
//! Tolerance: the f32 path rounds each of at most ~6 chained ops whose sums have ≤ 9·16 = 144 terms of size
//! ≤ ~1, so its error is ≲ 144 · 2⁻²⁴ · (a few) ≈ 1e-5 per op; 2e-4 absolute on O(1) outputs leaves margin,
//! while each deliberate breakage listed on the tests moves outputs by more than 1e-2.

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::blocks::{Ctx, GroupNorm, Groups};
use super::super::ncsnpp::{AttnBlock, Encoder, NcsnppConfig, ResBlock};
use super::super::params::ParamStore;
use super::super::EncoderNet;

const TOL: f64 = 2e-4;

/// Redraws every parameter of `store` from U(−0.5, 0.5) and returns them by name, as f64.
fn randomise(store: &ParamStore, seed: u64) -> std::collections::HashMap<String, Vec<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = std::collections::HashMap::new();
    for p in store.params() {
        let v = p.var.expect("real parameters");
        let data: Vec<f32> = (0..v.elem_count())
            .map(|_| rng.random_range(-0.5f32..0.5))
            .collect();
        out.insert(p.name.clone(), data.iter().map(|&x| x as f64).collect());
        v.set(&Tensor::from_vec(data, v.shape(), v.device()).unwrap())
            .unwrap();
    }
    out
}

fn random(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) as f64)
        .collect()
}

fn tensor(v: &[f64], shape: &[usize]) -> Tensor {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(f, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    assert!(worst < TOL, "{what}: max |f32 − f64| = {worst}");
}

fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

/// GroupNorm of one [C, H·W] sample: mean and biased variance over each group of C/groups channels.
fn group_norm(
    x: &[f64],
    c: usize,
    hw: usize,
    groups: usize,
    eps: f64,
    w: &[f64],
    b: &[f64],
) -> Vec<f64> {
    let per = c / groups;
    let mut y = vec![0.0; c * hw];
    for g in 0..groups {
        let span = &x[g * per * hw..(g + 1) * per * hw];
        let n = span.len() as f64;
        let mean = span.iter().sum::<f64>() / n;
        let var = span.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        for ch in g * per..(g + 1) * per {
            for i in 0..hw {
                y[ch * hw + i] = (x[ch * hw + i] - mean) / (var + eps).sqrt() * w[ch] + b[ch];
            }
        }
    }
    y
}

/// k×k convolution with zero padding k/2 of one [cin, h, w] sample; weight [cout, cin, k, k].
fn conv(x: &[f64], cin: usize, h: usize, w: usize, wt: &[f64], bias: &[f64], k: usize) -> Vec<f64> {
    let cout = bias.len();
    let p = (k / 2) as isize;
    let mut y = vec![0.0; cout * h * w];
    for o in 0..cout {
        for i in 0..h {
            for j in 0..w {
                let mut s = bias[o];
                for c in 0..cin {
                    for a in 0..k {
                        for bb in 0..k {
                            let (ii, jj) =
                                (i as isize + a as isize - p, j as isize + bb as isize - p);
                            if ii >= 0 && jj >= 0 && (ii as usize) < h && (jj as usize) < w {
                                s += wt[((o * cin + c) * k + a) * k + bb]
                                    * x[(c * h + ii as usize) * w + jj as usize];
                            }
                        }
                    }
                }
                y[(o * h + i) * w + j] = s;
            }
        }
    }
    y
}

/// score-SDE NIN of one [cin, n] sample: y[o, i] = Σ_c W[c, o]·x[c, i] + b[o].
fn nin(x: &[f64], cin: usize, n: usize, wt: &[f64], b: &[f64]) -> Vec<f64> {
    let cout = b.len();
    let mut y = vec![0.0; cout * n];
    for o in 0..cout {
        for i in 0..n {
            y[o * n + i] = b[o]
                + (0..cin)
                    .map(|c| wt[c * cout + o] * x[c * n + i])
                    .sum::<f64>();
        }
    }
    y
}

/// Dense layer, weight [out, in].
fn dense(x: &[f64], wt: &[f64], b: &[f64]) -> Vec<f64> {
    let fin = x.len();
    (0..b.len())
        .map(|o| b[o] + (0..fin).map(|i| wt[o * fin + i] * x[i]).sum::<f64>())
        .collect()
}

/// GroupNorm: min(C/4, 16) groups and eps 1e-6, including a group of tiny variance (where eps matters).
/// Checked to fail with C/4 groups not capped at 16.
#[test]
fn group_norm_groups_and_eps() {
    for (c, groups) in [(8usize, 2usize), (96, 16)] {
        let store = ParamStore::real(&Device::Cpu, 1);
        let gn = GroupNorm::new(&store.root().pp("gn"), c, Groups::MinQuarter(16), 1e-6).unwrap();
        assert_eq!(gn.groups, groups);
        let p = randomise(&store, 2);
        let (b, hw) = (2, 9);
        let mut x = random(b * c * hw, 3);
        // Sample 0, group 0: values of size 1e-3, variance ~3e-7, comparable to eps.
        for v in &mut x[..(c / groups) * hw] {
            *v *= 1e-3;
        }
        let got = values(&gn.forward(&tensor(&x, &[b, c, 3, 3])).unwrap());
        let mut want = Vec::new();
        for s in 0..b {
            want.extend(group_norm(
                &x[s * c * hw..(s + 1) * c * hw],
                c,
                hw,
                groups,
                1e-6,
                &p["gn.weight"],
                &p["gn.bias"],
            ));
        }
        assert_close(&format!("GroupNorm C = {c}"), &got, &want);
    }
}

/// An input with the wrong channel count is an error naming both, from each of the layer's forwards; the
/// dropout variant refuses it before drawing its mask seed, so the training RNG is left as it was.
#[test]
fn group_norm_refuses_the_wrong_channel_count() {
    let store = ParamStore::real(&Device::Cpu, 1);
    let gn = GroupNorm::new(&store.root().pp("gn"), 8, Groups::MinQuarter(16), 1e-6).unwrap();
    let x = Tensor::zeros((2, 6, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let rng = std::sync::Mutex::new(StdRng::seed_from_u64(7));
    let ctx = Ctx {
        train_rng: Some(&rng),
    };
    let errors = [
        gn.forward(&x).unwrap_err(),
        gn.forward_silu(&x).unwrap_err(),
        gn.forward_silu_dropout(&x, &ctx, 0.1).unwrap_err(),
    ];
    for e in errors {
        let e = e.to_string();
        assert!(
            e.contains("expected 8 channels, got input shape [2, 6, 3, 3]"),
            "{e}"
        );
    }
    let next = rng.lock().unwrap().random::<u64>();
    assert_eq!(
        next,
        StdRng::seed_from_u64(7).random::<u64>(),
        "no seed drawn"
    );
}

/// The BigGAN ResBlock without resampling: (skip(x) + conv1(SiLU(GN(conv0(SiLU(GN(x))) + dense(emb)))))/√2,
/// with the 1×1 skip conv when the widths differ and the identity otherwise. Checked to fail without the
/// /√2 and with GroupNorm eps 1e-5 (one input group has a variance near eps).
#[test]
fn ncsnpp_resblock_values() {
    for (cin, cout) in [(8usize, 12usize), (8, 8)] {
        let store = ParamStore::real(&Device::Cpu, 4);
        let temb = 16;
        let rb = ResBlock::new(
            &store.root().pp("rb"),
            cin,
            cout,
            temb,
            false,
            false,
            0.0,
            Groups::MinQuarter(16),
        )
        .unwrap();
        let p = randomise(&store, 5);
        let (b, h, w) = (2usize, 4usize, 4usize);
        let mut x = random(b * cin * h * w, 6);
        // Sample 0, first GroupNorm group: variance ~3e-7, so that eps (1e-6) matters.
        for v in &mut x[..4 * h * w] {
            *v *= 1e-3;
        }
        let emb = random(b * temb, 7);
        let got = values(
            &rb.forward(
                &tensor(&x, &[b, cin, h, w]),
                &tensor(&emb, &[b, temb]),
                &Ctx::default(),
            )
            .unwrap(),
        );
        let hw = h * w;
        let mut want = Vec::new();
        for s in 0..b {
            let xs = &x[s * cin * hw..(s + 1) * cin * hw];
            let a: Vec<f64> = group_norm(
                xs,
                cin,
                hw,
                cin / 4,
                1e-6,
                &p["rb.norm0.weight"],
                &p["rb.norm0.bias"],
            )
            .into_iter()
            .map(silu)
            .collect();
            let mut hh = conv(&a, cin, h, w, &p["rb.conv0.weight"], &p["rb.conv0.bias"], 3);
            let e = dense(
                &emb[s * temb..(s + 1) * temb],
                &p["rb.dense.weight"],
                &p["rb.dense.bias"],
            );
            for o in 0..cout {
                for i in 0..hw {
                    hh[o * hw + i] += e[o];
                }
            }
            let a: Vec<f64> = group_norm(
                &hh,
                cout,
                hw,
                cout / 4,
                1e-6,
                &p["rb.norm1.weight"],
                &p["rb.norm1.bias"],
            )
            .into_iter()
            .map(silu)
            .collect();
            let hh = conv(
                &a,
                cout,
                h,
                w,
                &p["rb.conv1.weight"],
                &p["rb.conv1.bias"],
                3,
            );
            let skip = if cin != cout {
                conv(xs, cin, h, w, &p["rb.skip.weight"], &p["rb.skip.bias"], 1)
            } else {
                xs.to_vec()
            };
            want.extend(skip.iter().zip(&hh).map(|(a, b)| (a + b) / 2f64.sqrt()));
        }
        assert_close(&format!("ResBlock {cin} -> {cout}"), &got, &want);
    }
}

/// The attention block: GN, q/k/v NIN maps, softmax over positions of q·k·C^−½, output NIN, (x + h)/√2.
/// Checked to fail with the scale C^−1.
#[test]
fn ncsnpp_attention_values() {
    let store = ParamStore::real(&Device::Cpu, 8);
    let c = 8;
    let att = AttnBlock::new(&store.root().pp("at"), c, Groups::MinQuarter(16)).unwrap();
    let p = randomise(&store, 9);
    let (b, h, w) = (2usize, 3usize, 3usize);
    let n = h * w;
    // Larger inputs and weights than U(−0.5, 0.5) alone give, so that the softmax is far from uniform and
    // the logit scale shows.
    let x: Vec<f64> = random(b * c * n, 10).iter().map(|v| 2.0 * v).collect();
    let got = values(&att.forward(&tensor(&x, &[b, c, h, w])).unwrap());
    let mut want = Vec::new();
    for s in 0..b {
        let xs = &x[s * c * n..(s + 1) * c * n];
        let g = group_norm(
            xs,
            c,
            n,
            c / 4,
            1e-6,
            &p["at.norm.weight"],
            &p["at.norm.bias"],
        );
        let q = nin(&g, c, n, &p["at.nin_q.W"], &p["at.nin_q.b"]);
        let k = nin(&g, c, n, &p["at.nin_k.W"], &p["at.nin_k.b"]);
        let v = nin(&g, c, n, &p["at.nin_v.W"], &p["at.nin_v.b"]);
        let mut a = vec![0.0; c * n];
        for i in 0..n {
            let logits: Vec<f64> = (0..n)
                .map(|j| {
                    (0..c).map(|ch| q[ch * n + i] * k[ch * n + j]).sum::<f64>() / (c as f64).sqrt()
                })
                .collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let wsum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            for ch in 0..c {
                a[ch * n + i] = (0..n)
                    .map(|j| v[ch * n + j] * (logits[j] - max).exp() / wsum)
                    .sum();
            }
        }
        let o = nin(&a, c, n, &p["at.nin_out.W"], &p["at.nin_out.b"]);
        want.extend(xs.iter().zip(&o).map(|(a, b)| (a + b) / 2f64.sqrt()));
    }
    assert_close("attention", &got, &want);
}

/// The shared time embedding: label 999·t, [sin, cos] of the label times exp(−k·ln 10⁴/(half − 1)),
/// k < half = nf/2, then Linear nf→4nf, SiLU, Linear 4nf→4nf; blocks get SiLU of that. Checked to fail
/// with the label t (not 999·t).
#[test]
fn ncsnpp_time_embedding_values() {
    let cfg = NcsnppConfig {
        in_channels: 1,
        resolution: 8,
        en_width: 8,
        de_widths: vec![8],
        ch_mult: vec![1, 1],
        num_res_blocks: 1,
        attn_resolutions: vec![],
        dropout: 0.0,
        max_groups: 16,
    };
    let store = ParamStore::real(&Device::Cpu, 11);
    let (enc, _, _) = Encoder::new(&store.root(), &cfg).unwrap();
    let p = randomise(&store, 12);
    let t = [0.0, 1e-3, 0.4420, 1.0];
    let x = tensor(&random(t.len() * 64, 13), &[t.len(), 1, 8, 8]);
    let f = enc.forward(&x, &t, &Ctx::default()).unwrap();
    let got = values(&f.emb);
    let (nf, half) = (8usize, 4usize);
    let mut want = Vec::new();
    for &ti in &t {
        let label = 999.0 * ti;
        let freqs: Vec<f64> = (0..half)
            .map(|k| (-(k as f64) * 10000f64.ln() / (half - 1) as f64).exp())
            .collect();
        let e: Vec<f64> = freqs
            .iter()
            .map(|f| (label * f).sin())
            .chain(freqs.iter().map(|f| (label * f).cos()))
            .collect();
        assert_eq!(e.len(), nf);
        let h: Vec<f64> = dense(&e, &p["temb0.weight"], &p["temb0.bias"])
            .into_iter()
            .map(silu)
            .collect();
        want.extend(
            dense(&h, &p["temb1.weight"], &p["temb1.bias"])
                .into_iter()
                .map(silu),
        );
    }
    assert_close("time embedding", &got, &want);
}

/// EDM's preconditioning (Karras et al. 2022, Table 1, σ_data = 0.5), checked through the conditions it is
/// derived from rather than by restating the formulas: the network input c_in·(y + σn) has unit variance,
/// the effective training target (y − c_skip·(y + σn))/c_out has unit variance, c_skip minimises c_out
/// (d c_out²/d c_skip = 0), and c_noise = ¼ ln σ. Plus one value worked out by hand at σ = σ_data.
#[test]
fn edm_precond_meets_its_derivation() {
    use super::super::ddpmpp::edm_precond;
    let sd2 = 0.25f64;
    for sigma in [0.002, 0.1, 0.5, 2.5103, 7.6577, 80.0] {
        let (c_skip, c_out, c_in, c_noise) = edm_precond(sigma);
        let s2 = sigma * sigma;
        let rel = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        // Var[c_in (y + σ n)] = c_in² (σ_d² + σ²) = 1.
        assert!(rel(c_in * c_in * (sd2 + s2), 1.0), "c_in at {sigma}");
        // Var[(y − c_skip (y + σ n))/c_out] = ((1 − c_skip)² σ_d² + c_skip² σ²)/c_out² = 1.
        let target_var = ((1.0 - c_skip).powi(2) * sd2 + c_skip * c_skip * s2) / (c_out * c_out);
        assert!(
            rel(target_var, 1.0),
            "target variance {target_var} at {sigma}"
        );
        // c_out² as a function of c_skip is that numerator; its derivative vanishes at the optimum.
        let slope = -2.0 * (1.0 - c_skip) * sd2 + 2.0 * c_skip * s2;
        assert!(
            slope.abs() < 1e-12,
            "c_skip is not the minimiser at {sigma}"
        );
        assert!(c_out > 0.0 && (0.0..=1.0).contains(&c_skip));
        assert!(rel(c_noise, sigma.ln() / 4.0));
    }
    // σ = σ_data = 0.5: c_skip = ½, c_out = 0.5·0.5/√0.5 = √0.125, c_in = √2, c_noise = ¼ ln ½.
    let (c_skip, c_out, c_in, c_noise) = edm_precond(0.5);
    assert_eq!(c_skip, 0.5);
    assert!((c_out - 0.353_553_390_593_273_8).abs() < 1e-15);
    assert!((c_in - std::f64::consts::SQRT_2).abs() < 1e-15);
    assert!((c_noise - (-0.173_286_795_139_986_3)).abs() < 1e-15);
}
