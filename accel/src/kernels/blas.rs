//! Row-major GEMM through OpenBLAS's CBLAS interface (the workspace links OpenBLAS for ndarray-linalg; it is
//! about twice as fast as candle's own `gemm` crate here on f32).
//!
//! # Threads
//! OpenBLAS's own threads busy-wait (spinning with `sched_yield`) for a long time after each call, and the
//! kernels' im2col/col2im and candle's element-wise ops run on two more pools (rayon, candle's barrier pool):
//! on a machine with few cores the three pools take the cores from each other (a profile of a training
//! step showed 15 % in `sched_yield` and 16 % in candle's barrier spin against 7 % of GEMM). So the first
//! GEMM switches OpenBLAS to one thread for the whole process, and [`Gemm::gemm`] splits a large product
//! into blocks of rows or columns of `C` computed by single-threaded GEMMs on the rayon pool. With
//! `MSD_GEMM_THREADS=blas` OpenBLAS keeps its own threads and gets the whole product (for comparison).

use std::os::raw::c_int;
use std::sync::OnceLock;

use rayon::prelude::*;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

#[link(name = "openblas")]
extern "C" {
    fn openblas_set_num_threads(n: c_int);
    fn openblas_get_corename() -> *const std::os::raw::c_char;
    fn cblas_sgemm(
        order: c_int,
        ta: c_int,
        tb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn cblas_dgemm(
        order: c_int,
        ta: c_int,
        tb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f64,
        a: *const f64,
        lda: c_int,
        b: *const f64,
        ldb: c_int,
        beta: f64,
        c: *mut f64,
        ldc: c_int,
    );
}

/// The name of the CPU kernel set OpenBLAS chose when it loaded (e.g. `Haswell`, `SkylakeX`; a
/// `DYNAMIC_ARCH` build picks it from the CPU, or from `OPENBLAS_CORETYPE`).
pub fn core_name() -> String {
    // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string (never null in the builds we
    // link; checked anyway).
    unsafe {
        let p = openblas_get_corename();
        if p.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Whether the products are split over the rayon pool (OpenBLAS single-threaded), set up once.
pub(crate) fn rayon_split() -> bool {
    static SPLIT: OnceLock<bool> = OnceLock::new();
    *SPLIT.get_or_init(|| {
        let split = std::env::var("MSD_GEMM_THREADS").as_deref() != Ok("blas");
        if split {
            // SAFETY: a plain setter of OpenBLAS's global thread count.
            unsafe { openblas_set_num_threads(1) };
        }
        split
    })
}

/// Multiply-adds below which a product is not split (the split costs a few microseconds).
const SPLIT_MIN_MACS: usize = 1 << 21;

/// A pointer the blocks of one product share; each block touches a disjoint part of `C`.
#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
// SAFETY: used only for disjoint blocks of one output within one `gemm` call (see `Gemm::gemm`).
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}

/// One CBLAS call on (sub)matrices with explicit leading dimensions.
trait RawGemm: Sized + Copy + Send + Sync + std::ops::Mul<Output = Self> {
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
    );
}

macro_rules! impl_raw {
    ($t:ty, $f:ident) => {
        impl RawGemm for $t {
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
                $f(
                    ROW_MAJOR,
                    if ta { TRANS } else { NO_TRANS },
                    if tb { TRANS } else { NO_TRANS },
                    m as c_int,
                    n as c_int,
                    k as c_int,
                    1.0,
                    a,
                    lda as c_int,
                    b,
                    ldb as c_int,
                    beta,
                    c,
                    ldc as c_int,
                );
            }
        }
    };
}

impl_raw!(f32, cblas_sgemm);
impl_raw!(f64, cblas_dgemm);

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
}

fn check(m: usize, n: usize, k: usize, la: usize, lb: usize, lc: usize) -> candle_core::Result<()> {
    let fits = |x: usize| x <= c_int::MAX as usize;
    if la != m * k || lb != k * n || lc != m * n || !fits(m) || !fits(n) || !fits(k) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product split into row blocks (m ≥ n) and column blocks (m < n), every transpose combination,
    /// against a plain triple loop in f64; run on a 3-thread pool so that it splits on any machine.
    #[test]
    fn split_products_match_a_triple_loop() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for &(m, n, k) in &[(300, 90, 100), (70, 310, 100)] {
            assert!(m * n * k >= SPLIT_MIN_MACS);
            let val = |i: usize, s: usize| ((i * 7919 + s * 104729) % 201) as f64 / 100.0 - 1.0;
            let a: Vec<f64> = (0..m * k).map(|i| val(i, 1)).collect();
            let b: Vec<f64> = (0..k * n).map(|i| val(i, 2)).collect();
            let c0: Vec<f64> = (0..m * n).map(|i| val(i, 3)).collect();
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                // Element (i, p) of op(A) and (p, j) of op(B) from the stored layouts.
                let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
                let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
                let mut c = c0.clone();
                pool.install(|| f64::gemm(ta, tb, m, n, k, &a, &b, 0.5, &mut c))
                    .unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let want =
                            0.5 * c0[i * n + j] + (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f64>();
                        let got = c[i * n + j];
                        // k products of |values| ≤ 1: round-off ≤ k·ε.
                        assert!(
                            (got - want).abs() <= k as f64 * f64::EPSILON,
                            "m {m} n {n} ta {ta} tb {tb} at ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_an_error() {
        let mut c = vec![0f32; 4];
        let e = f32::gemm(false, false, 2, 2, 3, &[0.0; 5], &[0.0; 6], 0.0, &mut c).unwrap_err();
        assert!(e.to_string().contains("bad operand sizes"), "{e}");
    }
}
