//! The optimiser's element-wise updates in place: Adam's moments, its parameter update, the weights' EMA,
//! and the squared norm of a gradient.
//!
//! Written as candle ops, one Adam step of a parameter was a dozen element-wise ops, each allocating (and
//! zero-filling) a parameter-sized tensor: for the paper model's 60 M-parameter stage that is several GB
//! of memory traffic per step and a few parameter-sized temporaries on top of the step's peak memory.
//! Here each update is one pass over its operands, written into the existing storage (candle's in-place
//! custom ops), in f64 per element. On other devices or dtypes, or with the kernels switched off, the plain
//! candle composition runs instead (it is also the tests' oracle).
//!
//! In place means what it says: the updated tensor must not share its storage with a tensor the caller
//! still wants unchanged. The optimiser's moments and the EMA's shadow weights are their own copies.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp3, Layout, Result, Tensor, Var};
use rayon::prelude::*;

use super::{applies, slice, Real};

/// Elements per rayon task.
const CHUNK: usize = 1 << 16;

/// The source term of a moving average: `t = scale·x + decay·p`, squared when `square`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Term {
    pub scale: f64,
    pub decay: f64,
    pub square: bool,
}

impl Term {
    /// `t = x`.
    pub const PLAIN: Term = Term {
        scale: 1.0,
        decay: 0.0,
        square: false,
    };

    #[inline(always)]
    fn at(&self, x: f64, p: f64) -> f64 {
        let t = self.scale * x + self.decay * p;
        if self.square {
            t * t
        } else {
            t
        }
    }
}

/// `acc ← β·acc + (1 − β)·t` with `t` from `x` and `p` ([`Term`]; `p` enters only as `decay·p`).
/// Adam's first moment is `Term { scale: clip, decay: wd, square: false }`, its second the same squared,
/// the EMA of the weights `Term::PLAIN` of the weights.
pub fn ema_update(acc: &mut Tensor, x: &Tensor, p: &Tensor, beta: f64, term: Term) -> Result<()> {
    for (what, t) in [("source", x), ("parameter", p)] {
        if t.dims() != acc.dims() || t.dtype() != acc.dtype() {
            candle_core::bail!(
                "moving average: the {what} is {:?} {:?}, the average {:?} {:?}",
                t.dims(),
                t.dtype(),
                acc.dims(),
                acc.dtype()
            );
        }
    }
    if applies(&[acc, x, p]) && [&*acc, x, p].iter().all(|t| t.is_contiguous()) {
        return acc.inplace_op3(x, p, &EmaOp { beta, term });
    }
    *acc = ema_plain(acc, x, p, beta, term)?;
    Ok(())
}

/// [`ema_update`] as candle ops (a new tensor).
fn ema_plain(acc: &Tensor, x: &Tensor, p: &Tensor, beta: f64, term: Term) -> Result<Tensor> {
    let mut t = x.affine(term.scale, 0.0)?;
    if term.decay != 0.0 {
        t = (t + p.affine(term.decay, 0.0)?)?;
    }
    if term.square {
        t = t.sqr()?;
    }
    // Detached: the sources may be Vars, and a recorded op would keep every earlier average alive.
    (acc.affine(beta, 0.0)? + t.affine(1.0 - beta, 0.0)?).map(|t| t.detach())
}

/// Adam's parameter update: `p ← keep·p − step·m / (√v·r + ε)`, where the caller folds the bias
/// corrections into `step = lr/(1 − β₁ˢ)` and `r = 1/√(1 − β₂ˢ)`, and AdamW's decay into `keep = 1 − lr·wd`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamApply {
    pub keep: f64,
    pub step: f64,
    pub r: f64,
    pub eps: f64,
}

impl AdamApply {
    #[inline(always)]
    fn at(&self, p: f64, m: f64, v: f64) -> f64 {
        self.keep * p - self.step * m / (v.sqrt() * self.r + self.eps)
    }
}

