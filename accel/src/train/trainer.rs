//! The training loop: one [`Trainer::step`] draws a batch, assigns stages ([`StageSchedule`]), draws noise
//! levels and noise, accumulates gradients over micro-batches, clips by global norm, takes an Adam step with
//! the warmed-up learning rate and updates the EMA.
//!
//! **Randomness is a function of (seed, step)**: every step seeds its own `StdRng`s (one for stages, levels,
//! noise and flips; one for dropout) from the run seed and the step number, and the data order of epoch e is
//! a permutation seeded from (seed, e). A resumed run therefore needs only the step and the data position to
//! continue bit-identically, and no generator state has to be serialised.

use std::sync::Mutex;

use candle_core::{DType, Tensor, Var};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::ema::{ema_beta, Ema};
use super::loss::{per_sample_loss, LossFamily, LossParams};
use super::optim::{global_norm, Adam, AdamConfig};
use super::stages::StageSchedule;
use super::TrainError;
use crate::unet::{MultistageUNet, Sharing};

/// Everything that shapes a run besides the model config (serde; stored in run.json and state.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser steps in total.
    pub steps: u64,
    /// Images per micro-batch.
    pub batch: usize,
    /// Micro-batches accumulated per optimiser step.
    pub accum: usize,
    pub lr: f64,
    /// Linear warm-up steps (lr·min(step/warmup, 1), step counted from 0).
    pub warmup_steps: u64,
    pub adam: AdamConfig,
    /// Clip gradients to this global L2 norm (None: no clipping).
    pub grad_clip: Option<f64>,
    /// EMA half-life in images, and the ramp-up ratio (None: no ramp-up).
    pub ema_half_life_images: f64,
    pub ema_rampup: Option<f64>,
    /// Random horizontal flips of the training images.
    pub hflip: bool,
    pub schedule: StageSchedule,
    pub seed: u64,
    pub loss: LossParams,
    /// Write a checkpoint every this many steps (and at the end); keep the last `keep_checkpoints`.
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    /// Write a sample grid every this many steps (0: only at the end).
    pub sample_every: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch: 32,
            accum: 1,
            lr: 2e-4,
            warmup_steps: 0,
            adam: AdamConfig::default(),
            grad_clip: Some(1.0),
            ema_half_life_images: 50_000.0,
            ema_rampup: Some(0.05),
            hflip: false,
            schedule: StageSchedule::Random,
            seed: 0,
            loss: LossParams::default(),
            checkpoint_every: 500,
            keep_checkpoints: 3,
            sample_every: 0,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.batch == 0 || self.accum == 0 {
            return Err("batch and accum must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("learning rate {} must be > 0", self.lr));
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("gradient clip {c} must be > 0"));
            }
        }
        if self.ema_half_life_images.is_nan() || self.ema_half_life_images <= 0.0 {
            return Err("EMA half-life must be > 0 images".into());
        }
        if self.keep_checkpoints == 0 {
            return Err("keep at least 1 checkpoint".into());
        }
        Ok(())
    }
}

/// Progress that a checkpoint must restore (besides weights, EMA and optimiser).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimiser steps done.
    pub step: u64,
    /// Training images drawn so far (position in the endless stream of seeded epoch permutations).
    pub data_position: u64,
    /// Images seen by the loss (counting each `all`-schedule pass).
    pub images: u64,
    /// Cumulative true training FLOPs (≈ 3 × forward FLOPs of the stages run).
    pub train_flops: f64,
    /// Wall time spent in steps.
    pub seconds: f64,
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub step: u64,
    /// Mean per-sample loss over the step.
    pub loss: f64,
    /// Mean per-sample loss of each stage (None: the stage saw no sample).
    pub loss_per_stage: Vec<Option<f64>>,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

const STREAM_STEP: u64 = 1;
const STREAM_DROPOUT: u64 = 2;
const STREAM_EPOCH: u64 = 3;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of (seed, counter, stream).
pub fn rng_for(seed: u64, counter: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(splitmix(
        seed ^ splitmix(counter.wrapping_mul(8).wrapping_add(stream)),
    ))
}

pub struct Trainer {
    pub net: MultistageUNet,
    pub cfg: TrainConfig,
    pub progress: Progress,
    family: LossFamily,
    probs: Vec<f64>,
    optim: Adam,
    ema: Ema,
    /// Training images [N, C, H, W], f32 in [−1, 1], on the model's device.
    data: Tensor,
    perm: Option<(u64, Vec<u32>)>,
    /// Forward MACs per sample of each encoder and decoder.
    enc_macs: Vec<u64>,
    dec_macs: Vec<u64>,
}

