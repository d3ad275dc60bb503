//! The per-channel separable 4-tap FIR resampling of NCSN++ (`[1,3,3,1]`), on every `H × W` plane of an NCHW
//! tensor.
//!
//! `corr` (stride `s`, padding `p`): `y[oy, ox] = Σ_{a,b} f_a·f_b·x[oy·s + a − p, ox·s + b − p]`, the
//! plain correlation `conv2d` computes. Its adjoint `corr_t` scatters `y` back the same way; that is
//! `conv_transpose2d` with the same kernel. Each is the other's gradient, so one op with a `transpose` flag
//! covers the forward and backward of down-sampling, blurring and up-sampling (score-SDE's
//! `upsample_2d` equals `corr_t` with stride 2, padding 1 and taps `2·[1,3,3,1]/8`).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{applies, slice, zeroed, Real};

/// One resampling: separable taps, stride, padding, direction and the input/output plane sizes.
#[derive(Debug, Clone, Copy)]
struct Fir {
    taps: [f64; 4],
    stride: usize,
    pad: usize,
    /// `false`: `corr` from the large plane `big` to the small plane `small`; `true`: `corr_t`, small → big.
    transpose: bool,
    big: (usize, usize),
    small: (usize, usize),
}

impl Fir {
    fn new(
        taps: [f64; 4],
        stride: usize,
        pad: usize,
        transpose: bool,
        input: (usize, usize),
    ) -> Result<Self> {
        let (big, small) = if transpose {
            let (h, w) = input;
            // conv_transpose2d size: (n − 1)·s − 2p + 4.
            let big = |n: usize| ((n.max(1) - 1) * stride + 4).checked_sub(2 * pad);
            match (big(h), big(w)) {
                (Some(bh), Some(bw)) if h > 0 && w > 0 && bh > 0 && bw > 0 => ((bh, bw), input),
                _ => candle_core::bail!("fir: input plane {h}×{w} is too small for padding {pad}"),
            }
        } else {
            let (h, w) = input;
            if h + 2 * pad < 4 || w + 2 * pad < 4 {
                candle_core::bail!(
                    "fir: input plane {h}×{w} is smaller than the 4×4 filter (padding {pad})"
                );
            }
            (
                input,
                (
                    (h + 2 * pad - 4) / stride + 1,
                    (w + 2 * pad - 4) / stride + 1,
                ),
            )
        };
        Ok(Self {
            taps,
            stride,
            pad,
            transpose,
            big,
            small,
        })
    }

    fn flipped(&self) -> Self {
        Self {
            transpose: !self.transpose,
            ..*self
        }
    }

    fn out_hw(&self) -> (usize, usize) {
        if self.transpose {
            self.big
        } else {
            self.small
        }
    }

    fn in_hw(&self) -> (usize, usize) {
        if self.transpose {
            self.small
        } else {
            self.big
        }
    }

    /// Output rows/columns `o` of the small plane whose tap `a` lands inside the big plane's `[0, n)`.
    fn range(&self, a: usize, n: usize, on: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if p > a { (p - a).div_ceil(s) } else { 0 };
        let hi = if n + p > a {
            ((n - 1 + p - a) / s + 1).min(on)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    fn run<T: Real>(&self, x: &[T]) -> Vec<T> {
        let ((bh, bw), (sh, sw)) = (self.big, self.small);
        let (ih, iw) = self.in_hw();
        let (oh, ow) = self.out_hw();
        let planes = x.len() / (ih * iw);
        let mut y = zeroed::<T>(planes * oh * ow);
        let f = self.taps;
        let (s, p) = (self.stride, self.pad);
        let cols: Vec<(usize, usize)> = (0..4).map(|b| self.range(b, bw, sw)).collect();
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(ih * iw))
            .for_each(|(y, x)| {
                for a in 0..4 {
                    let (ylo, yhi) = self.range(a, bh, sh);
                    for sy in ylo..yhi {
                        let by = sy * s + a - p;
                        for (b, &(xlo, xhi)) in cols.iter().enumerate() {
                            let fab = T::from_f64(f[a] * f[b]);
                            if self.transpose {
                                // big[by, sx·s + b − p] += f·small[sy, sx]
                                let src = &x[sy * sw..][..sw];
                                let dst = &mut y[by * bw..][..bw];
                                for sx in xlo..xhi {
                                    dst[sx * s + b - p] += fab * src[sx];
                                }
                            } else {
                                let src = &x[by * bw..][..bw];
                                let dst = &mut y[sy * sw..][..sw];
                                for sx in xlo..xhi {
                                    dst[sx] += fab * src[sx * s + b - p];
                                }
                            }
                        }
                    }
                }
            });
        y
    }
}

impl CustomOp1 for Fir {
    fn name(&self) -> &'static str {
        "msd-fir"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.shape().dims();
        let (b, c) = match dims {
            &[b, c, h, w] if (h, w) == self.in_hw() => (b, c),
            d => candle_core::bail!(
                "fir: expected an NCHW tensor with {:?} planes, got shape {d:?}",
                self.in_hw()
            ),
        };
        let out = by_dtype1!(s, l, "fir", |x| self.run(x));
        let (oh, ow) = self.out_hw();
        Ok((out, Shape::from((b, c, oh, ow))))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1(self.flipped())?))
    }
}

