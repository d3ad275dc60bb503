//! Row-major GEMM for the kernels, through the `gemm` crate (the one candle's own matmul uses), built with
//! its `x86-v4` feature: on a CPU with AVX-512 it picks its AVX-512 kernels at run time, elsewhere its
//! AVX2/FMA or portable ones.
//!
//! # Why not OpenBLAS
//! The workspace links OpenBLAS (for ndarray-linalg), and the kernels used it until its rate was measured on
//! an AVX-512 machine: an OpenBLAS older than the CPU (Debian's 0.3.21 on AMD Zen 5), or an environment that
//! pins `OPENBLAS_CORETYPE`, runs its AVX2 kernel set there, 80–105 GFLOP/s single-threaded on the
//! convolutions' shapes, against 120–215 for this crate's AVX-512 kernels on the same core (the
//! `notes/network-speed.md` table). The choice no longer depends on which OpenBLAS a machine has.
//!
//! # Threads
//! Every call into the crate is single-threaded; [`Gemm::gemm`] splits a large product into blocks of rows
//! or columns of `C` on the rayon pool, and the convolutions run one single-threaded product per task.
//!
//! # `A·Bᵀ` with a long inner dimension
//! With both operands stored `k`-contiguous and `k` ≥ 1024 (a power of two in the U-Nets: the pixels of a
//! weight gradient), the crate fell to 12–50 GFLOP/s, its packing reading rows a multiple of 4 KiB apart.
//! Such products are done in slices of [`KC`] along `k`, each copied first to rows [`KC`]` + `[`PAD`] apart
//! (a copy of `(m + n)·k` values against `m·n·k` multiply-adds): 90–190 GFLOP/s on the same shapes.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::scratch::{Pooled, Scratch};

/// The SIMD kernel set the `gemm` crate runs on this CPU (it decides at run time, per call, by the
/// same feature tests).
pub fn kernel_set() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "AVX2+FMA";
        }
    }
    "portable"
}

/// Whether the products are split over the rayon pool: yes unless `MSD_GEMM_THREADS=1` (every product on
/// the calling thread, for profiling), read once.
pub(crate) fn rayon_split() -> bool {
    static SPLIT: OnceLock<bool> = OnceLock::new();
    *SPLIT.get_or_init(|| std::env::var("MSD_GEMM_THREADS").as_deref() != Ok("1"))
}

/// Slice of the inner dimension for the copied `A·Bᵀ` path, and the padding of its rows.
const KC: usize = 256;
const PAD: usize = 16;

/// Multiply-adds below which a product is not split (the split costs a few microseconds).
const SPLIT_MIN_MACS: usize = 1 << 21;

/// A pointer the blocks of one product share; each block touches a disjoint part of `C`.
#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
// SAFETY: used only for disjoint blocks of one output within one `gemm` call (see `Gemm::gemm`).
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}

