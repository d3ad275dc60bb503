//! score-SDE NCSN++ multistage (DPM-Solver setup; authors' `NCSNpp_multimodel`, docs/paper-notes.md §2.1): BigGAN ResBlocks
//! with FIR `[1,3,3,1]` resampling, residual input pyramid, single-head attention with NIN projections,
//! positional time embedding of 999·t with a shared MLP, √2 skip rescale, concatenated skips.
//!
//! Tensor names (prefix `encoder.` or `encoders.{k}.` and `decoders.{k}.`):
//! encoder: `temb0`, `temb1` (Linear), `conv_in`, `level{l}.block{i}` (ResBlock), `level{l}.attn{i}`,
//! `down{l}` (ResBlock with FIR down), `pyramid{l}` (FIR-blur + stride-2 3×3 conv), `mid.block0`, `mid.attn`,
//! `mid.block1`. decoder: `level{l}.block{i}`, `level{l}.attn`, `up{l}` (ResBlock with FIR up), `head_norm`,
//! `head_conv`. ResBlock: `norm0`, `conv0`, `dense`, `norm1`, `conv1`, `skip` (1×1). Attention: `norm`,
//! `nin_q`, `nin_k`, `nin_v`, `nin_out` (each `W [in, out]`, `b`).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::blocks::{
    attention, attention_cost, fir_blur_pad2, fir_cost, fir_down, fir_up, silu, sinusoid, Chw,
    Conv, Cost, Ctx, GroupNorm, Groups, Linear, Nin,
};
use super::params::{Init, Pb};
use super::{DecoderNet, EncoderNet, FeatureShapes, Features};
use crate::kernels::{cat_channels, residual};

/// NCSN++ settings (defaults: the authors' CIFAR-10 "deep" config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NcsnppConfig {
    /// Image channels (3 for CIFAR-10).
    pub in_channels: usize,
    /// Image side (32).
    pub resolution: usize,
    /// Encoder width nf (128).
    pub en_width: usize,
    /// One decoder width per stage ([192, 128, 16]).
    pub de_widths: Vec<usize>,
    /// Channel multipliers per resolution level ((1, 2, 2, 2)).
    pub ch_mult: Vec<usize>,
    /// ResBlocks per encoder level (8; decoders have one more).
    pub num_res_blocks: usize,
    /// Resolutions with attention ([16]).
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability in training (0.1).
    pub dropout: f64,
    /// GroupNorm groups = min(C/4, max_groups) (16 in the authors' config).
    pub max_groups: usize,
}

const SQRT2: f64 = std::f64::consts::SQRT_2;
const EPS: f64 = 1e-6;

fn default_init() -> Init {
    Init::FanAvgUniform { scale: 1.0 }
}

/// `ResnetBlockBigGANpp` (skip_rescale, FIR).
#[derive(Debug, Clone)]
pub struct ResBlock {
    norm0: GroupNorm,
    conv0: Conv,
    dense: Linear,
    norm1: GroupNorm,
    conv1: Conv,
    skip: Option<Conv>,
    up: bool,
    down: bool,
    dropout: f64,
}

