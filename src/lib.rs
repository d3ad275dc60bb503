//! `msd`: multistage diffusion models (Zhang et al., CVPR 2024) — library facade and CLI.
//!
//! - [`reference`]: exact f64 math on ndarray (the truth).
//! - [`accel`]: the candle backend (f32, CPU or CUDA).
//! - [`npy`]: `.npy` I/O with clear errors.
//! - [`data`]: datasets (Fashion-MNIST, CIFAR-10, image folders, .npy) as rows of [0, 1] pixels.
//! - [`bridge`]: moving arrays between the two backends.
//! - [`eval`]: evaluation inputs (statistics, features, images) and feature extractors.
//! - [`stats`]: `mu`/`sigma` statistics `.npz` files (pytorch-fid / clean-fid compatible).
//! - [`limits`]: bounded reading of input files (sizes checked before allocating, documented ceilings).
//! - [`output`]: output files written through a temporary file, never left half-written.
//! - [`runtime`]: process-wide allocator and thread settings of the `msd` binary.
//! - [`cli`]: the `msd` command line.

// See reference/src/lib.rs: every artifact must link OpenBLAS.
use ndarray_linalg as _;

pub use msd_accel as accel;
pub use msd_reference as reference;

pub mod bridge;
pub mod cli;
pub mod data;
pub mod eval;
pub mod limits;
pub mod npy;
pub mod output;
pub mod runs;
pub mod runtime;
pub mod stats;
