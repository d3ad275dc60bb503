//! `msd-accel`: the candle backend of `msd` (f32; CPU by default, CUDA with the `cuda` feature).
//!
//! Everything here that also exists in `msd-reference` is checked against it by property tests
//! (the reference is f64 and exact; this crate is the fast path).
//!
//! - [`denoiser`]: the Proposition 1 optimal denoiser on tensors.
//! - [`device`]: choosing the device.
//! - [`sampler`]: executing sampler plans (built by `msd-reference`, data types in `msd-plan`) on tensors.
//! - [`unet`]: the multistage U-Nets (NCSN++, DDPM++, LDM), their accounting and weights I/O.
//! - [`kernels`]: fast CPU kernels (convolution, GroupNorm, FIR resampling) as candle custom ops, with the
//!   switch back to candle's plain ops.
//! - [`inception`]: the FID Inception-v3 (pytorch-fid) feature extractor, 2048-d pool3.
//! - [`fmnist_features`]: the small Fashion-MNIST classifier whose penultimate features `msd` trains and uses.

pub mod denoiser;
pub mod device;
pub mod fmnist_features;
pub mod inception;
pub mod kernels;
mod safetensors_io;
pub mod sampler;
pub mod train;
pub mod unet;

pub use denoiser::OptimalDenoiser;
pub use device::{device, DeviceKind};

/// Errors of the accel backend.
#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    #[error("{0} contains a non-finite value (NaN or infinity)")]
    NonFinite(&'static str),
    #[error("{0}")]
    Shape(String),
    #[error("invalid noise level alpha = {alpha}, sigma = {sigma}: both must be finite and >= 0, not both 0")]
    BadNoiseLevel { alpha: f64, sigma: f64 },
    #[error("eps* is undefined at sigma = 0 (t = 0): it is (x - alpha*x0)/sigma; ask for the x0 prediction instead")]
    EpsAtZeroSigma,
    #[error(
        "this msd was built without CUDA support: rebuild with `--features cuda` (see README)"
    )]
    CudaNotBuilt,
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}
