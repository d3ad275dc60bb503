//! Row-major GEMM through OpenBLAS's CBLAS interface (the workspace links OpenBLAS for ndarray-linalg; it is
//! about twice as fast as candle's own `gemm` crate here on f32).

use std::os::raw::c_int;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

#[link(name = "openblas")]
extern "C" {
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
}

fn check(m: usize, n: usize, k: usize, la: usize, lb: usize, lc: usize) -> candle_core::Result<()> {
    let fits = |x: usize| x <= c_int::MAX as usize;
    if la != m * k || lb != k * n || lc != m * n || !fits(m) || !fits(n) || !fits(k) {
        candle_core::bail!("gemm: bad operand sizes (m {m}, n {n}, k {k}; a {la}, b {lb}, c {lc})");
    }
    Ok(())
}

macro_rules! impl_gemm {
    ($t:ty, $f:ident) => {
        impl Gemm for $t {
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
            ) -> candle_core::Result<()> {
                check(m, n, k, a.len(), b.len(), c.len())?;
                if m == 0 || n == 0 {
                    return Ok(());
                }
                if k == 0 {
                    c.iter_mut().for_each(|v| *v *= beta);
                    return Ok(());
                }
                let lda = if ta { m } else { k };
                let ldb = if tb { k } else { n };
                // SAFETY: the sizes were checked above against the slices' lengths, and the leading dimensions
                // are those of dense row-major matrices of these shapes.
                unsafe {
                    $f(
                        ROW_MAJOR,
                        if ta { TRANS } else { NO_TRANS },
                        if tb { TRANS } else { NO_TRANS },
                        m as c_int,
                        n as c_int,
                        k as c_int,
                        1.0,
                        a.as_ptr(),
                        lda as c_int,
                        b.as_ptr(),
                        ldb as c_int,
                        beta,
                        c.as_mut_ptr(),
                        n as c_int,
                    );
                }
                Ok(())
            }
        }
    };
}

impl_gemm!(f32, cblas_sgemm);
impl_gemm!(f64, cblas_dgemm);
