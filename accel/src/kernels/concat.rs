//! Concatenation of two tensors along dimension 1 (the channels of the decoders' skip connections), the
//! batch elements copied in parallel.
//!
//! candle's CPU `cat` copies on the calling thread while the rayon pool waits: 15–20 ms of each forward of
//! the paper's U-Net at batch 8 (stage 2, two threads), a little more in a training step with the page
//! faults of the fresh output. The gradient is the pair of views `dy[:, ..C₁]` and `dy[:, C₁..]`, as in
//! candle's own `cat`, so the backward copies nothing itself.

use std::mem::MaybeUninit;

use super::{applies, par_filled, same_dtype, slice, Real};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

#[derive(Debug, Clone, Copy)]
struct CatChannels;

/// `(batch, values per element of a, of b)` after checking that the shapes differ only in dimension 1.
fn geometry(a: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
    if a.len() < 2 || a.len() != b.len() || a[0] != b[0] || a[2..] != b[2..] {
        candle_core::bail!(
            "cat along dimension 1: shapes {a:?} and {b:?} must agree in every other dimension"
        );
    }
    let inner: usize = a[2..].iter().product();
    Ok((a[0], a[1] * inner, b[1] * inner))
}

/// `dst[i] = src[i]` into uninitialised memory (the slices are as long; a `memcpy` once compiled).
fn write_copy<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| _ = d.write(*s));
}

/// Per batch element, its `ra` values of `a` followed by its `rb` values of `b`.
fn run<T: Real>(a: &[T], b: &[T], n: usize, ra: usize, rb: usize) -> Vec<T> {
    // SAFETY: each block is one element's `ra + rb` values, written by its two copies.
    unsafe {
        par_filled(n * (ra + rb), ra + rb, |i, o| {
            let (oa, ob) = o.split_at_mut(ra);
            write_copy(oa, &a[i * ra..][..ra]);
            write_copy(ob, &b[i * rb..][..rb]);
        })
    }
}

impl CustomOp2 for CatChannels {
    fn name(&self) -> &'static str {
        "msd-cat-channels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, ra, rb) = geometry(l1.dims(), l2.dims())?;
        let mut dims = l1.dims().to_vec();
        dims[1] += l2.dims()[1];
        let out = by_dtype!(s1, l1, s2, l2, "msd-cat-channels", |a, b| {
            if a.len() != n * ra || b.len() != n * rb {
                candle_core::bail!("msd-cat-channels: the inputs' data do not match their shapes");
            }
            run(a, b, n, ra, rb)
        });
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (ca, cb) = (a.dim(1)?, b.dim(1)?);
        Ok((Some(dy.narrow(1, 0, ca)?), Some(dy.narrow(1, ca, cb)?)))
    }
}

/// `cat([a, b], 1)`: the fast kernel on CPU tensors of f32/f64 (made contiguous), else candle's `cat`.
pub fn cat_channels(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !applies(&[a, b]) {
        return Tensor::cat(&[a, b], 1);
    }
    same_dtype("cat along dimension 1", a, b)?;
    a.contiguous()?.apply_op2(&b.contiguous()?, CatChannels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;
    use crate::kernels::with_kernels;
    use candle_core::{DType, Device};

    fn plain(a: &Tensor, b: &Tensor) -> Result<Tensor> {
        with_kernels(false, || Tensor::cat(&[a, b], 1))
    }

    /// Values and both gradients equal candle's `cat` exactly (a copy and two views), for NCHW and
    /// two-dimensional inputs, one batch element and several, in f32 and f64.
    #[test]
    fn matches_candle_cat() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for (da, db) in [
                (vec![3, 2, 4, 5], vec![3, 5, 4, 5]),
                (vec![1, 1, 2, 2], vec![1, 3, 2, 2]),
                (vec![4, 3], vec![4, 1]),
            ] {
                let a = rand_tensor(&da, 1, dtype, &dev);
                let b = rand_tensor(&db, 2, dtype, &dev);
                let (got, want) = compare_grads(
                    &[&a, &b],
                    |t| cat_channels(&t[0], &t[1]),
                    |t| plain(&t[0], &t[1]),
                    3,
                );
                assert_eq!(got, want, "{dtype:?} {da:?} + {db:?}");
            }
        }
    }

    /// Shapes that differ outside dimension 1, too few dimensions and mixed dtypes are errors.
    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let dev = Device::Cpu;
        let t = |d: &[usize], dt| rand_tensor(d, 4, dt, &dev);
        let f = DType::F32;
        assert!(cat_channels(&t(&[2, 3, 4], f), &t(&[2, 3, 5], f)).is_err());
        assert!(cat_channels(&t(&[2, 3, 4], f), &t(&[3, 3, 4], f)).is_err());
        assert!(cat_channels(&t(&[2, 3, 4], f), &t(&[2, 3], f)).is_err());
        assert!(cat_channels(&t(&[6], f), &t(&[6], f)).is_err());
        assert!(cat_channels(&t(&[2, 3], f), &t(&[2, 3], DType::F64)).is_err());
    }
}
