//! Run directories and atomic checkpoints.
//!
//! A run directory DIR holds `run.json` (model config, training config, msd version), `metrics.jsonl`,
//! `samples/` and `checkpoints/step-XXXXXXXX/` (8-digit step), each with `model.safetensors` (the model's
//! tensor names), `ema.safetensors` (same names), `optim.safetensors` (`m.NAME`, `v.NAME`, `steps`) and
//! `state.json` (step, data position, RNG scheme and seed, msd version, progress counters, the model config
//! under `"model"` and the training config under `"train"`, so a checkpoint directory is self-contained).
//!
//! A checkpoint is written into `step-XXXXXXXX.tmp/`, every file is fsynced, the directory is renamed to its
//! final name (atomic) and `checkpoints/` is fsynced; only then are older checkpoints beyond the last K removed.
//! A failed write removes its temporary directory and leaves the earlier checkpoints as they were. Older
//! checkpoints are first renamed out of the `step-XXXXXXXX` pattern (`.old`) and then removed, so a process
//! killed while pruning leaves no half-deleted directory that looks like a checkpoint; leftovers of a killed
//! writer (`*.tmp`, `*.old`) are removed by the next checkpoint write.
//!
//! The sidecars (`state.json`, `run.json`) are untrusted input when read back: they are read up to
//! [`MAX_SIDECAR_BYTES`] (regular files only), parsed by [`parse_state`] / [`parse_run_info`] (which the fuzz
//! target `checkpoint_sidecar` exercises) and validated before anything is built from them; the size of
//! every weights file is checked against the model the sidecar declares before the model is allocated.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::trainer::{Progress, TrainConfig, Trainer};
use super::TrainError;
use crate::unet::{MultistageUNet, UNetConfig};

pub const MSD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the generators are derived (no generator state needs saving; see [`super::trainer`]).
pub const RNG_SCHEME: &str =
    "StdRng::seed_from_u64(splitmix(seed ^ splitmix(8*counter + stream))); stream 1 = step (stages, levels, \
     noise, flips), 2 = dropout, counter = step; stream 3 = data order, counter = epoch";

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    pub msd_version: String,
    pub step: u64,
    pub data_position: u64,
    pub images: u64,
    pub train_flops: f64,
    pub seconds: f64,
    pub seed: u64,
    pub rng: String,
    pub model: UNetConfig,
    pub train: TrainConfig,
}

/// `run.json` of a run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub msd_version: String,
    pub model: UNetConfig,
    pub train: TrainConfig,
    /// The data spec the run trains on (informative).
    #[serde(default)]
    pub data: String,
    /// Only the first `limit` images of the data were used.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Largest `state.json` / `run.json` read (a real one is a few KiB; a model config with long lists stays far
/// below this).
pub const MAX_SIDECAR_BYTES: u64 = 4 << 20;

/// Header allowance of a checkpoint's safetensors files beyond their tensor bytes (names, shapes, offsets:
/// about 100 bytes per tensor; the largest preset has a few thousand tensors).
const MAX_SAFETENSORS_HEADER_BYTES: u64 = 16 << 20;

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::io(path, e.to_string())
}

