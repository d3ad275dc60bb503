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
//! A failed write removes its temporary directory and leaves the earlier checkpoints as they were.

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
    let tmp = dir.join(format!("{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
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
            fs::remove_dir_all(p).map_err(io(p))?;
        }
    }
    Ok(fin)
}

/// Reads a checkpoint's `state.json`.
pub fn read_state(ckpt: &Path) -> Result<CheckpointState, TrainError> {
    let sp = ckpt.join("state.json");
    let text = fs::read_to_string(&sp).map_err(|e| TrainError::corrupt(&sp, e.to_string()))?;
    let st: CheckpointState =
        serde_json::from_str(&text).map_err(|e| TrainError::corrupt(&sp, e.to_string()))?;
    st.model
        .validate()
        .map_err(|e| TrainError::corrupt(&sp, e))?;
    Ok(st)
}

/// Loads a model (its weights, or its EMA weights) from a checkpoint directory, for sampling.
pub fn load_model(ckpt: &Path, ema: bool, device: &Device) -> Result<MultistageUNet, TrainError> {
    let st = read_state(ckpt)?;
    let net = MultistageUNet::new(&st.model, device, 0)?;
    let file = ckpt.join(if ema {
        "ema.safetensors"
    } else {
        "model.safetensors"
    });
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