impl Trainer {
    /// A fresh run on `data` ([N, C, H, W] f32 in [−1, 1]).
    pub fn new(net: MultistageUNet, cfg: TrainConfig, data: Tensor) -> Result<Self, TrainError> {
        cfg.validate().map_err(TrainError::Config)?;
        let (c, r) = net.config().input_chw();
        let d = data.dims();
        if d.len() != 4 || d[1] != c || d[2] != r || d[3] != r || d[0] == 0 {
            return Err(TrainError::Config(format!(
                "training data of shape {d:?} does not fit the model (needs [N, {c}, {r}, {r}], N >= 1)"
            )));
        }
        let data = data
            .to_dtype(DType::F32)?
            .to_device(&net.store().device())?;
        let params: Vec<(String, Var)> = net
            .store()
            .params()
            .into_iter()
            .filter_map(|p| p.var.map(|v| (p.name, v)))
            .collect();
        let optim = Adam::new(cfg.adam.clone(), params.clone())?;
        let ema = Ema::new(&params)?;
        let family = LossFamily::for_config(net.config(), &cfg.loss);
        let probs = family.stage_probabilities(&net.config().boundaries);
        let (enc, dec) = net.costs();
        Ok(Self {
            family,
            probs,
            optim,
            ema,
            data,
            perm: None,
            enc_macs: enc.iter().map(|c| c.macs).collect(),
            dec_macs: dec.iter().map(|c| c.macs).collect(),
            net,
            cfg,
            progress: Progress::default(),
        })
    }

    pub fn optim(&self) -> &Adam {
        &self.optim
    }
    pub fn optim_mut(&mut self) -> &mut Adam {
        &mut self.optim
    }
    pub fn ema(&self) -> &Ema {
        &self.ema
    }
    pub fn ema_mut(&mut self) -> &mut Ema {
        &mut self.ema
    }
    pub fn stage_probabilities(&self) -> &[f64] {
        &self.probs
    }

    /// A copy of the model carrying the EMA weights (for sampling).
    pub fn ema_model(&self) -> Result<MultistageUNet, TrainError> {
        let m = MultistageUNet::new(self.net.config(), &self.net.store().device(), 0)?;
        let vars: Vec<Var> = m
            .store()
            .params()
            .into_iter()
            .filter_map(|p| p.var)
            .collect();
        for (v, e) in vars.iter().zip(self.ema.tensors()) {
            v.set(e)?;
        }
        Ok(m)
    }

    fn next_indices(&mut self, b: usize) -> Vec<u32> {
        let n = self.data.dims()[0] as u64;
        let mut out = Vec::with_capacity(b);
        for _ in 0..b {
            let pos = self.progress.data_position;
            let epoch = pos / n;
            if self.perm.as_ref().map(|p| p.0) != Some(epoch) {
                let mut p: Vec<u32> = (0..n as u32).collect();
                p.shuffle(&mut rng_for(self.cfg.seed, epoch, STREAM_EPOCH));
                self.perm = Some((epoch, p));
            }
            out.push(self.perm.as_ref().expect("perm").1[(pos % n) as usize]);
            self.progress.data_position += 1;
        }
        out
    }

    fn batch(&mut self, rng: &mut StdRng) -> Result<Tensor, TrainError> {
        let b = self.cfg.batch;
        let idx = self.next_indices(b);
        let dev = self.data.device().clone();
        let x = self
            .data
            .index_select(&Tensor::from_vec(idx, b, &dev)?, 0)?;
        if !self.cfg.hflip {
            return Ok(x);
        }
        let w = x.dims()[3];
        let rev = Tensor::from_vec((0..w as u32).rev().collect::<Vec<u32>>(), w, &dev)?;
        let flipped = x.index_select(&rev, 3)?;
        let m: Vec<f32> = (0..b)
            .map(|_| if rng.random::<bool>() { 1.0 } else { 0.0 })
            .collect();
        let m = Tensor::from_vec(m, (b, 1, 1, 1), &dev)?;
        let keep = m.affine(-1.0, 1.0)?;
        Ok((x.broadcast_mul(&keep)? + flipped.broadcast_mul(&m)?)?)
    }