fn fsync(path: &Path) -> Result<(), TrainError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Writes `text` to `path` through a temporary file and a rename (used for run.json).
pub fn write_atomic(path: &Path, text: &str) -> Result<(), TrainError> {
    let tmp = path.with_extension("json.tmp");
    let res = (|| {
        fs::write(&tmp, text).map_err(io(&tmp))?;
        fsync(&tmp)?;
        fs::rename(&tmp, path).map_err(io(path))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Parses and validates the text of a `state.json`: the model config (sizes within the model limits), the
/// training settings, the progress counters and the RNG scheme (a checkpoint of another scheme cannot
/// continue bit-identically).
pub fn parse_state(text: &str) -> Result<CheckpointState, String> {
    let st: CheckpointState = serde_json::from_str(text).map_err(|e| e.to_string())?;
    st.model.validate().map_err(|e| format!("model: {e}"))?;
    st.train.validate().map_err(|e| format!("train: {e}"))?;
    for (what, v) in [("train_flops", st.train_flops), ("seconds", st.seconds)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("{what} = {v} must be finite and >= 0"));
        }
    }
    if st.rng != RNG_SCHEME {
        return Err(format!(
            "written with another random-number scheme ({:?}); this msd ({MSD_VERSION}) cannot continue it bit-identically",
            shorten(&st.rng, 60)
        ));
    }
    Ok(st)
}

/// Parses and validates the text of a run's `run.json`.
pub fn parse_run_info(text: &str) -> Result<RunInfo, String> {
    let info: RunInfo = serde_json::from_str(text).map_err(|e| e.to_string())?;
    info.model.validate().map_err(|e| format!("model: {e}"))?;
    info.train.validate().map_err(|e| format!("train: {e}"))?;
    Ok(info)
}

/// `s` cut to `max` characters, for quoting untrusted text.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Reads a sidecar: a regular file of at most [`MAX_SIDECAR_BYTES`], UTF-8.
fn read_sidecar(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_SIDECAR_BYTES {
        return Err(format!(
            "{} bytes, more than the {} MiB a sidecar may have",
            meta.len(),
            MAX_SIDECAR_BYTES >> 20
        ));
    }
    let mut text = String::new();
    f.take(MAX_SIDECAR_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// Reads a run directory's `run.json`.
pub fn read_run_info(run_dir: &Path) -> Result<RunInfo, TrainError> {
    let p = run_dir.join("run.json");
    let text = read_sidecar(&p).map_err(|e| TrainError::io(&p, e))?;
    parse_run_info(&text).map_err(|e| TrainError::corrupt(&p, e))
}

/// Checks that a weights file is a regular file whose size fits `tensor_bytes` of tensors (plus a header)
/// before it is read: a truncated, swapped or endless file is refused without reading it.
fn check_weights_file(path: &Path, tensor_bytes: u64) -> Result<(), TrainError> {
    let meta = fs::metadata(path).map_err(|e| TrainError::corrupt(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(TrainError::corrupt(path, "not a regular file".into()));
    }
    let max = tensor_bytes.saturating_add(MAX_SAFETENSORS_HEADER_BYTES);
    if meta.len() < tensor_bytes || meta.len() > max {
        return Err(TrainError::corrupt(
            path,
            format!(
                "{} bytes, but the model of state.json needs {tensor_bytes} bytes of tensors (plus a header)",
                meta.len()
            ),
        ));
    }
    Ok(())
}

/// Bytes of f32 tensors of `model` (from a shape-only build: nothing is allocated).
fn model_tensor_bytes(model: &UNetConfig) -> Result<u64, TrainError> {
    let shapes = MultistageUNet::shapes_only(model)?;
    Ok(shapes.store().count("").saturating_mul(4))
}

/// Checkpoint directories of a run, oldest first, as (step, path).
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    let dir = run_dir.join("checkpoints");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).map_err(io(&dir))? {
        let e = e.map_err(io(&dir))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(num) = name.strip_prefix("step-") {
            if num.len() == 8 && num.bytes().all(|b| b.is_ascii_digit()) {
                out.push((num.parse().expect("digits"), e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest checkpoint of a run, if any.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>, TrainError> {
    Ok(list_checkpoints(run_dir)?.pop().map(|c| c.1))
}

/// Writes a checkpoint of `tr` under `run_dir/checkpoints/` and keeps the last `keep` of them.
pub fn save_checkpoint(run_dir: &Path, tr: &Trainer, keep: usize) -> Result<PathBuf, TrainError> {
    let dir = run_dir.join("checkpoints");
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let name = format!("step-{:08}", tr.progress.step);
    let fin = dir.join(&name);
    if fin.exists() {
        // Already written at this step (e.g. Ctrl-C right after a periodic checkpoint).
        return Ok(fin);
    }
    remove_leftovers(&dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let res = (|| {
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        let model = tmp.join("model.safetensors");
        tr.net.save_weights(&model)?;
        tr.ema().save(&tmp.join("ema.safetensors"))?;
        tr.optim().save(&tmp.join("optim.safetensors"))?;
        let p = &tr.progress;
        let state = CheckpointState {
            msd_version: MSD_VERSION.to_string(),
            step: p.step,
            data_position: p.data_position,
            images: p.images,
            train_flops: p.train_flops,
            seconds: p.seconds,
            seed: tr.cfg.seed,
            rng: RNG_SCHEME.to_string(),
            model: tr.net.config().clone(),
            train: tr.cfg.clone(),
        };
        let text = serde_json::to_string_pretty(&state).expect("serialisable state");
        let sp = tmp.join("state.json");
        fs::write(&sp, text).map_err(io(&sp))?;
        for f in [
            "model.safetensors",
            "ema.safetensors",
            "optim.safetensors",
            "state.json",
        ] {
            fsync(&tmp.join(f))?;
        }
        fsync(&tmp)?;
        fs::rename(&tmp, &fin).map_err(io(&fin))?;
        fsync(&dir)
    })();
    if let Err(e) = res {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let all = list_checkpoints(run_dir)?;
    if all.len() > keep {
        for (_, p) in &all[..all.len() - keep] {
            // Out of the checkpoint pattern first (atomic), then removed: never a half-deleted checkpoint.
            let old = p.with_extension("old");
            fs::rename(p, &old).map_err(io(p))?;
            fs::remove_dir_all(&old).map_err(io(&old))?;
        }
    }
    Ok(fin)
}

/// Removes what a killed writer left in `checkpoints/`: `step-*.tmp` (an unfinished checkpoint) and
/// `step-*.old` (a checkpoint being pruned).
fn remove_leftovers(dir: &Path) -> Result<(), TrainError> {
    for e in fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("step-") && (name.ends_with(".tmp") || name.ends_with(".old")) {
            let p = e.path();
            if p.is_dir() {
                fs::remove_dir_all(&p).map_err(io(&p))?;
            } else {
                fs::remove_file(&p).map_err(io(&p))?;
            }
        }
    }
    Ok(())
}

/// Reads a checkpoint's `state.json`.
pub fn read_state(ckpt: &Path) -> Result<CheckpointState, TrainError> {
    let sp = ckpt.join("state.json");
    let text = read_sidecar(&sp).map_err(|e| TrainError::corrupt(&sp, e))?;
    parse_state(&text).map_err(|e| TrainError::corrupt(&sp, e))
}

/// Loads a model (its weights, or its EMA weights) from a checkpoint directory, for sampling.
pub fn load_model(ckpt: &Path, ema: bool, device: &Device) -> Result<MultistageUNet, TrainError> {
    let st = read_state(ckpt)?;
    let file = ckpt.join(if ema {
        "ema.safetensors"
    } else {
        "model.safetensors"
    });
    check_weights_file(&file, model_tensor_bytes(&st.model)?)?;
    let net = MultistageUNet::new(&st.model, device, 0)?;
    net.load_weights(&file)
        .map_err(|e| TrainError::corrupt(&file, e.to_string()))?;
    Ok(net)
}

/// Rebuilds a trainer from a checkpoint, on `data`, continuing exactly where it stopped. `steps` may extend
/// the run.
pub fn resume(
    ckpt: &Path,
    data: Tensor,
    device: &Device,
    steps: Option<u64>,
) -> Result<Trainer, TrainError> {
    let st = read_state(ckpt)?;
    let net = load_model(ckpt, false, device)?;
    let mut cfg = st.train.clone();
    if let Some(s) = steps {
        cfg.steps = s;
    }
    let bytes = model_tensor_bytes(&st.model)?;
    check_weights_file(&ckpt.join("ema.safetensors"), bytes)?;
    // Two moments per parameter (and the step counts, a few bytes each, covered by the header allowance).
    check_weights_file(&ckpt.join("optim.safetensors"), bytes.saturating_mul(2))?;
    let mut tr = Trainer::new(net, cfg, data)?;
    tr.ema_mut().load(&ckpt.join("ema.safetensors"))?;
    tr.optim_mut().load(&ckpt.join("optim.safetensors"))?;
    tr.progress = Progress {
        step: st.step,
        data_position: st.data_position,
        images: st.images,
        train_flops: st.train_flops,
        seconds: st.seconds,
    };
    Ok(tr)
}

#[cfg(test)]
mod tests;
