//! Model configs (serde; TOML or JSON) and the named presets.
//!
//! A config is a family with its settings, a sharing mode and the stage boundaries (in the family's time
//! unit: NCSN++ t, DDPM++ σ, LDM timestep). Decoder widths (one per stage) live in the family settings; one
//! width is the unified baseline, `sharing = "separate"` gives every stage its own encoder.

use serde::{Deserialize, Serialize};

use super::ddpmpp::DdpmppConfig;
use super::ldm::LdmConfig;
use super::ncsnpp::NcsnppConfig;
use super::UNetError;

/// The network family and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Family {
    /// score-SDE NCSN++ (DPM-Solver setup), time input t ∈ [0, 1].
    Ncsnpp(NcsnppConfig),
    /// EDM SongUNet / DDPM++, time input σ.
    Ddpmpp(DdpmppConfig),
    /// openai / latent-diffusion U-Net, time input = discrete timestep.
    Ldm(LdmConfig),
}

/// Whether the stages share one encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// One encoder for all stages (multistage; with one decoder, the unified baseline).
    Shared,
    /// An independent encoder per stage (the separate baseline).
    Separate,
}

/// A complete model description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    pub sharing: Sharing,
    /// Interior stage boundaries, strictly increasing, one fewer than the decoders.
    pub boundaries: Vec<f64>,
    pub family: Family,
}

impl UNetConfig {
    pub fn de_widths(&self) -> &[usize] {
        match &self.family {
            Family::Ncsnpp(c) => &c.de_widths,
            Family::Ddpmpp(c) => &c.de_widths,
            Family::Ldm(c) => &c.de_widths,
        }
    }

    pub fn num_stages(&self) -> usize {
        self.de_widths().len()
    }

    pub fn family_name(&self) -> &'static str {
        match &self.family {
            Family::Ncsnpp(_) => "ncsnpp",
            Family::Ddpmpp(_) => "ddpmpp",
            Family::Ldm(_) => "ldm",
        }
    }

    /// What `t` means for this family.
    pub fn time_unit(&self) -> &'static str {
        match &self.family {
            Family::Ncsnpp(_) => "VP time t in [0, 1]",
            Family::Ddpmpp(_) => "EDM noise level sigma",
            Family::Ldm(_) => "discrete timestep",
        }
    }

    /// (channels, side) of the model input.
    pub fn input_chw(&self) -> (usize, usize) {
        match &self.family {
            Family::Ncsnpp(c) => (c.in_channels, c.resolution),
            Family::Ddpmpp(c) => (c.in_channels, c.resolution),
            Family::Ldm(c) => (c.in_channels, c.resolution),
        }
    }

    /// Stage of `t`: the number of boundaries strictly below it.
    pub fn stage_of(&self, t: f64) -> usize {
        msd_plan::stage_of(&self.boundaries, t)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.check_size()?;
        match &self.family {
            Family::Ncsnpp(c) => c.validate()?,
            Family::Ddpmpp(c) => c.validate()?,
            Family::Ldm(c) => c.validate()?,
        }
        let n = self.num_stages();
        if self.boundaries.len() + 1 != n {
            return Err(format!(
                "{} decoder widths need {} boundaries, got {}",
                n,
                n - 1,
                self.boundaries.len()
            ));
        }
        if self.boundaries.iter().any(|b| !b.is_finite()) {
            return Err("boundaries must be finite".into());
        }
        // Each boundary must split the family's time domain (a boundary outside it leaves a stage empty).
        let (lo, hi, domain) = match &self.family {
            Family::Ncsnpp(_) => (0.0, 1.0, "VP time t: (0, 1)"),
            Family::Ddpmpp(_) => (0.0, f64::INFINITY, "EDM sigma: (0, infinity)"),
            Family::Ldm(_) => (0.0, 1000.0, "LDM timestep: (0, 1000)"),
        };
        if let Some(b) = self.boundaries.iter().find(|&&b| !(b > lo && b < hi)) {
            return Err(format!(
                "boundary {b} lies outside the time domain of {domain}"
            ));
        }
        if self.boundaries.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "boundaries {:?} are not strictly increasing",
                self.boundaries
            ));
        }
        Ok(())
    }

    /// Bounds on every size in the config, checked before anything is built or counted: a config with
    /// absurd sizes is refused up front ("model too large") instead of running for minutes or wrapping the
    /// u64 counts. The limits are far above the paper's models (the largest preset costs ~1e11 MACs).
    fn check_size(&self) -> Result<(), String> {
        let (name, in_ch, res, en, de, mult, blocks, attn): Sizes = match &self.family {
            Family::Ncsnpp(c) => (
                "ncsnpp",
                c.in_channels,
                c.resolution,
                c.en_width,
                &c.de_widths,
                &c.ch_mult,
                c.num_res_blocks,
                &c.attn_resolutions,
            ),
            Family::Ddpmpp(c) => (
                "ddpmpp",
                c.in_channels,
                c.resolution,
                c.en_width,
                &c.de_widths,
                &c.channel_mult,
                c.num_blocks,
                &c.attn_resolutions,
            ),
            Family::Ldm(c) => (
                "ldm",
                c.in_channels,
                c.resolution,
                c.en_width,
                &c.de_widths,
                &c.channel_mult,
                c.num_res_blocks,
                &c.attention_ds,
            ),
        };
        let limit = |what: &str, v: usize, max: usize| {
            if v > max {
                Err(format!(
                    "model too large: {name} {what} = {v}, the limit is {max}"
                ))
            } else {
                Ok(())
            }
        };
        limit("in_channels", in_ch, 4096)?;
        limit("resolution", res, 4096)?;
        limit("en_width", en, 1 << 16)?;
        limit("number of stages (decoder widths)", de.len(), MAX_STAGES)?;
        limit("number of levels (channel multipliers)", mult.len(), 12)?;
        limit("residual blocks per level", blocks, 64)?;
        for &w in de {
            limit("decoder width", w, 1 << 16)?;
        }
        for &m in mult {
            limit("channel multiplier", m, 64)?;
        }
        for &a in attn {
            if a == 0 || a > res.max(1) {
                return Err(format!(
                    "{name}: attention entry {a} must lie in 1..={res} ({})",
                    if name == "ldm" {
                        "attention_ds are downsampling factors"
                    } else {
                        "attn_resolutions are feature-map sides"
                    }
                ));
            }
        }
        // Up-front cost: the 3 x 3 convolutions of every level (two per residual block, encoder and every
        // decoder) at the widest width; the real count is below this.
        let widest = de.iter().copied().chain([en]).max().unwrap_or(0) as f64;
        let (mut macs, mut side) = (0.0f64, res as f64);
        for &m in mult {
            let c = widest * m as f64;
            macs +=
                side * side * c * c * 9.0 * 2.0 * (blocks as f64 + 1.0) * (de.len() as f64 + 1.0);
            side = (side / 2.0).max(1.0);
        }
        const MAX_MACS: f64 = 1e15;
        if macs > MAX_MACS {
            return Err(format!(
                "model too large: about {macs:.1e} multiply-accumulates per evaluation (limit {MAX_MACS:.0e})"
            ));
        }
        Ok(())
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let c: UNetConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| e.to_string())
    }
}

