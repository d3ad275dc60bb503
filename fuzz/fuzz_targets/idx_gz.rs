//! Gzipped IDX files: decompression is cut one byte past what the header declares.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = std::path::Path::new("fuzz-idx.gz");
    let _ = msd::data::parse_idx_u8_gz(data, 3, p);
    let _ = msd::data::parse_idx_u8_gz(data, 1, p);
});
