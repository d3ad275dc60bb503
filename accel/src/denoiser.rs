//! The Proposition 1 optimal denoiser on candle tensors (f32, CPU or CUDA).
//!
//! Same algorithm as `msd_reference::denoiser` (see there for the derivation): scores
//! r_i = α⟨x, y_i⟩ − ½α²‖y_i‖² by GEMM, a streaming softmax over data chunks with a per-query running maximum,
//! and a second GEMM for Σ w_i y_i. Differences to the running maximum are taken before scaling by 1/σ², so
//! nothing overflows as σ → 0; when 1/σ² is not representable in f32 the weights become the exact-maximum
//! indicator (the t → 0 limit: the nearest point).

use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;

use crate::AccelError;

/// The optimal denoiser of a dataset held on a device as an N × d f32 tensor.
#[derive(Debug, Clone)]
pub struct OptimalDenoiser {
    data: Tensor,
    /// ‖y_i‖², shape (1, N).
    sq_norms: Tensor,
    chunk_rows: usize,
    query_block: usize,
    /// On a CPU, run the softmax update as one fused row-parallel pass (true), or with tensor operations
    /// as on a GPU (false; lets CPU tests cover the GPU code path).
    fused_cpu: bool,
}

/// Returns an error if `t` (any float dtype) holds a NaN or an infinity.
pub fn check_finite(what: &'static str, t: &Tensor) -> Result<(), AccelError> {
    let t = t.to_dtype(DType::F32)?;
    let nan_count = t
        .ne(&t)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    let max_abs = t.abs()?.max_all()?.to_scalar::<f32>()?;
    if nan_count > 0.0 || max_abs.is_infinite() {
        return Err(AccelError::NonFinite(what));
    }
    Ok(())
}

/// Checks a (α, σ) pair as the reference does: finite, non-negative, not both zero.
fn check_level(alpha: f64, sigma: f64) -> Result<(), AccelError> {
    let ok = alpha.is_finite() && sigma.is_finite() && alpha >= 0.0 && sigma >= 0.0;
    if !ok || (alpha == 0.0 && sigma == 0.0) {
        return Err(AccelError::BadNoiseLevel { alpha, sigma });
    }
    Ok(())
}

impl OptimalDenoiser {
    /// Chunk sizes (data rows, queries): 1024 × 1024 f32 scores (4 MiB) on a CPU; 16384 × 4096 on a GPU, which
    /// wants far larger GEMMs.
    pub fn default_chunks(device: &Device) -> (usize, usize) {
        if device.is_cpu() {
            (1024, 1024)
        } else {
            (16384, 4096)
        }
    }

    /// Takes an N × d dataset (any float dtype; stored as f32 on the tensor's device) and checks it.
    pub fn new(data: &Tensor) -> Result<Self, AccelError> {
        let dims = data.dims();
        if dims.len() != 2 {
            return Err(AccelError::Shape(format!(
                "the dataset must be N x d, got shape {dims:?}"
            )));
        }
        if dims[0] == 0 || dims[1] == 0 {
            return Err(AccelError::Shape(format!(
                "the dataset is empty (shape {dims:?})"
            )));
        }
        let data = data.to_dtype(DType::F32)?.contiguous()?;
        check_finite("the dataset", &data)?;
        let sq_norms = data.sqr()?.sum_keepdim(1)?.reshape((1, dims[0]))?;
        let (chunk_rows, query_block) = Self::default_chunks(data.device());
        Ok(Self {
            data,
            sq_norms,
            chunk_rows,
            query_block,
            fused_cpu: true,
        })
    }

    /// Sets the streaming chunk sizes (both at least 1).
    pub fn with_chunks(mut self, chunk_rows: usize, query_block: usize) -> Self {
        self.chunk_rows = chunk_rows.max(1);
        self.query_block = query_block.max(1);
        self
    }

    /// Uses tensor operations for the softmax update on every device (the GPU code path), also on a CPU.
    pub fn with_tensor_ops_only(mut self) -> Self {
        self.fused_cpu = false;
        self
    }

