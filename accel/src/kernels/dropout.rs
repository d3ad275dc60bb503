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
use multiversion::multiversion;
use rayon::prelude::*;

use super::{applies, slice, zeroed, Real};

/// Elements per rayon task.
const CHUNK: usize = 1 << 15;

/// The top 53 bits of the `i`-th output of SplitMix64 seeded with `seed`; times 2⁻⁵³, a uniform number
/// in `[0, 1)`.
#[inline(always)]
fn bits53(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z >> 11
}

/// One dropout mask: drop probability and seed. Also applied inside the fused GroupNorm (+ SiLU) kernel
/// (`group_norm::group_norm_silu_dropout`), with the same element indices, so the two give the same mask.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dropout {
    p: f64,
    seed: u64,
    /// `⌈p·2⁵³⌉`: the uniform `u = bits·2⁻⁵³` satisfies `u ≥ p` exactly when `bits ≥ ⌈p·2⁵³⌉` (`p·2⁵³` is
    /// exact, `bits` an integer), so the keep test compares integers; the conversion to f64 per element
    /// (scalar without AVX-512) was most of dropout's time.
    threshold: u64,
}

impl Dropout {
    pub(super) fn new(p: f64, seed: u64) -> Self {
        let threshold = (p * (1u64 << 53) as f64).ceil() as u64;
        Self { p, seed, threshold }
    }

    /// Whether element `i` is kept: the stream's `i`-th uniform number is at least `p`.
    #[inline(always)]
    pub(super) fn kept(&self, i: usize) -> bool {
        bits53(self.seed, i as u64) >= self.threshold
    }

    pub(super) fn p(&self) -> f64 {
        self.p
    }

    pub(super) fn seed(&self) -> u64 {
        self.seed
    }

    /// The factor of a kept element, `1/(1 − p)`, rounded once to `T`.
    pub(super) fn scale<T: Real>(&self) -> T {
        T::from_f64(1.0 / (1.0 - self.p))
    }

    /// The mask value of element `i` in `T`, given [`Self::scale`]: the scale or 0.
    #[inline(always)]
    pub(super) fn factor<T: Real>(&self, i: usize, scale: T) -> T {
        if self.kept(i) {
            scale
        } else {
            T::zero()
        }
    }

    /// The mask value of element `i`: `1/(1 − p)` or 0.
    fn mask(&self, i: usize) -> f64 {
        self.factor(i, self.scale())
    }

    fn run<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut out = zeroed::<T>(x.len());
        let kept = self.scale::<T>();
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(c, (o, x))| apply_chunk(*self, c * CHUNK, x, o, kept));
        out
    }
}

/// `o = x·mask` for the elements from `first` on (`kept` = `1/(1 − p)` in `T`). Also compiled for AVX2 and
/// AVX-512 (see `kernels`): with AVX-512's 64-bit multiplies the whole hash vectorises.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq", "x86_64+avx2+fma"))]
fn apply_chunk<T: Real>(d: Dropout, first: usize, x: &[T], o: &mut [T], kept: T) {
    for (j, (o, x)) in o.iter_mut().zip(x).enumerate() {
        // A product either way (not a branch to 0), as `x * mask`: NaN stays NaN.
        *o = *x * d.factor(first + j, kept);
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "msd-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = by_dtype1!(s, l, "dropout", |x| self.run(x));
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
    check_probability(p)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    let op = Dropout::new(p, seed);
    if applies(&[x]) {
        return x.contiguous()?.apply_op1(op);
    }
    let mask: Vec<f64> = (0..x.elem_count()).map(|i| op.mask(i)).collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

/// The error of a drop probability outside `[0, 1)` (NaN included).
pub(super) fn check_probability(p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout: probability {p} is outside [0, 1)");
    }
    Ok(())
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
            assert_eq!(bits53(1234567, i as u64), w >> 11);
        }
    }

    proptest! {
        /// The integer keep test is the definition's `u ≥ p` with `u = bits·2⁻⁵³`, also for `p` and `u`
        /// equal or one ulp apart.
        #[test]
        fn the_integer_test_is_u_at_least_p(seed: u64, i in 0u64..1 << 40, p in 0.0f64..1.0, near in 0u8..4) {
            let u = bits53(seed, i) as f64 / (1u64 << 53) as f64;
            // Also p at u itself, one 2⁻⁵³ step below it and half a step above it (between two uniforms).
            let step = 1.0 / (1u64 << 53) as f64;
            let p = match near {
                0 => p,
                1 => u,
                2 => (u - step).max(0.0),
                _ => u + step / 2.0,
            };
            let op = Dropout::new(p, seed);
            prop_assert_eq!(op.kept(i as usize), u >= p);
            let above = Dropout::new((u + step).min(0.999), seed);
            prop_assert_eq!(above.kept(i as usize), u >= above.p);
        }
    }

    #[test]
    fn gradients_match_finite_differences_f64() {
        let dev = Device::Cpu;
        let x = rand_tensor(&[2, 3, 4, 5], 1, DType::F64, &dev);
        check_finite_differences(&[&x], |t| with_kernels(true, || dropout(&t[0], 0.3, 9)), 3);
    }

    /// The kernel itself (reached directly, past `dropout`'s fallback) refuses other dtypes by name.
    #[test]
    fn other_dtypes_are_errors_not_panics() {
        let x = Tensor::zeros(4, DType::F16, &Device::Cpu).unwrap();
        let e = x.apply_op1(Dropout::new(0.5, 1)).unwrap_err().to_string();
        assert!(
            e.contains("dropout: unsupported dtype F16 (f32 or f64)"),
            "{e}"
        );
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
