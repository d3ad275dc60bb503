//! Dot-product attention over positions, fused: `O = V·softmax(s·QᵀK)ᵀ` for each of `N` independent
//! `C × T` triples (`N` = batch × heads), forward and backward as GEMMs (`blas.rs`) around one softmax pass.
//!
//! candle's composition (`matmul`, scale, `softmax`, `matmul`) runs its `gemm` crate one batch item after
//! another and keeps the `T × T` logits and weights of every item alive for the backward. Here the items run
//! in parallel on rayon, each with its `T × T` weights in a reused scratch buffer, and the backward
//! recomputes the weights instead of storing them (one more `C·T²` product, no `N·T²` tensor held between
//! forward and backward).
//!
//! With `P = softmax_rows(s·QᵀK)` (`T × T`, row `i` = query position `i`) and `O = V·Pᵀ`:
//! `dV = dO·P`, `dP = dOᵀ·V`, `dL = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = s·K·dLᵀ`, `dK = s·Q·dL`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::scratch::Scratch;
use multiversion::multiversion;

use super::{applies, same_dtype, slice, sum_f64, zeroed, Real};

/// The common shape `[N, C, T]` of the three inputs.
fn dims3(what: &str, ls: &[&Layout]) -> Result<(usize, usize, usize)> {
    let d = ls[0].shape().dims();
    match *d {
        [n, c, t] if ls.iter().all(|l| l.shape().dims() == d) && c > 0 && t > 0 => Ok((n, c, t)),
        _ => candle_core::bail!(
            "{what}: q, k and v must share one [N, C, T] shape with C, T ≥ 1, got {:?}",
            ls.iter()
                .map(|l| l.shape().dims().to_vec())
                .collect::<Vec<_>>()
        ),
    }
}

/// `p ← softmax_rows(scale·p)` in place on a `t × t` matrix: the maximum subtracted and the argument
/// formed in f64, the exponential in `T` (in f32 the vectorised [`super::math::exp_f32`]: libm's scalar
/// f64 `exp` was ~4 % of a forward pass), the row sum in f64.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq", "x86_64+avx2+fma"))]
fn softmax_rows<T: Real>(p: &mut [T], t: usize, scale: f64) {
    for row in p.chunks_exact_mut(t) {
        let max = row
            .iter()
            .map(|v| v.to_f64() * scale)
            .fold(f64::NEG_INFINITY, f64::max);
        for v in row.iter_mut() {
            *v = T::from_f64(v.to_f64() * scale - max).exp_t();
        }
        let inv = 1.0 / sum_f64(row, |v| v);
        for v in row.iter_mut() {
            *v = T::from_f64(v.to_f64() * inv);
        }
    }
}