    /// One optimiser step. On a non-finite loss or gradient nothing is updated and
    /// [`TrainError::NonFiniteLoss`] is returned.
    pub fn step(&mut self) -> Result<StepReport, TrainError> {
        let t0 = std::time::Instant::now();
        let step = self.progress.step;
        let saved_position = self.progress.data_position;
        let mut rng = rng_for(self.cfg.seed, step, STREAM_STEP);
        let drop_rng = Mutex::new(rng_for(self.cfg.seed, step, STREAM_DROPOUT));
        let n = self.net.num_stages();
        let boundaries = self.net.config().boundaries.clone();
        let vars: Vec<Var> = self.optim.vars().to_vec();
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut stage_sum = vec![0.0f64; n];
        let mut stage_cnt = vec![0usize; n];
        let mut images = 0u64;
        let mut macs = 0u64;
        let accum = self.cfg.accum;
        for _ in 0..accum {
            let x0 = self.batch(&mut rng)?;
            let shape = x0.shape().clone();
            let passes = self
                .cfg
                .schedule
                .passes(n, self.cfg.batch, step, &self.probs, &mut rng);
            let mut objective: Option<Tensor> = None;
            for stages in &passes {
                let levels: Vec<f64> = stages
                    .iter()
                    .map(|&k| {
                        self.family
                            .level_in_stage(rng.random::<f64>(), &boundaries, k)
                    })
                    .collect();
                let eps: Vec<f32> = (0..shape.elem_count())
                    .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
                    .collect();
                let eps = Tensor::from_vec(eps, shape.clone(), x0.device())?;
                let per =
                    per_sample_loss(&self.family, &self.net, &x0, &eps, &levels, Some(&drop_rng))?;
                let vals = per.to_vec1::<f32>()?;
                for (&level, &val) in levels.iter().zip(&vals) {
                    // Log by the stage the network really routed the sample to.
                    let used = self.net.stage_of(level);
                    stage_sum[used] += val as f64;
                    stage_cnt[used] += 1;
                    let e = match self.net.config().sharing {
                        Sharing::Shared => 0,
                        Sharing::Separate => used,
                    };
                    macs =
                        macs.saturating_add(self.enc_macs[e].saturating_add(self.dec_macs[used]));
                }
                images += stages.len() as u64;
                let m = per.mean_all()?;
                objective = Some(match objective {
                    None => m,
                    Some(o) => (o + m)?,
                });
            }
            let objective = objective
                .expect("at least one pass")
                .affine(1.0 / accum as f64, 0.0)?;
            let gs = objective.backward()?;
            for (g, v) in grads.iter_mut().zip(&vars) {
                if let Some(new) = gs.get(v.as_tensor()) {
                    *g = Some(match g.take() {
                        None => new.clone(),
                        Some(old) => (old + new)?,
                    });
                }
            }
        }
        let total: usize = stage_cnt.iter().sum();
        let loss = stage_sum.iter().sum::<f64>() / total as f64;
        let grad_norm = global_norm(&grads)?;
        if !loss.is_finite() || !grad_norm.is_finite() {
            self.progress.data_position = saved_position;
            return Err(TrainError::NonFiniteLoss {
                step,
                loss: if loss.is_finite() { grad_norm } else { loss },
            });
        }
        let clip = clip_factor(self.cfg.grad_clip, grad_norm);
        let lr = warmup_lr(self.cfg.lr, step, self.cfg.warmup_steps);
        self.optim.step_scaled(&grads, clip, lr)?;
        self.progress.step += 1;
        self.progress.images += images;
        self.progress.train_flops += 6.0 * macs as f64;
        let beta = ema_beta(
            self.cfg.ema_half_life_images,
            self.cfg.ema_rampup,
            self.progress.images as f64,
            images as f64,
        );
        self.ema.update(&vars, beta)?;
        self.progress.seconds += t0.elapsed().as_secs_f64();
        Ok(StepReport {
            step: self.progress.step,
            loss,
            loss_per_stage: (0..n)
                .map(|k| (stage_cnt[k] > 0).then(|| stage_sum[k] / stage_cnt[k] as f64))
                .collect(),
            lr,
            grad_norm,
        })
    }
}

/// The factor global-norm clipping multiplies the gradients by: `max/(‖g‖ + 10⁻⁶)` when that is below 1
/// (as PyTorch's `clip_grad_norm_`), else 1.
pub fn clip_factor(max_norm: Option<f64>, grad_norm: f64) -> f64 {
    match max_norm {
        Some(max) => (max / (grad_norm + 1e-6)).min(1.0),
        None => 1.0,
    }
}

/// Linear warm-up (mirrors `msd_reference::training::warmup_lr`).
pub fn warmup_lr(base: f64, step: u64, warmup: u64) -> f64 {
    if warmup == 0 {
        base
    } else {
        base * (step as f64 / warmup as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests;
