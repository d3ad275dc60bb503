//! `msd schedule`, and the schedule options every subcommand shares.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;

pub use super::args::{ScheduleKind, ScheduleParams};
use crate::reference::schedule::{vp_time_for_ve_sigma, Schedule};

/// Arguments of `msd schedule`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example: msd schedule --schedule vp-linear --t 0.4420 --json  (ve_sigma = 2.5103)"
)]
pub struct ScheduleArgs {
    /// Which schedule.
    #[arg(long, value_enum, default_value_t = ScheduleKind::VpLinear)]
    pub schedule: ScheduleKind,
    /// Time t in the schedule's domain ([0, 1] for vp-linear, vp-cosine and ve).
    #[arg(long, conflicts_with = "sigma", allow_negative_numbers = true)]
    pub t: Option<f64>,
    /// Noise level sigma (ve and edm; for ve it is converted to its time t).
    #[arg(long, allow_negative_numbers = true)]
    pub sigma: Option<f64>,
    #[command(flatten)]
    pub params: ScheduleParams,
    /// Print one JSON object instead of a table (infinite values, e.g. lambda at t = 0, print as null).
    #[arg(long)]
    pub json: bool,
}

/// Everything `msd schedule` reports at one time.
#[derive(Debug, Serialize)]
pub struct ScheduleReport {
    pub schedule: ScheduleKind,
    pub t: f64,
    pub alpha: f64,
    pub sigma: f64,
    pub lambda: f64,
    /// The paper's s_t (= alpha).
    pub s: f64,
    /// The paper's sigma~_t (= sigma/alpha).
    pub sigma_tilde: f64,
    pub snr: f64,
    /// sigma of the VE/EDM process with the same SNR (the paper's footnote 3).
    pub ve_sigma: f64,
    /// Time of the vp-linear schedule (with --beta-min/--beta-max) with the same SNR.
    pub vp_linear_t: Option<f64>,
}

/// The time at which to evaluate: --t, or --sigma mapped to the schedule's time.
fn resolve_time(args: &ScheduleArgs, sched: &dyn Schedule) -> anyhow::Result<f64> {
    match (args.t, args.sigma, args.schedule) {
        (Some(t), None, ScheduleKind::Edm) => {
            bail!("--t {t}: edm's time variable is sigma itself; pass --sigma instead")
        }
        (Some(t), None, _) => Ok(sched.check_time(t).context("--t")?),
        (None, Some(sigma), ScheduleKind::Ve | ScheduleKind::Edm) => {
            if !(sigma.is_finite() && sigma > 0.0) {
                bail!("--sigma {sigma}: must be finite and > 0");
            }
            if args.schedule == ScheduleKind::Edm {
                // EDM's time is σ itself: no round trip through λ.
                return sched.check_time(sigma).context("--sigma");
            }
            Ok(sched.lambda_inv(-sigma.ln()).context("--sigma")?)
        }
        (None, Some(_), kind) => bail!(
            "--sigma applies to ve and edm only; {} needs --t",
            kind.to_possible_value()
                .expect("no skipped variants")
                .get_name()
        ),
        (None, None, _) => bail!("give the time with --t (or --sigma for ve/edm)"),
        (Some(_), Some(_), _) => unreachable!("clap rejects --t with --sigma"),
    }
}

pub fn report(args: &ScheduleArgs) -> anyhow::Result<ScheduleReport> {
    let sched = args.params.build(args.schedule)?;
    let t = resolve_time(args, sched.as_ref())?;
    let (s, sigma_tilde) = sched.paper_pair(t);
    let ve_sigma = sched.ve_equivalent_sigma(t);
    // The VP-linear twin exists for every level the VP-linear schedule reaches; report none otherwise.
    let vp_linear_t = if ve_sigma > 0.0 && ve_sigma.is_finite() {
        vp_time_for_ve_sigma(&args.params.vp_linear()?, ve_sigma).ok()
    } else {
        None
    };
    Ok(ScheduleReport {
        schedule: args.schedule,
        t,
        alpha: sched.alpha(t),
        sigma: sched.sigma(t),
        lambda: sched.lambda(t),
        s,
        sigma_tilde,
        snr: sched.snr(t),
        ve_sigma,
        vp_linear_t,
    })
}

pub fn run(args: &ScheduleArgs) -> anyhow::Result<()> {
    let r = report(args)?;
    if args.json {
        outln!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let rows = [
        ("t", r.t),
        ("alpha (= s)", r.alpha),
        ("sigma", r.sigma),
        ("lambda = log(alpha/sigma)", r.lambda),
        ("sigma~ = sigma/alpha", r.sigma_tilde),
        ("snr = alpha^2/sigma^2", r.snr),
        ("VE-equivalent sigma", r.ve_sigma),
    ];
    outln!(
        "schedule {}",
        serde_json::to_string(&r.schedule)?.trim_matches('"')
    );
    for (name, v) in rows {
        outln!("  {name:<28} {v}");
    }
    if let Some(t) = r.vp_linear_t {
        outln!("  {:<28} {t}", "vp-linear time, same SNR");
    }
    Ok(())
}
