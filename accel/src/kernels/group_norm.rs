//! GroupNorm with affine weight and bias, forward and backward each in one parallel pass.
//!
//! Per batch element `b` and group `g` (its `m = C/G · spatial` values), `x̂ = (x − μ)·r` with the biased
//! variance and `r = 1/sqrt(var + eps)` (candle_nn's and PyTorch's definition), `y = γ_c·x̂ + β_c`.
//! Backward, with `u = γ_c·dy`: `dx = r·(u − mean(u) − x̂·mean(u·x̂))` (means over the group),
//! `dγ_c = Σ dy·x̂`, `dβ_c = Σ dy` (sums over batch and spatial positions). Statistics accumulate in f64.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use multiversion::multiversion;

use super::dropout::{check_probability, dropout, Dropout};
use super::{applies, same_dtype, slice, sum_f64, sum_pairs_f64, zeroed, Real};

#[derive(Debug, Clone, Copy)]
struct Geom {
    b: usize,
    c: usize,
    groups: usize,
    /// Spatial positions per channel.
    s: usize,
    eps: f64,
}

impl Geom {
    fn new(dims: &[usize], groups: usize, eps: f64) -> Result<Self> {
        if dims.len() < 3 {
            candle_core::bail!("group_norm: input rank should be at least 3, got shape {dims:?}");
        }
        let (b, c) = (dims[0], dims[1]);
        if groups == 0 || c % groups != 0 {
            candle_core::bail!("group_norm: {groups} groups do not divide {c} channels");
        }
        Ok(Self {
            b,
            c,
            groups,
            s: dims[2..].iter().product(),
            eps,
        })
    }

    /// Values per group.
    fn m(&self) -> usize {
        self.c / self.groups * self.s
    }

    /// Mean and `1/sqrt(var + eps)` of one group (inlined into the callers' CPU-feature clones).
    #[inline(always)]
    fn stats<T: Real>(&self, x: &[T]) -> (f64, f64) {
        let m = x.len() as f64;
        let mean = sum_f64(x, |v| v) / m;
        let var = sum_f64(x, |v| (v - mean) * (v - mean)) / m;
        (mean, 1.0 / (var + self.eps).sqrt())
    }

    /// `y = γ·x̂ + β`, or `SiLU(γ·x̂ + β)` when `silu`; times the dropout mask when `drop` is given.
    fn forward<T: Real>(&self, x: &[T], gamma: &[T], beta: &[T], act: Act) -> Vec<T> {
        let m = self.m();
        let mut y = zeroed::<T>(x.len());
        y.par_chunks_mut(m)
            .zip(x.par_chunks(m))
            .enumerate()
            .for_each(|(bg, (y, x))| forward_group(*self, bg, x, y, gamma, beta, act));
        y
    }

    /// `[dx (B·C·S), dγ (C), dβ (C)]` in one buffer; `affine` is `[γ, β]` (`β` is read only with `silu`,
    /// whose derivative needs the pre-activation `z = γ·x̂ + β`: `SiLU'(z) = σ(z)·(1 + z·(1 − σ(z)))`).
    /// With dropout, `dy` is first multiplied by the forward's mask.
    fn backward<T: Real>(&self, x: &[T], affine: &[T], dy: &[T], act: Act) -> Vec<T> {
        let (gamma, beta) = affine.split_at(self.c);
        let (m, cg) = (self.m(), self.c / self.groups);
        let n = x.len();
        let mut out = zeroed::<T>(n + 2 * self.c);
        // Per (batch, channel) partial sums of dy·x̂ and dy.
        let mut partial = vec![(0.0f64, 0.0f64); self.b * self.c];
        out[..n]
            .par_chunks_mut(m)
            .zip(x.par_chunks(m).zip(dy.par_chunks(m)))
            .zip(partial.par_chunks_mut(cg))
            .enumerate()
            .for_each(|(bg, ((dx, (x, dy)), part))| {
                backward_group(*self, bg, x, dy, dx, part, gamma, beta, act)
            });
        for c in 0..self.c {
            let (mut dg, mut db) = (0.0, 0.0);
            for b in 0..self.b {
                dg += partial[b * self.c + c].0;
                db += partial[b * self.c + c].1;
            }
            out[n + c] = T::from_f64(dg);
            out[n + self.c + c] = T::from_f64(db);
        }
        out
    }
}

