//! The openai U-Net of latent diffusion, multistage (authors' `UNetModel_multistage`, docs/paper-notes.md §2.3): sinusoid
//! time embedding ([cos, sin]) and MLP shared, ResBlocks without skip rescale, multi-head attention
//! (`num_head_channels`, legacy QKV order), stride-2 conv downsampling, nearest + conv upsampling, GroupNorm
//! with 32 groups, PyTorch default init with zeroed output convs. The middle block is in the shared encoder.
//!
//! `decoder_attention_quirk` reproduces the authors' bug behind Table 8: the downsample-factor counter `ds`
//! is not reset between decoders, so decoders 1, 2, … get no attention blocks. Default: off (correct).
//!
//! Tensor names: encoder `time_embed0`, `time_embed1`, `conv_in`, `level{l}.block{i}`, `level{l}.attn{i}`,
//! `down{l}`, `mid.block0`, `mid.attn`, `mid.block1`; decoder `level{l}.block{i}`, `level{l}.attn{i}`,
//! `up{l}`, `out_norm`, `out_conv`. ResBlock: `in_norm`, `in_conv`, `emb`, `out_norm`, `out_conv`, `skip`.
//! Attention: `norm`, `qkv`, `proj` (the 1-D convs stored as `[out, in, 1, 1]`).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::blocks::{
    attention, attention_cost, macs_of, nearest_up, silu, sinusoid, Chw, Conv, Cost, Ctx,
    GroupNorm, Groups, Linear,
};
use super::params::{Init, Pb};
use super::{DecoderNet, EncoderNet, FeatureShapes, Features};
use crate::kernels::cat_channels;

/// LDM U-Net settings (defaults: `celebahq-ldm-vq-4_multistage224-256-192-128.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdmConfig {
    /// Latent channels (3 for VQ-f4).
    pub in_channels: usize,
    /// Latent side (64).
    pub resolution: usize,
    /// Encoder model_channels (224).
    pub en_width: usize,
    /// One decoder width per stage ([256, 192, 128]).
    pub de_widths: Vec<usize>,
    /// channel_mult ([1, 2, 3, 4]).
    pub channel_mult: Vec<usize>,
    /// ResBlocks per encoder level (2; decoders have one more).
    pub num_res_blocks: usize,
    /// Downsample factors with attention ([8, 4, 2], i.e. latent 8², 16², 32²).
    pub attention_ds: Vec<usize>,
    /// Channels per attention head (32).
    pub num_head_channels: usize,
    /// Dropout in training (0).
    pub dropout: f64,
    /// GroupNorm groups (32).
    pub groups: usize,
    /// Reproduce the authors' non-reset `ds` counter (decoders after the first lose their attention).
    #[serde(default)]
    pub decoder_attention_quirk: bool,
}

const EPS: f64 = 1e-5;

fn torch_init(fan_in: usize) -> Init {
    Init::TorchDefault { fan_in }
}

