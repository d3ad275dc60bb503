//! Safetensors checkpoints as the feature-network loader reads them (from a file, as the CLI does).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("msd-fuzz-{}.safetensors", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let _ = msd::accel::fmnist_features::FmnistNet::from_safetensors(
            &path,
            &candle_core::Device::Cpu,
        );
    }
});