/// A family's sizes: name, in_channels, resolution, en_width, de_widths, channel multipliers, blocks per
/// level, attention entries.
type Sizes<'a> = (
    &'static str,
    usize,
    usize,
    usize,
    &'a [usize],
    &'a [usize],
    usize,
    &'a [usize],
);

/// Most stages a config may have.
pub const MAX_STAGES: usize = 64;

/// The paper's DPM-Solver split points (t).
pub const NCSNPP_BOUNDARIES: [f64; 2] = [0.4420, 0.6308];
/// The EDM split in σ (authors' config).
pub const EDM_BOUNDARIES: [f64; 2] = [2.5103, 7.6577];
/// LDM timesteps: half-integers, so that integer timesteps fall in the authors' [0,442), [442,631), [631,1000).
pub const LDM_BOUNDARIES: [f64; 2] = [441.5, 630.5];

fn ncsnpp(en: usize, de: &[usize], boundaries: &[f64], sharing: Sharing) -> UNetConfig {
    UNetConfig {
        sharing,
        boundaries: boundaries.to_vec(),
        family: Family::Ncsnpp(NcsnppConfig {
            in_channels: 3,
            resolution: 32,
            en_width: en,
            de_widths: de.to_vec(),
            ch_mult: vec![1, 2, 2, 2],
            num_res_blocks: 8,
            attn_resolutions: vec![16],
            dropout: 0.1,
            max_groups: 16,
        }),
    }
}

fn ddpmpp(en: usize, de: &[usize], boundaries: &[f64], sharing: Sharing) -> UNetConfig {
    UNetConfig {
        sharing,
        boundaries: boundaries.to_vec(),
        family: Family::Ddpmpp(DdpmppConfig {
            in_channels: 3,
            resolution: 32,
            en_width: en,
            de_widths: de.to_vec(),
            channel_mult: vec![2, 2, 2],
            num_blocks: 4,
            attn_resolutions: vec![16],
            dropout: 0.13,
            max_groups: 16,
            augment_dim: 9,
        }),
    }
}

