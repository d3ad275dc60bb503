//! Any byte string given to the `.npy` reader yields a matrix or an error, never a panic, and a matrix it
//! returns is finite and N x d.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((m, _)) = msd::npy::parse_matrix(bytes, Path::new("fuzz.npy")) {
        assert!(m.iter().all(|v| v.is_finite()));
    }
});
