//! Fast CPU kernels for the U-Nets, as candle custom ops with their own backward.
//!
//! candle 0.11's CPU convolution gradients and transposed convolution are direct loops, its GroupNorm is a
//! chain of single-threaded small ops, and the per-channel FIR resampling is a 1-channel (transposed)
//! convolution over `B·C` planes; together they take most of a U-Net training step (see
//! `notes/network-speed.md`). The ops here replace them on the CPU:
//!
//! - [`conv2d`]: convolution (any kernel size, stride, padding; one group) forward and both gradients as
//!   im2col/col2im around single-threaded GEMMs (`blas.rs`, the `gemm` crate) per task or chunk of the batch;
//! - [`conv2d_bias`]: the same with the bias added in the output pass (its gradient from the weight pass);
//!   the 3×3 "same" convolutions of 64 channels or more by Winograd's F(2×2, 3×3) (`winograd.rs`);
//! - [`group_norm`]: GroupNorm forward and backward fused into one pass each (statistics in f64), and
//!   [`group_norm_silu`], the same followed by SiLU;
//! - [`fir_down`]/[`fir_up`]/[`fir_blur_pad2`]: the separable `[1,3,3,1]` FIR resampling, each op's
//!   gradient being its adjoint (the same op with the transpose flag flipped);
//! - [`nearest_up`]/[`box_down`]: 2× nearest-neighbour up-sampling and 2×2 average pooling (DDPM++ and
//!   LDM), each the other's adjoint up to the gain;
//! - [`cat_channels`]: concatenation along the channels (the decoders' skip connections), copied in
//!   parallel where candle's `cat` copies on the calling thread;
//! - [`residual`]: `(x + h)·s`, and [`dropout`] with a mask regenerated from its seed in the backward —
//!   both to hold one activation instead of two until the backward (candle keeps every graph node);
//! - [`optim`]: the optimiser's element-wise updates (Adam's moments and parameter update, the weights'
//!   EMA) in place, one pass each, and a gradient's squared norm without a squared copy;
//! - [`attention`]: dot-product attention over positions (all three families), batch items in parallel,
//!   GEMMs through `blas.rs`, the weights recomputed in the backward instead of stored.
//!
//! Every op supports f32 and f64 (the f64 path is what the finite-difference tests check). On any other
//! device or dtype, or when the kernels are switched off, the plain candle ops are used, so CUDA builds
//! keep candle's kernels.
//!
//! # CPU features
//! The workspace is built for the baseline of its target (on x86-64: SSE2), so that one binary runs on
//! every CPU of the architecture. The element loops that take measurable time (GroupNorm's passes, the
//! attention softmax, dropout's mask) are also compiled for AVX2+FMA and for AVX-512 with the
//! `multiversion` crate, which picks the best version the CPU has at run time (one cached feature test).
//! The versions compute the same values bit for bit: Rust does not contract `a·b + c` into an FMA nor
//! reorder float sums on its own, so wider vectors change only the speed. The GEMMs do their own
//! selection (`blas.rs`).
//!
//! # The switch
//! The kernels are on by default. `MSD_KERNELS=plain` (or `off`, `0`) in the environment turns them off for
//! the whole process (read once); [`with_kernels`] overrides that for the calling thread, which is how the
//! tests and benches compare both paths in one process. The choice is made when an op is recorded: a
//! backward pass uses the kernels of its forward pass.

// The dtype dispatch of the custom ops' `cpu_fwd` (textually before the modules that use them).
/// Dispatches a kernel over the storage's float type.
macro_rules! by_dtype {
    ($s1:expr, $l1:expr, $s2:expr, $l2:expr, $name:expr, |$a:ident, $b:ident| $body:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let $a = slice::<f32>($s1, $l1, $name)?;
                let $b = slice::<f32>($s2, $l2, $name)?;
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let $a = slice::<f64>($s1, $l1, $name)?;
                let $b = slice::<f64>($s2, $l2, $name)?;
                CpuStorage::F64($body)
            }
            (a, b) => candle_core::bail!(
                "{}: unsupported dtypes {:?} and {:?} (f32 or f64, both the same)",
                $name,
                a.dtype(),
                b.dtype()
            ),
        }
    };
}

