//! Training multistage U-Nets: losses per family ([`loss`]), stage schedules ([`stages`]), Adam/AdamW with
//! saveable state ([`optim`]), the weight EMA ([`ema`]), atomic checkpoints ([`checkpoint`]) and the loop
//! ([`trainer`]); and the gradient similarity across noise levels of a trained network
//! ([`grad_similarity`]). The on-disk layout of a run is documented in [`checkpoint`].

pub mod checkpoint;
pub mod ema;
pub mod grad_similarity;
pub mod loss;
pub mod optim;
pub mod stages;
pub mod trainer;

use std::path::Path;

pub use checkpoint::{latest_checkpoint, list_checkpoints, CheckpointState};
pub use loss::{LossFamily, LossParams};
pub use optim::{Adam, AdamConfig};
pub use stages::StageSchedule;
pub use trainer::{StepReport, TrainConfig, Trainer};

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("non-finite loss ({loss}) at step {step}: training stopped; the last good checkpoint is kept")]
    NonFiniteLoss { step: u64, loss: f64 },
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("checkpoint {path} is corrupt, truncated or does not match: {msg}")]
    Corrupt { path: String, msg: String },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    UNet(#[from] crate::unet::UNetError),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn io(path: &Path, msg: String) -> Self {
        TrainError::Io {
            path: path.display().to_string(),
            msg,
        }
    }
    pub(crate) fn corrupt(path: &Path, msg: String) -> Self {
        TrainError::Corrupt {
            path: path.display().to_string(),
            msg,
        }
    }
}