/// One group (batch element and group `bg`, its values `x`, `y`) of [`Geom::forward`]. Like every element
/// loop of the kernels, also compiled for AVX2 and AVX-512 and picked at run time (see `kernels`).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq", "x86_64+avx2+fma"))]
fn forward_group<T: Real>(
    g: Geom,
    bg: usize,
    x: &[T],
    y: &mut [T],
    gamma: &[T],
    beta: &[T],
    act: Act,
) {
    let silu = act.silu;
    let cg = g.c / g.groups;
    let (mean, r) = g.stats(x);
    let mu = T::from_f64(mean);
    let c0 = (bg % g.groups) * cg;
    for (j, (y, x)) in y.chunks_mut(g.s).zip(x.chunks(g.s)).enumerate() {
        let (gm, bt) = (gamma[c0 + j].to_f64(), beta[c0 + j].to_f64());
        // Per channel, y = a·x + off with a and off formed in f64 and rounded once; the
        // element loop runs in T (vectorised), as candle's composition does.
        // (x − μ first: a folded offset −a·μ would cancel badly when |μ| ≫ the spread.)
        let (a, off) = (T::from_f64(gm * r), T::from_f64(bt));
        if silu {
            for (y, &x) in y.iter_mut().zip(x) {
                let z = a * (x - mu) + off;
                *y = z * z.sigmoid();
            }
        } else {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = a * (x - mu) + off;
            }
        }
    }
    if let Some(d) = act.drop {
        // A second pass over the group while it is in cache; the product is the dropout kernel's
        // (`y·mask`), so the fused op equals GroupNorm then dropout bit for bit.
        let (first, scale) = (bg * g.m(), d.scale::<T>());
        for (i, y) in y.iter_mut().enumerate() {
            *y *= d.factor(first + i, scale);
        }
    }
}

/// One group of [`Geom::backward`]: its `dx` (and the per-channel sums `part` of `dy·x̂` and `dy`), for
/// each CPU feature level as [`forward_group`].
#[allow(clippy::too_many_arguments)]
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq", "x86_64+avx2+fma"))]
fn backward_group<T: Real>(
    g: Geom,
    bg: usize,
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    part: &mut [(f64, f64)],
    gamma: &[T],
    beta: &[T],
    act: Act,
) {
    let (m, cg, s) = (g.m(), g.c / g.groups, g.s);
    let silu = act.silu;
    // With dropout, dx first holds dy·mask (the dropout kernel's backward), and is read in place of dy.
    let staged = if let Some(d) = act.drop {
        let (first, scale) = (bg * m, d.scale::<T>());
        for (i, (dx, &dy)) in dx.iter_mut().zip(dy).enumerate() {
            *dx = dy * d.factor(first + i, scale);
        }
        true
    } else {
        false
    };
    let (mean, r) = g.stats(x);
    let (mean_t, r_t) = (T::from_f64(mean), T::from_f64(r));
    let c0 = (bg % g.groups) * cg;
    let (mut su, mut sux) = (0.0, 0.0);
    for (j, ((x, dy), dz)) in x
        .chunks(s)
        .zip(dy.chunks(s))
        .zip(dx.chunks_mut(s))
        .enumerate()
    {
        let gm = gamma[c0 + j].to_f64();
        let dsrc: &[T] = if silu {
            // The gradient at z, kept in dx (as the plain composition keeps it in a tensor)
            // for the sums below and the second pass; computed in T (vectorised).
            let (gm_t, bt_t) = (T::from_f64(gm), beta[c0 + j]);
            let z = |x: T| gm_t * ((x - mean_t) * r_t) + bt_t;
            if staged {
                for (&x, dz) in x.iter().zip(dz.iter_mut()) {
                    *dz = silu_grad(*dz, z(x));
                }
            } else {
                for ((&x, &dy), dz) in x.iter().zip(dy).zip(dz.iter_mut()) {
                    *dz = silu_grad(dy, z(x));
                }
            }
            dz
        } else if staged {
            dz
        } else {
            dy
        };
        let sdy = sum_f64(dsrc, |d| d);
        let sdyx = sum_pairs_f64(dsrc, x, |d, x| d * ((x - mean) * r));
        part[j] = (sdyx, sdy);
        su += gm * sdy;
        sux += gm * sdyx;
    }
    let (mu, mux) = (su / m as f64, sux / m as f64);
    for (j, ((dx, x), dy)) in dx
        .chunks_mut(s)
        .zip(x.chunks(s))
        .zip(dy.chunks(s))
        .enumerate()
    {
        // dx = r·(γ·d − mu − x̂·mux) = A·d + B·(x − μ) + C per channel, the coefficients
        // formed in f64 and rounded once, the element loop in T.
        let gm = gamma[c0 + j].to_f64();
        let (a, b) = (T::from_f64(r * gm), T::from_f64(-r * r * mux));
        let c = T::from_f64(-r * mu);
        if silu || staged {
            for (dx, &x) in dx.iter_mut().zip(x) {
                *dx = a * *dx + b * (x - mean_t) + c;
            }
        } else {
            for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                *dx = a * dy + b * (x - mean_t) + c;
            }
        }
    }
}