/// [`by_dtype!`] for one input: `$body` with `$a` the f32 or f64 slice of `($s, $l)`; other dtypes are an
/// error naming `$what`.
macro_rules! by_dtype1 {
    ($s:expr, $l:expr, $what:expr, |$a:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                let $a = slice::<f32>($s, $l, $what)?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(_) => {
                let $a = slice::<f64>($s, $l, $what)?;
                CpuStorage::F64($body)
            }
            other => candle_core::bail!(
                "{}: unsupported dtype {:?} (f32 or f64)",
                $what,
                other.dtype()
            ),
        }
    };
}

/// [`by_dtype!`] for three inputs.
macro_rules! by_dtype3 {
    ($s:expr, $name:expr, |$a:ident, $b:ident, $c:ident| $body:expr) => {{
        let ((s1, l1), (s2, l2), (s3, l3)) = $s;
        match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let ($a, $b, $c) = (
                    slice::<f32>(s1, l1, $name)?,
                    slice::<f32>(s2, l2, $name)?,
                    slice::<f32>(s3, l3, $name)?,
                );
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let ($a, $b, $c) = (
                    slice::<f64>(s1, l1, $name)?,
                    slice::<f64>(s2, l2, $name)?,
                    slice::<f64>(s3, l3, $name)?,
                );
                CpuStorage::F64($body)
            }
            (a, b, c) => candle_core::bail!(
                "{}: unsupported dtypes {:?}, {:?}, {:?} (f32 or f64, all the same)",
                $name,
                a.dtype(),
                b.dtype(),
                c.dtype()
            ),
        }
    }};
}

pub mod attention;
pub mod blas;
pub mod concat;
pub mod conv;
pub mod dropout;
pub mod fir;
pub mod group_norm;
mod math;
mod onednn;
pub mod optim;
pub mod resample;
pub mod residual;
mod scratch;
mod winograd;

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

use candle_core::{CpuStorage, DType, Layout, Result, Tensor, WithDType};
use rayon::prelude::*;

pub use attention::attention;
pub use concat::cat_channels;
pub use conv::{conv2d, conv2d_bias};
pub use dropout::dropout;
pub use fir::{fir_blur_pad2, fir_down, fir_up};
pub use group_norm::{group_norm, group_norm_silu, group_norm_silu_dropout};
pub use resample::{box_down, nearest_up};
pub use residual::residual;

thread_local! {
    static OVERRIDE: Cell<Option<bool>> = const { Cell::new(None) };
}

fn env_default() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("MSD_KERNELS").as_deref(),
            Ok("plain") | Ok("off") | Ok("0")
        )
    })
}

/// Whether ops recorded on this thread use the fast kernels (on CPU tensors of f32/f64).
pub fn enabled() -> bool {
    OVERRIDE.with(|o| o.get()).unwrap_or_else(env_default)
}

/// Runs `f` with the kernels switched on or off for the calling thread, restoring the previous setting.
pub fn with_kernels<R>(on: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(on))));
    f()
}

/// Whether the kernels apply to these tensors (switch on, CPU, f32 or f64).
fn applies(ts: &[&Tensor]) -> bool {
    enabled()
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64))
}

/// A float type the kernels compute in.
pub(crate) trait Real: WithDType + blas::Gemm + scratch::Pooled {
    /// `1/(1 + e^{−x})`: vectorisable in f32 ([`math::sigmoid_f32`]), the standard library's `exp` in f64.
    fn sigmoid(self) -> Self;
    /// `e^x`: vectorisable in f32 ([`math::exp_f32`]), the standard library's in f64.
    fn exp_t(self) -> Self;
}
impl Real for f32 {
    #[inline(always)]
    fn sigmoid(self) -> Self {
        math::sigmoid_f32(self)
    }
    #[inline(always)]
    fn exp_t(self) -> Self {
        math::exp_f32(self)
    }
}
impl Real for f64 {
    #[inline(always)]
    fn sigmoid(self) -> Self {
        1.0 / (1.0 + (-self).exp())
    }
    #[inline(always)]
    fn exp_t(self) -> Self {
        self.exp()
    }
}

