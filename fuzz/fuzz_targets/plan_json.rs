//! Plan JSON as `msd model-info --plan` reads it, routed by each family's preset model.
#![no_main]
use libfuzzer_sys::fuzz_target;
use msd::accel::unet::{preset, MultistageUNet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["cifar10-ncsnpp-multistage", "cifar10-ddpmpp-edm-multistage", "celebahq-ldm-multistage"] {
        let model = MultistageUNet::shapes_only(&preset(name).expect("preset")).expect("model");
        let _ = msd::cli::plan_nfe_per_stage_from_json(text, std::path::Path::new("plan.json"), &model);
    }
});
