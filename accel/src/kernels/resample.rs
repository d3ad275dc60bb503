//! The 2× nearest-neighbour up-sampling and 2×2 box down-sampling of DDPM++ (EDM's `[1,1]` resampling
//! filters) and LDM (`F.interpolate(nearest)`), on every `H × W` plane of an NCHW tensor.
//!
//! One op, [`Box2`], covers both directions, because each is the other's adjoint up to its gain:
//! - up (small → big): `y[2i + a, 2j + b] = g·x[i, j]` for `a, b ∈ {0, 1}`; rows and columns of the big
//!   plane beyond `2 × small` (an odd big size) are zero;
//! - down (big → small): `y[i, j] = g·Σ_{a,b} x[2i + a, 2j + b]`; an odd last row or column of the big plane
//!   is dropped, as `avg_pool2d(2)` does.
//!
//! `nearest_up` is up with `g = 1`, `box_down` is down with `g = ¼`; the gradient of each is the other
//! direction with the same gain. candle's plain versions (a broadcast + reshape copy whose backward is a
//! strided sum over the broadcast axes, and `avg_pool2d`) stay as the oracle and the non-CPU path.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{applies, slice, zeroed, Real};

/// Elements of output per rayon task (small planes are grouped so that a task is worth its overhead).
const TASK_ELEMS: usize = 1 << 14;

#[derive(Debug, Clone, Copy)]
struct Box2 {
    up: bool,
    gain: f64,
    big: (usize, usize),
    small: (usize, usize),
}

impl Box2 {
    fn in_hw(&self) -> (usize, usize) {
        if self.up {
            self.small
        } else {
            self.big
        }
    }

    fn out_hw(&self) -> (usize, usize) {
        if self.up {
            self.big
        } else {
            self.small
        }
    }

    fn adjoint(&self) -> Self {
        Self {
            up: !self.up,
            ..*self
        }
    }

    fn run<T: Real>(&self, x: &[T]) -> Vec<T> {
        let ((bh, bw), (sh, sw)) = (self.big, self.small);
        let (ih, iw) = self.in_hw();
        let (oh, ow) = self.out_hw();
        let (isz, osz) = (ih * iw, oh * ow);
        let planes = x.len().checked_div(isz).unwrap_or(0);
        let mut y = zeroed::<T>(planes * osz);
        if osz == 0 {
            return y;
        }
        let g = T::from_f64(self.gain);
        let per = (TASK_ELEMS / osz).max(1);
        y.par_chunks_mut(per * osz)
            .zip(x.par_chunks(per * isz))
            .for_each(|(y, x)| {
                for (y, x) in y.chunks_mut(osz).zip(x.chunks(isz)) {
                    for i in 0..sh {
                        if self.up {
                            let src = &x[i * sw..][..sw];
                            for a in 0..2 {
                                let dst = &mut y[(2 * i + a) * bw..][..2 * sw];
                                for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
                                    let v = g * s;
                                    d[0] = v;
                                    d[1] = v;
                                }
                            }
                        } else {
                            let r0 = &x[2 * i * bw..][..2 * sw];
                            let r1 = &x[(2 * i + 1) * bw..][..2 * sw];
                            let dst = &mut y[i * sw..][..sw];
                            for ((d, p), q) in dst
                                .iter_mut()
                                .zip(r0.chunks_exact(2))
                                .zip(r1.chunks_exact(2))
                            {
                                *d = g * ((p[0] + p[1]) + (q[0] + q[1]));
                            }
                        }
                    }
                }
            });
        debug_assert!(bh >= 2 * sh && bw >= 2 * sw);
        y
    }
}

impl CustomOp1 for Box2 {
    fn name(&self) -> &'static str {
        "msd-box2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c) = match *l.shape().dims() {
            [b, c, h, w] if (h, w) == self.in_hw() => (b, c),
            ref d => candle_core::bail!(
                "resample: expected an NCHW tensor with {:?} planes, got shape {d:?}",
                self.in_hw()
            ),
        };
        let out = by_dtype1!(s, l, "resample", |x| self.run(x));
        let (oh, ow) = self.out_hw();
        Ok((out, Shape::from((b, c, oh, ow))))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1(self.adjoint())?))
    }
}