/// Applies [`AdamApply`] to the variable `p` with moments `m`, `v`.
pub fn adam_apply(p: &Var, m: &Tensor, v: &Tensor, a: AdamApply) -> Result<()> {
    let pt = p.as_tensor();
    for (what, t) in [("first moment", m), ("second moment", v)] {
        if t.dims() != pt.dims() || t.dtype() != pt.dtype() {
            candle_core::bail!(
                "adam: the {what} is {:?} {:?}, the parameter {:?} {:?}",
                t.dims(),
                t.dtype(),
                pt.dims(),
                pt.dtype()
            );
        }
    }
    if applies(&[pt, m, v]) && [pt, m, v].iter().all(|t| t.is_contiguous()) {
        return pt.inplace_op3(m, v, &AdamOp(a));
    }
    p.set(&adam_plain(pt, m, v, a)?)
}

/// [`adam_apply`]'s new parameter value as candle ops.
fn adam_plain(p: &Tensor, m: &Tensor, v: &Tensor, a: AdamApply) -> Result<Tensor> {
    let denom = v.sqrt()?.affine(a.r, a.eps)?;
    let upd = (m / denom)?.affine(a.step, 0.0)?;
    let base = if a.keep != 1.0 {
        p.affine(a.keep, 0.0)?
    } else {
        p.clone()
    };
    (base - upd).map(|t| t.detach())
}

/// `Σ x²` in f64 (a gradient's contribution to the global norm), without a squared copy of `x`.
pub fn sum_squares(x: &Tensor) -> Result<f64> {
    if applies(&[x]) {
        let (s, l) = x.storage_and_layout();
        if let candle_core::Storage::Cpu(s) = &*s {
            if l.is_contiguous() {
                return match s {
                    CpuStorage::F32(_) => sum_sq(slice::<f32>(s, l, "sum of squares")?),
                    CpuStorage::F64(_) => sum_sq(slice::<f64>(s, l, "sum of squares")?),
                    _ => unreachable!("applies() admits f32 and f64 only"),
                };
            }
        }
    }
    x.to_dtype(candle_core::DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()
}

fn sum_sq<T: Real>(x: &[T]) -> Result<f64> {
    Ok(x.par_chunks(CHUNK)
        .map(|c| super::sum_f64(c, |v| v * v))
        .sum())
}

/// The contiguous data of an in-place op's destination, as a mutable slice.
fn dst_slice<'a, T>(data: &'a mut [T], l: &Layout, what: &str) -> Result<&'a mut [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) if b <= data.len() => Ok(&mut data[a..b]),
        _ => candle_core::bail!("{what}: the kernel needs a contiguous tensor to update"),
    }
}

/// `dst[i] ← f(dst[i], a[i], b[i])` over equal-length slices, in parallel chunks.
fn zip3<T: Real>(
    dst: &mut [T],
    a: &[T],
    b: &[T],
    what: &str,
    f: impl Fn(f64, f64, f64) -> f64 + Sync,
) -> Result<()> {
    if a.len() != dst.len() || b.len() != dst.len() {
        candle_core::bail!(
            "{what}: operands of {}, {} and {} elements",
            dst.len(),
            a.len(),
            b.len()
        );
    }
    dst.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(d, (a, b))| {
            for ((d, a), b) in d.iter_mut().zip(a).zip(b) {
                *d = T::from_f64(f(d.to_f64(), a.to_f64(), b.to_f64()));
            }
        });
    Ok(())
}

/// Dispatches an in-place op with two read-only operands over f32/f64.
macro_rules! inplace3 {
    ($name:expr, $s1:expr, $l1:expr, $s2:expr, $l2:expr, $s3:expr, $l3:expr, $f:expr) => {
        match $s1 {
            CpuStorage::F32(d) => zip3(
                dst_slice(d, $l1, $name)?,
                slice::<f32>($s2, $l2, $name)?,
                slice::<f32>($s3, $l3, $name)?,
                $name,
                $f,
            ),
            CpuStorage::F64(d) => zip3(
                dst_slice(d, $l1, $name)?,
                slice::<f64>($s2, $l2, $name)?,
                slice::<f64>($s3, $l3, $name)?,
                $name,
                $f,
            ),
            s => candle_core::bail!("{}: unsupported dtype {:?} (f32 or f64)", $name, s.dtype()),
        }
    };
}

