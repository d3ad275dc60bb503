//! Model configs (TOML) through validation and the shape-only accounting of `msd model-info`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use msd::accel::unet::{model_info, MultistageUNet, UNetConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = UNetConfig::from_toml(text) {
        if let Ok(model) = MultistageUNet::shapes_only(&cfg) {
            let _ = model_info(&model);
        }
    }
});
