//! EDM's SongUNet (DDPM++) multistage (authors' `MultistageUNet`, docs/paper-notes.md §2.2): positional noise embedding of
//! c_noise = ln(σ)/4, shared mapping MLP, `UNetBlock`s with box-filter (`[1,1]`) resampling and √½ skip scale,
//! single-head attention, xavier-uniform init. The middle blocks (`in0`, `in1`, at encoder width) belong to
//! each decoder, unlike NCSN++ and LDM.
//!
//! The network here is EDM's raw F(x, c_noise); EDMPrecond's c_skip/c_out/c_in are applied by the caller
//! (see [`edm_precond`]). Augmentation labels are not supported (the `map_augment` layer is built, so
//! parameter counts match, but the forward pass never feeds it — as EDM does when no labels are given).
//!
//! Tensor names: encoder `map_augment`, `map_layer0`, `map_layer1`, `conv_in`, `level{l}.down`,
//! `level{l}.block{i}`; decoder `in0`, `in1`, `level{l}.up`, `level{l}.block{i}`, `aux_norm`, `aux_conv`.
//! UNetBlock: `norm0`, `conv0`, `affine`, `norm1`, `conv1`, `skip`, and with attention `norm2`, `qkv`, `proj`.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::blocks::{
    attention, attention_cost, box_down, macs_of, nearest_up, silu, sinusoid, Chw, Conv, Cost, Ctx,
    GroupNorm, Groups, Linear,
};
use super::params::{Init, Pb};
use super::{DecoderNet, EncoderNet, FeatureShapes, Features};
use crate::kernels::{cat_channels, residual};

/// DDPM++ (SongUNet) settings (defaults: EDM `--arch=ddpmpp` as in the authors' multistage run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdpmppConfig {
    pub in_channels: usize,
    pub resolution: usize,
    /// Encoder model_channels (128).
    pub en_width: usize,
    /// One decoder model_channels per stage ([192, 128, 16]).
    pub de_widths: Vec<usize>,
    /// channel_mult ([2, 2, 2]).
    pub channel_mult: Vec<usize>,
    /// Blocks per encoder level (4; decoders have one more).
    pub num_blocks: usize,
    /// Resolutions with attention ([16]).
    pub attn_resolutions: Vec<usize>,
    /// Dropout in training (0.13).
    pub dropout: f64,
    /// GroupNorm groups = min(C/4, max_groups) (the authors changed EDM's 32 to 16).
    pub max_groups: usize,
    /// Augmentation-label dimension of `map_augment` (9 with EDM's default augmentation, 0 for none).
    pub augment_dim: usize,
}

const SKIP_SCALE: f64 = std::f64::consts::FRAC_1_SQRT_2;
const EPS: f64 = 1e-6;
const INIT: Init = Init::XavierUniform { gain: 1.0 };
const INIT_ZERO: Init = Init::XavierUniform { gain: 1e-5 };

/// EDMPrecond (σ_data = 0.5): returns (c_skip, c_out, c_in, c_noise) for one σ.
pub fn edm_precond(sigma: f64) -> (f64, f64, f64, f64) {
    let sd = 0.5f64;
    let s2 = sigma * sigma + sd * sd;
    (
        sd * sd / s2,
        sigma * sd / s2.sqrt(),
        1.0 / s2.sqrt(),
        sigma.ln() / 4.0,
    )
}

