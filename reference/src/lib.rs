//! `msd-reference`: the exact f64 math of multistage diffusion, on ndarray.
//!
//! This crate is the truth the accel (candle) backend is checked against: every function is a formula from
//! the paper or a peer, in f64, with no threads of its own beyond BLAS and rayon for row-parallel loops.
//!
//! - [`schedule`]: noise schedules (VP linear, VP cosine, VE geometric, EDM), λ and its inverse, the paper's
//!   (s_t, σ̃_t) pair and the VP↔VE SNR-equivalent σ.
//! - [`denoiser`]: the Proposition 1 optimal denoiser of an empirical dataset.
//! - [`symeig`]: symmetric eigen-decomposition through LAPACK's dsyevd.
//! - [`frechet`]: the Fréchet (FID) distance of two Gaussians and running feature statistics.

// ndarray-linalg switches on ndarray's `blas` feature for the whole build, so every artifact must link
// OpenBLAS: this keeps the link in the rlib.
use ndarray_linalg as _;

pub mod cluster;
pub mod denoiser;
pub mod frechet;
pub mod schedule;
pub mod symeig;

pub use denoiser::{DenoiserError, NoiseLevel, OptimalDenoiser, Prediction};
pub use schedule::{Edm, Schedule, ScheduleError, VeGeometric, VpCosine, VpLinear};
