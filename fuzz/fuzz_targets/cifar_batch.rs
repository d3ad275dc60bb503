//! CIFAR-10 binary batches.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = msd::data::parse_cifar_batch(data, std::path::Path::new("fuzz.bin"));
});