/// `Σ f(x_i)` in f64 with eight independent partial sums, so that the loop vectorises (a single running sum
/// is one long dependency chain; eight also round a little better).
#[inline(always)]
pub(crate) fn sum_f64<T: Real>(x: &[T], f: impl Fn(f64) -> f64) -> f64 {
    sum_pairs_f64(x, x, |v, _| f(v))
}

/// `Σ f(a_i, b_i)` in f64 with eight partial sums (see [`sum_f64`]).
#[inline(always)]
pub(crate) fn sum_pairs_f64<T: Real>(a: &[T], b: &[T], f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(a, b)| f(a.to_f64(), b.to_f64()))
        .sum();
    for (ca, cb) in ca.zip(cb) {
        for ((s, a), b) in acc.iter_mut().zip(ca).zip(cb) {
            *s += f(a.to_f64(), b.to_f64());
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Elements from which [`zeroed`] clears a buffer on the rayon pool (below, one `memset` on the calling
/// thread is cheaper than a fork).
const PAR_ZERO_MIN: usize = 1 << 16;

/// A zeroed buffer of `n` elements for an op's output (or a buffer its tasks accumulate into).
///
/// The ops allocate their outputs on the calling thread, outside the rayon pool. With `vec![0; n]`, glibc's
/// `calloc` clears a reused block there with one `memset` while the pool's threads wait: measured on the
/// paper's U-Net (stage 2, batch 8, two threads), the outputs' `memset`s were 90 of the 180 ms per forward
/// that ran on the calling thread alone. Large buffers are cleared in parallel blocks instead.
pub(crate) fn zeroed<T: Real>(n: usize) -> Vec<T> {
    if n < PAR_ZERO_MIN || rayon::current_num_threads() < 2 {
        return vec![T::zero(); n];
    }
    // SAFETY: the closure writes every element of each block.
    unsafe {
        par_filled(n, PAR_ZERO_MIN, |_, block| {
            block.iter_mut().for_each(|e| _ = e.write(T::zero()))
        })
    }
}

/// A buffer of `n` elements written in place on the rayon pool, never initialised twice: `fill(i, b)`
/// writes block `i`, elements `i·block..` (`block` of them, the last block shorter). The one place where
/// the kernels build an output from uninitialised memory.
///
/// # Safety
/// `fill` must write every element of each block it is given.
pub(crate) unsafe fn par_filled<T: Send>(
    n: usize,
    block: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(block.max(1))
        .enumerate()
        .for_each(|(i, b)| fill(i, b));
    // SAFETY: the capacity is at least `n`, and by the caller's contract `fill` wrote each of the first
    // `n` elements.
    unsafe { v.set_len(n) };
    v
}

/// The contiguous data of a custom op's argument.
fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) if b <= data.len() => Ok(&data[a..b]),
        _ => candle_core::bail!("{what}: the kernel needs a contiguous input"),
    }
}

fn same_dtype(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        candle_core::bail!("{op}: dtype mismatch, {:?} and {:?}", a.dtype(), b.dtype());
    }
    Ok(())
}

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element of a [`zeroed`] buffer is zero, below and above the parallel threshold and with a
    /// partial last block, on one thread and on two; the allocator is first handed a buffer of NaNs of
    /// the same size, so a block left unwritten would likely show.
    #[test]
    fn zeroed_buffers_are_zero() {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for n in [0, 1, PAR_ZERO_MIN - 1, PAR_ZERO_MIN, 3 * PAR_ZERO_MIN + 5] {
                drop(vec![f32::NAN; n]);
                let v = pool.install(|| zeroed::<f32>(n));
                assert_eq!(v.len(), n);
                assert!(
                    v.iter().all(|x| x.to_bits() == 0),
                    "{threads} threads, n = {n}"
                );
                drop(vec![f64::NAN; n]);
                let v = pool.install(|| zeroed::<f64>(n));
                assert!(v.len() == n && v.iter().all(|x| x.to_bits() == 0));
            }
        }
    }
}
