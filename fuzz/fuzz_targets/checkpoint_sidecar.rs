//! The training checkpoint sidecars as `msd train --resume` and `msd sample --checkpoint` read them:
//! `state.json` (through validation and the shape-only build whose size the weights files are checked
//! against) and the run's `run.json`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use msd::accel::train::checkpoint::{parse_run_info, parse_state};
use msd::accel::unet::{model_info, MultistageUNet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(st) = parse_state(text) {
        if let Ok(model) = MultistageUNet::shapes_only(&st.model) {
            let _ = model.store().count("").saturating_mul(4);
            let _ = model_info(&model);
        }
    }
    if let Ok(info) = parse_run_info(text) {
        let _ = info.model.input_chw();
    }
});
