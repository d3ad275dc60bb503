//! Whole-network guard against an independent implementation: `tests/fixtures/unet-<family>.safetensors`
//! hold random weights under msd's tensor names, an input batch whose times fall in every stage (boundary
//! values included, stages shuffled) and the outputs of the PyTorch peer (`benches/peer/peer_unet.py`,
//! written by `benches/peer/make_fixtures.py`), computed in float64 and stored as f32. The weights are
//! small integers times a power of two (exact in f32), stored two per byte to keep each file under 1 MB.
//!
//! Each fixture is loaded into msd's network (every tensor must exist with its shape, nothing unexpected),
//! then the batch goes through every stage whole (`forward_stage`) and routed per sample (`forward`).
//!
//! **Tolerance.** The peer's output is exact to f64 round-off; msd computes in f32 (unit round-off
//! u = 2⁻²⁴). A dot product of length K carries a relative error of at most K·u in the worst case, and of
//! order √K·u when the rounding errors are independent and add like a random walk (Higham, *Accuracy and
//! Stability of Numerical Algorithms*, §3.1 and §2.8). In these networks each layer's error reaches the output
//! with a gain of order one (a GroupNorm before every convolution, residual sums rescaled), so the errors of
//! the layers along a path add:
//!
//! ```text
//!     max|y_msd − y_peer| ≤ D · √K · u · max|y_peer|
//! ```
//!
//! with D = number of weight layers (tensors of rank ≥ 2) of the stage, an upper bound on the depth of any
//! path, and K = the largest fan-in among them. For the tiny presets D·√K·u is 8e-5–1.2e-4 and the measured
//! error is 0.6e-6–2e-6 (printed with `--nocapture`). Changing a constant of the network (the attention scale,
//! the 999·t label, the √2 skip rescale) moves the output by far more and fails the test (notes/network-speed-peer.md).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

use super::{preset, MultistageUNet};

const U: f64 = 5.960_464_477_539_063e-8; // 2^-24

fn fixture_path(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
        .join(format!("unet-{family}.safetensors"))
}

/// Weight `name` of the fixture: `n` values offset + q·scale, q + 8 packed two per byte (low nibble first),
/// scale and offset as f32 scalars `fixture.scale/NAME`, `fixture.offset/NAME` (see make_fixtures.py).
fn unpack(file: &HashMap<String, Tensor>, name: &str, n: usize) -> Option<Tensor> {
    let packed: Vec<u8> = file.get(name)?.to_vec1().unwrap();
    assert_eq!(packed.len(), n.div_ceil(2), "packed length of {name}");
    let scalar = |k: &str| -> f32 {
        file[&format!("fixture.{k}/{name}")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0]
    };
    let (scale, offset) = (scalar("scale"), scalar("offset"));
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let b = packed[i / 2];
            let nib = if i % 2 == 0 { b & 15 } else { b >> 4 };
            offset + (nib as f32 - 8.0) * scale
        })
        .collect();
    Some(Tensor::from_vec(v, n, &Device::Cpu).unwrap())
}

/// Loads the fixture's weights into a model of `preset_name`; returns the model and the fixture tensors.
fn load(family: &str, preset_name: &str) -> (MultistageUNet, HashMap<String, Tensor>) {
    let path = fixture_path(family);
    let file = candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let model = MultistageUNet::new(&preset(preset_name).unwrap(), &Device::Cpu, 0).unwrap();
    let params = model.store().params();
    for p in &params {
        let t = unpack(&file, &p.name, p.numel() as usize)
            .unwrap_or_else(|| panic!("{family}: fixture lacks {}", p.name));
        p.var
            .as_ref()
            .unwrap()
            .set(&t.reshape(p.shape.as_slice()).unwrap())
            .unwrap();
    }
    let unexpected: Vec<&String> = file
        .keys()
        .filter(|k| !k.starts_with("fixture.") && !params.iter().any(|p| &p.name == *k))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{family}: fixture tensors msd does not have: {unexpected:?}"
    );
    (model, file)
}

/// D·√K·u of stage `k` (see the module doc).
fn depth_bound(model: &MultistageUNet, k: usize) -> (usize, usize, f64) {
    let enc = model.encoder_prefix(k);
    let dec = format!("decoders.{k}.");
    let weights: Vec<Vec<usize>> = model
        .store()
        .params()
        .into_iter()
        .filter(|p| (p.name.starts_with(&enc) || p.name.starts_with(&dec)) && p.shape.len() >= 2)
        .map(|p| {
            // NIN weights are stored [in, out]; every other weight [out, in, ...].
            if p.name.ends_with(".W") {
                vec![p.shape[1], p.shape[0]]
            } else {
                p.shape
            }
        })
        .collect();
    let d = weights.len();
    let kmax = weights
        .iter()
        .map(|s| s[1..].iter().product::<usize>())
        .max()
        .unwrap();
    (d, kmax, d as f64 * (kmax as f64).sqrt() * U)
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// max|got − want| / max|want|.
fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims());
    let (g, w) = (values(got), values(want));
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.1, "fixture output too small to test anything");
    g.iter()
        .zip(&w)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

fn check(family: &str, preset_name: &str) {
    let (model, file) = load(family, preset_name);
    let x = file["fixture.x"].clone();
    let t = values(&file["fixture.t"]);
    let n = model.num_stages();
    let stages: Vec<usize> = t.iter().map(|&v| model.stage_of(v)).collect();
    for k in 0..n {
        assert!(stages.contains(&k), "{family}: no sample in stage {k}");
    }
    let mut worst_bound = 0f64;
    for k in 0..n {
        let (d, kmax, tol) = depth_bound(&model, k);
        worst_bound = worst_bound.max(tol);
        let got = model.forward_stage(&x, &t, k).unwrap();
        let err = rel_err(&got, &file[&format!("fixture.out.stage{k}")]);
        eprintln!(
            "{family} stage {k}: rel err {err:.2e} (bound D·√K·u = {d}·√{kmax}·u = {tol:.2e})"
        );
        assert!(
            err <= tol,
            "{family} stage {k}: rel err {err:.3e} > {tol:.3e}"
        );
    }
    // Routed per sample: sample i must come out as row i of its own stage's whole-batch output.
    let rows: Vec<Tensor> = stages
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            file[&format!("fixture.out.stage{k}")]
                .narrow(0, i, 1)
                .unwrap()
        })
        .collect();
    let want = Tensor::cat(&rows, 0).unwrap();
    let got = model.forward(&x, &t).unwrap();
    let err = rel_err(&got, &want);
    eprintln!("{family} routed {stages:?}: rel err {err:.2e}");
    assert!(
        err <= worst_bound,
        "{family} routed: rel err {err:.3e} > {worst_bound:.3e}"
    );
}

#[test]
fn ncsnpp_matches_pytorch_peer() {
    check("ncsnpp", "tiny-ncsnpp-multistage");
}

#[test]
fn ddpmpp_matches_pytorch_peer() {
    check("ddpmpp", "tiny-ddpmpp-multistage");
}

#[test]
fn ldm_matches_pytorch_peer() {
    check("ldm", "tiny-ldm-multistage");
}
