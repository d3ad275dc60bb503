//! Row-major GEMM for the kernels. f32 products go to oneDNN's `sgemm` where the machine has oneDNN
//! (`onednn.rs`, loaded at run time), otherwise, and for f64, to the `gemm` crate (the one candle's own
//! matmul uses), built with its `x86-v4` feature: on a CPU with AVX-512 it picks its AVX-512 kernels at
//! run time, elsewhere its AVX2/FMA or portable ones. `MSD_GEMM` chooses: `auto` (the default), `crate`
//! or `onednn` (an error where oneDNN does not load).
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

use super::onednn::OneDnn;
use super::scratch::{Pooled, Scratch};

/// The library that computes the f32 products.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lib {
    OneDnn(&'static OneDnn),
    Crate,
}

/// The f32 GEMM library `MSD_GEMM` asks for (read once): `auto` or unset, oneDNN where it loads and the
/// crate otherwise; `crate`; `onednn`, an error where oneDNN does not load.
pub(crate) fn lib() -> candle_core::Result<Lib> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    let choice = LIB.get_or_init(|| {
        let wanted = std::env::var("MSD_GEMM").unwrap_or_default();
        match wanted.as_str() {
            "" | "auto" => Ok(OneDnn::get().map_or(Lib::Crate, Lib::OneDnn)),
            "crate" => Ok(Lib::Crate),
            "onednn" => OneDnn::get()
                .map(Lib::OneDnn)
                .map_err(|e| format!("MSD_GEMM=onednn, but {e}")),
            other => Err(format!(
                "MSD_GEMM must be auto, crate or onednn, not {other:?}"
            )),
        }
    });
    choice.clone().map_err(candle_core::Error::Msg)
}

/// What computes the f32 products on this machine: oneDNN and its version, or the SIMD kernel set of the
/// `gemm` crate; or why the `MSD_GEMM` setting is refused.
pub fn gemm_library() -> String {
    match lib() {
        Ok(Lib::OneDnn(d)) => d.description.clone(),
        Ok(Lib::Crate) => format!("gemm crate, {}", kernel_set()),
        Err(e) => e.to_string(),
    }
}

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

/// One product `C = op(A)·op(B) + beta·C` on raw row-major (sub)matrices: `op(A)` is `m × k`, `op(B)`
/// `k × n`, `C` `m × n`; `A` is stored `m × k` (`k × m` when `ta`), `B` `k × n` (`n × k` when `tb`),
/// each with rows `ld*` apart. `C` is not read when `beta` is zero (as BLAS).
#[derive(Clone, Copy)]
pub(super) struct Product<T> {
    pub(super) ta: bool,
    pub(super) tb: bool,
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) a: *const T,
    pub(super) lda: usize,
    pub(super) b: *const T,
    pub(super) ldb: usize,
    pub(super) beta: T,
    pub(super) c: *mut T,
    pub(super) ldc: usize,
}