/// The weights `P` of one item into `p` (`t × t`).
fn weights<T: Real>(q: &[T], k: &[T], c: usize, t: usize, scale: f64, p: &mut [T]) -> Result<()> {
    T::gemm(true, false, t, t, c, q, k, T::zero(), p)?;
    softmax_rows(p, t, scale);
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Attention {
    scale: f64,
}

impl Attention {
    fn run<T: Real>(&self, q: &[T], k: &[T], v: &[T], c: usize, t: usize) -> Result<Vec<T>> {
        let mut out = zeroed::<T>(q.len());
        out.par_chunks_mut(c * t)
            .enumerate()
            .try_for_each(|(i, o)| -> Result<()> {
                let r = i * c * t..(i + 1) * c * t;
                let mut p = Scratch::<T>::new(t * t);
                weights(&q[r.clone()], &k[r.clone()], c, t, self.scale, &mut p)?;
                T::gemm(false, true, c, t, t, &v[r], &p, T::zero(), o)
            })?;
        Ok(out)
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "msd-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, t) = dims3(self.name(), &[lq, lk, lv])?;
        let out = by_dtype3!(((sq, lq), (sk, lk), (sv, lv)), self.name(), |q, k, v| self
            .run(q, k, v, c, t)?);
        Ok((out, Shape::from((n, c, t))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        d_out: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = q.dim(1)?;
        let qkv = Tensor::cat(&[q, k, v], 1)?;
        let all =
            qkv.apply_op2_no_bwd(&d_out.contiguous()?, &AttentionGrad { scale: self.scale })?;
        Ok((
            Some(all.narrow(1, 0, c)?),
            Some(all.narrow(1, c, c)?),
            Some(all.narrow(1, 2 * c, c)?),
        ))
    }
}

/// The backward: inputs `[Q; K; V]` stacked on the channel axis (`[N, 3C, T]`) and `dO` (`[N, C, T]`);
/// output `[dQ; dK; dV]` stacked the same way.
#[derive(Debug, Clone, Copy)]
struct AttentionGrad {
    scale: f64,
}

impl AttentionGrad {
    fn run<T: Real>(&self, qkv: &[T], d_out: &[T], c: usize, t: usize) -> Result<Vec<T>> {
        let ct = c * t;
        let mut grads = zeroed::<T>(qkv.len());
        grads
            .par_chunks_mut(3 * ct)
            .zip(qkv.par_chunks(3 * ct))
            .zip(d_out.par_chunks(ct))
            .try_for_each(|((g, x), dout)| -> Result<()> {
                let (q, rest) = x.split_at(ct);
                let (k, v) = rest.split_at(ct);
                let (dq, rest) = g.split_at_mut(ct);
                let (dk, dv) = rest.split_at_mut(ct);
                let mut p = Scratch::<T>::new(t * t);
                let mut dp = Scratch::<T>::new(t * t);
                weights(q, k, c, t, self.scale, &mut p)?;
                T::gemm(false, false, c, t, t, dout, &p, T::zero(), dv)?;
                T::gemm(true, false, t, t, c, dout, v, T::zero(), &mut dp)?;
                // dp ← s·P ⊙ (dP − rowsum(P ⊙ dP)): the gradient of the unscaled logits QᵀK.
                for (pr, dr) in p.chunks_exact(t).zip(dp.chunks_exact_mut(t)) {
                    let dot: f64 = pr
                        .iter()
                        .zip(dr.iter())
                        .map(|(a, b)| a.to_f64() * b.to_f64())
                        .sum();
                    for (a, b) in pr.iter().zip(dr.iter_mut()) {
                        *b = T::from_f64(self.scale * a.to_f64() * (b.to_f64() - dot));
                    }
                }
                T::gemm(false, true, c, t, t, k, &dp, T::zero(), dq)?;
                T::gemm(false, false, c, t, t, q, &dp, T::zero(), dk)
            })?;
        Ok(grads)
    }
}

impl CustomOp2 for AttentionGrad {
    fn name(&self) -> &'static str {
        "msd-attention-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (n, c, t) = match (l1.shape().dims(), l2.shape().dims()) {
            (&[n, c3, t], &[n2, c, t2]) if n == n2 && t == t2 && c3 == 3 * c => (n, c, t),
            (a, b) => candle_core::bail!(
                "{name}: shapes {a:?} and {b:?} do not fit [N, 3C, T], [N, C, T]"
            ),
        };
        let out = by_dtype!(s1, l1, s2, l2, name, |qkv, d_out| self
            .run(qkv, d_out, c, t)?);
        Ok((out, Shape::from((n, 3 * c, t))))
    }
}

/// Multi-head dot-product attention over positions. `q`, `k`, `v`: `[N, C, T]` (`N` = batch × heads);
/// returns `[N, C, T]`, output position `i` = `Σ_j v[:, j]·softmax_j(scale·q[:, i]·k[:, j])`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    if applies(&[q, k, v]) {
        same_dtype("attention", q, k)?;
        same_dtype("attention", q, v)?;
        return q
            .contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, Attention { scale });
    }
    let logits = (q.t()?.contiguous()?.matmul(&k.contiguous()?)? * scale)?; // [N, Tq, Tk]
    let w = candle_nn::ops::softmax(&logits, candle_core::D::Minus1)?;
    v.contiguous()?.matmul(&w.t()?)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::with_kernels;
    use super::*;
    use candle_core::{DType, Device};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Output and the three gradients against candle's matmul/softmax composition (f32).
        #[test]
        fn matches_candle(n in 1usize..4, c in 1usize..24, t in 1usize..80, seed in 0u64..1000) {
            let dev = Device::Cpu;
            let q = rand_tensor(&[n, c, t], seed, DType::F32, &dev);
            let k = rand_tensor(&[n, c, t], seed + 1, DType::F32, &dev);
            let v = rand_tensor(&[n, c, t], seed + 2, DType::F32, &dev);
            let s = 1.0 / (c as f64).sqrt();
            let f = |on: bool| {
                value_and_grads(&[&q, &k, &v], |x| with_kernels(on, || attention(&x[0], &x[1], &x[2], s)), seed + 3)
            };
            // Logits s·Σ_c of C products ≤ 1 err by ≤ C·s·ε (either summation order), which moves each
            // weight by a relative ≤ 2·C·s·ε; the f32 exponential of the argument x (|x| ≤ 2·C·s) rounded
            // to f32 adds ≤ |x|·ε/2 + 2ε (the argument's rounding, exp_f32's bound), ≤ (C·s + 2)·ε; outputs
            // and gradients are sums of ≤ T + C terms whose size is bounded by 2·C·s (the largest, in dQ
            // and dK): tolerance 4·(C + T)·(2 + 3·C·s)·ε.
            let cs = c as f64 * s;
            let tol = 4.0 * (c + t) as f64 * (2.0 + 3.0 * cs) * f32::EPSILON as f64;
            assert_close_all(&f(true), &f(false), tol);
        }
    }

    #[test]
    fn gradients_match_finite_differences_f64() {
        let dev = Device::Cpu;
        for (n, c, t) in [(2, 3, 5), (1, 4, 1), (3, 1, 7)] {
            let q = rand_tensor(&[n, c, t], 41, DType::F64, &dev);
            let k = rand_tensor(&[n, c, t], 42, DType::F64, &dev);
            let v = rand_tensor(&[n, c, t], 43, DType::F64, &dev);
            check_finite_differences(
                &[&q, &k, &v],
                |x| with_kernels(true, || attention(&x[0], &x[1], &x[2], 0.7)),
                44,
            );
        }
    }

    /// One query over two positions by hand: weights softmax(s·[q·k0, q·k1]).
    #[test]
    fn hand_value() {
        let dev = Device::Cpu;
        // C = 1, T = 2: q = [1, 0], k = [2, 0], v = [3, 5], scale 0.5.
        let q = Tensor::from_vec(vec![1f64, 0.], (1, 1, 2), &dev).unwrap();
        let k = Tensor::from_vec(vec![2f64, 0.], (1, 1, 2), &dev).unwrap();
        let v = Tensor::from_vec(vec![3f64, 5.], (1, 1, 2), &dev).unwrap();
        let o: Vec<f64> = with_kernels(true, || attention(&q, &k, &v, 0.5))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Query 0: logits 0.5·[2, 0] → weights [e/(e+1), 1/(e+1)]; query 1: logits [0, 0] → [½, ½].
        let e = 1f64.exp();
        let want = [(3.0 * e + 5.0) / (e + 1.0), 4.0];
        for (a, b) in o.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{o:?} vs {want:?}");
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let dev = Device::Cpu;
        let a = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((2, 3, 5), DType::F32, &dev).unwrap();
        let d = Tensor::zeros((2, 3, 4), DType::F64, &dev).unwrap();
        let r2 = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
        with_kernels(true, || {
            assert!(attention(&a, &b, &a, 1.0).is_err());
            assert!(attention(&a, &a, &d, 1.0).is_err());
            assert!(attention(&r2, &r2, &r2, 1.0).is_err());
        });
    }
}