fn ldm(en: usize, de: &[usize], boundaries: &[f64], sharing: Sharing, quirk: bool) -> UNetConfig {
    UNetConfig {
        sharing,
        boundaries: boundaries.to_vec(),
        family: Family::Ldm(LdmConfig {
            in_channels: 3,
            resolution: 64,
            en_width: en,
            de_widths: de.to_vec(),
            channel_mult: vec![1, 2, 3, 4],
            num_res_blocks: 2,
            attention_ds: vec![8, 4, 2],
            num_head_channels: 32,
            dropout: 0.0,
            groups: 32,
            decoder_attention_quirk: quirk,
        }),
    }
}

/// Tiny presets: 1 × 32 × 32 images, a few hundred thousand parameters, same code paths.
fn tiny(family: &str, de: &[usize], sharing: Sharing) -> UNetConfig {
    let n = de.len();
    let boundaries: Vec<f64> = match family {
        "ncsnpp" => NCSNPP_BOUNDARIES[..n - 1].to_vec(),
        "ddpmpp" => EDM_BOUNDARIES[..n - 1].to_vec(),
        _ => LDM_BOUNDARIES[..n - 1].to_vec(),
    };
    let family = match family {
        "ncsnpp" => Family::Ncsnpp(NcsnppConfig {
            in_channels: 1,
            resolution: 32,
            en_width: 16,
            de_widths: de.to_vec(),
            ch_mult: vec![1, 2, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![16],
            dropout: 0.1,
            max_groups: 16,
        }),
        "ddpmpp" => Family::Ddpmpp(DdpmppConfig {
            in_channels: 1,
            resolution: 32,
            en_width: 16,
            de_widths: de.to_vec(),
            channel_mult: vec![1, 2, 2],
            num_blocks: 1,
            attn_resolutions: vec![16],
            dropout: 0.13,
            max_groups: 16,
            augment_dim: 0,
        }),
        _ => Family::Ldm(LdmConfig {
            in_channels: 1,
            resolution: 32,
            en_width: 16,
            de_widths: de.to_vec(),
            channel_mult: vec![1, 2, 2],
            num_res_blocks: 1,
            attention_ds: vec![2],
            num_head_channels: 8,
            dropout: 0.0,
            groups: 8,
            decoder_attention_quirk: false,
        }),
    };
    UNetConfig {
        sharing,
        boundaries,
        family,
    }
}

/// Every preset: (name, description).
pub const PRESETS: &[(&str, &str)] = &[
    (
        "cifar10-ncsnpp-multistage",
        "NCSN++ deep, en 128, de [192,128,16] (paper's DPM-Solver model; Table 7 arch 1)",
    ),
    (
        "cifar10-ncsnpp-unified",
        "NCSN++ deep, en 128, one decoder 128 (unified baseline)",
    ),
    (
        "cifar10-ncsnpp-separate",
        "NCSN++ deep, three independent en 128/de 128 models (separate baseline)",
    ),
    (
        "cifar10-ncsnpp-table7-arch2",
        "Table 7 arch 2: en 160, de [160,128,16]",
    ),
    (
        "cifar10-ncsnpp-table7-arch3",
        "Table 7 arch 3: en 192, de [144,112,16]",
    ),
    (
        "cifar10-ncsnpp-table7-arch4",
        "Table 7 arch 4: en 192, de [128,64,16]",
    ),
    (
        "cifar10-ncsnpp-table9-2stage",
        "Table 9 n=2, boundary 0.476: not reproducible (see docs/paper-notes.md §2.5); refused",
    ),
    (
        "cifar10-ncsnpp-table9-4stage",
        "Table 9 n=4: en 96, de [208,144,112,32], boundaries 0.376/0.526/0.726",
    ),
    (
        "cifar10-ncsnpp-table9-5stage",
        "Table 9 n=5: en 64, de [224,160,160,64,48], boundaries 0.376/0.476/0.626/0.776",
    ),
    (
        "cifar10-ddpmpp-edm-multistage",
        "EDM DDPM++ [2,2,2], en 128, de [192,128,16], sigma split 2.5103/7.6577",
    ),
    (
        "cifar10-ddpmpp-edm-unified",
        "EDM DDPM++ baseline (one decoder 128)",
    ),
    (
        "cifar10-ddpmpp-edm-separate",
        "EDM DDPM++, three independent baselines",
    ),
    (
        "celebahq-ldm-multistage",
        "LDM en 224, de [256,192,128], correct attention in every decoder",
    ),
    (
        "celebahq-ldm-multistage-quirk",
        "as above with the authors' decoder-attention quirk (Table 8 arch 4)",
    ),
    (
        "celebahq-ldm-unified",
        "LDM baseline, en 224, one decoder 224",
    ),
    (
        "celebahq-ldm-separate",
        "LDM, three independent en 224/de 224 models",
    ),
    (
        "celebahq-ldm-table8-arch1",
        "Table 8 arch 1 (quirk on): en 192, de [224,192,160]",
    ),
    (
        "celebahq-ldm-table8-arch2",
        "Table 8 arch 2 (quirk on): en 160, de [224,192,128]",
    ),
    (
        "celebahq-ldm-table8-arch3",
        "Table 8 arch 3 (quirk on): en 224, de [224,192,128]",
    ),
    (
        "tiny-ncsnpp-multistage",
        "NCSN++ 1x32x32, en 16, de [24,16,8]",
    ),
    ("tiny-ncsnpp-unified", "NCSN++ 1x32x32, en 16, de [16]"),
    (
        "tiny-ncsnpp-separate",
        "NCSN++ 1x32x32, three en 16/de 16 models",
    ),
    (
        "tiny-ddpmpp-multistage",
        "DDPM++ 1x32x32, en 16, de [24,16,8]",
    ),
    ("tiny-ddpmpp-unified", "DDPM++ 1x32x32, en 16, de [16]"),
    (
        "tiny-ldm-multistage",
        "LDM U-Net 1x32x32, en 16, de [24,16,8]",
    ),
    ("tiny-ldm-unified", "LDM U-Net 1x32x32, en 16, de [16]"),
];

pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.0).collect()
}