/// Nearest-neighbour ×2 up-sampling: `H × W → 2H × 2W`.
pub fn nearest_up(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if applies(&[x]) {
        let op = Box2 {
            up: true,
            gain: 1.0,
            big: (2 * h, 2 * w),
            small: (h, w),
        };
        return x.contiguous()?.apply_op1(op);
    }
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

/// 2×2 average pooling: `H × W → ⌊H/2⌋ × ⌊W/2⌋`.
pub fn box_down(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if applies(&[x]) {
        if h < 2 || w < 2 {
            candle_core::bail!("box_down: plane {h}×{w} is smaller than the 2×2 window");
        }
        let op = Box2 {
            up: false,
            gain: 0.25,
            big: (h, w),
            small: (h / 2, w / 2),
        };
        return x.contiguous()?.apply_op1(op);
    }
    x.avg_pool2d(2)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::with_kernels;
    use super::*;
    use candle_core::{DType, Device};
    use proptest::prelude::*;

    type Op = fn(&Tensor) -> Result<Tensor>;
    const OPS: [(&str, Op); 2] = [("up", nearest_up), ("down", box_down)];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Output and gradient against candle's broadcast copy and `avg_pool2d` (f32; odd sizes included,
        /// and enough planes to split over several rayon tasks).
        #[test]
        fn matches_candle(b in 1usize..4, c in 1usize..70, h in 2usize..12, w in 2usize..12, seed in 0u64..1000) {
            let dev = Device::Cpu;
            let x = rand_tensor(&[b, c, h, w], seed, DType::F32, &dev);
            for (name, op) in OPS {
                // candle's avg_pool2d backward has the wrong shape for odd sizes (it drops the last row);
                // the networks only down-sample even sizes, and the finite-difference test covers odd ones.
                if name == "down" && (h % 2 == 1 || w % 2 == 1) {
                    continue;
                }
                let fast = value_and_grads(&[&x], |t| with_kernels(true, || op(&t[0])), seed + 1);
                let plain = value_and_grads(&[&x], |t| with_kernels(false, || op(&t[0])), seed + 1);
                // At most four terms of size ≤ 1 (times ¼) per entry, summed in either order.
                assert_close_all(&fast, &plain, 4.0 * f32::EPSILON as f64);
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences_f64() {
        let dev = Device::Cpu;
        for (h, w) in [(4, 4), (5, 6), (3, 2), (2, 7)] {
            let x = rand_tensor(&[2, 3, h, w], 31, DType::F64, &dev);
            for (_, op) in OPS {
                check_finite_differences(&[&x], |t| with_kernels(true, || op(&t[0])), 32);
            }
        }
    }

    /// Known values: a 2×2 plane up-sampled and a 4×4 plane pooled, by hand.
    #[test]
    fn hand_values() {
        let dev = Device::Cpu;
        with_kernels(true, || {
            let x = Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &dev).unwrap();
            let up: Vec<f32> = nearest_up(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(
                up,
                [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
            );
            let x =
                Tensor::from_vec((0..20).map(|v| v as f32).collect(), (1, 1, 4, 5), &dev).unwrap();
            let down: Vec<f32> = box_down(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // Rows 0-1 / 2-3, columns 0-1 / 2-3 (column 4 dropped): (0+1+5+6)/4, (2+3+7+8)/4, ...
            assert_eq!(down, [3.0, 5.0, 13.0, 15.0]);
        });
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let dev = Device::Cpu;
        let x3 = Tensor::zeros((2, 4, 4), DType::F32, &dev).unwrap();
        let x1 = Tensor::zeros((1, 1, 1, 5), DType::F32, &dev).unwrap();
        let xi = Tensor::zeros((1, 1, 4, 4), DType::U32, &dev).unwrap();
        with_kernels(true, || {
            for (_, op) in OPS {
                assert!(op(&x3).is_err());
            }
            assert!(box_down(&x1)
                .unwrap_err()
                .to_string()
                .contains("smaller than"));
            // Not f32/f64: the plain path, which gives candle's own answer or error, never a panic.
            let _ = nearest_up(&xi);
            let _ = box_down(&xi);
        });
    }
}
