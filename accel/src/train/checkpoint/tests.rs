//! The checkpoint sidecars as untrusted input, the size checks before loading, and the cleanup of what a
//! killed writer leaves.

use candle_core::{Device, Tensor};

use super::*;
use crate::unet::preset;

fn trainer(steps_done: usize) -> Trainer {
    let cfgm = preset("tiny-ncsnpp-unified").unwrap();
    let net = MultistageUNet::new(&cfgm, &Device::Cpu, 5).unwrap();
    let cfg = TrainConfig {
        steps: 10,
        batch: 2,
        lr: 1e-3,
        seed: 7,
        ..Default::default()
    };
    let data = Tensor::zeros((2, 1, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut tr = Trainer::new(net, cfg, data).unwrap();
    for _ in 0..steps_done {
        tr.step().unwrap();
    }
    tr
}

fn state_json(dir: &Path) -> serde_json::Value {
    let ck = latest_checkpoint(dir).unwrap().unwrap();
    serde_json::from_str(&fs::read_to_string(ck.join("state.json")).unwrap()).unwrap()
}

#[test]
fn parse_state_accepts_what_save_writes_and_refuses_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(dir.path(), &trainer(1), 2).unwrap();
    let good = state_json(dir.path());
    let st = parse_state(&good.to_string()).unwrap();
    assert_eq!(st.step, 1);
    let bad = |edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let mut v = good.clone();
        edit(&mut v);
        let err = parse_state(&v.to_string()).unwrap_err();
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    };
    bad(
        &|v| v["seconds"] = (-1.0).into(),
        "seconds = -1 must be finite",
    );
    bad(
        &|v| v["train"]["batch"] = 0.into(),
        "train: batch and accum",
    );
    bad(
        &|v| v["train"]["keep_checkpoints"] = 0.into(),
        "train: keep at least 1",
    );
    bad(
        &|v| v["model"]["family"]["num_res_blocks"] = 1_000_000.into(),
        "model: model too large",
    );
    bad(
        &|v| v["rng"] = "xorshift".into(),
        "another random-number scheme",
    );
    bad(&|v| v["extra"] = 1.into(), "unknown field");
    bad(&|v| v["step"] = (-3).into(), "invalid value");
    assert!(parse_state("").is_err());
    assert!(parse_state("{\"step\": 1e999}").is_err());
}

#[test]
fn weights_files_are_checked_against_the_declared_model_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(dir.path(), &trainer(1), 2).unwrap();
    let ck = latest_checkpoint(dir.path()).unwrap().unwrap();
    // A state.json that declares a much larger model than its weights: refused from the file size,
    // before the large model is allocated.
    let mut v = state_json(dir.path());
    v["model"]["family"]["en_width"] = 4096.into();
    fs::write(ck.join("state.json"), v.to_string()).unwrap();
    let err = load_model(&ck, false, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("needs"),
        "{err}"
    );
    // A device or a directory in place of a weights file or a sidecar.
    save_checkpoint(dir.path(), &trainer(2), 2).unwrap();
    let ck = latest_checkpoint(dir.path()).unwrap().unwrap();
    fs::remove_file(ck.join("ema.safetensors")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", ck.join("ema.safetensors")).unwrap();
    let err = load_model(&ck, true, &Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("ema.safetensors") && err.contains("not a regular file"),
        "{err}"
    );
    fs::remove_file(ck.join("state.json")).unwrap();
    fs::create_dir(ck.join("state.json")).unwrap();
    let err = read_state(&ck).unwrap_err().to_string();
    assert!(err.contains("state.json"), "{err}");
}

#[test]
fn a_write_cleans_up_after_a_killed_writer_and_prunes_out_of_the_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let cks = dir.path().join("checkpoints");
    fs::create_dir_all(cks.join("step-00000009.tmp")).unwrap();
    fs::write(cks.join("step-00000009.tmp/model.safetensors"), b"half").unwrap();
    fs::create_dir_all(cks.join("step-00000001.old")).unwrap();
    let mut tr = trainer(0);
    for _ in 0..3 {
        tr.step().unwrap();
        save_checkpoint(dir.path(), &tr, 2).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(&cks)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["step-00000002", "step-00000003"]);
    // Only exact `step-XXXXXXXX` names count as checkpoints.
    fs::create_dir_all(cks.join("step-00000007.old")).unwrap();
    assert!(latest_checkpoint(dir.path())
        .unwrap()
        .unwrap()
        .ends_with("step-00000003"));
}
