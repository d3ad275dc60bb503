//! Multistage U-Nets (the paper's first contribution): one shared encoder, one decoder per stage.
//!
//! Three families mirror the authors' networks block by block (docs/paper-notes.md §2):
//! [`ncsnpp`] (score-SDE NCSN++, DPM-Solver setup), [`ddpmpp`] (EDM SongUNet/DDPM++) and [`ldm`] (openai
//! U-Net of latent diffusion). A [`UNetConfig`] picks the family, the decoder widths (one per stage), the
//! stage boundaries and whether the encoder is shared (multistage; one decoder = the unified baseline) or
//! separate per stage (the separate baseline). Named presets are in [`config`].
//!
//! **Time input.** `forward(x, t)` takes each family's native time, as f64 on the host (routing compares it
//! with the boundaries exactly): NCSN++ continuous VP time t ∈ [0, 1] (label 999·t); DDPM++ the EDM noise
//! level σ (c_noise = ln σ / 4, no preconditioning here); LDM the discrete timestep. The stage of t is the
//! number of boundaries strictly below t (docs/conventions.md §3), decided **per sample**.
//!
//! **Tensor names** are stable: `encoder.*` (shared) or `encoders.{k}.*` (separate), and `decoders.{k}.*`;
//! the per-family names are documented in each family module. Layouts follow PyTorch (`[out, in, kh, kw]`
//! convs, `[out, in]` linears; the authors' 1-D convs of LDM attention are stored as 1×1 2-D convs).

pub mod accounting;
pub mod blocks;
pub mod config;
pub mod ddpmpp;
pub mod ldm;
pub mod ncsnpp;
pub mod params;
pub mod precond;
pub mod weights;

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;

pub use accounting::{model_info, weighted_total, ModelInfo, PartInfo, WeightedTotal};
pub use blocks::{Chw, Cost, Ctx};
pub use config::{preset, preset_names, Family, Sharing, UNetConfig};
pub use params::{Param, ParamStore};

/// Errors of the U-Net code.
#[derive(Debug, thiserror::Error)]
pub enum UNetError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("unknown preset {0:?}; known presets: {1}")]
    UnknownPreset(String, String),
    #[error("bad input: {0}")]
    Input(String),
    #[error("this model was built shape-only (for counting); it has no weights to run or save")]
    ShapeOnly,
    #[error("weights file {path}: {msg}")]
    Weights { path: String, msg: String },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, UNetError>;

/// What an encoder hands to a decoder: its last map, the skip maps (in push order) and the activated time
/// embedding each block projects.
#[derive(Debug, Clone)]
pub struct Features {
    pub h: Tensor,
    pub skips: Vec<Tensor>,
    pub emb: Tensor,
}

impl Features {
    fn select(&self, idx: &Tensor) -> candle_core::Result<Features> {
        Ok(Features {
            h: self.h.index_select(idx, 0)?,
            skips: self
                .skips
                .iter()
                .map(|s| s.index_select(idx, 0))
                .collect::<candle_core::Result<_>>()?,
            emb: self.emb.index_select(idx, 0)?,
        })
    }
}

/// Shapes of [`Features`] at batch 1 (for the cost walk).
#[derive(Debug, Clone)]
pub struct FeatureShapes {
    pub h: Chw,
    pub skips: Vec<Chw>,
}

pub(crate) trait EncoderNet: Send + Sync {
    fn forward(&self, x: &Tensor, t: &[f64], ctx: &Ctx) -> candle_core::Result<Features>;
    fn cost(&self) -> (Cost, FeatureShapes);
}

pub(crate) trait DecoderNet: Send + Sync {
    fn forward(&self, f: &Features, ctx: &Ctx) -> candle_core::Result<Tensor>;
    fn cost(&self, s: &FeatureShapes) -> Cost;
}

/// A multistage U-Net (or a unified/separate baseline) built from a [`UNetConfig`].
pub struct MultistageUNet {
    config: UNetConfig,
    store: ParamStore,
    encoders: Vec<Box<dyn EncoderNet>>,
    decoders: Vec<Box<dyn DecoderNet>>,
}

impl std::fmt::Debug for MultistageUNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MultistageUNet({:?}, {:?})", self.config, self.store)
    }
}

impl MultistageUNet {
    /// Builds the model with real, trainable weights on `device`, initialised as the authors do from `seed`.
    pub fn new(config: &UNetConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::build(config, ParamStore::real(device, seed))
    }

    /// Builds the model shape-only: parameter shapes and costs, no weights (fast for the paper-sized presets).
    pub fn shapes_only(config: &UNetConfig) -> Result<Self> {
        Self::build(config, ParamStore::shapes_only())
    }

    /// The same network without gradient tracking, for sampling and evaluation: its weights are detached
    /// views of this model's variables (shared storage, no copy), so a forward pass records no ops and
    /// frees each activation as soon as it is used, as PyTorch's `no_grad` does. Cheap to build.
    pub fn frozen(&self) -> Result<Self> {
        Self::build(&self.config, ParamStore::frozen(&self.store))
    }

