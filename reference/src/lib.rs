//! `msd-reference`: the exact f64 math of multistage diffusion, on ndarray.
//!
//! This crate is the truth the accel (candle) backend is checked against: every function is a formula from
//! the paper or a peer, in f64, with no threads of its own beyond BLAS and rayon for row-parallel loops.
//!
//! - [`schedule`]: noise schedules (VP linear, VP cosine, VE geometric, EDM), λ and its inverse, the paper's
//!   (s_t, σ̃_t) pair and the VP↔VE SNR-equivalent σ.
//! - [`denoiser`]: the Proposition 1 optimal denoiser of an empirical dataset.
//! - [`symeig`]: symmetric eigen-decomposition through LAPACK's dsyevd.
//! - [`solver`]: samplers (DPM-Solver, DPM-Solver++, EDM, DDIM, ancestral, Euler–Maruyama) as f64 plans,
//!   and the reference plan executor.
//! - [`stage`]: stage partitions and the per-stage NFE of a plan.
//! - [`frechet`]: the Fréchet (FID) distance of two Gaussians and running feature statistics.
//! - [`prdc`]: k-NN precision/recall (Kynkäänniemi et al.) and density/coverage (Naeem et al.).

// ndarray-linalg switches on ndarray's `blas` feature for the whole build, so every artifact must link
// OpenBLAS: this keeps the link in the rlib.
use ndarray_linalg as _;

pub mod cluster;
pub mod denoiser;
pub mod frechet;
pub mod prdc;
pub mod schedule;
pub mod solver;
pub mod stage;
pub mod symeig;
pub mod training;

pub use denoiser::{DenoiserError, NoiseLevel, OptimalDenoiser, Prediction};
pub use schedule::{Edm, Schedule, ScheduleError, VeGeometric, VpCosine, VpLinear};