impl DdpmppConfig {
    fn groups(&self) -> Groups {
        Groups::MinQuarter(self.max_groups)
    }
    fn noise_dim(&self) -> usize {
        self.en_width
    }
    fn emb_dim(&self) -> usize {
        4 * self.en_width
    }
    fn res(&self, l: usize) -> usize {
        self.resolution >> l
    }
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.channel_mult.is_empty()
            || self.de_widths.is_empty()
            || self.en_width == 0
            || self.num_blocks == 0
        {
            return Err("ddpmpp: channel_mult, de_widths, en_width and num_blocks must be non-empty/positive".into());
        }
        if self.de_widths.contains(&0) || self.channel_mult.contains(&0) || self.in_channels == 0 {
            return Err("ddpmpp: widths, multipliers and in_channels must be positive".into());
        }
        if self.en_width % 2 != 0 || self.en_width < 4 {
            return Err("ddpmpp: en_width must be even and >= 4 (positional embedding)".into());
        }
        let nl = self.channel_mult.len();
        if self.resolution % (1 << (nl - 1)) != 0 || self.res(nl - 1) == 0 {
            return Err(format!(
                "ddpmpp: resolution {} not divisible by 2^{}",
                self.resolution,
                nl - 1
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("ddpmpp: dropout {} not in [0, 1)", self.dropout));
        }
        if self.max_groups == 0 {
            return Err("ddpmpp: max_groups must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Resample {
    None,
    Up,
    Down,
}

/// EDM `UNetBlock` (adaptive_scale = False, resample_proj = True, one head).
#[derive(Debug, Clone)]
pub struct UNetBlock {
    norm0: GroupNorm,
    conv0: Conv,
    affine: Linear,
    norm1: GroupNorm,
    conv1: Conv,
    skip: Option<Conv>,
    attn: Option<(GroupNorm, Conv, Conv)>,
    resample: Resample,
    dropout: f64,
    cin: usize,
}

impl UNetBlock {
    fn new(
        pb: &Pb,
        cfg: &DdpmppConfig,
        cin: usize,
        cout: usize,
        resample: Resample,
        attention: bool,
    ) -> Result<Self> {
        let g = cfg.groups();
        let norm0 = GroupNorm::new(&pb.pp("norm0"), cin, g, EPS)?;
        let conv0 = Conv::new(&pb.pp("conv0"), cin, cout, 3, 1, 1, INIT, true)?;
        let affine = Linear::new(&pb.pp("affine"), cfg.emb_dim(), cout, true, INIT, true)?;
        let norm1 = GroupNorm::new(&pb.pp("norm1"), cout, g, EPS)?;
        let conv1 = Conv::new(&pb.pp("conv1"), cout, cout, 3, 1, 1, INIT_ZERO, true)?;
        let skip = if cin != cout || resample != Resample::None {
            Some(Conv::new(&pb.pp("skip"), cin, cout, 1, 1, 0, INIT, true)?)
        } else {
            None
        };
        let attn = if attention {
            Some((
                GroupNorm::new(&pb.pp("norm2"), cout, g, EPS)?,
                Conv::new(
                    &pb.pp("qkv"),
                    cout,
                    3 * cout,
                    1,
                    1,
                    0,
                    Init::XavierUniform {
                        gain: 0.2f64.sqrt(),
                    },
                    true,
                )?,
                Conv::new(&pb.pp("proj"), cout, cout, 1, 1, 0, INIT_ZERO, true)?,
            ))
        } else {
            None
        };
        Ok(Self {
            norm0,
            conv0,
            affine,
            norm1,
            conv1,
            skip,
            attn,
            resample,
            dropout: cfg.dropout,
            cin,
        })
    }

    fn resample(&self, x: &Tensor) -> Result<Tensor> {
        match self.resample {
            Resample::None => Ok(x.clone()),
            Resample::Up => nearest_up(x),
            Resample::Down => box_down(x),
        }
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let orig = x;
        let h = self.conv0.forward_biased(
            &self.resample(&self.norm0.forward_silu(x)?)?,
            &self.affine.forward(emb)?,
        )?;
        let h = self.norm1.forward_silu_dropout(&h, ctx, self.dropout)?;
        let h = self.conv1.forward(&h)?;
        let s = match &self.skip {
            Some(c) => c.forward(&self.resample(orig)?)?,
            None => orig.clone(),
        };
        let mut x = residual(&h, &s, SKIP_SCALE)?;
        if let Some((norm2, qkv, proj)) = &self.attn {
            let (b, c, hh, ww) = x.dims4()?;
            let t = hh * ww;
            // EDM's layout: qkv channels reshape to [heads=1, C, 3], i.e. interleaved (q, k, v) per channel.
            let qkv = qkv.forward(&norm2.forward(&x)?)?.reshape((b, c, 3, t))?;
            let q = qkv.narrow(2, 0, 1)?.squeeze(2)?;
            let k = qkv.narrow(2, 1, 1)?.squeeze(2)?;
            let v = qkv.narrow(2, 2, 1)?.squeeze(2)?;
            let a = attention(&q, &k, &v, 1.0 / (c as f64).sqrt())?.reshape((b, c, hh, ww))?;
            x = residual(&proj.forward(&a)?, &x, SKIP_SCALE)?;
        }
        Ok(x)
    }

    fn cost(&self, (c, h, w): Chw, cost: &mut Cost) -> Chw {
        let (h2, w2) = match self.resample {
            Resample::None => (h, w),
            Resample::Up => (2 * h, 2 * w),
            Resample::Down => (h / 2, w / 2),
        };
        // Resampling filters (on the main and skip paths): a 2×2 box has 4 taps per output, the stride-2
        // transposed ones filter 1.
        let taps = match self.resample {
            Resample::None => 0,
            Resample::Up => 1,
            Resample::Down => 4,
        };
        cost.add_macs(macs_of(&[2, taps, c, h2, w2]));
        let o = self.conv0.cost((self.cin, h2, w2), cost);
        self.affine.cost(cost);
        self.conv1.cost(o, cost);
        if let Some(s) = &self.skip {
            s.cost((self.cin, h2, w2), cost);
        }
        if let Some((_, qkv, proj)) = &self.attn {
            qkv.cost(o, cost);
            proj.cost(o, cost);
            cost.add_macs(attention_cost(o.0, o.1 * o.2));
        }
        o
    }
}

/// Shared encoder: mapping network and all down levels (no middle blocks).
#[derive(Debug, Clone)]
pub struct Encoder {
    cfg: DdpmppConfig,
    map_augment: Option<Linear>,
    map0: Linear,
    map1: Linear,
    conv_in: Conv,
    /// Per level: optional down block, then the blocks.
    levels: Vec<(Option<UNetBlock>, Vec<UNetBlock>)>,
}

impl Encoder {
    pub fn new(pb: &Pb, cfg: &DdpmppConfig) -> Result<(Self, Vec<usize>, usize)> {
        let nd = cfg.noise_dim();
        let ed = cfg.emb_dim();
        let map_augment = if cfg.augment_dim > 0 {
            Some(Linear::new(
                &pb.pp("map_augment"),
                cfg.augment_dim,
                nd,
                false,
                INIT,
                true,
            )?)
        } else {
            None
        };
        let map0 = Linear::new(&pb.pp("map_layer0"), nd, ed, true, INIT, true)?;
        let map1 = Linear::new(&pb.pp("map_layer1"), ed, ed, true, INIT, true)?;
        let conv_in = Conv::new(
            &pb.pp("conv_in"),
            cfg.in_channels,
            cfg.en_width,
            3,
            1,
            1,
            INIT,
            true,
        )?;
        let mut cout = cfg.en_width;
        let mut skips = vec![cout];
        let mut levels = Vec::new();
        for (l, &mult) in cfg.channel_mult.iter().enumerate() {
            let lp = pb.pp(format!("level{l}"));
            let down = if l > 0 {
                skips.push(cout);
                Some(UNetBlock::new(
                    &lp.pp("down"),
                    cfg,
                    cout,
                    cout,
                    Resample::Down,
                    false,
                )?)
            } else {
                None
            };
            let mut blocks = Vec::new();
            for i in 0..cfg.num_blocks {
                let cin = cout;
                cout = cfg.en_width * mult;
                let attn = cfg.attn_resolutions.contains(&cfg.res(l));
                blocks.push(UNetBlock::new(
                    &lp.pp(format!("block{i}")),
                    cfg,
                    cin,
                    cout,
                    Resample::None,
                    attn,
                )?);
                skips.push(cout);
            }
            levels.push((down, blocks));
        }
        Ok((
            Self {
                cfg: cfg.clone(),
                map_augment,
                map0,
                map1,
                conv_in,
                levels,
            },
            skips,
            cout,
        ))
    }
}

impl EncoderNet for Encoder {
    fn forward(&self, x: &Tensor, t: &[f64], ctx: &Ctx) -> Result<Features> {
        let nd = self.cfg.noise_dim();
        let c_noise: Vec<f64> = t.iter().map(|&s| s.ln() / 4.0).collect();
        // PositionalEmbedding(endpoint=True) then the [cos, sin] → [sin, cos] swap of SongUNet.forward.
        let e = sinusoid(&c_noise, nd, (nd / 2 - 1).max(1) as f64, false, x.device())?
            .to_dtype(x.dtype())?;
        let _ = &self.map_augment;
        let emb = silu(&self.map1.forward(&silu(&self.map0.forward(&e)?)?)?)?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for (down, blocks) in &self.levels {
            if let Some(d) = down {
                h = d.forward(&h, &emb, ctx)?;
                skips.push(h.clone());
            }
            for b in blocks {
                h = b.forward(&h, &emb, ctx)?;
                skips.push(h.clone());
            }
        }
        Ok(Features { h, skips, emb })
    }

    fn cost(&self) -> (Cost, FeatureShapes) {
        let mut c = Cost::default();
        if let Some(m) = &self.map_augment {
            m.cost(&mut c);
        }
        self.map0.cost(&mut c);
        self.map1.cost(&mut c);
        let r = self.cfg.resolution;
        let mut h = self.conv_in.cost((self.cfg.in_channels, r, r), &mut c);
        let mut skips = vec![h];
        for (down, blocks) in &self.levels {
            if let Some(d) = down {
                h = d.cost(h, &mut c);
                skips.push(h);
            }
            for b in blocks {
                h = b.cost(h, &mut c);
                skips.push(h);
            }
        }
        (c, FeatureShapes { h, skips })
    }
}

/// One stage's decoder: its own middle blocks at encoder width, then per level [up] + blocks with concat skips.
#[derive(Debug, Clone)]
pub struct Decoder {
    mid: Vec<UNetBlock>,
    /// Per level (coarse to fine): optional up block, blocks (each takes a concatenated skip).
    levels: Vec<(Option<UNetBlock>, Vec<UNetBlock>)>,
    aux_norm: GroupNorm,
    aux_conv: Conv,
}

impl Decoder {
    pub fn new(
        pb: &Pb,
        cfg: &DdpmppConfig,
        d: usize,
        skips: &[usize],
        h_ch: usize,
    ) -> Result<Self> {
        let mut skips = skips.to_vec();
        let mut cout = h_ch;
        let nl = cfg.channel_mult.len();
        let mid = vec![
            UNetBlock::new(&pb.pp("in0"), cfg, cout, cout, Resample::None, true)?,
            UNetBlock::new(&pb.pp("in1"), cfg, cout, cout, Resample::None, false)?,
        ];
        let mut levels = Vec::new();
        for l in (0..nl).rev() {
            let lp = pb.pp(format!("level{l}"));
            let up = if l != nl - 1 {
                Some(UNetBlock::new(
                    &lp.pp("up"),
                    cfg,
                    cout,
                    cout,
                    Resample::Up,
                    false,
                )?)
            } else {
                None
            };
            let mut blocks = Vec::new();
            for i in 0..=cfg.num_blocks {
                let s = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("ddpmpp: skip list exhausted".into()))?;
                let cin = cout + s;
                cout = d * cfg.channel_mult[l];
                let attn = i == cfg.num_blocks && cfg.attn_resolutions.contains(&cfg.res(l));
                blocks.push(UNetBlock::new(
                    &lp.pp(format!("block{i}")),
                    cfg,
                    cin,
                    cout,
                    Resample::None,
                    attn,
                )?);
            }
            levels.push((up, blocks));
        }
        if !skips.is_empty() {
            candle_core::bail!("ddpmpp: {} skips left unused", skips.len());
        }
        let aux_norm = GroupNorm::new(&pb.pp("aux_norm"), cout, cfg.groups(), EPS)?;
        let aux_conv = Conv::new(
            &pb.pp("aux_conv"),
            cout,
            cfg.in_channels,
            3,
            1,
            1,
            INIT_ZERO,
            true,
        )?;
        Ok(Self {
            mid,
            levels,
            aux_norm,
            aux_conv,
        })
    }
}

impl DecoderNet for Decoder {
    fn forward(&self, f: &Features, ctx: &Ctx) -> Result<Tensor> {
        let mut skips: Vec<&Tensor> = f.skips.iter().collect();
        let mut h = f.h.clone();
        for b in &self.mid {
            h = b.forward(&h, &f.emb, ctx)?;
        }
        for (up, blocks) in &self.levels {
            if let Some(u) = up {
                h = u.forward(&h, &f.emb, ctx)?;
            }
            for b in blocks {
                let s = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("ddpmpp: skip list exhausted".into()))?;
                h = b.forward(&cat_channels(&h, s)?, &f.emb, ctx)?;
            }
        }
        self.aux_conv.forward(&self.aux_norm.forward_silu(&h)?)
    }

    fn cost(&self, s: &FeatureShapes) -> Cost {
        let mut c = Cost::default();
        let mut skips = s.skips.clone();
        let mut h = s.h;
        for b in &self.mid {
            h = b.cost(h, &mut c);
        }
        for (up, blocks) in &self.levels {
            if let Some(u) = up {
                h = u.cost(h, &mut c);
            }
            for b in blocks {
                let sk = skips.pop().unwrap_or((0, h.1, h.2));
                h = b.cost((h.0 + sk.0, h.1, h.2), &mut c);
            }
        }
        self.aux_conv.cost(h, &mut c);
        c
    }
}