impl ResBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pb: &Pb,
        cin: usize,
        cout: usize,
        temb_dim: usize,
        up: bool,
        down: bool,
        dropout: f64,
        groups: Groups,
    ) -> Result<Self> {
        let norm0 = GroupNorm::new(&pb.pp("norm0"), cin, groups, EPS)?;
        let conv0 = Conv::new(&pb.pp("conv0"), cin, cout, 3, 1, 1, default_init(), true)?;
        let dense = Linear::new(&pb.pp("dense"), temb_dim, cout, true, default_init(), true)?;
        let norm1 = GroupNorm::new(&pb.pp("norm1"), cout, groups, EPS)?;
        let conv1 = Conv::new(
            &pb.pp("conv1"),
            cout,
            cout,
            3,
            1,
            1,
            Init::FanAvgUniform { scale: 0.0 },
            true,
        )?;
        let skip = if cin != cout || up || down {
            Some(Conv::new(
                &pb.pp("skip"),
                cin,
                cout,
                1,
                1,
                0,
                default_init(),
                true,
            )?)
        } else {
            None
        };
        Ok(Self {
            norm0,
            conv0,
            dense,
            norm1,
            conv1,
            skip,
            up,
            down,
            dropout,
        })
    }

    /// `emb` is SiLU(temb), computed once per forward.
    pub fn forward(&self, x: &Tensor, emb: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let mut h = self.norm0.forward_silu(x)?;
        let mut x = x.clone();
        if self.up {
            h = fir_up(&h)?;
            x = fir_up(&x)?;
        } else if self.down {
            h = fir_down(&h)?;
            x = fir_down(&x)?;
        }
        let h = self.conv0.forward_biased(&h, &self.dense.forward(emb)?)?;
        let h = self.norm1.forward_silu_dropout(&h, ctx, self.dropout)?;
        let h = self.conv1.forward(&h)?;
        let x = match &self.skip {
            Some(c) => c.forward(&x)?,
            None => x,
        };
        residual(&x, &h, 1.0 / SQRT2)
    }

    pub fn cost(&self, (c, h, w): Chw, cost: &mut Cost) -> Chw {
        let (h2, w2) = if self.up {
            (2 * h, 2 * w)
        } else if self.down {
            (h / 2, w / 2)
        } else {
            (h, w)
        };
        if self.up || self.down {
            cost.add_macs(fir_cost(c, h2, w2).saturating_mul(2));
        }
        let o = self.conv0.cost((c, h2, w2), cost);
        self.dense.cost(cost);
        self.conv1.cost(o, cost);
        if let Some(s) = &self.skip {
            s.cost((c, h2, w2), cost);
        }
        o
    }
}

/// `AttnBlockpp`: single head, scale C^-½, NIN projections, (x + h)/√2.
#[derive(Debug, Clone)]
pub struct AttnBlock {
    norm: GroupNorm,
    q: Nin,
    k: Nin,
    v: Nin,
    out: Nin,
    c: usize,
}

impl AttnBlock {
    pub fn new(pb: &Pb, c: usize, groups: Groups) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(&pb.pp("norm"), c, groups, EPS)?,
            q: Nin::new(&pb.pp("nin_q"), c, c, 0.1)?,
            k: Nin::new(&pb.pp("nin_k"), c, c, 0.1)?,
            v: Nin::new(&pb.pp("nin_v"), c, c, 0.1)?,
            out: Nin::new(&pb.pp("nin_out"), c, c, 0.0)?,
            c,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, hh, ww) = x.dims4()?;
        let h = self.norm.forward(x)?;
        let flat = |t: Tensor| t.reshape((b, c, hh * ww));
        let q = flat(self.q.forward(&h)?)?;
        let k = flat(self.k.forward(&h)?)?;
        let v = flat(self.v.forward(&h)?)?;
        let a = attention(&q, &k, &v, (self.c as f64).powf(-0.5))?.reshape((b, c, hh, ww))?;
        let h = self.out.forward(&a)?;
        residual(x, &h, 1.0 / SQRT2)
    }

    pub fn cost(&self, s: Chw, cost: &mut Cost) {
        for n in [&self.q, &self.k, &self.v, &self.out] {
            n.cost(s, cost);
        }
        cost.add_macs(attention_cost(s.0, s.1 * s.2));
    }
}

/// Input-pyramid downsampler (`up_or_down_sampling.Conv2d(down=True)`): FIR blur then stride-2 3×3 conv
/// without padding. A custom module: invisible to torchstat.
#[derive(Debug, Clone)]
struct PyramidConv {
    conv: Conv,
}