/// One single-threaded product on (sub)matrices with explicit leading dimensions.
trait RawGemm:
    Sized + Copy + Send + Sync + PartialEq + Pooled + std::ops::Mul<Output = Self> + 'static
{
    const ZERO: Self;
    const ONE: Self;

    /// [`RawGemm::raw`] on `lib` where `lib` has this type's GEMM, on the crate otherwise.
    ///
    /// # Safety
    /// As [`RawGemm::raw`].
    unsafe fn raw_in(_lib: Lib, p: Product<Self>) {
        Self::raw(p)
    }

    /// # Safety
    /// The pointers and leading dimensions must describe matrices of the given shapes inside live
    /// allocations, and `c` must not be written concurrently by anyone else.
    unsafe fn raw(p: Product<Self>) {
        let Product {
            ta,
            tb,
            m,
            n,
            k,
            a,
            lda,
            b,
            ldb,
            beta,
            c,
            ldc,
        } = p;
        if !ta && tb && k > KC {
            return Self::raw_sliced(p);
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
    unsafe fn raw_sliced(p: Product<Self>) {
        let Product {
            m,
            n,
            k,
            a,
            lda,
            b,
            ldb,
            beta,
            c,
            ldc,
            ..
        } = p;
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

    unsafe fn raw_in(lib: Lib, p: Product<Self>) {
        // oneDNN refuses only arguments that the checks before every call rule out; should it refuse
        // anyway, the crate computes the product (it has not touched C then).
        if let Lib::OneDnn(d) = lib {
            if d.sgemm(&p) {
                return;
            }
        }
        Self::raw(p)
    }
}

/// oneDNN has no f64 GEMM: f64 products always run on the crate.
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

    /// `C = A·op(B) + beta·C` on row-major submatrices with leading dimensions (`A`: `m × k`, rows `lda`
    /// apart; `B`: `k × n`, or `n × k` when `tb` (op(B) = Bᵀ), rows `ldb` apart; `C`: `m × n`, rows `ldc`
    /// apart), as one call on the calling thread. The extents are checked against the slices, so a wrong
    /// call is an error, never an out-of-bounds access.
    #[allow(clippy::too_many_arguments)]
    fn gemm_ld_serial(
        tb: bool,
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
        gemm_in(lib()?, ta, tb, m, n, k, a, b, beta, c)
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
        gemm_serial_in(lib()?, ta, tb, m, n, k, a, b, beta, c)
    }

    fn gemm_ld_serial(
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: (&[T], usize),
        b: (&[T], usize),
        beta: T,
        c: (&mut [T], usize),
    ) -> candle_core::Result<()> {
        gemm_ld_serial_in(lib()?, tb, m, n, k, a, b, beta, c)
    }
}

/// [`Gemm::gemm`] on `lib`.
#[allow(clippy::too_many_arguments)]
fn gemm_in<T: RawGemm>(
    lib: Lib,
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
        return gemm_serial_in(lib, ta, tb, m, n, k, a, b, beta, c);
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
        // The whole product; each block narrows it to its rows (columns).
        let whole = Product {
            ta,
            tb,
            m,
            n,
            k,
            a: pa.0 as *const T,
            lda,
            b: pb.0 as *const T,
            ldb,
            beta,
            c: pc.0,
            ldc: n,
        };
        // SAFETY: rows lo..hi of op(A) start at row lo of a (or column lo of aᵀ), columns lo..hi of
        // op(B) at column lo of b (or row lo of bᵀ); the leading dimensions stay those of the full
        // matrices, so every block reads inside a and b, and writes only its own rows (columns) of c.
        unsafe {
            if split_rows {
                let a0 = if ta { pa.0.add(lo) } else { pa.0.add(lo * k) };
                let p = Product {
                    m: hi - lo,
                    a: a0,
                    c: pc.0.add(lo * n),
                    ..whole
                };
                T::raw_in(lib, p);
            } else {
                let b0 = if tb { pb.0.add(lo * k) } else { pb.0.add(lo) };
                let p = Product {
                    n: hi - lo,
                    b: b0,
                    c: pc.0.add(lo),
                    ..whole
                };
                T::raw_in(lib, p);
            }
        }
    });
    Ok(())
}

/// [`Gemm::gemm_serial`] on `lib`.
#[allow(clippy::too_many_arguments)]
fn gemm_serial_in<T: RawGemm>(
    lib: Lib,
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
        let p = Product {
            ta,
            tb,
            m,
            n,
            k,
            a: a.as_ptr(),
            lda,
            b: b.as_ptr(),
            ldb,
            beta,
            c: c.as_mut_ptr(),
            ldc: n,
        };
        T::raw_in(lib, p)
    };
    Ok(())
}