/// One single-threaded product on (sub)matrices with explicit leading dimensions.
trait RawGemm:
    Sized + Copy + Send + Sync + PartialEq + Pooled + std::ops::Mul<Output = Self> + 'static
{
    const ZERO: Self;
    const ONE: Self;

    /// # Safety
    /// The pointers and leading dimensions must describe matrices of the given shapes inside live
    /// allocations, and `c` must not be written concurrently by anyone else.
    #[allow(clippy::too_many_arguments)]
    unsafe fn raw(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: *const Self,
        lda: usize,
        b: *const Self,
        ldb: usize,
        beta: Self,
        c: *mut Self,
        ldc: usize,
    ) {
        if !ta && tb && k > KC {
            return Self::raw_sliced(m, n, k, a, lda, b, ldb, beta, c, ldc);
        }
        // (row stride, column stride) of op(A) and op(B) as stored.
        let (a_rs, a_cs) = if ta { (1, lda) } else { (lda, 1) };
        let (b_rs, b_cs) = if tb { (1, ldb) } else { (ldb, 1) };
        Self::call(m, n, k, c, ldc, beta, a, a_rs, a_cs, b, b_rs, b_cs);
    }

    /// `A·Bᵀ` (both stored `k`-contiguous) in slices of `KC` along `k`, each copied to padded rows first
    /// (see the module comment).
    ///
    /// # Safety
    /// As [`RawGemm::raw`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn raw_sliced(
        m: usize,
        n: usize,
        k: usize,
        a: *const Self,
        lda: usize,
        b: *const Self,
        ldb: usize,
        beta: Self,
        c: *mut Self,
        ldc: usize,
    ) {
        const LD: usize = KC + PAD;
        let mut buf = Scratch::<Self>::new((m + n) * LD);
        let (pa, pb) = buf.split_at_mut(m * LD);
        let mut k0 = 0;
        while k0 < k {
            let kk = KC.min(k - k0);
            for (i, row) in pa.chunks_exact_mut(LD).enumerate() {
                row[..kk].copy_from_slice(std::slice::from_raw_parts(a.add(i * lda + k0), kk));
            }
            for (j, row) in pb.chunks_exact_mut(LD).enumerate() {
                row[..kk].copy_from_slice(std::slice::from_raw_parts(b.add(j * ldb + k0), kk));
            }
            // The first slice scales C by beta, the later ones add to it.
            let scale = if k0 == 0 { beta } else { Self::ONE };
            Self::call(
                m,
                n,
                kk,
                c,
                ldc,
                scale,
                pa.as_ptr(),
                LD,
                1,
                pb.as_ptr(),
                1,
                LD,
            );
            k0 += kk;
        }
    }

    /// `C = beta·C + op(A)·op(B)` given the row and column strides of op(A) and op(B); `C` is row-major
    /// with leading dimension `ldc`, and is not read when `beta` is zero (as BLAS).
    ///
    /// # Safety
    /// As [`RawGemm::raw`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn call(
        m: usize,
        n: usize,
        k: usize,
        c: *mut Self,
        ldc: usize,
        beta: Self,
        a: *const Self,
        a_rs: usize,
        a_cs: usize,
        b: *const Self,
        b_rs: usize,
        b_cs: usize,
    ) {
        // The crate computes dst = alpha·dst + beta·lhs·rhs, strides as (column, row).
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            beta != Self::ZERO,
            a,
            a_cs as isize,
            a_rs as isize,
            b,
            b_cs as isize,
            b_rs as isize,
            beta,
            Self::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

impl RawGemm for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl RawGemm for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// `C[m×n] = A·B + beta·C` with `A = a[m×k]` (or `a[k×m]ᵀ` when `ta`), `B = b[k×n]` (or `b[n×k]ᵀ` when
/// `tb`), all dense row-major. Sizes are checked, so a wrong call is an error, never an out-of-bounds read.
pub(crate) trait Gemm: Sized + Copy {
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: &[Self],
        b: &[Self],
        beta: Self,
        c: &mut [Self],
    ) -> candle_core::Result<()>;

    /// [`Gemm::gemm`] as one call on the calling thread, never split: for callers that are themselves one
    /// of many parallel tasks.
    #[allow(clippy::too_many_arguments)]
    fn gemm_serial(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: &[Self],
        b: &[Self],
        beta: Self,
        c: &mut [Self],
    ) -> candle_core::Result<()>;

    /// `C = A·B + beta·C` on row-major submatrices with leading dimensions (`A`: `m × k`, rows `lda`
    /// apart; `B`: `k × n`, rows `ldb` apart; `C`: `m × n`, rows `ldc` apart), as one call on the calling
    /// thread. The extents are checked against the slices, so a wrong call is an error, never an
    /// out-of-bounds access.
    #[allow(clippy::too_many_arguments)]
    fn gemm_ld_serial(
        m: usize,
        n: usize,
        k: usize,
        a: (&[Self], usize),
        b: (&[Self], usize),
        beta: Self,
        c: (&mut [Self], usize),
    ) -> candle_core::Result<()>;
}

/// Whether a row-major `rows × cols` submatrix with rows `ld` apart lies inside `len` elements.
fn fits_ld(rows: usize, cols: usize, ld: usize, len: usize) -> bool {
    rows == 0
        || cols == 0
        || (cols <= ld
            && ld <= isize::MAX as usize
            && (rows - 1)
                .checked_mul(ld)
                .and_then(|v| v.checked_add(cols))
                .is_some_and(|end| end <= len))
}

fn check(m: usize, n: usize, k: usize, la: usize, lb: usize, lc: usize) -> candle_core::Result<()> {
    // Strides are isize inside the crate.
    let fits = |x: usize| x <= isize::MAX as usize;
    let size = |x: usize, y: usize| x.checked_mul(y);
    if size(m, k) != Some(la)
        || size(k, n) != Some(lb)
        || size(m, n) != Some(lc)
        || !fits(m)
        || !fits(n)
        || !fits(k)
    {
        candle_core::bail!("gemm: bad operand sizes (m {m}, n {n}, k {k}; a {la}, b {lb}, c {lc})");
    }
    Ok(())
}

