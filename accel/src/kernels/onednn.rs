//! oneDNN's `sgemm`, loaded at run time when the machine has the library.
//!
//! # Why
//! On an Intel AVX-512 core, oneDNN's JIT-generated f32 GEMM runs the convolutions' shapes at 85–100 % of
//! the core's FMA peak, against 55–75 % for the `gemm` crate's generic microkernel (the
//! `notes/network-speed.md` tables, ninth round). It is the library PyTorch's own CPU convolutions are built
//! on. It is loaded with `dlopen`, not linked, so msd builds and runs the same without it (laptops,
//! macOS, other distributions), and falls back to the `gemm` crate.
//!
//! # Threads
//! msd runs one single-threaded product per rayon task (see `blas.rs`). Debian's oneDNN is built on OpenMP,
//! whose team size is a per-thread setting, so every call first sets the calling thread's to one with the
//! OpenMP runtime oneDNN brought in. A build on another threading runtime (TBB, a user threadpool) could
//! not be pinned that way and is not used.

use std::ffi::{c_char, c_int, c_uint};
use std::sync::OnceLock;

use libloading::Library;

use super::blas::Product;

/// `dnnl_sgemm`: row-major `C = alpha·op(A)·op(B) + beta·C`, sizes and leading dimensions as `int64_t`.
type SgemmFn = unsafe extern "C" fn(
    c_char,
    c_char,
    i64,
    i64,
    i64,
    f32,
    *const f32,
    i64,
    *const f32,
    i64,
    f32,
    *mut f32,
    i64,
) -> c_int;

/// `dnnl_version`'s answer (`dnnl_version_t`, the same in oneDNN 2 and 3).
#[repr(C)]
struct Version {
    major: c_int,
    minor: c_int,
    patch: c_int,
    hash: *const c_char,
    cpu_runtime: c_uint,
    gpu_runtime: c_uint,
}

const RUNTIME_SEQ: c_uint = 1;
const RUNTIME_OMP: c_uint = 2;

/// The names tried, newest first.
const NAMES: &[&str] = if cfg!(target_os = "macos") {
    &["libdnnl.3.dylib", "libdnnl.2.dylib", "libdnnl.dylib"]
} else if cfg!(windows) {
    &["dnnl.dll"]
} else {
    &["libdnnl.so.3", "libdnnl.so.2", "libdnnl.so"]
};

/// A loaded oneDNN whose `sgemm` can be pinned to the calling thread.
pub(crate) struct OneDnn {
    sgemm: SgemmFn,
    /// `omp_set_num_threads` of the OpenMP runtime oneDNN uses; `None` for a sequential build.
    set_threads: Option<unsafe extern "C" fn(c_int)>,
    /// What was loaded, for reports: file name and version.
    pub(crate) description: String,
    /// Kept so that the two function pointers stay valid.
    _lib: Library,
}

impl std::fmt::Debug for OneDnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl OneDnn {
    /// The library, loaded on first use, or why it could not be.
    pub(crate) fn get() -> Result<&'static OneDnn, &'static str> {
        static LIB: OnceLock<Result<OneDnn, String>> = OnceLock::new();
        LIB.get_or_init(Self::load).as_ref().map_err(|e| e.as_str())
    }

    fn load() -> Result<OneDnn, String> {
        let mut errors = Vec::new();
        for name in NAMES {
            // SAFETY: loading runs the library's initialisers; oneDNN's only set up its own globals.
            match unsafe { Library::new(*name) } {
                Ok(lib) => return Self::from_library(lib, name),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(format!("oneDNN not found ({})", errors.join("; ")))
    }

    fn from_library(lib: Library, name: &str) -> Result<OneDnn, String> {
        // SAFETY: the symbols are declared with oneDNN's C signatures (dnnl.h, versions 2 and 3), and the
        // library is kept alive next to the pointers taken from it.
        unsafe {
            let sgemm = *lib
                .get::<SgemmFn>(b"dnnl_sgemm\0")
                .map_err(|e| format!("{name}: {e}"))?;
            let version = *lib
                .get::<unsafe extern "C" fn() -> *const Version>(b"dnnl_version\0")
                .map_err(|e| format!("{name}: {e}"))?;
            let v = &*version();
            let set_threads = match v.cpu_runtime {
                RUNTIME_SEQ => None,
                RUNTIME_OMP => Some(
                    *lib.get::<unsafe extern "C" fn(c_int)>(b"omp_set_num_threads\0")
                        .map_err(|e| {
                            format!("{name}: OpenMP build without omp_set_num_threads: {e}")
                        })?,
                ),
                other => {
                    return Err(format!(
                        "{name}: threading runtime {other} cannot be pinned to one thread per call"
                    ))
                }
            };
            let description = format!("oneDNN {}.{}.{} ({name})", v.major, v.minor, v.patch);
            Ok(OneDnn {
                sgemm,
                set_threads,
                description,
                _lib: lib,
            })
        }
    }

    /// `C = op(A)·op(B) + beta·C` on the calling thread, or `false` if oneDNN refused the call (the
    /// caller then computes it another way).
    ///
    /// # Safety
    /// The pointers and leading dimensions of `p` must describe matrices of its shapes inside live
    /// allocations, and `p.c` must not be written concurrently by anyone else.
    pub(super) unsafe fn sgemm(&self, p: &Product<f32>) -> bool {
        let t = |x: bool| (if x { b'T' } else { b'N' }) as c_char;
        // Sizes come from checked slices, so they fit in i64.
        let d = |x: usize| x as i64;
        if let Some(set) = self.set_threads {
            set(1);
        }
        let status = (self.sgemm)(
            t(p.ta),
            t(p.tb),
            d(p.m),
            d(p.n),
            d(p.k),
            1.0,
            p.a,
            d(p.lda),
            p.b,
            d(p.ldb),
            p.beta,
            p.c,
            d(p.ldc),
        );
        status == 0
    }
}