impl LdmConfig {
    fn g(&self) -> Groups {
        Groups::Fixed(self.groups)
    }
    fn emb_dim(&self) -> usize {
        4 * self.en_width
    }
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.channel_mult.is_empty() || self.de_widths.is_empty() || self.en_width == 0 {
            return Err(
                "ldm: channel_mult, de_widths and en_width must be non-empty/positive".into(),
            );
        }
        if self.de_widths.contains(&0) || self.channel_mult.contains(&0) || self.in_channels == 0 {
            return Err("ldm: widths, multipliers and in_channels must be positive".into());
        }
        if self.en_width % 2 != 0 {
            return Err("ldm: en_width must be even (sinusoidal embedding)".into());
        }
        let nl = self.channel_mult.len();
        if self.resolution % (1 << (nl - 1)) != 0 || (self.resolution >> (nl - 1)) == 0 {
            return Err(format!(
                "ldm: resolution {} not divisible by 2^{}",
                self.resolution,
                nl - 1
            ));
        }
        if self.num_head_channels == 0 || self.groups == 0 {
            return Err("ldm: num_head_channels and groups must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("ldm: dropout {} not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// openai `ResBlock` (no scale-shift norm, no up/down inside).
#[derive(Debug, Clone)]
pub struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv,
    emb: Linear,
    out_norm: GroupNorm,
    out_conv: Conv,
    skip: Option<Conv>,
    dropout: f64,
}

impl ResBlock {
    fn new(pb: &Pb, cfg: &LdmConfig, cin: usize, cout: usize) -> Result<Self> {
        let ed = cfg.emb_dim();
        Ok(Self {
            in_norm: GroupNorm::new(&pb.pp("in_norm"), cin, cfg.g(), EPS)?,
            in_conv: Conv::new(
                &pb.pp("in_conv"),
                cin,
                cout,
                3,
                1,
                1,
                torch_init(cin * 9),
                true,
            )?,
            emb: Linear::new(&pb.pp("emb"), ed, cout, true, torch_init(ed), true)?,
            out_norm: GroupNorm::new(&pb.pp("out_norm"), cout, cfg.g(), EPS)?,
            out_conv: Conv::new(&pb.pp("out_conv"), cout, cout, 3, 1, 1, Init::Zeros, true)?,
            skip: if cin != cout {
                Some(Conv::new(
                    &pb.pp("skip"),
                    cin,
                    cout,
                    1,
                    1,
                    0,
                    torch_init(cin),
                    true,
                )?)
            } else {
                None
            },
            dropout: cfg.dropout,
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let h = self
            .in_conv
            .forward_biased(&self.in_norm.forward_silu(x)?, &self.emb.forward(emb)?)?;
        let h =
            self.out_conv
                .forward(&self.out_norm.forward_silu_dropout(&h, ctx, self.dropout)?)?;
        let s = match &self.skip {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        s + h
    }

    fn cost(&self, s: Chw, cost: &mut Cost) -> Chw {
        let o = self.in_conv.cost(s, cost);
        self.emb.cost(cost);
        self.out_conv.cost(o, cost);
        if let Some(c) = &self.skip {
            c.cost(s, cost);
        }
        o
    }
}

/// openai `AttentionBlock` with `QKVAttentionLegacy` (qkv channels grouped per head as [q, k, v]).
#[derive(Debug, Clone)]
pub struct AttnBlock {
    norm: GroupNorm,
    qkv: Conv,
    proj: Conv,
    heads: usize,
}

impl AttnBlock {
    fn new(pb: &Pb, cfg: &LdmConfig, c: usize) -> Result<Self> {
        if c % cfg.num_head_channels != 0 {
            candle_core::bail!(
                "ldm: {c} channels not divisible by num_head_channels {}",
                cfg.num_head_channels
            );
        }
        let mut qkv = Conv::new(&pb.pp("qkv"), c, 3 * c, 1, 1, 0, torch_init(c), true)?;
        let mut proj = Conv::new(&pb.pp("proj"), c, c, 1, 1, 0, Init::Zeros, true)?;
        // Conv1d in the authors' code: torchstat does not count it.
        qkv.paper_visible = false;
        proj.paper_visible = false;
        Ok(Self {
            norm: GroupNorm::new(&pb.pp("norm"), c, cfg.g(), EPS)?,
            qkv,
            proj,
            heads: c / cfg.num_head_channels,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, hh, ww) = x.dims4()?;
        let t = hh * ww;
        let ch = c / self.heads;
        let qkv = self
            .qkv
            .forward(&self.norm.forward(x)?)?
            .reshape((b * self.heads, 3 * ch, t))?;
        let q = qkv.narrow(1, 0, ch)?;
        let k = qkv.narrow(1, ch, ch)?;
        let v = qkv.narrow(1, 2 * ch, ch)?;
        let a = attention(&q, &k, &v, 1.0 / (ch as f64).sqrt())?.reshape((b, c, hh, ww))?;
        x + self.proj.forward(&a)?
    }

    fn cost(&self, s: Chw, cost: &mut Cost) {
        self.qkv.cost(s, cost);
        self.proj.cost(s, cost);
        cost.add_macs(attention_cost(s.0, s.1 * s.2));
    }
}

#[derive(Debug, Clone)]
enum Layer {
    Res(ResBlock),
    Attn(AttnBlock),
    /// Stride-2 3×3 conv.
    Down(Conv),
    /// Nearest ×2 then 3×3 conv.
    Up(Conv),
}

impl Layer {
    fn forward(&self, x: &Tensor, emb: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        match self {
            Layer::Res(r) => r.forward(x, emb, ctx),
            Layer::Attn(a) => a.forward(x),
            Layer::Down(c) => c.forward(x),
            Layer::Up(c) => c.forward(&nearest_up(x)?),
        }
    }
    fn cost(&self, s: Chw, cost: &mut Cost) -> Chw {
        match self {
            Layer::Res(r) => r.cost(s, cost),
            Layer::Attn(a) => {
                a.cost(s, cost);
                s
            }
            Layer::Down(c) => c.cost(s, cost),
            Layer::Up(c) => {
                cost.add_macs(macs_of(&[s.0, 4, s.1, s.2]));
                c.cost((s.0, 2 * s.1, 2 * s.2), cost)
            }
        }
    }
}

fn run(layers: &[Layer], x: &Tensor, emb: &Tensor, ctx: &Ctx) -> Result<Tensor> {
    let mut h = x.clone();
    for l in layers {
        h = l.forward(&h, emb, ctx)?;
    }
    Ok(h)
}

fn walk(layers: &[Layer], s: Chw, cost: &mut Cost) -> Chw {
    layers.iter().fold(s, |s, l| l.cost(s, cost))
}

/// Shared encoder: time MLP, input blocks and the middle block.
#[derive(Debug, Clone)]
pub struct Encoder {
    cfg: LdmConfig,
    time0: Linear,
    time1: Linear,
    conv_in: Conv,
    /// Each input block after `conv_in` (its output is a skip).
    blocks: Vec<Vec<Layer>>,
    mid: Vec<Layer>,
}

impl Encoder {
    pub fn new(pb: &Pb, cfg: &LdmConfig) -> Result<(Self, Vec<usize>, usize)> {
        let mc = cfg.en_width;
        let ed = cfg.emb_dim();
        let time0 = Linear::new(&pb.pp("time_embed0"), mc, ed, true, torch_init(mc), true)?;
        let time1 = Linear::new(&pb.pp("time_embed1"), ed, ed, true, torch_init(ed), true)?;
        let conv_in = Conv::new(
            &pb.pp("conv_in"),
            cfg.in_channels,
            mc,
            3,
            1,
            1,
            torch_init(cfg.in_channels * 9),
            true,
        )?;
        let mut skips = vec![mc];
        let mut ch = mc;
        let mut ds = 1;
        let mut blocks = Vec::new();
        let nl = cfg.channel_mult.len();
        for (l, &mult) in cfg.channel_mult.iter().enumerate() {
            let lp = pb.pp(format!("level{l}"));
            for i in 0..cfg.num_res_blocks {
                let mut layers = vec![Layer::Res(ResBlock::new(
                    &lp.pp(format!("block{i}")),
                    cfg,
                    ch,
                    mult * mc,
                )?)];
                ch = mult * mc;
                if cfg.attention_ds.contains(&ds) {
                    layers.push(Layer::Attn(AttnBlock::new(
                        &lp.pp(format!("attn{i}")),
                        cfg,
                        ch,
                    )?));
                }
                blocks.push(layers);
                skips.push(ch);
            }
            if l + 1 != nl {
                blocks.push(vec![Layer::Down(Conv::new(
                    &pb.pp(format!("down{l}")),
                    ch,
                    ch,
                    3,
                    2,
                    1,
                    torch_init(ch * 9),
                    true,
                )?)]);
                skips.push(ch);
                ds *= 2;
            }
        }
        let mid = vec![
            Layer::Res(ResBlock::new(&pb.pp("mid.block0"), cfg, ch, ch)?),
            Layer::Attn(AttnBlock::new(&pb.pp("mid.attn"), cfg, ch)?),
            Layer::Res(ResBlock::new(&pb.pp("mid.block1"), cfg, ch, ch)?),
        ];
        Ok((
            Self {
                cfg: cfg.clone(),
                time0,
                time1,
                conv_in,
                blocks,
                mid,
            },
            skips,
            ch,
        ))
    }

    /// The downsample factor at the encoder's bottom (where decoder 0 starts its counter).
    fn bottom_ds(cfg: &LdmConfig) -> usize {
        1 << (cfg.channel_mult.len() - 1)
    }
}

impl EncoderNet for Encoder {
    fn forward(&self, x: &Tensor, t: &[f64], ctx: &Ctx) -> Result<Features> {
        let mc = self.cfg.en_width;
        let e = sinusoid(t, mc, (mc / 2) as f64, true, x.device())?.to_dtype(x.dtype())?;
        let emb = silu(&self.time1.forward(&silu(&self.time0.forward(&e)?)?)?)?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for b in &self.blocks {
            h = run(b, &h, &emb, ctx)?;
            skips.push(h.clone());
        }
        let h = run(&self.mid, &h, &emb, ctx)?;
        Ok(Features { h, skips, emb })
    }

    fn cost(&self) -> (Cost, FeatureShapes) {
        let mut c = Cost::default();
        self.time0.cost(&mut c);
        self.time1.cost(&mut c);
        let r = self.cfg.resolution;
        let mut h = self.conv_in.cost((self.cfg.in_channels, r, r), &mut c);
        let mut skips = vec![h];
        for b in &self.blocks {
            h = walk(b, h, &mut c);
            skips.push(h);
        }
        let h = walk(&self.mid, h, &mut c);
        (c, FeatureShapes { h, skips })
    }
}

/// One stage's decoder: output blocks (concat skip → ResBlock [→ attention] [→ upsample]) and `out`.
#[derive(Debug, Clone)]
pub struct Decoder {
    blocks: Vec<Vec<Layer>>,
    out_norm: GroupNorm,
    out_conv: Conv,
}

impl Decoder {
    /// `ds_start`: the downsample-factor counter at the start (None = the correct value, the encoder's
    /// bottom). Returns the decoder and the counter's final value (for the quirk).
    pub fn new(
        pb: &Pb,
        cfg: &LdmConfig,
        d: usize,
        skips: &[usize],
        h_ch: usize,
        ds_start: Option<usize>,
    ) -> Result<(Self, usize)> {
        let mut skips = skips.to_vec();
        let mut ch = h_ch;
        let mut ds = ds_start.unwrap_or_else(|| Encoder::bottom_ds(cfg));
        let mut blocks = Vec::new();
        for (l, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            let lp = pb.pp(format!("level{l}"));
            for i in 0..=cfg.num_res_blocks {
                let s = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("ldm: skip list exhausted".into()))?;
                let mut layers = vec![Layer::Res(ResBlock::new(
                    &lp.pp(format!("block{i}")),
                    cfg,
                    ch + s,
                    d * mult,
                )?)];
                ch = d * mult;
                if cfg.attention_ds.contains(&ds) {
                    layers.push(Layer::Attn(AttnBlock::new(
                        &lp.pp(format!("attn{i}")),
                        cfg,
                        ch,
                    )?));
                }
                if l > 0 && i == cfg.num_res_blocks {
                    layers.push(Layer::Up(Conv::new(
                        &pb.pp(format!("up{l}")),
                        ch,
                        ch,
                        3,
                        1,
                        1,
                        torch_init(ch * 9),
                        true,
                    )?));
                    ds /= 2;
                }
                blocks.push(layers);
            }
        }
        if !skips.is_empty() {
            candle_core::bail!("ldm: {} skips left unused", skips.len());
        }
        let out_norm = GroupNorm::new(&pb.pp("out_norm"), ch, cfg.g(), EPS)?;
        let out_conv = Conv::new(
            &pb.pp("out_conv"),
            ch,
            cfg.in_channels,
            3,
            1,
            1,
            Init::Zeros,
            true,
        )?;
        Ok((
            Self {
                blocks,
                out_norm,
                out_conv,
            },
            ds,
        ))
    }
}

impl DecoderNet for Decoder {
    fn forward(&self, f: &Features, ctx: &Ctx) -> Result<Tensor> {
        let mut skips: Vec<&Tensor> = f.skips.iter().collect();
        let mut h = f.h.clone();
        for b in &self.blocks {
            let s = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("ldm: skip list exhausted".into()))?;
            h = run(b, &cat_channels(&h, s)?, &f.emb, ctx)?;
        }
        self.out_conv.forward(&self.out_norm.forward_silu(&h)?)
    }

    fn cost(&self, s: &FeatureShapes) -> Cost {
        let mut c = Cost::default();
        let mut skips = s.skips.clone();
        let mut h = s.h;
        for b in &self.blocks {
            let sk = skips.pop().unwrap_or((0, h.1, h.2));
            h = walk(b, (h.0 + sk.0, h.1, h.2), &mut c);
        }
        self.out_conv.cost(h, &mut c);
        c
    }
}