/// A preset by name.
pub fn preset(name: &str) -> Result<UNetConfig, UNetError> {
    use Sharing::{Separate, Shared};
    let b = &NCSNPP_BOUNDARIES[..];
    let e = &EDM_BOUNDARIES[..];
    let l = &LDM_BOUNDARIES[..];
    Ok(match name {
        "cifar10-ncsnpp-multistage" => ncsnpp(128, &[192, 128, 16], b, Shared),
        "cifar10-ncsnpp-unified" => ncsnpp(128, &[128], &[], Shared),
        "cifar10-ncsnpp-separate" => ncsnpp(128, &[128, 128, 128], b, Separate),
        "cifar10-ncsnpp-table7-arch2" => ncsnpp(160, &[160, 128, 16], b, Shared),
        "cifar10-ncsnpp-table7-arch3" => ncsnpp(192, &[144, 112, 16], b, Shared),
        "cifar10-ncsnpp-table7-arch4" => ncsnpp(192, &[128, 64, 16], b, Shared),
        "cifar10-ncsnpp-table9-2stage" => {
            return Err(UNetError::Config(
                "Table 9's 2-stage row is internally inconsistent (no single encoder width gives both of its \
                 rows; docs/paper-notes.md §2.5), so there is no preset for it"
                    .into(),
            ))
        }
        "cifar10-ncsnpp-table9-4stage" => ncsnpp(96, &[208, 144, 112, 32], &[0.376, 0.526, 0.726], Shared),
        "cifar10-ncsnpp-table9-5stage" => {
            ncsnpp(64, &[224, 160, 160, 64, 48], &[0.376, 0.476, 0.626, 0.776], Shared)
        }
        "cifar10-ddpmpp-edm-multistage" => ddpmpp(128, &[192, 128, 16], e, Shared),
        "cifar10-ddpmpp-edm-unified" => ddpmpp(128, &[128], &[], Shared),
        "cifar10-ddpmpp-edm-separate" => ddpmpp(128, &[128, 128, 128], e, Separate),
        "celebahq-ldm-multistage" => ldm(224, &[256, 192, 128], l, Shared, false),
        "celebahq-ldm-multistage-quirk" => ldm(224, &[256, 192, 128], l, Shared, true),
        "celebahq-ldm-unified" => ldm(224, &[224], &[], Shared, false),
        "celebahq-ldm-separate" => ldm(224, &[224, 224, 224], l, Separate, false),
        "celebahq-ldm-table8-arch1" => ldm(192, &[224, 192, 160], l, Shared, true),
        "celebahq-ldm-table8-arch2" => ldm(160, &[224, 192, 128], l, Shared, true),
        "celebahq-ldm-table8-arch3" => ldm(224, &[224, 192, 128], l, Shared, true),
        "tiny-ncsnpp-multistage" => tiny("ncsnpp", &[24, 16, 8], Shared),
        "tiny-ncsnpp-unified" => tiny("ncsnpp", &[16], Shared),
        "tiny-ncsnpp-separate" => tiny("ncsnpp", &[16, 16, 16], Separate),
        "tiny-ddpmpp-multistage" => tiny("ddpmpp", &[24, 16, 8], Shared),
        "tiny-ddpmpp-unified" => tiny("ddpmpp", &[16], Shared),
        "tiny-ldm-multistage" => tiny("ldm", &[24, 16, 8], Shared),
        "tiny-ldm-unified" => tiny("ldm", &[16], Shared),
        _ => return Err(UNetError::UnknownPreset(name.to_string(), preset_names().join(", "))),
    })
}