/// `d·SiLU'(z)` with `SiLU'(z) = σ(z)·(1 + z·(1 − σ(z)))`, as candle's composition evaluates it.
#[inline(always)]
fn silu_grad<T: Real>(d: T, z: T) -> T {
    let (sg, one) = (z.sigmoid(), T::one());
    d * sg * (one + z * (one - sg))
}

fn check_affine(g: &Geom, l2: &Layout, l3: &Layout, name: &str) -> Result<()> {
    for (l, what) in [(l2, "weight"), (l3, "bias")] {
        if l.shape().elem_count() != g.c || l.shape().rank() != 1 {
            candle_core::bail!(
                "{name}: {what} has shape {:?}, expected [{}] (one per channel)",
                l.shape().dims(),
                g.c
            );
        }
    }
    Ok(())
}

/// What follows the normalisation inside the kernel: SiLU, then dropout (each optional).
#[derive(Debug, Clone, Copy)]
struct Act {
    silu: bool,
    drop: Option<Dropout>,
}

/// `group_norm(x, γ, β)`, followed by `act`.
struct GroupNorm {
    groups: usize,
    eps: f64,
    act: Act,
}

/// `(x, [γ, β], dy)` → `[dx, dγ, dβ]` flattened into one vector.
struct GroupNormGrad {
    groups: usize,
    eps: f64,
    act: Act,
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "msd-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.shape().dims(), self.groups, self.eps)?;
        check_affine(&g, l2, l3, self.name())?;
        let out = by_dtype3!(((s1, l1), (s2, l2), (s3, l3)), self.name(), |x, gm, bt| g
            .forward(x, gm, bt, self.act));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let all = x.apply_op3_no_bwd(
            &Tensor::cat(&[gamma, beta], 0)?,
            &dy.contiguous()?,
            &GroupNormGrad {
                groups: self.groups,
                eps: self.eps,
                act: self.act,
            },
        )?;
        let (n, c) = (x.elem_count(), gamma.elem_count());
        let dx = all.narrow(0, 0, n)?.reshape(x.shape())?;
        let dg = all.narrow(0, n, c)?;
        let db = all.narrow(0, n + c, c)?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

impl CustomOp3 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "msd-group-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.shape().dims(), self.groups, self.eps)?;
        if l2.shape().dims() != [2 * g.c] {
            candle_core::bail!(
                "{}: affine parameters have shape {:?}, expected [{}] (weight and bias)",
                self.name(),
                l2.shape().dims(),
                2 * g.c
            );
        }
        if l3.shape() != l1.shape() {
            candle_core::bail!(
                "{}: output gradient {:?} does not match the input {:?}",
                self.name(),
                l3.shape().dims(),
                l1.shape().dims()
            );
        }
        let out = by_dtype3!(((s1, l1), (s2, l2), (s3, l3)), self.name(), |x, ab, dy| g
            .backward(x, ab, dy, self.act));
        Ok((out, Shape::from(l1.shape().elem_count() + 2 * g.c)))
    }
}

/// GroupNorm of `x` (`[B, C, ...]`) with `groups` groups, per-channel `weight` and `bias` (`[C]`): the fused
/// kernel on CPU f32/f64 tensors when the kernels are on, candle_nn's composed op otherwise.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let act = Act {
        silu: false,
        drop: None,
    };
    norm(x, groups, weight, bias, eps, act)
}

