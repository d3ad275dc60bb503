//! Statistics `.npz` (zip of `.npy` members mu, sigma) through the reader of `msd fid`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = msd::stats::parse_npz(std::io::Cursor::new(data), std::path::Path::new("fuzz.npz"));
});