impl PyramidConv {
    fn new(pb: &Pb, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv::new(pb, cin, cout, 3, 2, 0, default_init(), false)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&fir_blur_pad2(x)?)
    }
    fn cost(&self, (c, h, w): Chw, cost: &mut Cost) -> Chw {
        cost.add_macs(fir_cost(c, h + 1, w + 1));
        self.conv.cost((c, h + 1, w + 1), cost)
    }
}

#[derive(Debug, Clone)]
struct EncLevel {
    blocks: Vec<(ResBlock, Option<AttnBlock>)>,
    down: Option<(ResBlock, PyramidConv)>,
}

/// The shared encoder: time MLP, input conv, all down levels with the input pyramid, and the middle block.
#[derive(Debug, Clone)]
pub struct Encoder {
    cfg: NcsnppConfig,
    temb0: Linear,
    temb1: Linear,
    conv_in: Conv,
    levels: Vec<EncLevel>,
    mid: (ResBlock, AttnBlock, ResBlock),
}

impl NcsnppConfig {
    fn groups(&self) -> Groups {
        Groups::MinQuarter(self.max_groups)
    }
    fn temb_dim(&self) -> usize {
        4 * self.en_width
    }
    fn res(&self, level: usize) -> usize {
        self.resolution >> level
    }

    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.ch_mult.is_empty() || self.de_widths.is_empty() || self.en_width == 0 {
            return Err(
                "ncsnpp: ch_mult, de_widths and en_width must be non-empty/positive".into(),
            );
        }
        if self.de_widths.contains(&0) || self.ch_mult.contains(&0) || self.in_channels == 0 {
            return Err("ncsnpp: widths, multipliers and in_channels must be positive".into());
        }
        if self.en_width % 2 != 0 {
            return Err("ncsnpp: en_width must be even (sinusoidal embedding)".into());
        }
        if self.resolution % (1 << (self.ch_mult.len() - 1)) != 0
            || self.res(self.ch_mult.len() - 1) < 2
        {
            return Err(format!(
                "ncsnpp: resolution {} is not divisible by 2^{} down to at least 2",
                self.resolution,
                self.ch_mult.len() - 1
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("ncsnpp: dropout {} not in [0, 1)", self.dropout));
        }
        if self.max_groups == 0 {
            return Err("ncsnpp: max_groups must be positive".into());
        }
        Ok(())
    }
}

impl Encoder {
    /// Builds the encoder; also returns the skip channel list and the channels of its output `h`.
    pub fn new(pb: &Pb, cfg: &NcsnppConfig) -> Result<(Self, Vec<usize>, usize)> {
        let nf = cfg.en_width;
        let g = cfg.groups();
        let td = cfg.temb_dim();
        let temb0 = Linear::new(&pb.pp("temb0"), nf, td, true, default_init(), true)?;
        let temb1 = Linear::new(&pb.pp("temb1"), td, td, true, default_init(), true)?;
        let conv_in = Conv::new(
            &pb.pp("conv_in"),
            cfg.in_channels,
            nf,
            3,
            1,
            1,
            default_init(),
            true,
        )?;
        let mut skips = vec![nf];
        let mut ch = nf;
        let mut pyr_ch = cfg.in_channels;
        let mut levels = Vec::new();
        let nl = cfg.ch_mult.len();
        for (l, &mult) in cfg.ch_mult.iter().enumerate() {
            let lp = pb.pp(format!("level{l}"));
            let mut blocks = Vec::new();
            for i in 0..cfg.num_res_blocks {
                let out = nf * mult;
                let b = ResBlock::new(
                    &lp.pp(format!("block{i}")),
                    ch,
                    out,
                    td,
                    false,
                    false,
                    cfg.dropout,
                    g,
                )?;
                ch = out;
                let a = if cfg.attn_resolutions.contains(&cfg.res(l)) {
                    Some(AttnBlock::new(&lp.pp(format!("attn{i}")), ch, g)?)
                } else {
                    None
                };
                blocks.push((b, a));
                skips.push(ch);
            }
            let down = if l + 1 != nl {
                let d = ResBlock::new(
                    &pb.pp(format!("down{l}")),
                    ch,
                    ch,
                    td,
                    false,
                    true,
                    cfg.dropout,
                    g,
                )?;
                let p = PyramidConv::new(&pb.pp(format!("pyramid{l}")), pyr_ch, ch)?;
                pyr_ch = ch;
                skips.push(ch);
                Some((d, p))
            } else {
                None
            };
            levels.push(EncLevel { blocks, down });
        }
        let mid = (
            ResBlock::new(
                &pb.pp("mid.block0"),
                ch,
                ch,
                td,
                false,
                false,
                cfg.dropout,
                g,
            )?,
            AttnBlock::new(&pb.pp("mid.attn"), ch, g)?,
            ResBlock::new(
                &pb.pp("mid.block1"),
                ch,
                ch,
                td,
                false,
                false,
                cfg.dropout,
                g,
            )?,
        );
        Ok((
            Self {
                cfg: cfg.clone(),
                temb0,
                temb1,
                conv_in,
                levels,
                mid,
            },
            skips,
            ch,
        ))
    }
}