    pub fn len(&self) -> usize {
        self.data.dims()[0]
    }

    /// Always false: construction rejects empty datasets.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn dim(&self) -> usize {
        self.data.dims()[1]
    }

    pub fn device(&self) -> &Device {
        self.data.device()
    }

    /// Checks that `x` is B × d like the dataset, and brings it to f32 on the dataset's device.
    fn prepare_queries(&self, x: &Tensor) -> Result<Tensor, AccelError> {
        let dims = x.dims();
        if dims.len() != 2 || dims[1] != self.dim() {
            return Err(AccelError::Shape(format!(
                "the queries must be B x {}, got shape {dims:?}",
                self.dim()
            )));
        }
        let x = x
            .to_device(self.device())?
            .to_dtype(DType::F32)?
            .contiguous()?;
        check_finite("the queries", &x)?;
        Ok(x)
    }

    /// The posterior mean x̂₀(x) for each row of x (B × d); returns B × d f32 on the dataset's device.
    pub fn posterior_mean(&self, x: &Tensor, alpha: f64, sigma: f64) -> Result<Tensor, AccelError> {
        check_level(alpha, sigma)?;
        self.checked_posterior_mean(&self.prepare_queries(x)?, alpha, sigma)
    }

    /// ε*(x) = (x − α·x̂₀(x))/σ; σ must be > 0.
    pub fn eps(&self, x: &Tensor, alpha: f64, sigma: f64) -> Result<Tensor, AccelError> {
        check_level(alpha, sigma)?;
        if sigma == 0.0 {
            return Err(AccelError::EpsAtZeroSigma);
        }
        let x = self.prepare_queries(x)?;
        let x0 = self.checked_posterior_mean(&x, alpha, sigma)?;
        Ok(((x - x0.affine(alpha, 0.0)?)? / sigma)?)
    }

    /// x̂₀ for queries and a noise level already checked, block by block.
    fn checked_posterior_mean(
        &self,
        x: &Tensor,
        alpha: f64,
        sigma: f64,
    ) -> Result<Tensor, AccelError> {
        // ½α²‖y_i‖², once for all blocks (on the host too, for the fused CPU update).
        let offsets = self.sq_norms.affine(0.5 * alpha * alpha, 0.0)?;
        let host_offsets = if x.device().is_cpu() && self.fused_cpu {
            Some(offsets.flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        };
        let b = x.dims()[0];
        let mut blocks = Vec::with_capacity(b.div_ceil(self.query_block));
        let mut start = 0;
        while start < b {
            let len = self.query_block.min(b - start);
            let block = x.narrow(0, start, len)?;
            let softmax = match &host_offsets {
                Some(host) => Softmax::host(len, alpha, sigma, host),
                None => Softmax::device(len, alpha, sigma, &offsets, x.device())?,
            };
            blocks.push(self.block_posterior_mean(&block, softmax)?);
            start += len;
        }
        let out = Tensor::cat(&blocks, 0)?;
        check_finite("the result (overflow)", &out)?;
        Ok(out)
    }

    /// One query block: stream over data chunks, rescaling the running Σ w_i y_i as the maximum moves.
    fn block_posterior_mean(&self, x: &Tensor, mut softmax: Softmax) -> Result<Tensor, AccelError> {
        let mut acc = Tensor::zeros((x.dims()[0], self.dim()), DType::F32, x.device())?;
        let mut start = 0;
        while start < self.len() {
            let len = self.chunk_rows.min(self.len() - start);
            let y = self.data.narrow(0, start, len)?;
            let (w, rescale) = softmax.update(x.matmul(&y.t()?)?, start)?;
            if let Some(r) = rescale {
                acc = acc.broadcast_mul(&r)?;
            }
            acc = (acc + w.matmul(&y)?)?;
            start += len;
        }
        softmax.normalise(&acc)
    }
}

