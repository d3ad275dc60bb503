//! The gradient task-affinity of a trained network (the third Table-4 baseline of `msd cluster`): on a fixed
//! batch of training images with fixed noise, the loss at each time t_j of a grid, its gradient with respect
//! to the parameters every stage shares, flattened, and the G × G matrix of cosine similarities between those
//! gradients.
//!
//! - The grid is on the linear-VP time axis (β 0.1 → 20), as the baseline's DP reads it (t_j = j/G). Each
//!   family turns t into its own noise level: NCSN++ uses t (at least its ε_t), DDPM++ (EDM) the SNR-equivalent
//!   σ = σ_t/α_t, LDM the discrete step ⌈t·N⌉ − 1.
//! - Every grid point sees the same images and the same noise ε, so the gradients differ only through t.
//!   The network runs in evaluation mode (no dropout), so the matrix is a function of the weights, the batch
//!   and the noise alone. (The authors draw one image and fresh noise per call; a fixed batch removes that
//!   noise from the comparison.)
//! - "Shared" parameters: those every stage's forward pass goes through, the shared encoder of a multistage
//!   model, or every parameter of a one-stage (unified) model. A separate-encoder model has none; there, and
//!   whenever asked, all parameters can be used instead (the gradient of a stage's loss is then zero on the
//!   other stages' decoders).
//! - Cosine similarities are accumulated in f64: the gradients are stored once as f32 rows [G, P], and the
//!   Gram matrix G·Gᵀ is summed over column chunks converted to f64.

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;

use super::loss::{per_sample_loss, vp_alpha_sigma, LossFamily};
use super::TrainError;
use crate::unet::{MultistageUNet, Sharing};

/// Which parameters the gradients are taken with respect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamSet {
    /// The parameters every stage uses (the shared encoder; everything of a one-stage model).
    Shared,
    /// Every parameter of the network.
    All,
}

/// The result: the grid, the similarity matrix (row-major G × G) and how many parameters the gradients had.
#[derive(Debug, Clone)]
pub struct GradSimilarity {
    pub times: Vec<f64>,
    pub levels: Vec<f64>,
    pub matrix: Vec<f64>,
    pub params: usize,
}

impl GradSimilarity {
    pub fn size(&self) -> usize {
        self.times.len()
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.matrix[i * self.size() + j]
    }
}

/// The network's own noise level at time t of the linear-VP axis (see the module docs).
pub fn level_of_time(fam: &LossFamily, t: f64) -> f64 {
    match fam {
        LossFamily::Vp { eps_t } => t.max(*eps_t),
        LossFamily::Edm { .. } => {
            let (a, s) = vp_alpha_sigma(t);
            s / a
        }
        LossFamily::Ldm { alphas_cumprod } => {
            let n = alphas_cumprod.len();
            ((t * n as f64).ceil() as usize).clamp(1, n) as f64 - 1.0
        }
    }
}

/// The variables of `set`, in the store's order.
pub fn select_vars(net: &MultistageUNet, set: ParamSet) -> Result<Vec<Var>, TrainError> {
    let n = net.num_stages();
    let prefix = match (set, net.config().sharing) {
        (ParamSet::All, _) => "",
        _ if n == 1 => "",
        (ParamSet::Shared, Sharing::Shared) => "encoder.",
        (ParamSet::Shared, Sharing::Separate) => {
            return Err(TrainError::Config(
                "a model with a separate encoder per stage has no parameters that every stage shares: use all parameters"
                    .into(),
            ))
        }
    };
    let vars: Vec<Var> = net
        .store()
        .params()
        .into_iter()
        .filter(|p| p.name.starts_with(prefix))
        .filter_map(|p| p.var)
        .collect();
    if vars.is_empty() {
        return Err(TrainError::Config(
            "the network has no trainable parameters to differentiate".into(),
        ));
    }
    Ok(vars)
}

/// A fixed batch: `b` distinct images of `data` [N, C, H, W] (all of them when N ≤ b) chosen with a generator
/// seeded by `seed`, and standard-normal noise of the same shape from the same generator.
pub fn fixed_batch(data: &Tensor, b: usize, seed: u64) -> Result<(Tensor, Tensor), TrainError> {
    let n = data.dims()[0];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut idx: Vec<u32> = if n <= b {
        (0..n as u32).collect()
    } else {
        sample(&mut rng, n, b)
            .into_iter()
            .map(|i| i as u32)
            .collect()
    };
    idx.sort_unstable();
    let dev = data.device();
    let k = idx.len();
    let x0 = data.index_select(&Tensor::from_vec(idx, k, dev)?, 0)?;
    let eps: Vec<f32> = (0..x0.elem_count())
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect();
    let eps = Tensor::from_vec(eps, x0.shape().clone(), dev)?;
    Ok((x0, eps))
}