const BINOMIAL: [f64; 4] = [1.0 / 8.0, 3.0 / 8.0, 3.0 / 8.0, 1.0 / 8.0];

fn apply(x: &Tensor, taps: [f64; 4], stride: usize, pad: usize, transpose: bool) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    x.contiguous()?
        .apply_op1(Fir::new(taps, stride, pad, transpose, (h, w))?)
}

/// The 4×4 filter `gain·[1,3,3,1]ᵀ[1,3,3,1]/64` as a `[1, 1, 4, 4]` candle kernel (the plain path).
fn kernel(gain: f64, x: &Tensor) -> Result<Tensor> {
    let k: Vec<f64> = BINOMIAL
        .iter()
        .flat_map(|a| BINOMIAL.iter().map(move |b| a * b * gain))
        .collect();
    Tensor::from_vec(k, (1, 1, 4, 4), x.device())?.to_dtype(x.dtype())
}

/// Applies a single-channel candle op to every channel by folding channels into the batch.
fn per_channel(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let y = f(&x.reshape((b * c, 1, h, w))?)?;
    let (_, _, ho, wo) = y.dims4()?;
    y.reshape((b, c, ho, wo))
}

/// score-SDE `downsample_2d(x, [1,3,3,1], factor 2)`: upfirdn2d with pad (1, 1), down 2. H → H/2.
pub fn fir_down(x: &Tensor) -> Result<Tensor> {
    if applies(&[x]) {
        return apply(x, BINOMIAL, 2, 1, false);
    }
    let k = kernel(1.0, x)?;
    per_channel(x, |y| y.conv2d(&k, 1, 2, 1, 1))
}

/// score-SDE `upsample_2d(x, [1,3,3,1], factor 2)`: zero insertion, pad (2, 1), gain 4; equal to a stride-2
/// transposed convolution with padding 1. H → 2H.
pub fn fir_up(x: &Tensor) -> Result<Tensor> {
    if applies(&[x]) {
        return apply(x, BINOMIAL.map(|v| 2.0 * v), 2, 1, true);
    }
    let k = kernel(4.0, x)?;
    per_channel(x, |y| y.conv_transpose2d(&k, 1, 0, 2, 1))
}

/// 4×4 FIR blur with padding 2 (the first half of score-SDE's `conv_downsample_2d`): H → H + 1.
pub fn fir_blur_pad2(x: &Tensor) -> Result<Tensor> {
    if applies(&[x]) {
        return apply(x, BINOMIAL, 1, 2, false);
    }
    let k = kernel(1.0, x)?;
    per_channel(x, |y| y.conv2d(&k, 2, 1, 1, 1))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::with_kernels;
    use super::*;
    use candle_core::{DType, Device};
    use proptest::prelude::*;

    type Op = fn(&Tensor) -> Result<Tensor>;
    const OPS: [(&str, Op); 3] = [("down", fir_down), ("up", fir_up), ("blur", fir_blur_pad2)];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Output and gradient against candle's per-channel conv2d / conv_transpose2d (f32, random sizes,
        /// odd sizes included).
        #[test]
        fn matches_candle(b in 1usize..3, c in 1usize..4, h in 2usize..10, w in 2usize..10, seed in 0u64..1000) {
            let dev = Device::Cpu;
            let x = rand_tensor(&[b, c, h, w], seed, DType::F32, &dev);
            for (name, op) in OPS {
                // candle's conv2d input gradient has the wrong shape for a stride-2 conv of an odd size
                // (it drops the last row); the network only down-samples even sizes, and the
                // finite-difference test covers odd sizes of our kernel.
                if name == "down" && (h % 2 == 1 || w % 2 == 1) {
                    continue;
                }
                let fast = value_and_grads(&[&x], |t| with_kernels(true, || op(&t[0])), seed + 1);
                let plain = value_and_grads(&[&x], |t| with_kernels(false, || op(&t[0])), seed + 1);
                // 16 products of taps (sum ≤ 4 with gain 4) and values ≤ 1 per entry, either summation order.
                assert_close_all(&fast, &plain, 2.0 * 16.0 * 4.0 * f32::EPSILON as f64);
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences_f64() {
        let dev = Device::Cpu;
        for (h, w) in [(4, 4), (5, 6), (2, 3)] {
            let x = rand_tensor(&[2, 2, h, w], 21, DType::F64, &dev);
            for (_, op) in OPS {
                check_finite_differences(&[&x], |t| with_kernels(true, || op(&t[0])), 22);
            }
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let dev = Device::Cpu;
        let x3 = Tensor::zeros((2, 4, 4), DType::F32, &dev).unwrap();
        let x1 = Tensor::zeros((1, 1, 1, 1), DType::F32, &dev).unwrap();
        with_kernels(true, || {
            for (_, op) in OPS {
                assert!(op(&x3).is_err());
            }
            // 1×1 plane, padding 1: smaller than the 4×4 filter.
            assert!(fir_down(&x1)
                .unwrap_err()
                .to_string()
                .contains("smaller than"));
        });
    }
}