/// [`Gemm::gemm_ld_serial`] on `lib`.
#[allow(clippy::too_many_arguments)]
fn gemm_ld_serial_in<T: RawGemm>(
    lib: Lib,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    (a, lda): (&[T], usize),
    (b, ldb): (&[T], usize),
    beta: T,
    (c, ldc): (&mut [T], usize),
) -> candle_core::Result<()> {
    let (b_rows, b_cols) = if tb { (n, k) } else { (k, n) };
    if !fits_ld(m, k, lda, a.len())
        || !fits_ld(b_rows, b_cols, ldb, b.len())
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
        let p = Product {
            ta: false,
            tb,
            m,
            n,
            k,
            a: a.as_ptr(),
            lda,
            b: b.as_ptr(),
            ldb,
            beta,
            c: c.as_mut_ptr(),
            ldc,
        };
        T::raw_in(lib, p)
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The libraries to test: the crate, and oneDNN where it loads (it must where `MSD_GEMM=onednn`, as in CI).
    fn libs() -> Vec<Lib> {
        let mut libs = vec![Lib::Crate];
        match OneDnn::get() {
            Ok(d) => libs.push(Lib::OneDnn(d)),
            Err(e) if std::env::var("MSD_GEMM").as_deref() == Ok("onednn") => panic!("{e}"),
            Err(e) => eprintln!("oneDNN not tested: {e}"),
        }
        libs
    }

    /// An element type under test: its values come from f32 and are read back as f64.
    trait Elem: RawGemm + Into<f64> + From<f32> + std::fmt::Debug {
        const EPS: f64;
    }
    impl Elem for f32 {
        const EPS: f64 = f32::EPSILON as f64;
    }
    impl Elem for f64 {
        const EPS: f64 = f64::EPSILON;
    }

    fn values<T: Elem>(len: usize, seed: usize) -> Vec<T> {
        let val = |i: usize| ((i * 7919 + seed * 104729) % 201) as f32 / 100.0 - 1.0;
        (0..len).map(|i| T::from(val(i))).collect()
    }

    /// `got` against the exact f64 sum of `terms` (the last one being beta·C): the products and the sum of
    /// k + 1 terms in any order round by at most (k + 1)·ε·Σ|terms|, the final rounding to T by ε·|sum|.
    fn assert_sum<T: Elem>(got: T, terms: impl Iterator<Item = f64> + Clone, what: &str) {
        let want: f64 = terms.clone().sum();
        let n = terms.clone().count();
        let mag: f64 = terms.map(f64::abs).sum();
        let tol = (n as f64 * mag + want.abs()) * T::EPS;
        let got: f64 = got.into();
        assert!((got - want).abs() <= tol, "{what}: {got} vs {want}");
    }

    /// Every transpose combination, split over a 3-thread pool (row blocks for m ≥ n, column blocks for
    /// m < n) and on one thread, against a plain triple loop in f64, for each library and type. The last
    /// shape's `k` takes the crate's sliced `A·Bᵀ` path: two full slices and a partial one.
    fn products_match_a_triple_loop<T: Elem>(lib: Lib) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for &(m, n, k) in &[(300, 90, 100), (70, 310, 100), (40, 150, 2 * KC + 37)] {
            assert!(m * n * k >= SPLIT_MIN_MACS);
            let (a, b, c0) = (
                values::<T>(m * k, 1),
                values::<T>(k * n, 2),
                values::<T>(m * n, 3),
            );
            let f = |v: &[T], i: usize| -> f64 { v[i].into() };
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                // Element (i, p) of op(A) and (p, j) of op(B) from the stored layouts.
                let at = |i: usize, p: usize| {
                    if ta {
                        f(&a, p * m + i)
                    } else {
                        f(&a, i * k + p)
                    }
                };
                let bt = |p: usize, j: usize| {
                    if tb {
                        f(&b, j * k + p)
                    } else {
                        f(&b, p * n + j)
                    }
                };
                let half = T::from(0.5);
                let mut split = c0.clone();
                pool.install(|| gemm_in(lib, ta, tb, m, n, k, &a, &b, half, &mut split))
                    .unwrap();
                let mut serial = c0.clone();
                gemm_serial_in(lib, ta, tb, m, n, k, &a, &b, half, &mut serial).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let terms = (0..k)
                            .map(|p| at(i, p) * bt(p, j))
                            .chain([0.5 * f(&c0, i * n + j)]);
                        for (how, got) in
                            [("split", split[i * n + j]), ("serial", serial[i * n + j])]
                        {
                            let what = format!(
                                "{lib:?} {how} m {m} n {n} k {k} ta {ta} tb {tb} at ({i}, {j})"
                            );
                            assert_sum(got, terms.clone(), &what);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn products_match_a_triple_loop_f64() {
        products_match_a_triple_loop::<f64>(Lib::Crate);
    }

    #[test]
    fn products_match_a_triple_loop_f32() {
        for lib in libs() {
            products_match_a_triple_loop::<f32>(lib);
        }
    }

    /// Submatrices with leading dimensions larger than their widths (the convolutions by taps read windows
    /// of padded planes), B as stored or transposed, against a triple loop in f64; the values between the
    /// rows of C stay untouched. The second shape's `k` takes the crate's sliced `A·Bᵀ` path.
    fn leading_dimensions_match_a_triple_loop<T: Elem>(lib: Lib) {
        for (tb, (m, n, k)) in [false, true]
            .into_iter()
            .flat_map(|tb| [(tb, (37, 45, 29)), (tb, (13, 21, KC + 40))])
        {
            let (lda, ldc) = (k + 2, n + 2);
            let (b_rows, b_cols) = if tb { (n, k) } else { (k, n) };
            let ldb = b_cols + 5;
            let a = values::<T>((m - 1) * lda + k, 1);
            let b = values::<T>((b_rows - 1) * ldb + b_cols, 2);
            let c0 = values::<T>((m - 1) * ldc + n, 3);
            let mut c = c0.clone();
            let half = T::from(0.5);
            gemm_ld_serial_in(lib, tb, m, n, k, (&a, lda), (&b, ldb), half, (&mut c, ldc)).unwrap();
            // Element (p, j) of op(B) from the stored layout.
            let bt = |p: usize, j: usize| -> f64 {
                if tb {
                    b[j * ldb + p].into()
                } else {
                    b[p * ldb + j].into()
                }
            };
            for (idx, (&got, &old)) in c.iter().zip(&c0).enumerate() {
                let (i, j) = (idx / ldc, idx % ldc);
                let what = format!("{lib:?} tb {tb} k {k}: C[{i}, {j}]");
                if j >= n {
                    assert_eq!(got, old, "{what} lies between the rows");
                    continue;
                }
                let old: f64 = old.into();
                let terms = (0..k)
                    .map(|p| a[i * lda + p].into() * bt(p, j))
                    .chain([0.5 * old]);
                assert_sum(got, terms, &what);
            }
            // One element short of any operand is an error, not an out-of-bounds access.
            let z = T::from(0.0);
            let e = gemm_ld_serial_in(
                lib,
                tb,
                m,
                n,
                k,
                (&a[1..], lda),
                (&b, ldb),
                z,
                (&mut c, ldc),
            );
            assert!(e.unwrap_err().to_string().contains("bad operand extents"));
            let e = gemm_ld_serial_in(
                lib,
                tb,
                m,
                n,
                k,
                (&a, lda),
                (&b[1..], ldb),
                z,
                (&mut c, ldc),
            );
            assert!(e.is_err());
            let short = c.len() - 1;
            let c_short = (&mut c[..short], ldc);
            let e = gemm_ld_serial_in(lib, tb, m, n, k, (&a, lda), (&b, ldb), z, c_short);
            assert!(e.is_err());
            // A leading dimension below the width is refused too.
            let e = gemm_ld_serial_in(lib, tb, m, n, k, (&a, k - 1), (&b, ldb), z, (&mut c, ldc));
            assert!(e.is_err());
            let e = gemm_ld_serial_in(
                lib,
                tb,
                m,
                n,
                k,
                (&a, lda),
                (&b, b_cols - 1),
                z,
                (&mut c, ldc),
            );
            assert!(e.is_err());
        }
    }

    #[test]
    fn leading_dimensions_match_a_triple_loop_f64() {
        leading_dimensions_match_a_triple_loop::<f64>(Lib::Crate);
    }

    #[test]
    fn leading_dimensions_match_a_triple_loop_f32() {
        for lib in libs() {
            leading_dimensions_match_a_triple_loop::<f32>(lib);
        }
    }

    /// Where `MSD_GEMM=onednn` (CI), the products do run on oneDNN.
    #[test]
    fn msd_gemm_onednn_is_obeyed() {
        if std::env::var("MSD_GEMM").as_deref() == Ok("onednn") {
            assert!(
                matches!(lib().unwrap(), Lib::OneDnn(_)),
                "{}",
                gemm_library()
            );
        }
    }

    /// beta = 0 overwrites C without reading it (a NaN left there does not survive), as BLAS.
    #[test]
    fn zero_beta_does_not_read_c() {
        for (lib, k) in libs().into_iter().flat_map(|l| [(l, 3), (l, KC + 5)]) {
            let mut c = vec![f32::NAN; 4];
            gemm_serial_in(
                lib,
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
            assert_eq!(c, vec![k as f32; 4], "{lib:?}");
        }
    }

    #[test]
    fn bad_sizes_are_an_error() {
        let mut c = vec![0f32; 4];
        let e = f32::gemm(false, false, 2, 2, 3, &[0.0; 5], &[0.0; 6], 0.0, &mut c).unwrap_err();
        assert!(e.to_string().contains("bad operand sizes"), "{e}");
    }
}