/// Streaming softmax state of one query block: per query, the running maximum score and the running sum of
/// weights under that maximum. `update` turns a chunk's inner products ⟨x, y⟩ into weights
/// e^{(r − max)/σ²} with r = α⟨x, y⟩ − ½α²‖y‖², and says by how much to rescale what was accumulated before.
enum Softmax<'a> {
    /// CPU: one fused, row-parallel pass over the chunk (candle's CPU element-wise ops are single-threaded
    /// and would take seven passes).
    Host {
        alpha: f32,
        /// 1/σ², +∞ in f32 when σ → 0: then only exact maxima keep weight.
        inv_var: f32,
        /// ½α²‖y_i‖² for every data row.
        offsets: &'a [f32],
        max: Vec<f32>,
        sum: Vec<f32>,
    },
    /// Any device: tensor operations.
    Device {
        alpha: f64,
        inv_var: f64,
        hard: bool,
        /// ½α²‖y_i‖², shape (1, N).
        offsets: &'a Tensor,
        max: Option<Tensor>,
        sum: Tensor,
    },
}

/// e^{diff/σ²} for diff = r − max ≤ 0, with e^0 = 1 exactly, also when 1/σ² is infinite.
#[inline]
fn host_weight(diff: f32, inv_var: f32) -> f32 {
    if diff == 0.0 {
        1.0
    } else {
        (diff * inv_var).exp()
    }
}

impl<'a> Softmax<'a> {
    fn host(b: usize, alpha: f64, sigma: f64, offsets: &'a [f32]) -> Self {
        Softmax::Host {
            alpha: alpha as f32,
            inv_var: (1.0 / (sigma * sigma)) as f32,
            offsets,
            max: vec![f32::NEG_INFINITY; b],
            sum: vec![0.0; b],
        }
    }

    fn device(
        b: usize,
        alpha: f64,
        sigma: f64,
        offsets: &'a Tensor,
        dev: &Device,
    ) -> candle_core::Result<Self> {
        let inv_var = 1.0 / (sigma * sigma);
        Ok(Softmax::Device {
            alpha,
            inv_var,
            hard: !((inv_var as f32).is_finite()),
            offsets,
            max: None,
            sum: Tensor::zeros((b, 1), DType::F32, dev)?,
        })
    }

    /// Consumes the inner products of the block with data rows [start, start + len); returns the chunk's
    /// weights (B × len) and, after the first chunk, the factor (B × 1) to rescale earlier accumulations by.
    fn update(
        &mut self,
        dots: Tensor,
        start: usize,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let (b, len) = dots.dims2()?;
        match self {
            Softmax::Host {
                alpha,
                inv_var,
                offsets,
                max,
                sum,
            } => {
                let (alpha, inv_var) = (*alpha, *inv_var);
                let offsets = &offsets[start..start + len];
                let mut buf = dots.flatten_all()?.to_vec1::<f32>()?;
                let mut rescale = vec![1f32; b];
                buf.par_chunks_mut(len)
                    .zip(max.par_iter_mut())
                    .zip(sum.par_iter_mut())
                    .zip(rescale.par_iter_mut())
                    .for_each(|(((row, m), s), r)| {
                        let mut chunk_max = f32::NEG_INFINITY;
                        for (v, &o) in row.iter_mut().zip(offsets) {
                            *v = alpha * *v - o;
                            chunk_max = chunk_max.max(*v);
                        }
                        let new_max = m.max(chunk_max);
                        *r = host_weight(*m - new_max, inv_var);
                        let mut chunk_sum = 0.0;
                        for v in row.iter_mut() {
                            *v = host_weight(*v - new_max, inv_var);
                            chunk_sum += *v;
                        }
                        *s = *s * *r + chunk_sum;
                        *m = new_max;
                    });
                let dev = dots.device();
                let first = start == 0;
                Ok((
                    Tensor::from_vec(buf, (b, len), dev)?,
                    (!first)
                        .then(|| Tensor::from_vec(rescale, (b, 1), dev))
                        .transpose()?,
                ))
            }
            Softmax::Device {
                alpha,
                inv_var,
                hard,
                offsets,
                max,
                sum,
            } => {
                let (inv_var, hard) = (*inv_var, *hard);
                let weights = |diff: &Tensor| -> candle_core::Result<Tensor> {
                    if hard {
                        diff.eq(0f32)?.to_dtype(DType::F32)
                    } else {
                        diff.affine(inv_var, 0.0)?.exp()
                    }
                };
                let scores = dots
                    .affine(*alpha, 0.0)?
                    .broadcast_sub(&offsets.narrow(1, start, len)?)?;
                let chunk_max = scores.max_keepdim(D::Minus1)?;
                let (new_max, rescale) = match max.take() {
                    None => (chunk_max, None),
                    Some(m) => {
                        let new_max = m.maximum(&chunk_max)?;
                        let r = weights(&(m - &new_max)?)?;
                        *sum = (&*sum * &r)?;
                        (new_max, Some(r))
                    }
                };
                let w = weights(&scores.broadcast_sub(&new_max)?)?;
                *sum = (&*sum + w.sum_keepdim(D::Minus1)?)?;
                *max = Some(new_max);
                Ok((w, rescale))
            }
        }
    }