impl EncoderNet for Encoder {
    fn forward(&self, x: &Tensor, t: &[f64], ctx: &Ctx) -> Result<Features> {
        let nf = self.cfg.en_width;
        // Label 999·t (score-SDE `get_score_fn` for continuous VP), sinusoid with denominator half − 1.
        let labels: Vec<f64> = t.iter().map(|&t| 999.0 * t).collect();
        let e = sinusoid(&labels, nf, (nf / 2 - 1).max(1) as f64, false, x.device())?
            .to_dtype(x.dtype())?;
        let temb = self.temb1.forward(&silu(&self.temb0.forward(&e)?)?)?;
        let emb = silu(&temb)?;
        let mut skips = vec![self.conv_in.forward(x)?];
        let mut pyramid = x.clone();
        for lvl in &self.levels {
            for (b, a) in &lvl.blocks {
                let mut h = b.forward(skips.last().expect("non-empty"), &emb, ctx)?;
                if let Some(a) = a {
                    h = a.forward(&h)?;
                }
                skips.push(h);
            }
            if let Some((d, p)) = &lvl.down {
                let h = d.forward(skips.last().expect("non-empty"), &emb, ctx)?;
                pyramid = residual(&p.forward(&pyramid)?, &h, 1.0 / SQRT2)?;
                skips.push(pyramid.clone());
            }
        }
        let h = skips.last().expect("non-empty").clone();
        let h = self.mid.0.forward(&h, &emb, ctx)?;
        let h = self.mid.1.forward(&h)?;
        let h = self.mid.2.forward(&h, &emb, ctx)?;
        Ok(Features { h, skips, emb })
    }

    fn cost(&self) -> (Cost, FeatureShapes) {
        let mut c = Cost::default();
        self.temb0.cost(&mut c);
        self.temb1.cost(&mut c);
        let r = self.cfg.resolution;
        let input = (self.cfg.in_channels, r, r);
        let mut skips = vec![self.conv_in.cost(input, &mut c)];
        let mut pyr = input;
        for lvl in &self.levels {
            for (b, a) in &lvl.blocks {
                let s = b.cost(*skips.last().expect("non-empty"), &mut c);
                if let Some(a) = a {
                    a.cost(s, &mut c);
                }
                skips.push(s);
            }
            if let Some((d, p)) = &lvl.down {
                let s = d.cost(*skips.last().expect("non-empty"), &mut c);
                pyr = p.cost(pyr, &mut c);
                debug_assert_eq!(pyr, s);
                skips.push(s);
            }
        }
        let s = *skips.last().expect("non-empty");
        self.mid.0.cost(s, &mut c);
        self.mid.1.cost(s, &mut c);
        let h = self.mid.2.cost(s, &mut c);
        (c, FeatureShapes { h, skips })
    }
}

