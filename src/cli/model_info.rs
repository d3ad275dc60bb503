//! `msd model-info`: parameters and GFLOPs per stage of a multistage U-Net preset or config file.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use msd_accel::unet::{
    accounting::interval_weights, config::PRESETS, model_info, preset, preset_names,
    weighted_total, Family, MultistageUNet, UNetConfig,
};

use super::plan::{PlanReport, SolverKind};

/// Options of `msd model-info`.
#[derive(Debug, Args)]
pub struct ModelInfoArgs {
    /// A named preset (see --list-presets), e.g. cifar10-ncsnpp-multistage.
    #[arg(long, conflicts_with = "config", required_unless_present_any = ["config", "list_presets"])]
    pub preset: Option<String>,
    /// A model config file (TOML; see --print-config for the format).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// LDM only: reproduce the authors' decoder-attention quirk (decoders after the first have no attention;
    /// this is what the paper's Table 8 counts). Default: correct attention in every decoder.
    #[arg(long)]
    pub ldm_attention_quirk: bool,
    /// Weight the per-stage costs by these NFE counts (e.g. 12,2,6 for the 20-step DPM-Solver-3 split).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["stage_weights", "interval_weights", "plan"])]
    pub nfe_per_stage: Option<Vec<f64>>,
    /// Weight the per-stage costs by the NFE split of a sampler plan: the JSON written by
    /// `msd plan --json`. Its evaluation points are routed with this model's own boundaries (t for
    /// NCSN++ with a VP-time plan, sigma for DDPM++/EDM with an euler/heun plan, network steps for LDM
    /// with a `--schedule ldm` plan).
    #[arg(long, value_name = "PLAN.json", conflicts_with_all = ["stage_weights", "interval_weights"])]
    pub plan: Option<PathBuf>,
    /// Weight the per-stage costs by these weights (normalised to sum 1), e.g. 0.45,0.15,0.40.
    #[arg(long, value_delimiter = ',', conflicts_with = "interval_weights")]
    pub stage_weights: Option<Vec<f64>>,
    /// Weight the per-stage costs by the lengths of their time intervals in [0, 1] (NCSN++ only).
    #[arg(long)]
    pub interval_weights: bool,
    /// List the presets and exit.
    #[arg(long)]
    pub list_presets: bool,
    /// Print the resolved config as TOML (a template for --config) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The evaluation points of a `msd plan --json` file, in the model's own time unit, counted per stage of
/// the model. Fails when the plan's axis is not the one the model's family is conditioned on.
fn plan_nfe_per_stage(path: &std::path::Path, model: &MultistageUNet) -> anyhow::Result<Vec<f64>> {
    let text = crate::limits::read_text(path, "a plan JSON file")
        .with_context(|| format!("--plan {}: cannot read", path.display()))?;
    plan_nfe_per_stage_from_json(&text, path, model)
}

/// [`plan_nfe_per_stage`] on the text of the plan file (`path` names it in errors).
pub fn plan_nfe_per_stage_from_json(
    text: &str,
    path: &std::path::Path,
    model: &MultistageUNet,
) -> anyhow::Result<Vec<f64>> {
    let r: PlanReport = serde_json::from_str(text)
        .with_context(|| format!("{}: not the JSON of `msd plan --json`", path.display()))?;
    let solver = serde_json::to_value(r.solver)?;
    let solver = solver.as_str().unwrap_or_default();
    let sigma_axis = matches!(r.solver, SolverKind::Euler | SolverKind::Heun);
    let family = model.config().family_name();
    let points = match (family, sigma_axis, &r.model_steps) {
        ("ncsnpp", false, None) | ("ddpmpp", true, _) => &r.times,
        ("ldm", _, Some(steps)) => steps,
        _ => bail!(
            "{}: a {solver:?} plan on the {} axis cannot be routed by a {family} model \
             (ncsnpp takes VP-time plans, ddpmpp euler/heun sigma plans, ldm `--schedule ldm` plans)",
            path.display(),
            if sigma_axis {
                "sigma"
            } else if r.model_steps.is_some() {
                "discrete-step"
            } else {
                "time"
            }
        ),
    };
    let mut counts = vec![0.0; model.num_stages()];
    for &t in points {
        if !t.is_finite() {
            bail!("{}: the plan holds a non-finite time {t}", path.display());
        }
        counts[model.stage_of(t)] += 1.0;
    }
    if points.is_empty() {
        bail!("{}: the plan has no evaluations", path.display());
    }
    Ok(counts)
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs `msd model-info`.
pub fn run(args: &ModelInfoArgs) -> anyhow::Result<()> {
    if args.list_presets {
        for (name, desc) in PRESETS {
            outln!("{name:32} {desc}");
        }
        return Ok(());
    }
    let (label, mut cfg) = match (&args.preset, &args.config) {
        (Some(p), None) => (p.clone(), preset(p)?),
        (None, Some(path)) => {
            let text = crate::limits::read_text(path, "a model config")
                .with_context(|| format!("--config {}: cannot read", path.display()))?;
            let cfg = UNetConfig::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
            (path.display().to_string(), cfg)
        }
        _ => bail!(
            "give exactly one of --preset or --config (presets: {})",
            preset_names().join(", ")
        ),
    };
    if args.ldm_attention_quirk {
        match &mut cfg.family {
            Family::Ldm(l) => l.decoder_attention_quirk = true,
            _ => bail!(
                "--ldm-attention-quirk applies to LDM models only (this is {})",
                cfg.family_name()
            ),
        }
    }
    if args.print_config {
        out!("{}", cfg.to_toml().map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    let model = MultistageUNet::shapes_only(&cfg)?;
    let info = model_info(&model)?;
    let n = info.stages.len();
    let weights = if let Some(w) = &args.nfe_per_stage {
        Some(("NFE per stage", w.clone()))
    } else if let Some(path) = &args.plan {
        Some((
            "NFE per stage of the plan",
            plan_nfe_per_stage(path, &model)?,
        ))
    } else if let Some(w) = &args.stage_weights {
        Some(("stage weights", w.clone()))
    } else if args.interval_weights {
        if cfg.family_name() != "ncsnpp" {
            bail!(
                "--interval-weights needs times in [0, 1] (NCSN++); give --stage-weights for {}",
                cfg.family_name()
            );
        }
        Some((
            "interval lengths",
            interval_weights(&cfg.boundaries, 0.0, 1.0)?,
        ))
    } else {
        None
    };
    let weighted = match &weights {
        Some((what, w)) => {
            if w.len() != n {
                bail!("{what}: {} values for a {n}-stage model", w.len());
            }
            Some((*what, weighted_total(&info.stages, w)?))
        }
        None => None,
    };
    if args.json {
        let mut v = serde_json::to_value(&info)?;
        v["model"] = serde_json::Value::String(label);
        if let Some((what, w)) = &weighted {
            v["weighted"] = serde_json::json!({"by": what, "weights": w.weights, "paper_gmacs": w.paper_gmacs,
                                               "flops": w.flops});
        }
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "{label}: {} ({} encoder{}), {n} stage(s), time = {}, boundaries {:?}",
        info.family,
        if n > 1 && info.encoders.len() == 1 {
            "shared"
        } else {
            "own"
        },
        if info.encoders.len() > 1 { "s" } else { "" },
        info.time_unit,
        info.boundaries
    );
    outln!("paper GMACs = torchstat convention (conv/linear MACs + conv bias adds, batch 1); GFLOPs = 2 x all MACs");
    outln!(
        "{:<14} {:>6} {:>14} {:>12} {:>10}",
        "part",
        "width",
        "params",
        "paper GMACs",
        "GFLOPs"
    );
    let row = |name: String, width: String, p: &msd_accel::unet::PartInfo| {
        outln!(
            "{:<14} {:>6} {:>14} {:>12.3} {:>10.3}",
            name,
            width,
            group(p.params),
            p.paper_gmacs,
            p.flops as f64 / 1e9
        );
        Ok::<(), anyhow::Error>(())
    };
    for (e, p) in info.encoders.iter().enumerate() {
        let name = if info.encoders.len() == 1 {
            "encoder".to_string()
        } else {
            format!("encoder {e}")
        };
        row(name, String::new(), p)?;
    }
    for (k, p) in info.decoders.iter().enumerate() {
        row(format!("decoder {k}"), info.de_widths[k].to_string(), p)?;
    }
    for (k, p) in info.stages.iter().enumerate() {
        row(format!("stage {k}"), String::new(), p)?;
    }
    outln!(
        "{:<14} {:>6} {:>14}",
        "whole model",
        "",
        group(info.total_params)
    );
    if let Some((what, w)) = weighted {
        let ws: Vec<String> = w.weights.iter().map(|x| format!("{x:.4}")).collect();
        outln!(
            "weighted by {what} ({}): paper GMACs {:.3}, GFLOPs {:.3}",
            ws.join(", "),
            w.paper_gmacs,
            w.flops / 1e9
        );
    }
    Ok(())
}