impl<T: RawGemm> Gemm for T {
    fn gemm(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        b: &[T],
        beta: T,
        c: &mut [T],
    ) -> candle_core::Result<()> {
        let threads = rayon::current_num_threads();
        if !rayon_split() || threads < 2 || m * n * k < SPLIT_MIN_MACS {
            return T::gemm_serial(ta, tb, m, n, k, a, b, beta, c);
        }
        // Split only from SPLIT_MIN_MACS on, so m, n and k are all positive here.
        check(m, n, k, a.len(), b.len(), c.len())?;
        let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
        // Blocks of whole rows of C (rows of op(A)) or of whole columns (columns of op(B)), whichever
        // dimension is longer; twice as many blocks as threads so that a thread that got descheduled on a
        // busy machine does not hold up the rest.
        let split_rows = m >= n;
        let len = if split_rows { m } else { n };
        let block = len.div_ceil(2 * threads).next_multiple_of(16).max(16);
        let (pa, pb, pc) = (
            Ptr(a.as_ptr() as *mut T),
            Ptr(b.as_ptr() as *mut T),
            Ptr(c.as_mut_ptr()),
        );
        (0..len.div_ceil(block)).into_par_iter().for_each(|i| {
            let (lo, hi) = (i * block, ((i + 1) * block).min(len));
            let (pa, pb, pc) = (pa, pb, pc);
            // SAFETY: rows lo..hi of op(A) start at row lo of a (or column lo of aᵀ), columns lo..hi of
            // op(B) at column lo of b (or row lo of bᵀ); the leading dimensions stay those of the full
            // matrices, so every block reads inside a and b, and writes only its own rows (columns) of c.
            unsafe {
                if split_rows {
                    let a0 = if ta { pa.0.add(lo) } else { pa.0.add(lo * k) };
                    T::raw(
                        ta,
                        tb,
                        hi - lo,
                        n,
                        k,
                        a0,
                        lda,
                        pb.0,
                        ldb,
                        beta,
                        pc.0.add(lo * n),
                        n,
                    );
                } else {
                    let b0 = if tb { pb.0.add(lo * k) } else { pb.0.add(lo) };
                    T::raw(
                        ta,
                        tb,
                        m,
                        hi - lo,
                        k,
                        pa.0,
                        lda,
                        b0,
                        ldb,
                        beta,
                        pc.0.add(lo),
                        n,
                    );
                }
            }
        });
        Ok(())
    }

