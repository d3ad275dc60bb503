//! `(x + h)·s`, the scaled residual sum that closes the NCSN++ (`s = 1/√2`) and DDPM++ (`s = √½`) blocks,
//! as one op.
//!
//! Why: candle's backward keeps every node of the graph alive until it ends, so `(x + h) / √2` written as
//! two ops holds two activation-sized tensors per block where one is needed (neither is read by the
//! backward). On the paper model's stage-0 training step at batch 8 the extra tensors, with the dropout
//! masks (`dropout.rs`), were 1.1 GB of the 5.8 GB peak. The output is bit-identical to the candle
//! composition (same two roundings: the sum, then the product with `s` in the tensor's dtype).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{applies, slice, zeroed, Real};

/// Elements per rayon task.
const CHUNK: usize = 1 << 15;

#[derive(Debug, Clone, Copy)]
struct Residual {
    scale: f64,
}

impl Residual {
    fn run<T: Real>(&self, x: &[T], h: &[T]) -> Vec<T> {
        let s = T::from_f64(self.scale);
        let mut out = zeroed::<T>(x.len());
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(h.par_chunks(CHUNK)))
            .for_each(|(o, (x, h))| {
                for ((o, x), h) in o.iter_mut().zip(x).zip(h) {
                    *o = (*x + *h) * s;
                }
            });
        out
    }
}

impl CustomOp2 for Residual {
    fn name(&self) -> &'static str {
        "msd-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = by_dtype!(s1, l1, s2, l2, self.name(), |x, h| self.run(x, h));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _h: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Both summands get s·dy; one tensor serves both.
        let g = if applies(&[dy]) {
            dy.contiguous()?
                .apply_op1_no_bwd(&ScaleGrad { scale: self.scale })?
        } else {
            dy.affine(self.scale, 0.0)?
        };
        Ok((Some(g.clone()), Some(g)))
    }
}

/// The residual's gradient `dy·s + 0`: candle's `affine(s, 0)` (the same two roundings, so also the sign
/// of a zero), on the rayon pool instead of the calling thread alone (candle's affine was ~1 % of a
/// training step, with the pool idle).
#[derive(Debug, Clone, Copy)]
struct ScaleGrad {
    scale: f64,
}

impl ScaleGrad {
    fn run<T: Real>(&self, dy: &[T]) -> Vec<T> {
        let s = T::from_f64(self.scale);
        let mut out = zeroed::<T>(dy.len());
        out.par_chunks_mut(CHUNK)
            .zip(dy.par_chunks(CHUNK))
            .for_each(|(o, dy)| {
                for (o, &d) in o.iter_mut().zip(dy) {
                    *o = d * s + T::zero();
                }
            });
        out
    }
}

impl CustomOp1 for ScaleGrad {
    fn name(&self) -> &'static str {
        "msd-residual-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = by_dtype1!(s, l, "residual gradient", |x| self.run(x));
        Ok((out, l.shape().clone()))
    }
}

/// `(x + h)·scale` for tensors of one shape and dtype.
pub fn residual(x: &Tensor, h: &Tensor, scale: f64) -> Result<Tensor> {
    if x.dims() != h.dims() || x.dtype() != h.dtype() {
        candle_core::bail!(
            "residual: the summands are {:?} {:?} and {:?} {:?}",
            x.dims(),
            x.dtype(),
            h.dims(),
            h.dtype()
        );
    }
    if applies(&[x, h]) {
        return x
            .contiguous()?
            .apply_op2(&h.contiguous()?, Residual { scale });
    }
    (x + h)?.affine(scale, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{check_finite_differences, rand_tensor, value_and_grads};
    use crate::kernels::with_kernels;
    use candle_core::{DType, Device};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Output and both gradients equal the candle composition exactly (the same roundings), on sizes
        /// on both sides of one rayon chunk.
        #[test]
        fn matches_candle_exactly(n in 1usize..(3 * CHUNK), seed in 0u64..1000) {
            let dev = Device::Cpu;
            for dtype in [DType::F32, DType::F64] {
                let x = rand_tensor(&[n], seed, dtype, &dev);
                let h = rand_tensor(&[n], seed + 1, dtype, &dev);
                let s = std::f64::consts::FRAC_1_SQRT_2;
                let op = |t: &[Tensor]| residual(&t[0], &t[1], s);
                let fast = value_and_grads(&[&x, &h], |t| with_kernels(true, || op(t)), seed + 2);
                let plain = value_and_grads(&[&x, &h], |t| with_kernels(false, || op(t)), seed + 2);
                prop_assert_eq!(fast, plain);
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences_f64() {
        let dev = Device::Cpu;
        let x = rand_tensor(&[2, 3, 4, 5], 1, DType::F64, &dev);
        let h = rand_tensor(&[2, 3, 4, 5], 2, DType::F64, &dev);
        check_finite_differences(
            &[&x, &h],
            |t| with_kernels(true, || residual(&t[0], &t[1], 0.7)),
            3,
        );
    }

    #[test]
    fn mismatched_summands_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        for h in [
            Tensor::zeros((3, 2), DType::F32, &dev).unwrap(),
            Tensor::zeros((2, 3), DType::F64, &dev).unwrap(),
        ] {
            let e = with_kernels(true, || residual(&x, &h, 1.0)).unwrap_err();
            assert!(e.to_string().contains("residual: the summands"), "{e}");
        }
    }
}
