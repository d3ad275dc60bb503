//! Raw IDX files (Fashion-MNIST images, rank 3, and labels, rank 1).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = std::path::Path::new("fuzz-idx");
    let _ = msd::data::parse_idx_u8(data, 3, p);
    let _ = msd::data::parse_idx_u8(data, 1, p);
});
