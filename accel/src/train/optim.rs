//! Adam / AdamW with state that can be saved and restored (candle-nn's optimisers keep their moments
//! private). As PyTorch: each parameter has its own step count, and a parameter without a gradient in a step
//! is skipped entirely (weights, moments and step count unchanged), as `zero_grad(set_to_none=True)` does for
//! decoders no sample reached.
//!
//! Update of a parameter p with gradient g at its step count s (after incrementing):
//! m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², p ← p − lr/(1−β₁ˢ) · m / (√v/√(1−β₂ˢ) + ε);
//! AdamW first decays p ← p·(1 − lr·wd); Adam with weight decay adds wd·p to g.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::kernels::optim::{adam_apply, ema_update, sum_squares, AdamApply, Term};

/// The global L2 norm of the given gradients (in f64; missing ones count as zero).
pub fn global_norm(grads: &[Option<Tensor>]) -> candle_core::Result<f64> {
    let mut sq = 0.0f64;
    for g in grads.iter().flatten() {
        sq += sum_squares(g)?;
    }
    Ok(sq.sqrt())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW (decoupled decay) instead of Adam's L2 term.
    pub decoupled: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

/// The optimiser over named parameters (in the model's parameter order).
pub struct Adam {
    pub cfg: AdamConfig,
    names: Vec<String>,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    steps: Vec<u32>,
}

impl Adam {
    pub fn new(cfg: AdamConfig, params: Vec<(String, Var)>) -> candle_core::Result<Self> {
        let mut names = Vec::new();
        let mut vars = Vec::new();
        let mut m = Vec::new();
        let mut v = Vec::new();
        for (n, var) in params {
            m.push(var.as_tensor().zeros_like()?);
            v.push(var.as_tensor().zeros_like()?);
            names.push(n);
            vars.push(var);
        }
        let steps = vec![0; names.len()];
        Ok(Self {
            cfg,
            names,
            vars,
            m,
            v,
            steps,
        })
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// First and second moments and step count of parameter i.
    pub fn moments(&self, i: usize) -> (&Tensor, &Tensor, u32) {
        (&self.m[i], &self.v[i], self.steps[i])
    }

    /// One step; `grads[i]` is parameter i's gradient, or None to leave it untouched.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> candle_core::Result<()> {
        self.step_scaled(grads, 1.0, lr)
    }

    /// One step with every gradient multiplied by `scale` first (the global-norm clipping factor), each
    /// parameter's moments and weights updated in place (`kernels::optim`).
    pub fn step_scaled(
        &mut self,
        grads: &[Option<Tensor>],
        scale: f64,
        lr: f64,
    ) -> candle_core::Result<()> {
        let c = self.cfg.clone();
        // Adam's L2 term enters the gradient (g ← scale·g + wd·p); AdamW's decay scales the weights.
        let (coupled, keep) = match (c.weight_decay, c.decoupled) {
            (wd, false) => (wd, 1.0),
            (wd, true) => (0.0, 1.0 - lr * wd),
        };
        let first = Term {
            scale,
            decay: coupled,
            square: false,
        };
        let second = Term {
            square: true,
            ..first
        };
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            let p = self.vars[i].as_tensor();
            self.steps[i] += 1;
            let s = self.steps[i] as i32;
            ema_update(&mut self.m[i], g, p, c.beta1, first)?;
            ema_update(&mut self.v[i], g, p, c.beta2, second)?;
            let apply = AdamApply {
                keep,
                step: lr / (1.0 - c.beta1.powi(s)),
                r: 1.0 / (1.0 - c.beta2.powi(s)).sqrt(),
                eps: c.eps,
            };
            adam_apply(&self.vars[i], &self.m[i], &self.v[i], apply)?;
        }
        Ok(())
    }

    /// Writes the moments (`m.NAME`, `v.NAME`) and step counts (`steps`, u32 in parameter order).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (i, n) in self.names.iter().enumerate() {
            map.insert(format!("m.{n}"), self.m[i].clone());
            map.insert(format!("v.{n}"), self.v[i].clone());
        }
        let dev = self.m.first().map(|t| t.device().clone());
        if let Some(dev) = dev {
            map.insert(
                "steps".into(),
                Tensor::from_vec(self.steps.clone(), self.steps.len(), &dev)?,
            );
        }
        candle_core::safetensors::save(&map, path).map_err(|e| TrainError::io(path, e.to_string()))
    }

    /// Restores what [`Self::save`] wrote; every tensor must be present with the parameter's shape.
    pub fn load(&mut self, path: &Path) -> Result<(), TrainError> {
        let dev = match self.m.first() {
            Some(t) => t.device().clone(),
            None => return Ok(()),
        };
        let file = candle_core::safetensors::load(path, &dev)
            .map_err(|e| TrainError::corrupt(path, e.to_string()))?;
        let get = |k: &str, like: &Tensor| -> Result<Tensor, TrainError> {
            match file.get(k) {
                Some(t) if t.dims() == like.dims() && t.dtype() == like.dtype() => Ok(t.clone()),
                Some(t) => Err(TrainError::corrupt(
                    path,
                    format!(
                        "{k} has shape {:?} {:?}, expected {:?}",
                        t.dims(),
                        t.dtype(),
                        like.dims()
                    ),
                )),
                None => Err(TrainError::corrupt(path, format!("missing tensor {k}"))),
            }
        };
        let mut m = Vec::new();
        let mut v = Vec::new();
        for (i, n) in self.names.iter().enumerate() {
            m.push(get(&format!("m.{n}"), &self.m[i])?);
            v.push(get(&format!("v.{n}"), &self.v[i])?);
        }
        let steps = match file.get("steps") {
            Some(t) if t.dtype() == DType::U32 && t.dims() == [self.names.len()] => {
                t.to_vec1::<u32>()?
            }
            _ => {
                return Err(TrainError::corrupt(
                    path,
                    "missing or mis-shaped steps".into(),
                ))
            }
        };
        self.m = m;
        self.v = v;
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// With Adam's coupled L2 term the gradient depends on the Var; moments that recorded that op would
    /// keep every earlier step's moments alive.
    #[test]
    fn moments_do_not_record_ops() {
        let dev = Device::Cpu;
        let var = Var::from_vec(vec![1.0f32, -2.0], 2, &dev).unwrap();
        let cfg = AdamConfig {
            weight_decay: 0.1,
            ..AdamConfig::default()
        };
        let mut opt = Adam::new(cfg, vec![("p".into(), var)]).unwrap();
        let g = Tensor::from_vec(vec![0.5f32, 0.1], 2, &dev).unwrap();
        opt.step(&[Some(g.clone())], 0.1).unwrap();
        opt.step(&[Some(g)], 0.1).unwrap();
        let (m, v, _) = opt.moments(0);
        assert!(!m.track_op() && !v.track_op());
    }

    #[test]
    fn one_step_matches_a_hand_computed_update() {
        // p = [1, −2], g = [0.5, 0.1], lr 0.1, step 1: m̂ = g, v̂ = g², update = lr·g/(|g| + ε) ≈ lr·sign(g).
        let dev = Device::Cpu;
        let var = Var::from_vec(vec![1.0f32, -2.0], 2, &dev).unwrap();
        let mut opt = Adam::new(AdamConfig::default(), vec![("p".into(), var.clone())]).unwrap();
        let g = Tensor::from_vec(vec![0.5f32, 0.1], 2, &dev).unwrap();
        opt.step(&[Some(g.clone())], 0.1).unwrap();
        let p = var.as_tensor().to_vec1::<f32>().unwrap();
        let want = |p0: f64, g: f64| p0 - 0.1 * g / (g.abs() + 1e-8);
        assert!((p[0] as f64 - want(1.0, 0.5)).abs() < 1e-6, "{p:?}");
        assert!((p[1] as f64 - want(-2.0, 0.1)).abs() < 1e-6, "{p:?}");
        // Second step, g' = [−0.5, 0.3]: m = 0.9·0.1g + 0.1g'... computed by hand in f64.
        let g2 = Tensor::from_vec(vec![-0.5f32, 0.3], 2, &dev).unwrap();
        opt.step(&[Some(g2)], 0.1).unwrap();
        let p2 = var.as_tensor().to_vec1::<f32>().unwrap();
        for (i, (g1, g2)) in [(0.5f64, -0.5f64), (0.1, 0.3)].into_iter().enumerate() {
            let m = 0.9 * (0.1 * g1) + 0.1 * g2;
            let v = 0.999 * (0.001 * g1 * g1) + 0.001 * g2 * g2;
            let (bc1, bc2) = (1.0 - 0.81, 1.0 - 0.999f64.powi(2));
            let upd = 0.1 / bc1 * m / (v.sqrt() / bc2.sqrt() + 1e-8);
            assert!(
                (p2[i] as f64 - (p[i] as f64 - upd)).abs() < 1e-6,
                "i {i}: {p2:?}"
            );
        }
        let (m, _, s) = opt.moments(0);
        assert_eq!(s, 2);
        let m = m.to_vec1::<f32>().unwrap();
        assert!((m[0] as f64 - (0.9 * 0.05 - 0.05)).abs() < 1e-7);
    }

    /// Five steps with L2 (coupled) or decoupled decay and a clipping factor: the in-place kernels and the
    /// candle composition agree, and `step_scaled(g, s)` is `step(s·g)`.
    #[test]
    fn kernel_and_plain_steps_agree() {
        use crate::kernels::with_kernels;
        let dev = Device::Cpu;
        for decoupled in [false, true] {
            let cfg = AdamConfig {
                weight_decay: 0.05,
                decoupled,
                ..Default::default()
            };
            let run = |kernels: bool, prescale: bool| -> Vec<f64> {
                with_kernels(kernels, || {
                    let var = Var::from_vec(vec![1.0f64, -2.0, 0.25], 3, &dev).unwrap();
                    let mut opt = Adam::new(cfg.clone(), vec![("p".into(), var.clone())]).unwrap();
                    for k in 0..5 {
                        let g = Tensor::from_vec(vec![0.5f64 - k as f64 * 0.3, 0.1, -0.7], 3, &dev)
                            .unwrap();
                        if prescale {
                            opt.step(&[Some((g * 0.4).unwrap())], 0.05).unwrap();
                        } else {
                            opt.step_scaled(&[Some(g)], 0.4, 0.05).unwrap();
                        }
                    }
                    var.as_tensor().to_vec1::<f64>().unwrap()
                })
            };
            let fast = run(true, false);
            for other in [run(false, false), run(true, true), run(false, true)] {
                for (a, b) in fast.iter().zip(&other) {
                    // Values of order 1 after five updates of order 0.05, each a few roundings apart.
                    assert!(
                        (a - b).abs() <= 1e-14,
                        "decoupled {decoupled}: {fast:?} vs {other:?}"
                    );
                }
            }
            // And the weights moved (the decay and the gradient both act).
            assert!((fast[0] - 1.0).abs() > 0.01, "{fast:?}");
        }
    }

    #[test]
    fn adamw_decays_and_skips_params_without_gradients() {
        let dev = Device::Cpu;
        let a = Var::from_vec(vec![2.0f32], 1, &dev).unwrap();
        let b = Var::from_vec(vec![3.0f32], 1, &dev).unwrap();
        let cfg = AdamConfig {
            weight_decay: 0.01,
            decoupled: true,
            ..Default::default()
        };
        let mut opt =
            Adam::new(cfg, vec![("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
        let g = Tensor::from_vec(vec![1.0f32], 1, &dev).unwrap();
        opt.step(&[Some(g), None], 0.1).unwrap();
        let want = 2.0 * (1.0 - 0.1 * 0.01) - 0.1 * 1.0 / (1.0 + 1e-8);
        assert!((a.as_tensor().to_vec1::<f32>().unwrap()[0] as f64 - want).abs() < 1e-6);
        assert_eq!(b.as_tensor().to_vec1::<f32>().unwrap()[0], 3.0);
        assert_eq!(opt.moments(1).2, 0);
        assert_eq!(opt.moments(1).0.to_vec1::<f32>().unwrap()[0], 0.0);
        // Save / load round trip.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optim.safetensors");
        opt.save(&path).unwrap();
        let mut other = Adam::new(
            AdamConfig::default(),
            vec![("a".into(), a), ("b".into(), b)],
        )
        .unwrap();
        other.load(&path).unwrap();
        assert_eq!(other.moments(0).2, 1);
        assert_eq!(
            other.moments(0).1.to_vec1::<f32>().unwrap(),
            opt.moments(0).1.to_vec1::<f32>().unwrap()
        );
    }
}