    /// acc / (sum of weights), row-wise. Every sum is ≥ 1 (the maximum's own weight).
    fn normalise(&self, acc: &Tensor) -> Result<Tensor, AccelError> {
        let sum = match self {
            Softmax::Host { sum, .. } => Tensor::from_slice(sum, (sum.len(), 1), acc.device())?,
            Softmax::Device { sum, .. } => sum.clone(),
        };
        Ok(acc.broadcast_div(&sum)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msd_reference::denoiser::{posterior_mean_error_bound, NoiseLevel};
    use ndarray::{array, Array2};
    use proptest::prelude::*;

    /// The device the tests run on: CPU, or CUDA when `MSD_TEST_DEVICE=cuda` (in a `cuda` build).
    fn test_device() -> Device {
        match std::env::var("MSD_TEST_DEVICE").as_deref() {
            Ok("cuda") => crate::device(crate::DeviceKind::Cuda(0)).expect("MSD_TEST_DEVICE=cuda"),
            _ => Device::Cpu,
        }
    }

    fn to_tensor(a: &Array2<f64>, dev: &Device) -> Tensor {
        let v: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        Tensor::from_vec(v, a.dim(), dev).unwrap()
    }

    fn to_array(t: &Tensor) -> Array2<f64> {
        let v = t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
        let (r, c) = (v.len(), v.first().map_or(0, |row| row.len()));
        Array2::from_shape_vec((r, c), v.into_iter().flatten().collect()).unwrap()
    }

    /// Rounds to f32 and back, so that the reference sees exactly the accel backend's inputs.
    fn f32_round(a: &Array2<f64>) -> Array2<f64> {
        a.mapv(|x| x as f32 as f64)
    }

    fn matrix(rows: usize, cols: usize, range: f64) -> impl Strategy<Value = Array2<f64>> {
        proptest::collection::vec(-range..range, rows * cols)
            .prop_map(move |v| f32_round(&Array2::from_shape_vec((rows, cols), v).unwrap()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// f32 accel vs f64 reference on random problems. Tolerance: the a-priori f32 rounding bound of
        /// `posterior_mean_error_bound` (u = 2⁻²⁴) — score errors of a length-d dot product, amplified by 1/σ²
        /// through the softmax — plus the reference's own f64 bound. σ ≥ 0.05 keeps the bound informative
        /// (below ~2 % of the data range); smaller σ is covered by the nearest-point test below.
        #[test]
        fn agrees_with_the_reference(
            (data, x) in (1usize..48, 1usize..9, 1usize..7)
                .prop_flat_map(|(n, d, b)| (matrix(n, d, 1.0), matrix(b, d, 2.0))),
            alpha in 0.0..1.0f64,
            log_sigma in -1.3..0.7f64,
            chunk in 1usize..20,
            block in 1usize..5,
            tensor_ops_only: bool,
        ) {
            let dev = test_device();
            let sigma = 10f64.powf(log_sigma) as f32 as f64;
            let alpha = alpha as f32 as f64;
            let lv = NoiseLevel::new(alpha, sigma).unwrap();
            let reference = msd_reference::OptimalDenoiser::new(data.view()).unwrap();
            let want_x0 = reference.posterior_mean(x.view(), lv).unwrap();
            let want_eps = reference.eps(x.view(), lv).unwrap();
            let mut accel = OptimalDenoiser::new(&to_tensor(&data, &dev)).unwrap().with_chunks(chunk, block);
            if tensor_ops_only {
                accel = accel.with_tensor_ops_only();
            }
            let xt = to_tensor(&x, &dev);
            let got_x0 = to_array(&accel.posterior_mean(&xt, alpha, sigma).unwrap());
            let got_eps = to_array(&accel.eps(&xt, alpha, sigma).unwrap());
            let b32 = posterior_mean_error_bound(data.view(), x.view(), lv, f32::EPSILON as f64 / 2.0);
            let b64 = posterior_mean_error_bound(data.view(), x.view(), lv, f64::EPSILON / 2.0);
            let u = f32::EPSILON as f64 / 2.0;
            for q in 0..x.nrows() {
                let tol = b32[q] + b64[q];
                for j in 0..x.ncols() {
                    let e0 = (got_x0[[q, j]] - want_x0[[q, j]]).abs();
                    prop_assert!(e0 <= tol, "x0[{q},{j}] err {e0} > tol {tol}");
                    // ε = (x − α·x̂₀)/σ: the x̂₀ error times α/σ, plus rounding of the combination.
                    let tol_eps = alpha * tol / sigma
                        + 4.0 * u * (x[[q, j]].abs() + alpha * want_x0[[q, j]].abs()) / sigma;
                    let e1 = (got_eps[[q, j]] - want_eps[[q, j]]).abs();
                    prop_assert!(e1 <= tol_eps, "eps[{q},{j}] err {e1} > tol {tol_eps}");
                }
            }
        }
    }

    #[test]
    fn zero_sigma_collapses_to_the_nearest_point() {
        let dev = test_device();
        let data = array![[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]];
        let x = array![[0.9, 0.2], [0.1, 1.6], [-5.0, -5.0]];
        let den = OptimalDenoiser::new(&to_tensor(&data, &dev))
            .unwrap()
            .with_chunks(2, 2);
        for sigma in [0.0, 1e-30, 1e-3] {
            let got = to_array(
                &den.posterior_mean(&to_tensor(&x, &dev), 1.0, sigma)
                    .unwrap(),
            );
            let want = array![[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]];
            assert!((got - want).iter().all(|e| e.abs() < 1e-6), "sigma {sigma}");
        }
        assert!(matches!(
            den.eps(&to_tensor(&x, &dev), 1.0, 0.0),
            Err(AccelError::EpsAtZeroSigma)
        ));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dev = test_device();
        let nan = to_tensor(&array![[0.0, f64::NAN]], &dev);
        assert!(matches!(
            OptimalDenoiser::new(&nan),
            Err(AccelError::NonFinite(_))
        ));
        let inf = to_tensor(&array![[0.0, f64::INFINITY]], &dev);
        assert!(matches!(
            OptimalDenoiser::new(&inf),
            Err(AccelError::NonFinite(_))
        ));
        let empty = Tensor::zeros((0, 3), DType::F32, &dev).unwrap();
        assert!(matches!(
            OptimalDenoiser::new(&empty),
            Err(AccelError::Shape(_))
        ));
        let den = OptimalDenoiser::new(&to_tensor(&array![[0.0, 1.0]], &dev)).unwrap();
        let wrong = to_tensor(&array![[0.0, 1.0, 2.0]], &dev);
        assert!(matches!(
            den.posterior_mean(&wrong, 1.0, 1.0),
            Err(AccelError::Shape(_))
        ));
        let ok = to_tensor(&array![[0.0, 1.0]], &dev);
        assert!(matches!(
            den.posterior_mean(&ok, -1.0, 1.0),
            Err(AccelError::BadNoiseLevel { .. })
        ));
        assert!(matches!(
            den.posterior_mean(&ok, 0.0, 0.0),
            Err(AccelError::BadNoiseLevel { .. })
        ));
    }
}
