//! Parameter and FLOP accounting, computed from a built model (shape-only builds suffice).
//!
//! - `params`: scalars in the part's tensors. A stage = its encoder + its decoder; the whole model counts the
//!   shared encoder once.
//! - `paper_gmacs`: the paper's "GFLOPs", i.e. torchstat's numbers at batch 1 (docs/paper-notes.md §5): multiply-accumulates
//!   of plain Conv2d layers (plus one bias add per output) and Linear layers (in·out), 10⁹ units. Custom
//!   modules the authors' torchstat did not see are excluded (NCSN++ NIN attention projections and the FIR
//!   pyramid conv; LDM Conv1d qkv/proj). EDM's convs and linears are custom modules for which torchstat would
//!   report nothing; here they are counted as if they were plain ones.
//! - `flops`: true floating-point operations at batch 1 = 2 × every multiply-accumulate (all convolutions and
//!   linear/NIN layers, the attention matmuls QKᵀ and AV, the resampling filters). Elementwise work (norms,
//!   activations, softmax, bias adds) is not counted.

use serde::Serialize;

use super::{MultistageUNet, Sharing, UNetError};

/// Cost of one part of the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PartInfo {
    pub params: u64,
    pub paper_gmacs: f64,
    pub flops: u64,
}

/// The accounting of a whole model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    pub family: String,
    pub sharing: Sharing,
    pub time_unit: String,
    pub boundaries: Vec<f64>,
    pub de_widths: Vec<usize>,
    /// The shared encoder (with a separate baseline: stage 0's encoder; see `encoders`).
    pub encoder: PartInfo,
    /// Every encoder (one when shared).
    pub encoders: Vec<PartInfo>,
    pub decoders: Vec<PartInfo>,
    /// Per stage: encoder + that decoder.
    pub stages: Vec<PartInfo>,
    pub total_params: u64,
}

/// "model too large: …" for a count that does not fit u64.
fn too_large(what: String) -> UNetError {
    UNetError::Config(format!(
        "model too large: the {what} does not fit in 64 bits"
    ))
}

/// A part's info; `what` names it in the error when a count overflowed (the cost walk and the parameter
/// count saturate at `u64::MAX` instead of wrapping).
fn part(what: &str, params: u64, c: super::Cost) -> Result<PartInfo, UNetError> {
    if params == u64::MAX {
        return Err(too_large(format!("parameter count of {what}")));
    }
    if c.overflowed() {
        return Err(too_large(format!("multiply-accumulate count of {what}")));
    }
    Ok(PartInfo {
        params,
        paper_gmacs: c.paper_macs as f64 / 1e9,
        flops: c
            .macs
            .checked_mul(2)
            .ok_or_else(|| too_large(format!("FLOP count of {what}")))?,
    })
}

/// Accounting of `model`. Every count is checked: a model whose parameter, MAC or FLOP count does not fit
/// in u64 is an error ("model too large: …"), never a wrapped number.
pub fn model_info(model: &MultistageUNet) -> Result<ModelInfo, UNetError> {
    let cfg = model.config();
    let store = model.store();
    let (enc_costs, dec_costs) = model.costs();
    let n = model.num_stages();
    let encoders: Vec<PartInfo> = enc_costs
        .iter()
        .enumerate()
        .map(|(e, &c)| {
            let prefix = match cfg.sharing {
                Sharing::Shared => "encoder.".to_string(),
                Sharing::Separate => format!("encoders.{e}."),
            };
            part(&format!("encoder {e}"), store.count(&prefix), c)
        })
        .collect::<Result<_, _>>()?;
    let decoders: Vec<PartInfo> = dec_costs
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            part(
                &format!("decoder {k}"),
                store.count(&format!("decoders.{k}.")),
                c,
            )
        })
        .collect::<Result<_, _>>()?;
    let stages = (0..n)
        .map(|k| {
            let e = &encoders[k.min(encoders.len() - 1)];
            let d = &decoders[k];
            let what = |count: &str| too_large(format!("{count} of stage {k}"));
            Ok(PartInfo {
                params: e
                    .params
                    .checked_add(d.params)
                    .ok_or_else(|| what("parameter count"))?,
                paper_gmacs: (enc_costs[k.min(enc_costs.len() - 1)].paper_macs as f64
                    + dec_costs[k].paper_macs as f64)
                    / 1e9,
                flops: e
                    .flops
                    .checked_add(d.flops)
                    .ok_or_else(|| what("FLOP count"))?,
            })
        })
        .collect::<Result<_, UNetError>>()?;
    let total_params = store.count("");
    if total_params == u64::MAX {
        return Err(too_large("parameter count of the whole model".into()));
    }
    Ok(ModelInfo {
        family: cfg.family_name().to_string(),
        sharing: cfg.sharing,
        time_unit: cfg.time_unit().to_string(),
        boundaries: cfg.boundaries.clone(),
        de_widths: cfg.de_widths().to_vec(),
        encoder: encoders[0],
        encoders,
        decoders,
        stages,
        total_params,
    })
}

/// A weighted per-sample cost over stages: Σ w_k·G_k with the weights normalised to sum 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightedTotal {
    /// The normalised weights used.
    pub weights: Vec<f64>,
    pub paper_gmacs: f64,
    pub flops: f64,
}

/// NFE- (or interval-) weighted totals. `weights` has one non-negative entry per stage (e.g. the NFE split
/// 12/2/6 of a 20-step sampler, or the interval lengths); they are normalised to sum 1.
pub fn weighted_total(stages: &[PartInfo], weights: &[f64]) -> Result<WeightedTotal, UNetError> {
    if weights.len() != stages.len() {
        return Err(UNetError::Input(format!(
            "{} weights for {} stages",
            weights.len(),
            stages.len()
        )));
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(UNetError::Input(format!(
            "weights must be finite and >= 0, got {}",
            weights
                .iter()
                .map(|w| format!("{w:e}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // Scale by the largest first, so that huge weights (1e308, ...) do not overflow the sum.
    let max = weights.iter().fold(0.0f64, |m, &w| m.max(w));
    if max <= 0.0 {
        return Err(UNetError::Input("weights sum to 0".into()));
    }
    let sum: f64 = weights.iter().map(|w| w / max).sum();
    let w: Vec<f64> = weights.iter().map(|w| w / max / sum).collect();
    Ok(WeightedTotal {
        paper_gmacs: stages.iter().zip(&w).map(|(s, w)| w * s.paper_gmacs).sum(),
        flops: stages.iter().zip(&w).map(|(s, w)| w * s.flops as f64).sum(),
        weights: w,
    })
}

/// Interval lengths of the stages of `[lo, hi]` split at `boundaries` (weights for [`weighted_total`]).
pub fn interval_weights(boundaries: &[f64], lo: f64, hi: f64) -> Result<Vec<f64>, UNetError> {
    let mut edges = vec![lo];
    edges.extend_from_slice(boundaries);
    edges.push(hi);
    if edges.windows(2).any(|w| w[0] >= w[1]) {
        return Err(UNetError::Input(format!(
            "boundaries {boundaries:?} do not lie strictly inside [{lo}, {hi}]"
        )));
    }
    Ok(edges.windows(2).map(|w| w[1] - w[0]).collect())
}
