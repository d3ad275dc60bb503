//! Inverted dropout whose mask is a function of a seed and the element's index, so that the backward
//! regenerates the mask instead of keeping it.
//!
//! Element `i` is kept (and scaled by `1/(1 − p)`) when the `i`-th output of a SplitMix64 stream seeded
//! with `seed`, as a uniform number in `[0, 1)`, is at least `p`. Written as candle ops (`x * mask`), the
//! mask and the product were two activation-sized tensors alive until the backward ends (candle keeps
//! every node of the graph); here only the product is. The mask also comes out of parallel chunks instead
//! of one serial RNG stream (the serial draw was ~2 % of a training step). The candle composition with
//! the same mask stays as the oracle and the non-CPU path; both give bit-identical results.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{applies, slice, Real};

/// Elements per rayon task.
const CHUNK: usize = 1 << 15;

/// The `i`-th output of SplitMix64 seeded with `seed`, as a uniform number in `[0, 1)` (53 bits).
#[inline(always)]
fn unit(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[derive(Debug, Clone, Copy)]
struct Dropout {
    p: f64,
    seed: u64,
}

impl Dropout {
    /// Whether element `i` is kept.
    #[inline(always)]
    fn kept(&self, i: usize) -> bool {
        unit(self.seed, i as u64) >= self.p
    }

    /// The mask value of element `i`: `1/(1 − p)` or 0.
    fn mask(&self, i: usize) -> f64 {
        if self.kept(i) {
            1.0 / (1.0 - self.p)
        } else {
            0.0
        }
    }

    fn run<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        let kept = T::from_f64(1.0 / (1.0 - self.p));
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(c, (o, x))| {
                for (j, (o, x)) in o.iter_mut().zip(x).enumerate() {
                    // A product either way (not a branch to 0), as `x * mask`: NaN stays NaN.
                    let m = if self.kept(c * CHUNK + j) {
                        kept
                    } else {
                        T::zero()
                    };
                    *o = *x * m;
                }
            });
        out
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "msd-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.run(slice::<f32>(s, l, self.name())?)),
            CpuStorage::F64(_) => CpuStorage::F64(self.run(slice::<f64>(s, l, self.name())?)),
            other => candle_core::bail!(
                "dropout: unsupported dtype {:?} (f32 or f64)",
                other.dtype()
            ),
        };
        Ok((out, l.shape().clone()))
    }

    /// The same mask on the output gradient.
    fn bwd(&self, _x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// Inverted dropout with drop probability `p ∈ [0, 1)`: each element is zeroed with probability `p`, the
/// rest scaled by `1/(1 − p)`; the mask is determined by `seed` (same seed, same mask).
pub fn dropout(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout: probability {p} is outside [0, 1)");
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let op = Dropout { p, seed };
    if applies(&[x]) {
        return x.contiguous()?.apply_op1(op);
    }
    let mask: Vec<f64> = (0..x.elem_count()).map(|i| op.mask(i)).collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
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

        /// Output and gradient equal the candle composition with the same mask exactly, across chunks.
        #[test]
        fn matches_candle_exactly(n in 1usize..(3 * CHUNK), seed: u64, p in 0.01f64..0.9) {
            let dev = Device::Cpu;
            for dtype in [DType::F32, DType::F64] {
                let x = rand_tensor(&[n], seed % 1000, dtype, &dev);
                let op = |t: &[Tensor]| dropout(&t[0], p, seed);
                let fast = value_and_grads(&[&x], |t| with_kernels(true, || op(t)), 7);
                let plain = value_and_grads(&[&x], |t| with_kernels(false, || op(t)), 7);
                prop_assert_eq!(fast, plain);
            }
        }
    }

    /// The drop rate is p (binomial: within 5 standard deviations over 10⁶ elements), kept elements are
    /// scaled by exactly 1/(1 − p), and other seeds give other masks.
    #[test]
    fn drops_a_fraction_p_and_scales_the_rest() {
        let dev = Device::Cpu;
        let n = 1_000_000;
        let x = Tensor::ones(n, DType::F64, &dev).unwrap();
        for p in [0.1, 0.5] {
            let y = dropout(&x, p, 42).unwrap().to_vec1::<f64>().unwrap();
            let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (dropped - n as f64 * p).abs() < 5.0 * sd,
                "p {p}: {dropped} dropped"
            );
            assert!(y.iter().all(|&v| v == 0.0 || v == 1.0 / (1.0 - p)));
            let other = dropout(&x, p, 43).unwrap().to_vec1::<f64>().unwrap();
            assert_ne!(y, other);
        }
    }

    /// SplitMix64's published first outputs for seed 1234567 (the 53-bit uniform is the top 53 bits).
    #[test]
    fn the_stream_is_splitmix64() {
        let want: [u64; 3] = [
            6457827717110365317,
            3203168211198807973,
            9817491932198370423,
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(
                unit(1234567, i as u64),
                (w >> 11) as f64 / (1u64 << 53) as f64
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences_f64() {
        let dev = Device::Cpu;
        let x = rand_tensor(&[2, 3, 4, 5], 1, DType::F64, &dev);
        check_finite_differences(&[&x], |t| with_kernels(true, || dropout(&t[0], 0.3, 9)), 3);
    }

    #[test]
    fn probabilities_outside_0_1_are_errors() {
        let x = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
        for p in [-0.1, 1.0, f64::NAN] {
            let e = dropout(&x, p, 1).unwrap_err();
            assert!(e.to_string().contains("outside [0, 1)"), "{e}");
        }
        assert_eq!(
            dropout(&x, 0.0, 1).unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0; 3]
        );
    }
}