    fn build(config: &UNetConfig, store: ParamStore) -> Result<Self> {
        config.validate().map_err(UNetError::Config)?;
        let n = config.num_stages();
        let root = store.root();
        let n_enc = match config.sharing {
            Sharing::Shared => 1,
            Sharing::Separate => n,
        };
        let mut encoders: Vec<Box<dyn EncoderNet>> = Vec::new();
        let mut decoders: Vec<Box<dyn DecoderNet>> = Vec::new();
        let mut skips_per_enc = Vec::new();
        for e in 0..n_enc {
            let pb = match config.sharing {
                Sharing::Shared => root.pp("encoder"),
                Sharing::Separate => root.pp(format!("encoders.{e}")),
            };
            match &config.family {
                Family::Ncsnpp(c) => {
                    let (enc, skips, h) = ncsnpp::Encoder::new(&pb, c)?;
                    encoders.push(Box::new(enc));
                    skips_per_enc.push((skips, h));
                }
                Family::Ddpmpp(c) => {
                    let (enc, skips, h) = ddpmpp::Encoder::new(&pb, c)?;
                    encoders.push(Box::new(enc));
                    skips_per_enc.push((skips, h));
                }
                Family::Ldm(c) => {
                    let (enc, skips, h) = ldm::Encoder::new(&pb, c)?;
                    encoders.push(Box::new(enc));
                    skips_per_enc.push((skips, h));
                }
            }
        }
        let mut ldm_ds = None;
        for k in 0..n {
            let pb = root.pp(format!("decoders.{k}"));
            let (skips, h) = &skips_per_enc[k.min(n_enc - 1)];
            match &config.family {
                Family::Ncsnpp(c) => {
                    decoders.push(Box::new(ncsnpp::Decoder::new(
                        &pb,
                        c,
                        c.de_widths[k],
                        skips,
                        *h,
                    )?));
                }
                Family::Ddpmpp(c) => {
                    decoders.push(Box::new(ddpmpp::Decoder::new(
                        &pb,
                        c,
                        c.de_widths[k],
                        skips,
                        *h,
                    )?));
                }
                Family::Ldm(c) => {
                    let (dec, ds_end) =
                        ldm::Decoder::new(&pb, c, c.de_widths[k], skips, *h, ldm_ds)?;
                    // The authors' quirk: the downsample-factor counter carries over to the next decoder
                    // of the same model (separate baselines are independent models).
                    if c.decoder_attention_quirk && config.sharing == Sharing::Shared {
                        ldm_ds = Some(ds_end);
                    }
                    decoders.push(Box::new(dec));
                }
            }
        }
        Ok(Self {
            config: config.clone(),
            store,
            encoders,
            decoders,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    pub fn num_stages(&self) -> usize {
        self.decoders.len()
    }

    /// Stage of one time: the number of boundaries strictly below `t`.
    pub fn stage_of(&self, t: f64) -> usize {
        self.config.stage_of(t)
    }

    /// Name prefix of the encoder used by stage `k`.
    pub fn encoder_prefix(&self, k: usize) -> String {
        match self.config.sharing {
            Sharing::Shared => "encoder.".to_string(),
            Sharing::Separate => format!("encoders.{k}."),
        }
    }

    /// The trainable variables that stage `k` uses (its encoder and its decoder).
    pub fn stage_vars(&self, k: usize) -> Vec<Var> {
        let enc = self.encoder_prefix(k);
        let dec = format!("decoders.{k}.");
        self.store
            .params()
            .into_iter()
            .filter(|p| p.name.starts_with(&enc) || p.name.starts_with(&dec))
            .filter_map(|p| p.var)
            .collect()
    }

    fn check_input(&self, x: &Tensor, t: &[f64]) -> Result<()> {
        if !self.store.is_real() {
            return Err(UNetError::ShapeOnly);
        }
        let (c, r) = self.config.input_chw();
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != c || dims[2] != r || dims[3] != r {
            return Err(UNetError::Input(format!(
                "x has shape {dims:?}; expected [B, {c}, {r}, {r}]"
            )));
        }
        if x.dtype() != DType::F32 {
            return Err(UNetError::Input(format!(
                "x has dtype {:?}; expected f32",
                x.dtype()
            )));
        }
        if dims[0] != t.len() {
            return Err(UNetError::Input(format!(
                "batch of {} images but {} times",
                dims[0],
                t.len()
            )));
        }
        if let Some(bad) = t.iter().find(|v| !v.is_finite()) {
            return Err(UNetError::Input(format!("non-finite time {bad}")));
        }
        let bad = match self.config.family {
            Family::Ddpmpp(_) => t
                .iter()
                .find(|&&v| v <= 0.0)
                .map(|v| format!("EDM noise level sigma = {v} must be > 0")),
            Family::Ncsnpp(_) => t
                .iter()
                .find(|&&v| !(0.0..=1.0).contains(&v))
                .map(|v| format!("time t = {v} is outside [0, 1]")),
            Family::Ldm(_) => t
                .iter()
                .find(|&&v| v < 0.0)
                .map(|v| format!("timestep {v} is negative")),
        };
        if let Some(msg) = bad {
            return Err(UNetError::Input(msg));
        }
        Ok(())
    }

    /// Evaluation-mode forward pass (no dropout); each sample goes to its own stage's decoder.
    pub fn forward(&self, x: &Tensor, t: &[f64]) -> Result<Tensor> {
        self.route(x, t, &Ctx::default())
    }

    /// Training-mode forward pass: dropout active, drawn from `rng`.
    pub fn forward_train(&self, x: &Tensor, t: &[f64], rng: &Mutex<StdRng>) -> Result<Tensor> {
        self.route(
            x,
            t,
            &Ctx {
                train_rng: Some(rng),
            },
        )
    }

    /// Runs the whole batch through stage `k`'s encoder and decoder, whatever its times (evaluation mode).
    pub fn forward_stage(&self, x: &Tensor, t: &[f64], k: usize) -> Result<Tensor> {
        self.forward_stage_ctx(x, t, k, &Ctx::default())
    }

    /// [`Self::forward_stage`] in training mode.
    pub fn forward_stage_train(
        &self,
        x: &Tensor,
        t: &[f64],
        k: usize,
        rng: &Mutex<StdRng>,
    ) -> Result<Tensor> {
        self.forward_stage_ctx(
            x,
            t,
            k,
            &Ctx {
                train_rng: Some(rng),
            },
        )
    }

    fn forward_stage_ctx(&self, x: &Tensor, t: &[f64], k: usize, ctx: &Ctx) -> Result<Tensor> {
        self.check_input(x, t)?;
        if k >= self.num_stages() {
            return Err(UNetError::Input(format!(
                "stage {k} out of range (model has {})",
                self.num_stages()
            )));
        }
        let enc = &self.encoders[k.min(self.encoders.len() - 1)];
        let f = enc.forward(x, t, ctx)?;
        Ok(self.decoders[k].forward(&f, ctx)?)
    }

    fn route(&self, x: &Tensor, t: &[f64], ctx: &Ctx) -> Result<Tensor> {
        self.check_input(x, t)?;
        let stages: Vec<usize> = t.iter().map(|&v| self.stage_of(v)).collect();
        let n = self.num_stages();
        let groups: Vec<Vec<u32>> = (0..n)
            .map(|k| {
                (0..t.len())
                    .filter(|&i| stages[i] == k)
                    .map(|i| i as u32)
                    .collect()
            })
            .collect();
        if let Some(k) = groups.iter().position(|g| g.len() == t.len()) {
            return self.forward_stage_ctx(x, t, k, ctx);
        }
        let dev = x.device();
        let shared = match self.config.sharing {
            Sharing::Shared => Some(self.encoders[0].forward(x, t, ctx)?),
            Sharing::Separate => None,
        };
        let mut outs = Vec::new();
        let mut order: Vec<u32> = Vec::new();
        for (k, g) in groups.iter().enumerate() {
            if g.is_empty() {
                continue;
            }
            let idx = Tensor::from_vec(g.clone(), g.len(), dev)?;
            let f = match &shared {
                Some(f) => f.select(&idx)?,
                None => {
                    let tk: Vec<f64> = g.iter().map(|&i| t[i as usize]).collect();
                    self.encoders[k].forward(&x.index_select(&idx, 0)?, &tk, ctx)?
                }
            };
            outs.push(self.decoders[k].forward(&f, ctx)?);
            order.extend_from_slice(g);
        }
        // Scatter back: position of sample i in the concatenation.
        let mut inv = vec![0u32; t.len()];
        for (pos, &i) in order.iter().enumerate() {
            inv[i as usize] = pos as u32;
        }
        let cat = Tensor::cat(&outs, 0)?;
        Ok(cat.index_select(&Tensor::from_vec(inv, t.len(), dev)?, 0)?)
    }

    /// Costs at batch 1: the encoder(s) and each decoder.
    pub fn costs(&self) -> (Vec<Cost>, Vec<Cost>) {
        let mut enc_costs = Vec::new();
        let mut shapes = Vec::new();
        for e in &self.encoders {
            let (c, s) = e.cost();
            enc_costs.push(c);
            shapes.push(s);
        }
        let dec_costs = (0..self.decoders.len())
            .map(|k| self.decoders[k].cost(&shapes[k.min(shapes.len() - 1)]))
            .collect();
        (enc_costs, dec_costs)
    }
}

#[cfg(test)]
mod peer_tests;
#[cfg(test)]
mod tests;
