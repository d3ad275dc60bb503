//! `.npy` bytes through the reader every command uses: an array or an error, never a panic or an
//! allocation of what the header merely declares.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.npy");
    if let Ok((a, dtype)) = msd::npy::parse_f64(data, p) {
        if let Ok((m, _)) = msd::npy::into_matrix(a, dtype, p) {
            assert!(m.iter().all(|v| v.is_finite()));
        }
    }
});