/// `SiLU(group_norm(x, …))` (the U-Nets' norm → activation pair) as one kernel, forward and backward: saves
/// the activation's separate passes and temporaries. Falls back to candle's ops like [`group_norm`].
pub fn group_norm_silu(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let act = Act {
        silu: true,
        drop: None,
    };
    norm(x, groups, weight, bias, eps, act)
}

/// `dropout(SiLU(group_norm(x, …)), p, seed)` (the residual blocks' norm → activation → dropout) as one
/// kernel: the mask of [`crate::kernels::dropout`] with the same `p` and `seed`, so the result equals the
/// two ops in sequence bit for bit, without the dropout's own passes and graph node. Falls back to
/// candle's ops like [`group_norm`].
#[allow(clippy::too_many_arguments)]
pub fn group_norm_silu_dropout(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    p: f64,
    seed: u64,
) -> Result<Tensor> {
    check_probability(p)?;
    let drop = (p > 0.0).then(|| Dropout::new(p, seed));
    let act = Act { silu: true, drop };
    norm(x, groups, weight, bias, eps, act)
}

fn norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: Act,
) -> Result<Tensor> {
    if !applies(&[x, weight, bias]) {
        let c = x.dims().get(1).copied().unwrap_or(0);
        let mut y = candle_nn::Module::forward(
            &candle_nn::GroupNorm::new(weight.clone(), bias.clone(), c, groups, eps)?,
            x,
        )?;
        if act.silu {
            y = candle_nn::ops::silu(&y)?;
        }
        return match act.drop {
            Some(d) => dropout(&y, d.p(), d.seed()),
            None => Ok(y),
        };
    }
    same_dtype("group_norm", x, weight)?;
    same_dtype("group_norm", x, bias)?;
    let g = Geom::new(x.dims(), groups, eps)?;
    for (t, what) in [(weight, "weight"), (bias, "bias")] {
        if t.dims() != [g.c] {
            candle_core::bail!(
                "group_norm: {what} has shape {:?}, expected [{}] (one per channel)",
                t.dims(),
                g.c
            );
        }
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        GroupNorm { groups, eps, act },
    )
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::kernels::with_kernels;
    use candle_core::{DType, Device};
    use proptest::prelude::*;

    fn plain(t: &[Tensor], groups: usize, eps: f64) -> Result<Tensor> {
        let c = t[0].dim(1)?;
        candle_nn::Module::forward(
            &candle_nn::GroupNorm::new(t[1].clone(), t[2].clone(), c, groups, eps)?,
            &t[0],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Output and the three gradients against candle_nn's GroupNorm (checked against finite differences),
        /// f32, random shapes and group counts.
        #[test]
        fn matches_candle(
            b in 1usize..4, cg in 1usize..5, groups in 1usize..5, h in 1usize..7, w in 1usize..7,
            seed in 0u64..1000,
        ) {
            prop_assume!(cg * h * w > 1);
            let c = cg * groups;
            let eps = 1e-6;
            let dev = Device::Cpu;
            let x = rand_tensor(&[b, c, h, w], seed, DType::F32, &dev);
            let gm = rand_tensor(&[c], seed + 1, DType::F32, &dev);
            let bt = rand_tensor(&[c], seed + 2, DType::F32, &dev);
            let (got, want) = compare_grads(&[&x, &gm, &bt], |t| group_norm(&t[0], groups, &t[1], &t[2], eps), |t| plain(t, groups, eps), seed + 3);
            // x̂ = (x − μ)·r is bounded by sqrt(m) (m values per group) and r by 1/std; candle's f32 sums of m
            // terms carry relative error ~m·ε in μ and var, so x̂ errs by ~m·ε·r·max|x| and dx (a combination
            // of m-term means times r) by a few times m·ε·r² ·max|dy|; dγ, dβ sum b·h·w terms of size sqrt(m).
            let m = (cg * h * w) as f64;
            let r = candle_core::Tensor::to_vec1::<f64>(&x.reshape((b, groups, cg * h * w)).unwrap().to_dtype(DType::F64).unwrap()
                .var_keepdim(2).unwrap().flatten_all().unwrap()).unwrap()
                .iter().map(|v| 1.0 / (v * (m - 1.0) / m + eps).sqrt()).fold(0.0, f64::max);
            let tol = 16.0 * f32::EPSILON as f64 * (m * r * r * (1.0 + r) + (b * h * w) as f64 * m.sqrt());
            assert_close_all(&got, &want, tol);
        }
    }

    fn plain_silu(t: &[Tensor], groups: usize, eps: f64) -> Result<Tensor> {
        candle_nn::ops::silu(&plain(t, groups, eps)?)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The fused GroupNorm + SiLU against candle's composition of the two (output and the three gradients),
        /// f32, random shapes, group counts and affine parameters (|γ|, |β| up to 3, so that z reaches SiLU's
        /// curved part and its negative tail).
        #[test]
        fn silu_matches_candle_composition(
            b in 1usize..4, cg in 1usize..5, groups in 1usize..5, h in 1usize..7, w in 1usize..7,
            seed in 0u64..1000,
        ) {
            prop_assume!(cg * h * w > 1);
            let c = cg * groups;
            let eps = 1e-6;
            let dev = Device::Cpu;
            let x = rand_tensor(&[b, c, h, w], seed, DType::F32, &dev);
            let gm = (rand_tensor(&[c], seed + 1, DType::F32, &dev) * 3.0).unwrap();
            let bt = (rand_tensor(&[c], seed + 2, DType::F32, &dev) * 3.0).unwrap();
            let (got, want) = compare_grads(&[&x, &gm, &bt], |t| group_norm_silu(&t[0], groups, &t[1], &t[2], eps), |t| plain_silu(t, groups, eps), seed + 3);
            // As for the plain GroupNorm (above), with γ up to 3 scaling x̂'s error into z, and SiLU adding
            // nothing worse: |SiLU'| ≤ 1.1 and |SiLU''| ≤ 0.5, so z's error passes to y and dz with gain ≤ 1.1
            // and 0.5·|dy|; the composition's own f32 roundings of σ and the products add a few ε per entry.
            let m = (cg * h * w) as f64;
            let r = candle_core::Tensor::to_vec1::<f64>(&x.reshape((b, groups, cg * h * w)).unwrap().to_dtype(DType::F64).unwrap()
                .var_keepdim(2).unwrap().flatten_all().unwrap()).unwrap()
                .iter().map(|v| 1.0 / (v * (m - 1.0) / m + eps).sqrt()).fold(0.0, f64::max);
            let tol = 3.0 * 16.0 * f32::EPSILON as f64 * (m * r * r * (1.0 + r) + (b * h * w) as f64 * m.sqrt());
            assert_close_all(&got, &want, tol);
        }
    }

    #[test]
    fn silu_gradients_match_finite_differences_f64() {
        let dev = Device::Cpu;
        for &(b, c, groups, h, w) in &[(2, 4, 2, 3, 3), (1, 6, 3, 2, 5)] {
            let x = rand_tensor(&[b, c, h, w], 21, DType::F64, &dev);
            let gm = (rand_tensor(&[c], 22, DType::F64, &dev) * 3.0).unwrap();
            let bt = (rand_tensor(&[c], 23, DType::F64, &dev) * 3.0).unwrap();
            check_finite_differences(
                &[&x, &gm, &bt],
                |t| group_norm_silu(&t[0], groups, &t[1], &t[2], 1e-5),
                24,
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// GroupNorm + SiLU + dropout in one kernel equals the GroupNorm + SiLU kernel followed by the
        /// dropout kernel with the same `p` and seed bit for bit: the output and the three gradients, f32 and
        /// f64, several batch elements and groups (so the mask's element index runs across groups).
        #[test]
        fn silu_dropout_equals_the_two_kernels_exactly(
            b in 1usize..4, cg in 1usize..5, groups in 1usize..5, h in 1usize..7, w in 1usize..7,
            seed: u64, p in 0.01f64..0.9,
        ) {
            prop_assume!(cg * h * w > 1);
            let c = cg * groups;
            let dev = Device::Cpu;
            for dtype in [DType::F32, DType::F64] {
                let x = rand_tensor(&[b, c, h, w], seed % 1000, dtype, &dev);
                let gm = (rand_tensor(&[c], seed % 1000 + 1, dtype, &dev) * 3.0).unwrap();
                let bt = (rand_tensor(&[c], seed % 1000 + 2, dtype, &dev) * 3.0).unwrap();
                let inputs = [&x, &gm, &bt];
                let fused = value_and_grads(&inputs, |t| group_norm_silu_dropout(&t[0], groups, &t[1], &t[2], 1e-6, p, seed), 5);
                let two = value_and_grads(&inputs, |t| dropout(&group_norm_silu(&t[0], groups, &t[1], &t[2], 1e-6)?, p, seed), 5);
                prop_assert_eq!(fused, two);
            }
        }
    }

    #[test]
    fn silu_dropout_gradients_match_finite_differences_f64() {
        let dev = Device::Cpu;
        for &(b, c, groups, h, w) in &[(2, 4, 2, 3, 3), (1, 6, 3, 2, 5)] {
            let x = rand_tensor(&[b, c, h, w], 31, DType::F64, &dev);
            let gm = (rand_tensor(&[c], 32, DType::F64, &dev) * 3.0).unwrap();
            let bt = (rand_tensor(&[c], 33, DType::F64, &dev) * 3.0).unwrap();
            check_finite_differences(
                &[&x, &gm, &bt],
                |t| group_norm_silu_dropout(&t[0], groups, &t[1], &t[2], 1e-5, 0.3, 77),
                34,
            );
        }
    }

    /// Off the fused path (kernels off), the same function is candle's GroupNorm, SiLU and the dropout
    /// fallback: it agrees with the fused kernel to round-off and drops the same elements.
    #[test]
    fn silu_dropout_fallback_agrees() {
        let dev = Device::Cpu;
        let x = rand_tensor(&[2, 6, 4, 4], 41, DType::F64, &dev);
        let gm = rand_tensor(&[6], 42, DType::F64, &dev);
        let bt = rand_tensor(&[6], 43, DType::F64, &dev);
        let f = |t: &[Tensor]| group_norm_silu_dropout(&t[0], 3, &t[1], &t[2], 1e-5, 0.4, 9);
        let fast = value_and_grads(&[&x, &gm, &bt], |t| with_kernels(true, || f(t)), 44);
        let plain = value_and_grads(&[&x, &gm, &bt], |t| with_kernels(false, || f(t)), 44);
        assert_close_all(&fast, &plain, 1e-12);
        let zeros = |v: &[f64]| v.iter().map(|&y| y == 0.0).collect::<Vec<_>>();
        assert_eq!(zeros(&fast[0]), zeros(&plain[0]));
        assert!(fast[0].contains(&0.0), "p = 0.4 drops some of 192 elements");
    }

    #[test]
    fn gradients_match_finite_differences_f64() {
        let dev = Device::Cpu;
        for &(b, c, groups, h, w) in &[(2, 4, 2, 3, 3), (1, 6, 3, 2, 5), (3, 2, 1, 4, 1)] {
            let x = rand_tensor(&[b, c, h, w], 11, DType::F64, &dev);
            let gm = rand_tensor(&[c], 12, DType::F64, &dev);
            let bt = rand_tensor(&[c], 13, DType::F64, &dev);
            check_finite_differences(
                &[&x, &gm, &bt],
                |t| group_norm(&t[0], groups, &t[1], &t[2], 1e-5),
                14,
            );
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 6, 3, 3), DType::F32, &dev).unwrap();
        let g = Tensor::ones(6, DType::F32, &dev).unwrap();
        let e = group_norm(&x, 4, &g, &g, 1e-5).unwrap_err().to_string();
        assert!(e.contains("4 groups do not divide 6"), "{e}");
        let g5 = Tensor::ones(5, DType::F32, &dev).unwrap();
        assert!(group_norm(&x, 3, &g5, &g, 1e-5)
            .unwrap_err()
            .to_string()
            .contains("expected [6]"));
        let g64 = g.to_dtype(DType::F64).unwrap();
        assert!(group_norm(&x, 3, &g64, &g, 1e-5)
            .unwrap_err()
            .to_string()
            .contains("dtype mismatch"));
        assert!(group_norm_silu(&x, 4, &g, &g, 1e-5)
            .unwrap_err()
            .to_string()
            .contains("4 groups do not divide 6"));
        for p in [-0.1, 1.0, f64::NAN] {
            let e = group_norm_silu_dropout(&x, 3, &g, &g, 1e-5, p, 1).unwrap_err();
            assert!(e.to_string().contains("outside [0, 1)"), "{e}");
        }
        let x2 = Tensor::zeros((2, 6), DType::F32, &dev).unwrap();
        assert!(group_norm(&x2, 3, &g, &g, 1e-5)
            .unwrap_err()
            .to_string()
            .contains("rank"));
    }
}