struct EmaOp {
    beta: f64,
    term: Term,
}

impl InplaceOp3 for EmaOp {
    fn name(&self) -> &'static str {
        "msd-ema-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (beta, term) = (self.beta, self.term);
        inplace3!(self.name(), s1, l1, s2, l2, s3, l3, move |acc, x, p| beta
            * acc
            + (1.0 - beta) * term.at(x, p))
    }
}

struct AdamOp(AdamApply);

impl InplaceOp3 for AdamOp {
    fn name(&self) -> &'static str {
        "msd-adam-apply"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let a = self.0;
        inplace3!(self.name(), s1, l1, s2, l2, s3, l3, move |p, m, v| a
            .at(p, m, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{rand_tensor, to_vec as vals};
    use crate::kernels::with_kernels;
    use candle_core::{DType, Device};
    use proptest::prelude::*;

    /// `got` within `k·ε·mag_i` of `want`, element by element.
    fn assert_within(got: &[f64], want: &[f64], mag: &[f64], k: f64, eps: f64) {
        assert_eq!(got.len(), want.len());
        for (i, ((g, w), m)) in got.iter().zip(want).zip(mag).enumerate() {
            assert!(
                (g - w).abs() <= k * eps * m,
                "element {i}: {g} vs {w} (mag {m})"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The in-place moving average against the candle composition, f64 and f32, sizes on both sides of
        /// one rayon chunk. Each path rounds at most five times (scale, decay, sum, square, blend) values
        /// bounded by `mag`; the kernel computes in f64 and rounds once to the dtype.
        #[test]
        fn moving_average_matches_candle(
            n in 1usize..(3 * CHUNK), seed in 0u64..1000, beta in 0.5f64..0.9999,
            scale in 0.1f64..2.0, decay in prop_oneof![Just(0.0f64), 0.001f64..0.1], square: bool,
        ) {
            let dev = Device::Cpu;
            let term = Term { scale, decay, square };
            for (dtype, eps) in [(DType::F64, f64::EPSILON), (DType::F32, f32::EPSILON as f64)] {
                let acc0 = rand_tensor(&[n], seed, dtype, &dev);
                let x = rand_tensor(&[n], seed + 1, dtype, &dev);
                let p = rand_tensor(&[n], seed + 2, dtype, &dev);
                let mut fast = acc0.copy().unwrap();
                with_kernels(true, || ema_update(&mut fast, &x, &p, beta, term)).unwrap();
                let mut plain = acc0.clone();
                with_kernels(false, || ema_update(&mut plain, &x, &p, beta, term)).unwrap();
                let (a, xv, pv) = (vals(&acc0), vals(&x), vals(&p));
                let mag: Vec<f64> = (0..n)
                    .map(|i| {
                        let t = (scale * xv[i]).abs() + (decay * pv[i]).abs();
                        beta * a[i].abs() + (1.0 - beta) * if square { t * t } else { t }
                    })
                    .collect();
                assert_within(&vals(&fast), &vals(&plain), &mag, 6.0, eps);
                // The source tensors are untouched.
                prop_assert_eq!(vals(&x), xv);
            }
        }

        /// Adam's parameter update against the candle composition (sqrt, affine, divide, affine, subtract).
        #[test]
        fn adam_update_matches_candle(
            n in 1usize..(3 * CHUNK), seed in 0u64..1000, lr in 1e-5f64..1e-2, keep in prop_oneof![Just(1.0f64), 0.99f64..1.0],
            s in 1i32..2000,
        ) {
            let dev = Device::Cpu;
            let a = AdamApply {
                keep,
                step: lr / (1.0 - 0.9f64.powi(s)),
                r: 1.0 / (1.0 - 0.999f64.powi(s)).sqrt(),
                eps: 1e-8,
            };
            for (dtype, eps) in [(DType::F64, f64::EPSILON), (DType::F32, f32::EPSILON as f64)] {
                let p0 = rand_tensor(&[n], seed, dtype, &dev);
                let m = rand_tensor(&[n], seed + 1, dtype, &dev);
                let v = rand_tensor(&[n], seed + 2, dtype, &dev).abs().unwrap();
                let fast = Var::from_tensor(&p0).unwrap();
                with_kernels(true, || adam_apply(&fast, &m, &v, a)).unwrap();
                let plain = Var::from_tensor(&p0).unwrap();
                with_kernels(false, || adam_apply(&plain, &m, &v, a)).unwrap();
                let (pv, mv, vv) = (vals(&p0), vals(&m), vals(&v));
                let mag: Vec<f64> = (0..n)
                    .map(|i| (keep * pv[i]).abs() + a.step * mv[i].abs() / (vv[i].sqrt() * a.r + a.eps))
                    .collect();
                assert_within(&vals(fast.as_tensor()), &vals(plain.as_tensor()), &mag, 8.0, eps);
            }
        }
    }

    #[test]
    fn sum_of_squares_matches_a_plain_sum() {
        let dev = Device::Cpu;
        for n in [1, 7, CHUNK + 3] {
            for dtype in [DType::F32, DType::F64] {
                let x = rand_tensor(&[n], n as u64, dtype, &dev);
                let want: f64 = vals(&x).iter().map(|v| v * v).sum();
                let got = with_kernels(true, || sum_squares(&x)).unwrap();
                // Non-negative terms summed in a different order: relative n·ε.
                assert!(
                    (got - want).abs() <= n as f64 * f64::EPSILON * want,
                    "{got} vs {want}"
                );
            }
        }
        // A non-contiguous view goes through the candle composition.
        let x = rand_tensor(&[3, 4], 5, DType::F32, &dev);
        let t = x.t().unwrap();
        let want: f64 = vals(&x).iter().map(|v| v * v).sum();
        let got = with_kernels(true, || sum_squares(&t)).unwrap();
        assert!((got - want).abs() <= 12.0 * f64::EPSILON * want);
    }

    #[test]
    fn bad_operands_are_errors() {
        let dev = Device::Cpu;
        let mut acc = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let short = Tensor::zeros(3, DType::F32, &dev).unwrap();
        let e = ema_update(&mut acc, &short, &short, 0.9, Term::PLAIN).unwrap_err();
        assert!(e.to_string().contains("moving average"), "{e}");
        let wide = Tensor::zeros(4, DType::F64, &dev).unwrap();
        assert!(ema_update(&mut acc, &wide, &wide, 0.9, Term::PLAIN).is_err());
        // The average may not be its own source (in place, that would read what it already overwrote).
        let same = acc.clone();
        let e = with_kernels(true, || {
            ema_update(&mut acc, &same, &same, 0.9, Term::PLAIN)
        })
        .unwrap_err();
        assert!(e.to_string().contains("shares storage"), "{e}");
        let p = Var::zeros(4, DType::F32, &dev).unwrap();
        assert!(adam_apply(
            &p,
            &short,
            &short,
            AdamApply {
                keep: 1.0,
                step: 0.1,
                r: 1.0,
                eps: 1e-8
            }
        )
        .is_err());
    }

    /// A transposed (non-contiguous) average is updated through the candle composition, correctly.
    #[test]
    fn non_contiguous_operands_fall_back() {
        let dev = Device::Cpu;
        let base = rand_tensor(&[3, 5], 9, DType::F64, &dev);
        let mut acc = base.t().unwrap();
        let x = rand_tensor(&[5, 3], 10, DType::F64, &dev);
        with_kernels(true, || ema_update(&mut acc, &x, &x, 0.75, Term::PLAIN)).unwrap();
        let (a, xv, got) = (vals(&base.t().unwrap()), vals(&x), vals(&acc));
        for i in 0..15 {
            let want = 0.75 * a[i] + 0.25 * xv[i];
            assert!(
                (got[i] - want).abs() <= 4.0 * f64::EPSILON,
                "{i}: {} vs {want}",
                got[i]
            );
        }
    }
}
