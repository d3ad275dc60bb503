//! Plan JSON as `msd model-info --plan` reads it, routed by each family's preset model.
#![no_main]
use libfuzzer_sys::fuzz_target;
use msd::accel::unet::{preset, MultistageUNet};

thread_local! {
    // Built once: a shape-only build of a paper-sized preset costs far more than parsing one input.
    static MODELS: Vec<MultistageUNet> = ["cifar10-ncsnpp-multistage", "cifar10-ddpmpp-edm-multistage", "celebahq-ldm-multistage"]
        .iter()
        .map(|name| MultistageUNet::shapes_only(&preset(name).expect("preset")).expect("model"))
        .collect();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    MODELS.with(|models| {
        for model in models {
            let _ = msd::cli::plan_nfe_per_stage_from_json(
                text,
                std::path::Path::new("plan.json"),
                model,
            );
        }
    });
});