    fn gemm_serial(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        b: &[T],
        beta: T,
        c: &mut [T],
    ) -> candle_core::Result<()> {
        check(m, n, k, a.len(), b.len(), c.len())?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            c.iter_mut().for_each(|v| *v = *v * beta);
            return Ok(());
        }
        let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
        // SAFETY: the sizes were checked above against the slices' lengths, and the leading dimensions are
        // those of dense row-major matrices of these shapes.
        unsafe {
            T::raw(
                ta,
                tb,
                m,
                n,
                k,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                beta,
                c.as_mut_ptr(),
                n,
            )
        };
        Ok(())
    }

    fn gemm_ld_serial(
        m: usize,
        n: usize,
        k: usize,
        (a, lda): (&[T], usize),
        (b, ldb): (&[T], usize),
        beta: T,
        (c, ldc): (&mut [T], usize),
    ) -> candle_core::Result<()> {
        if !fits_ld(m, k, lda, a.len())
            || !fits_ld(k, n, ldb, b.len())
            || !fits_ld(m, n, ldc, c.len())
        {
            candle_core::bail!(
                "gemm: bad operand extents (m {m}, n {n}, k {k}; a {} with ld {lda}, b {} with ld {ldb}, c {} with ld {ldc})",
                a.len(),
                b.len(),
                c.len()
            );
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].iter_mut().for_each(|v| *v = *v * beta);
            }
            return Ok(());
        }
        // SAFETY: the three submatrices were checked above to lie inside their slices.
        unsafe {
            T::raw(
                false,
                false,
                m,
                n,
                k,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                beta,
                c.as_mut_ptr(),
                ldc,
            )
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every transpose combination, split over a 3-thread pool (row blocks for m ≥ n, column blocks for
    /// m < n) and on one thread, against a plain triple loop in f64. The last shape's `k` takes the sliced
    /// `A·Bᵀ` path: two full slices and a partial one.
    #[test]
    fn products_match_a_triple_loop() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for &(m, n, k) in &[(300, 90, 100), (70, 310, 100), (40, 150, 2 * KC + 37)] {
            assert!(m * n * k >= SPLIT_MIN_MACS);
            let val = |i: usize, s: usize| ((i * 7919 + s * 104729) % 201) as f64 / 100.0 - 1.0;
            let a: Vec<f64> = (0..m * k).map(|i| val(i, 1)).collect();
            let b: Vec<f64> = (0..k * n).map(|i| val(i, 2)).collect();
            let c0: Vec<f64> = (0..m * n).map(|i| val(i, 3)).collect();
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                // Element (i, p) of op(A) and (p, j) of op(B) from the stored layouts.
                let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
                let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
                let mut split = c0.clone();
                pool.install(|| f64::gemm(ta, tb, m, n, k, &a, &b, 0.5, &mut split))
                    .unwrap();
                let mut serial = c0.clone();
                f64::gemm_serial(ta, tb, m, n, k, &a, &b, 0.5, &mut serial).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let want =
                            0.5 * c0[i * n + j] + (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f64>();
                        // A sum of k + 1 terms in any order: round-off ≤ (k + 1)·ε·Σ|terms|.
                        let mag = 0.5 * c0[i * n + j].abs()
                            + (0..k).map(|p| (at(i, p) * bt(p, j)).abs()).sum::<f64>();
                        let tol = (k + 1) as f64 * f64::EPSILON * mag;
                        for (how, got) in
                            [("split", split[i * n + j]), ("serial", serial[i * n + j])]
                        {
                            assert!(
                                (got - want).abs() <= tol,
                                "{how} m {m} n {n} k {k} ta {ta} tb {tb} at ({i}, {j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Submatrices with leading dimensions larger than their widths (the forward by taps reads windows of
    /// padded planes), against a triple loop in f64; the values between the rows of C stay untouched.
    #[test]
    fn leading_dimensions_match_a_triple_loop() {
        let (m, n, k, lda, ldb, ldc) = (37, 45, 29, 31, 50, 47);
        let val = |i: usize, s: usize| ((i * 7919 + s * 104729) % 201) as f64 / 100.0 - 1.0;
        let a: Vec<f64> = (0..(m - 1) * lda + k).map(|i| val(i, 1)).collect();
        let b: Vec<f64> = (0..(k - 1) * ldb + n).map(|i| val(i, 2)).collect();
        let c0: Vec<f64> = (0..(m - 1) * ldc + n).map(|i| val(i, 3)).collect();
        let mut c = c0.clone();
        f64::gemm_ld_serial(m, n, k, (&a, lda), (&b, ldb), 0.5, (&mut c, ldc)).unwrap();
        for (idx, (&got, &old)) in c.iter().zip(&c0).enumerate() {
            let (i, j) = (idx / ldc, idx % ldc);
            if j >= n {
                assert_eq!(got, old, "C[{i}, {j}] lies between the rows");
                continue;
            }
            let terms = (0..k).map(|p| a[i * lda + p] * b[p * ldb + j]);
            let want = 0.5 * old + terms.clone().sum::<f64>();
            let mag = 0.5 * old.abs() + terms.map(f64::abs).sum::<f64>();
            let tol = (k + 1) as f64 * f64::EPSILON * mag;
            assert!((got - want).abs() <= tol, "C[{i}, {j}]: {got} vs {want}");
        }
        // One element short of any operand is an error, not an out-of-bounds access.
        let e = f64::gemm_ld_serial(m, n, k, (&a[1..], lda), (&b, ldb), 0.0, (&mut c, ldc));
        assert!(e.unwrap_err().to_string().contains("bad operand extents"));
        let e = f64::gemm_ld_serial(m, n, k, (&a, lda), (&b[1..], ldb), 0.0, (&mut c, ldc));
        assert!(e.is_err());
        let short = c.len() - 1;
        let e = f64::gemm_ld_serial(m, n, k, (&a, lda), (&b, ldb), 0.0, (&mut c[..short], ldc));
        assert!(e.is_err());
        // A leading dimension below the width is refused too.
        let e = f64::gemm_ld_serial(m, n, k, (&a, k - 1), (&b, ldb), 0.0, (&mut c, ldc));
        assert!(e.is_err());
    }

    /// beta = 0 overwrites C without reading it (a NaN left there does not survive), as BLAS.
    #[test]
    fn zero_beta_does_not_read_c() {
        for k in [3, KC + 5] {
            let mut c = vec![f32::NAN; 4];
            f32::gemm_serial(
                false,
                true,
                2,
                2,
                k,
                &vec![1.0; 2 * k],
                &vec![1.0; 2 * k],
                0.0,
                &mut c,
            )
            .unwrap();
            assert_eq!(c, vec![k as f32; 4]);
        }
    }

    #[test]
    fn bad_sizes_are_an_error() {
        let mut c = vec![0f32; 4];
        let e = f32::gemm(false, false, 2, 2, 3, &[0.0; 5], &[0.0; 6], 0.0, &mut c).unwrap_err();
        assert!(e.to_string().contains("bad operand sizes"), "{e}");
    }
}