/// The flattened gradient [P] (f32) of the batch-mean loss at noise level `level` with respect to `vars`
/// (a variable the loss does not reach contributes zeros).
pub fn loss_gradient(
    net: &MultistageUNet,
    fam: &LossFamily,
    x0: &Tensor,
    eps: &Tensor,
    level: f64,
    vars: &[Var],
) -> Result<Tensor, TrainError> {
    let b = x0.dims()[0];
    let loss = per_sample_loss(fam, net, x0, eps, &vec![level; b], None)?.mean_all()?;
    let grads = loss.backward()?;
    let parts: Vec<Tensor> = vars
        .iter()
        .map(|v| match grads.get(v.as_tensor()) {
            Some(g) => g.flatten_all(),
            None => Tensor::zeros(v.elem_count(), DType::F32, v.device()),
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(Tensor::cat(&parts, 0)?.detach())
}

/// Columns per f64 chunk of the Gram accumulation (bounds the f64 copy to G × CHUNK values).
const CHUNK: usize = 1 << 16;

/// Cosine similarities (row-major G × G, f64) between the rows of `rows` [G, P]: symmetric, with an exact
/// unit diagonal. A zero row has no direction and is an error naming its index.
pub fn cosine_matrix(rows: &Tensor) -> Result<Vec<f64>, TrainError> {
    let (g, p) = rows.dims2()?;
    let mut gram = vec![0.0f64; g * g];
    let mut lo = 0;
    while lo < p {
        let c = CHUNK.min(p - lo);
        let part = rows.narrow(1, lo, c)?.to_dtype(DType::F64)?;
        let prod = part.matmul(&part.t()?)?.to_device(&Device::Cpu)?;
        for (acc, v) in gram.iter_mut().zip(prod.flatten_all()?.to_vec1::<f64>()?) {
            *acc += v;
        }
        lo += c;
    }
    let norms: Vec<f64> = (0..g).map(|i| gram[i * g + i].sqrt()).collect();
    if let Some(i) = norms.iter().position(|&n| !(n > 0.0 && n.is_finite())) {
        return Err(TrainError::Config(format!(
            "the gradient at grid point {i} is {}: its cosine similarity is undefined",
            if norms[i] == 0.0 {
                "zero"
            } else {
                "not finite"
            }
        )));
    }
    let mut out = vec![0.0f64; g * g];
    for i in 0..g {
        out[i * g + i] = 1.0;
        for j in i + 1..g {
            // The upper triangle, mirrored: the matrix is symmetric whatever the summation order did.
            let v = (gram[i * g + j] / (norms[i] * norms[j])).clamp(-1.0, 1.0);
            out[i * g + j] = v;
            out[j * g + i] = v;
        }
    }
    Ok(out)
}

/// The gradient-similarity matrix of `net` on the fixed batch (`x0`, `eps`) at the VP times `times`.
/// `progress(j)` is called after grid point j.
pub fn gradient_similarity(
    net: &MultistageUNet,
    fam: &LossFamily,
    x0: &Tensor,
    eps: &Tensor,
    times: &[f64],
    set: ParamSet,
    mut progress: impl FnMut(usize),
) -> Result<GradSimilarity, TrainError> {
    if times.len() < 2 {
        return Err(TrainError::Config(
            "the gradient grid needs at least 2 times".into(),
        ));
    }
    if let Some(t) = times
        .iter()
        .find(|t| !(t.is_finite() && **t > 0.0 && **t <= 1.0))
    {
        return Err(TrainError::Config(format!(
            "gradient grid time {t} is outside (0, 1]"
        )));
    }
    let vars = select_vars(net, set)?;
    let levels: Vec<f64> = times.iter().map(|&t| level_of_time(fam, t)).collect();
    let mut rows = Vec::with_capacity(times.len());
    for (j, &level) in levels.iter().enumerate() {
        rows.push(loss_gradient(net, fam, x0, eps, level, &vars)?);
        progress(j);
    }
    let params = rows[0].elem_count();
    let m = Tensor::stack(&rows, 0)?;
    drop(rows);
    Ok(GradSimilarity {
        times: times.to_vec(),
        levels,
        matrix: cosine_matrix(&m)?,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::LossParams;
    use crate::unet::preset;

    fn f64_cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn cosine_matrix_matches_f64() {
        // Rows longer than one chunk, so the chunked accumulation is exercised.
        let (g, p) = (4, CHUNK + 1000);
        let mut rng = StdRng::seed_from_u64(3);
        let v: Vec<f32> = (0..g * p)
            .map(|i| rng.sample::<f32, _>(StandardNormal) + if i % p < 10 { 5.0 } else { 0.0 })
            .collect();
        let t = Tensor::from_vec(v.clone(), (g, p), &Device::Cpu).unwrap();
        let m = cosine_matrix(&t).unwrap();
        for i in 0..g {
            assert_eq!(m[i * g + i], 1.0);
            for j in 0..g {
                let want = f64_cosine(&v[i * p..(i + 1) * p], &v[j * p..(j + 1) * p]);
                // Both sum f64 products of the same f32 values; only the summation order differs.
                assert!(
                    (m[i * g + j] - want).abs() < 1e-12,
                    "{i} {j}: {} vs {want}",
                    m[i * g + j]
                );
                assert_eq!(m[i * g + j], m[j * g + i]);
            }
        }
        // Opposite and orthogonal directions.
        let t = Tensor::new(&[[1f32, 0.0], [-2.0, 0.0], [0.0, 3.0]], &Device::Cpu).unwrap();
        assert_eq!(
            cosine_matrix(&t).unwrap(),
            vec![1.0, -1.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        );
        let z = Tensor::new(&[[1f32, 0.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let e = cosine_matrix(&z).unwrap_err().to_string();
        assert!(e.contains("grid point 1 is zero"), "{e}");
    }

    #[test]
    fn levels_follow_each_family() {
        let p = LossParams::default();
        let fam = |name: &str| LossFamily::for_config(&preset(name).unwrap(), &p);
        assert_eq!(level_of_time(&fam("tiny-ncsnpp-unified"), 0.5), 0.5);
        assert_eq!(level_of_time(&fam("tiny-ncsnpp-unified"), 0.0), 1e-5);
        // t = 0.4420 is the paper's first NCSN++ boundary; its SNR-equivalent EDM sigma is 2.5103.
        let s = level_of_time(&fam("tiny-ddpmpp-unified"), 0.4420);
        assert!((s - 2.5103).abs() < 1e-3, "{s}");
        let ldm = fam("tiny-ldm-unified");
        assert_eq!(level_of_time(&ldm, 1.0), 999.0);
        assert_eq!(level_of_time(&ldm, 0.001), 0.0);
        assert_eq!(level_of_time(&ldm, 0.5), 499.0);
    }

    #[test]
    fn similarity_of_a_tiny_network() {
        let cfg = preset("tiny-ncsnpp-multistage").unwrap();
        let net = MultistageUNet::new(&cfg, &Device::Cpu, 4).unwrap();
        let fam = LossFamily::for_config(&cfg, &LossParams::default());
        let mut rng = StdRng::seed_from_u64(8);
        let data: Vec<f32> = (0..5 * 1024).map(|_| rng.random_range(-1.0..1.0)).collect();
        let data = Tensor::from_vec(data, (5, 1, 32, 32), &Device::Cpu).unwrap();
        let (x0, eps) = fixed_batch(&data, 3, 11).unwrap();
        assert_eq!(x0.dims(), &[3, 1, 32, 32]);
        // Same seed, same batch.
        let (x1, e1) = fixed_batch(&data, 3, 11).unwrap();
        assert_eq!(
            (x0.clone() - x1)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        assert_eq!(
            (eps.clone() - e1)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        let times = [0.1, 0.3, 0.5, 0.7, 0.9];
        let mut seen = 0;
        let r = gradient_similarity(&net, &fam, &x0, &eps, &times, ParamSet::Shared, |_| {
            seen += 1
        })
        .unwrap();
        assert_eq!(seen, 5);
        let enc: usize = net
            .store()
            .params()
            .iter()
            .filter(|p| p.name.starts_with("encoder."))
            .map(|p| p.numel() as usize)
            .sum();
        assert_eq!(r.params, enc);
        let g = r.size();
        for i in 0..g {
            assert_eq!(r.at(i, i), 1.0);
            for j in 0..g {
                assert_eq!(r.at(i, j), r.at(j, i));
                assert!((-1.0..=1.0).contains(&r.at(i, j)));
            }
        }
        // One entry against two gradients from their own, separate backward passes, compared in f64.
        let vars = select_vars(&net, ParamSet::Shared).unwrap();
        let grad = |t: f64| -> Vec<f32> {
            let b = x0.dims()[0];
            let loss = per_sample_loss(&fam, &net, &x0, &eps, &vec![t; b], None)
                .unwrap()
                .mean_all()
                .unwrap();
            let gs = loss.backward().unwrap();
            vars.iter()
                .flat_map(|v| {
                    gs.get(v.as_tensor())
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
                .collect()
        };
        let (a, b) = (grad(0.3), grad(0.9));
        let want = f64_cosine(&a, &b);
        assert!((r.at(1, 4) - want).abs() < 1e-9, "{} vs {want}", r.at(1, 4));
        // Different times give different, not parallel, gradients.
        assert!(r.at(1, 4) < 0.999_999);
        // All parameters: more of them, and a separate-encoder model has no shared ones.
        let all =
            gradient_similarity(&net, &fam, &x0, &eps, &times[..2], ParamSet::All, |_| {}).unwrap();
        assert_eq!(all.params as u64, net.store().count(""));
        let sep =
            MultistageUNet::new(&preset("tiny-ncsnpp-separate").unwrap(), &Device::Cpu, 0).unwrap();
        assert!(select_vars(&sep, ParamSet::Shared).is_err());
        assert!(gradient_similarity(&net, &fam, &x0, &eps, &[0.5], ParamSet::All, |_| {}).is_err());
        assert!(
            gradient_similarity(&net, &fam, &x0, &eps, &[0.0, 0.5], ParamSet::All, |_| {}).is_err()
        );
    }
}
