//! Around the raw networks: the EDM preconditioning wrapper and the adapter that makes a trained U-Net a
//! model of the sampler executor ([`crate::sampler::TensorModel`]).
//!
//! The raw networks take each family's native time (NCSN++ t, DDPM++ σ, LDM step) and return F. What a sampler
//! needs is ε̂ or x̂₀ at an evaluation point (α, σ) with x = α·x₀ + σ·ε:
//! - NCSN++ (VP continuous): the network predicts ε̂ at t directly; x̂₀ = (x − σ·ε̂)/α.
//! - DDPM++ (EDM): D(x̃; σ̃) = c_skip·x̃ + c_out·F(c_in·x̃; σ̃) with x̃ = x/α and σ̃ = σ/α (any plan's point maps to
//!   the EDM process of the same SNR); x̂₀ = D, ε̂ = (x̃ − D)/σ̃.
//! - LDM (discrete): the network predicts ε̂ at the fractional step N·(t − 1/N) of the plan's discrete time.

use std::sync::Mutex;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;

use super::ddpmpp::edm_precond;
use super::{Family, MultistageUNet, Result, UNetError};
use crate::sampler::{EvalPoint, TensorModel, TimeAxis, Want};
use crate::AccelError;

/// A per-sample scalar as a [B, 1, 1, 1] tensor (computed in f64 on the host, rounded to f32).
pub fn per_sample(v: &[f64], device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_vec(
        v.iter().map(|&x| x as f32).collect::<Vec<f32>>(),
        (v.len(), 1, 1, 1),
        device,
    )
}

/// The EDM denoiser D(x; σ) = c_skip·x + c_out·F(c_in·x; σ) of a DDPM++ network (per-sample σ), in
/// evaluation mode (`rng` = None) or training mode (dropout from `rng`).
pub fn edm_denoise(
    net: &MultistageUNet,
    x: &Tensor,
    sigma: &[f64],
    rng: Option<&Mutex<StdRng>>,
) -> Result<Tensor> {
    if !matches!(net.config().family, Family::Ddpmpp(_)) {
        return Err(UNetError::Input(
            "EDM preconditioning applies to DDPM++ (EDM) networks only".into(),
        ));
    }
    let pre: Vec<(f64, f64, f64, f64)> = sigma.iter().map(|&s| edm_precond(s)).collect();
    let dev = x.device();
    let c_skip = per_sample(&pre.iter().map(|p| p.0).collect::<Vec<_>>(), dev)?;
    let c_out = per_sample(&pre.iter().map(|p| p.1).collect::<Vec<_>>(), dev)?;
    let c_in = per_sample(&pre.iter().map(|p| p.2).collect::<Vec<_>>(), dev)?;
    let xin = x.broadcast_mul(&c_in)?;
    // The network applies c_noise = ln σ / 4 itself.
    let f = match rng {
        Some(r) => net.forward_train(&xin, sigma, r)?,
        None => net.forward(&xin, sigma)?,
    };
    Ok((x.broadcast_mul(&c_skip)? + f.broadcast_mul(&c_out)?)?)
}

/// A trained U-Net as a sampler model (see the module docs for the mapping per family).
pub struct UNetSamplerModel<'a> {
    pub net: &'a MultistageUNet,
    /// `net` without gradient tracking (see [`MultistageUNet::frozen`]): what the sampler evaluates.
    frozen: MultistageUNet,
    /// The plan's time axis, to read the network input of NCSN++ and LDM from [`EvalPoint::t`].
    pub axis: TimeAxis,
    /// Evaluations per stage, counted as the sampler runs (a stage's count grows by one per call that
    /// routes at least one sample to it).
    pub nfe_per_stage: Vec<usize>,
}

impl<'a> UNetSamplerModel<'a> {
    /// Checks that the plan's time axis can drive this family: NCSN++ needs continuous VP time, LDM a
    /// discrete-time axis; DDPM++ (EDM) takes any axis through the SNR.
    pub fn new(net: &'a MultistageUNet, axis: TimeAxis) -> Result<Self> {
        let ok = matches!(
            (&net.config().family, axis),
            (Family::Ncsnpp(_), TimeAxis::Time)
                | (Family::Ldm(_), TimeAxis::DiscreteTime { .. })
                | (Family::Ddpmpp(_), _)
        );
        if !ok {
            return Err(UNetError::Input(format!(
                "a {} network cannot run a plan on the {:?} axis: use a {} schedule",
                net.config().family_name(),
                axis,
                match net.config().family {
                    Family::Ncsnpp(_) => "vp-linear",
                    Family::Ldm(_) => "vp-discrete (LDM)",
                    Family::Ddpmpp(_) => "EDM",
                }
            )));
        }
        Ok(Self {
            net,
            frozen: net.frozen()?,
            axis,
            nfe_per_stage: vec![0; net.num_stages()],
        })
    }

    /// The network's own time input at an evaluation point.
    pub fn net_time(&self, at: &EvalPoint) -> f64 {
        match (&self.net.config().family, self.axis) {
            (Family::Ddpmpp(_), _) => at.sigma / at.alpha,
            (Family::Ldm(_), TimeAxis::DiscreteTime { steps }) => {
                let n = steps as f64;
                (n * (at.t - 1.0 / n)).max(0.0)
            }
            _ => at.t,
        }
    }

    fn count(&mut self, time: f64) {
        let k = self.net.stage_of(time);
        self.nfe_per_stage[k] += 1;
    }
}

impl TensorModel for UNetSamplerModel<'_> {
    fn predict(
        &mut self,
        x: &Tensor,
        at: &EvalPoint,
        want: Want,
    ) -> std::result::Result<Tensor, AccelError> {
        let b = x.dims()[0];
        let time = self.net_time(at);
        self.count(time);
        let ts = vec![time; b];
        let map = |e: UNetError| AccelError::Shape(e.to_string());
        let out = match &self.net.config().family {
            Family::Ddpmpp(_) => {
                let s = at.sigma / at.alpha;
                let xs = x.affine(1.0 / at.alpha, 0.0)?;
                let d = edm_denoise(&self.frozen, &xs, &ts, None).map_err(map)?;
                Ok::<Tensor, AccelError>(match want {
                    Want::X0 => d,
                    Want::Eps => ((xs - d)?.affine(1.0 / s, 0.0))?,
                })
            }
            _ => {
                let eps = self.frozen.forward(x, &ts).map_err(map)?;
                Ok(match want {
                    Want::Eps => eps,
                    Want::X0 => ((x - eps.affine(at.sigma, 0.0)?)?.affine(1.0 / at.alpha, 0.0))?,
                })
            }
        };
        // The frozen network records no ops, so its outputs carry no graph; the input `x` might (a caller's
        // own tensor), and the sampler keeps several outputs alive across steps: detach so none can pin a
        // graph of activations (measured before the frozen view: 36 images at 32x32 grew to 6-10 GB).
        out.map(|t: Tensor| t.detach())
    }
}
