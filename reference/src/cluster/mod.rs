//! Timestep clustering: choosing the stage boundaries (paper §4.2, Appendix C; docs/paper-notes.md §1).
//!
//! - [`optimal`]: the optimal-denoiser methods. Algorithm 1 (three stages: t1, t2 from the similarity of ε*_t to
//!   its t → 0 and t → 1 limits) and Algorithm 2 (n stages: a similarity matrix on a t-grid, then the exact
//!   optimum of the contiguous segmentation, for the paper's and the authors' objectives).
//! - [`segment`]: the segmentation dynamic programs (exact optimum; the authors' size-constrained DP).
//! - [`baselines`]: the Table-4 baselines (uniform timestep, SNR, gradient affinity).

pub mod baselines;
pub mod optimal;
pub mod segment;

use thiserror::Error;

use crate::denoiser::DenoiserError;
use crate::schedule::ScheduleError;

/// Errors of the clustering methods; each names the offending input.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ClusterError {
    #[error("cannot split {points} grid points into {stages} stages (need 2 <= stages and enough points per stage)")]
    TooManyStages { stages: usize, points: usize },
    #[error("no segmentation of {points} points into {stages} stages satisfies the size limits")]
    NoFeasibleSegmentation { stages: usize, points: usize },
    #[error("{0} is not finite")]
    NonFinite(&'static str),
    #[error("the affinity matrix must be square and non-empty, got {rows} x {cols}")]
    NotSquare { rows: usize, cols: usize },
    #[error("invalid parameter {name} = {value}: {why}")]
    BadParameter {
        name: &'static str,
        value: f64,
        why: &'static str,
    },
    #[error(transparent)]
    Denoiser(#[from] DenoiserError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}