#[derive(Debug, Clone)]
struct DecLevel {
    blocks: Vec<ResBlock>,
    attn: Option<AttnBlock>,
    up: Option<ResBlock>,
}

/// One stage's decoder of width `d`: concat-skip ResBlocks (the ResBlock's own 1×1 skip conv is the only
/// width adapter), attention once per attention level, FIR-up ResBlocks, GN–SiLU–conv head (ε prediction).
#[derive(Debug, Clone)]
pub struct Decoder {
    levels: Vec<DecLevel>,
    head_norm: GroupNorm,
    head_conv: Conv,
}

impl Decoder {
    pub fn new(
        pb: &Pb,
        cfg: &NcsnppConfig,
        d: usize,
        skips: &[usize],
        h_ch: usize,
    ) -> Result<Self> {
        let g = cfg.groups();
        let td = cfg.temb_dim();
        let mut skips = skips.to_vec();
        let mut ch = h_ch;
        let mut levels = Vec::new();
        for l in (0..cfg.ch_mult.len()).rev() {
            let lp = pb.pp(format!("level{l}"));
            let mut blocks = Vec::new();
            for i in 0..=cfg.num_res_blocks {
                let out = d * cfg.ch_mult[l];
                let s = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("ncsnpp: skip list exhausted".into()))?;
                blocks.push(ResBlock::new(
                    &lp.pp(format!("block{i}")),
                    ch + s,
                    out,
                    td,
                    false,
                    false,
                    cfg.dropout,
                    g,
                )?);
                ch = out;
            }
            let attn = if cfg.attn_resolutions.contains(&cfg.res(l)) {
                Some(AttnBlock::new(&lp.pp("attn"), ch, g)?)
            } else {
                None
            };
            let up = if l != 0 {
                Some(ResBlock::new(
                    &pb.pp(format!("up{l}")),
                    ch,
                    ch,
                    td,
                    true,
                    false,
                    cfg.dropout,
                    g,
                )?)
            } else {
                None
            };
            levels.push(DecLevel { blocks, attn, up });
        }
        if !skips.is_empty() {
            candle_core::bail!("ncsnpp: {} skips left unused", skips.len());
        }
        let head_norm = GroupNorm::new(&pb.pp("head_norm"), ch, g, EPS)?;
        let head_conv = Conv::new(
            &pb.pp("head_conv"),
            ch,
            cfg.in_channels,
            3,
            1,
            1,
            Init::FanAvgUniform { scale: 0.0 },
            true,
        )?;
        Ok(Self {
            levels,
            head_norm,
            head_conv,
        })
    }
}

impl DecoderNet for Decoder {
    fn forward(&self, f: &Features, ctx: &Ctx) -> Result<Tensor> {
        let mut skips: Vec<&Tensor> = f.skips.iter().collect();
        let mut h = f.h.clone();
        for lvl in &self.levels {
            for b in &lvl.blocks {
                let s = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("ncsnpp: skip list exhausted".into()))?;
                h = b.forward(&cat_channels(&h, s)?, &f.emb, ctx)?;
            }
            if let Some(a) = &lvl.attn {
                h = a.forward(&h)?;
            }
            if let Some(u) = &lvl.up {
                h = u.forward(&h, &f.emb, ctx)?;
            }
        }
        self.head_conv.forward(&self.head_norm.forward_silu(&h)?)
    }

    fn cost(&self, s: &FeatureShapes) -> Cost {
        let mut c = Cost::default();
        let mut skips = s.skips.clone();
        let mut h = s.h;
        for lvl in &self.levels {
            for b in &lvl.blocks {
                let sk = skips.pop().unwrap_or((0, h.1, h.2));
                h = b.cost((h.0 + sk.0, h.1, h.2), &mut c);
            }
            if let Some(a) = &lvl.attn {
                a.cost(h, &mut c);
            }
            if let Some(u) = &lvl.up {
                h = u.cost(h, &mut c);
            }
        }
        self.head_conv.cost(h, &mut c);
        c
    }
}
