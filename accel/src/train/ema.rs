//! Exponential moving average of the weights: e ← β·e + (1 − β)·p for every parameter, every step, with
//! β from a half-life in images and an optional ramp-up (EDM): β = 0.5^(batch / h), h = min(half-life,
//! ramp-up·images seen). Saved with the model's tensor names, so an EMA file loads as model weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Tensor, Var};

use super::TrainError;
use crate::kernels::optim::{ema_update, Term};

/// EMA decay per step (mirrors `msd_reference::training::ema_beta`).
pub fn ema_beta(half_life_images: f64, rampup: Option<f64>, images_seen: f64, batch: f64) -> f64 {
    let mut h = half_life_images;
    if let Some(r) = rampup {
        h = h.min(images_seen * r);
    }
    0.5f64.powf(batch / h.max(1e-8))
}

pub struct Ema {
    names: Vec<String>,
    shadow: Vec<Tensor>,
}

impl Ema {
    /// Starts from a copy of the current weights.
    pub fn new(params: &[(String, Var)]) -> candle_core::Result<Self> {
        Ok(Self {
            names: params.iter().map(|p| p.0.clone()).collect(),
            shadow: params
                .iter()
                // Detached: a copy of a Var records the copy, and the shadow is updated in place.
                .map(|p| Ok(p.1.as_tensor().copy()?.detach()))
                .collect::<candle_core::Result<_>>()?,
        })
    }

    pub fn update(&mut self, vars: &[Var], beta: f64) -> candle_core::Result<()> {
        for (e, v) in self.shadow.iter_mut().zip(vars) {
            // In place on the shadow (its own copy); the plain fallback is detached, since `v` is a Var and
            // a recorded op would keep every earlier shadow (a full model copy per step) alive.
            let w = v.as_tensor();
            ema_update(e, w, w, beta, Term::PLAIN)?;
        }
        Ok(())
    }

    pub fn tensors(&self) -> &[Tensor] {
        &self.shadow
    }

    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let map: HashMap<String, Tensor> = self
            .names
            .iter()
            .cloned()
            .zip(self.shadow.iter().cloned())
            .collect();
        candle_core::safetensors::save(&map, path).map_err(|e| TrainError::io(path, e.to_string()))
    }

    pub fn load(&mut self, path: &Path) -> Result<(), TrainError> {
        let Some(dev) = self.shadow.first().map(|t| t.device().clone()) else {
            return Ok(());
        };
        let file = candle_core::safetensors::load(path, &dev)
            .map_err(|e| TrainError::corrupt(path, e.to_string()))?;
        let mut out = Vec::new();
        for (n, like) in self.names.iter().zip(&self.shadow) {
            match file.get(n) {
                Some(t) if t.dims() == like.dims() && t.dtype() == like.dtype() => {
                    out.push(t.clone())
                }
                _ => {
                    return Err(TrainError::corrupt(
                        path,
                        format!("missing or mis-shaped {n}"),
                    ))
                }
            }
        }
        self.shadow = out;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn ema_follows_the_formula() {
        let v = Var::from_vec(vec![1.0f32, 2.0], 2, &Device::Cpu).unwrap();
        let mut e = Ema::new(&[("w".into(), v.clone())]).unwrap();
        v.set(&Tensor::from_vec(vec![3.0f32, 0.0], 2, &Device::Cpu).unwrap())
            .unwrap();
        e.update(&[v], 0.75).unwrap();
        // 0.75·1 + 0.25·3 = 1.5; 0.75·2 + 0.25·0 = 1.5.
        assert_eq!(e.tensors()[0].to_vec1::<f32>().unwrap(), vec![1.5, 1.5]);
        assert!((ema_beta(1000.0, None, 0.0, 1000.0) - 0.5).abs() < 1e-15);
        assert!((ema_beta(1e6, Some(0.1), 100.0, 10.0) - 0.5).abs() < 1e-15);
    }

    /// A shadow that recorded its ops would chain every earlier shadow (a model copy per step): training
    /// memory grew by ~36 MB per step for a 3M-parameter model before the update detached.
    #[test]
    fn shadow_does_not_record_ops() {
        let v = Var::from_vec(vec![1.0f32, 2.0], 2, &Device::Cpu).unwrap();
        let mut e = Ema::new(&[("w".into(), v.clone())]).unwrap();
        e.update(std::slice::from_ref(&v), 0.5).unwrap();
        e.update(&[v], 0.5).unwrap();
        assert!(!e.tensors()[0].track_op());
    }
}
