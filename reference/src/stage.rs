//! Stage partitions of the diffusion time axis, and which stage each model evaluation of a sampler hits.
//!
//! Convention (docs/conventions.md §3): a partition is a strictly increasing list of interior boundaries
//! b_1 < … < b_{n−1}; the stage of a value v is the number of boundaries strictly below v, so a boundary value
//! belongs to the lower stage and the smallest noise levels are stage 0. Routing is per sample
//! ([`Partition::stages_of`]). A partition is given in continuous time t, in σ (VE/EDM) or in discrete steps
//! (LDM), and converted between them through the SNR (σ = σ_t/α_t = e^{−λ(t)}) and DPM-Solver's discrete time
//! map step = N·(t − 1/N).
//!
//! Note: LDM's own router sends a step equal to a boundary to the upper stage ([0, 442), [442, 631), …);
//! the convention here sends it to the lower one. The two differ only for evaluations exactly on a boundary.

use serde::Serialize;
use thiserror::Error;

use crate::schedule::{Schedule, ScheduleError};
use msd_plan::{EvalPoint, Plan, TimeAxis};

#[derive(Debug, Error, Clone, PartialEq)]
pub enum StageError {
    #[error("stage boundaries {what}: {why}")]
    Bad { what: String, why: String },
    #[error("{0}")]
    Axis(String),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

/// The axis a partition's boundaries are measured on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageAxis {
    /// Continuous time t ∈ (0, 1).
    Time,
    /// Noise level σ of the VE/EDM process (SNR-equivalent σ = σ_t/α_t for VP schedules).
    Sigma,
    /// Discrete timesteps of a schedule with `total` steps (network input N·(t − 1/N)).
    Step { total: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Partition {
    pub axis: StageAxis,
    boundaries: Vec<f64>,
}

fn check(values: &[f64], lo: f64, hi: f64, what: &str) -> Result<(), StageError> {
    let bad = |why: String| StageError::Bad {
        what: format!("{what} {values:?}"),
        why,
    };
    for &b in values {
        if !(b.is_finite() && b > lo && b < hi) {
            return Err(bad(format!("{b} is outside ({lo}, {hi})")));
        }
    }
    if let Some(w) = values.windows(2).find(|w| w[0] >= w[1]) {
        return Err(bad(format!(
            "not strictly increasing ({} then {})",
            w[0], w[1]
        )));
    }
    Ok(())
}

impl Partition {
    /// Boundaries in continuous time, each in (0, 1), strictly increasing.
    pub fn in_time(boundaries: Vec<f64>) -> Result<Self, StageError> {
        check(&boundaries, 0.0, 1.0, "in t")?;
        Ok(Self {
            axis: StageAxis::Time,
            boundaries,
        })
    }

    /// Boundaries in σ, each in (0, ∞), strictly increasing.
    pub fn in_sigma(boundaries: Vec<f64>) -> Result<Self, StageError> {
        check(&boundaries, 0.0, f64::INFINITY, "in sigma")?;
        Ok(Self {
            axis: StageAxis::Sigma,
            boundaries,
        })
    }

    /// Boundaries in discrete steps of a `total`-step schedule, each in (0, total), strictly increasing.
    pub fn in_steps(boundaries: Vec<f64>, total: usize) -> Result<Self, StageError> {
        check(&boundaries, 0.0, total as f64, "in steps")?;
        Ok(Self {
            axis: StageAxis::Step { total },
            boundaries,
        })
    }

    /// A single stage (no boundaries) on `axis`.
    pub fn single(axis: StageAxis) -> Self {
        Self {
            axis,
            boundaries: Vec::new(),
        }
    }

    pub fn boundaries(&self) -> &[f64] {
        &self.boundaries
    }

    pub fn num_stages(&self) -> usize {
        self.boundaries.len() + 1
    }

    /// The stage of a value on this partition's axis: the number of boundaries strictly below it.
    pub fn stage_of(&self, v: f64) -> usize {
        msd_plan::stage_of(&self.boundaries, v)
    }

    /// The stage of each sample's value (per-sample routing).
    pub fn stages_of(&self, values: &[f64]) -> Vec<usize> {
        values.iter().map(|&v| self.stage_of(v)).collect()
    }

    /// The same partition in σ, through the SNR of `schedule` (σ = e^{−λ(t)}; steps go to t = (b+1)/N first).
    pub fn to_sigma(&self, schedule: &dyn Schedule) -> Result<Self, StageError> {
        let times = match self.axis {
            StageAxis::Sigma => return Ok(self.clone()),
            StageAxis::Time => self.boundaries.clone(),
            StageAxis::Step { total } => self.step_times(total),
        };
        let sig = times
            .iter()
            .map(|&t| {
                schedule
                    .check_time(t)
                    .map(|t| schedule.ve_equivalent_sigma(t))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::in_sigma(sig)
    }

    /// The same partition in the continuous time of `schedule`, through the SNR (t = λ⁻¹(−log σ)).
    pub fn to_time(&self, schedule: &dyn Schedule) -> Result<Self, StageError> {
        match self.axis {
            StageAxis::Time => Ok(self.clone()),
            StageAxis::Step { total } => Self::in_time(self.step_times(total)),
            StageAxis::Sigma => {
                let t = self
                    .boundaries
                    .iter()
                    .map(|&s| schedule.lambda_inv(-s.ln()))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::in_time(t)
            }
        }
    }

    fn step_times(&self, total: usize) -> Vec<f64> {
        let n = total as f64;
        self.boundaries.iter().map(|&b| b / n + 1.0 / n).collect()
    }

    /// The value of an evaluation point of a plan on `axis` on this partition's axis.
    pub fn value_at(&self, at: &EvalPoint, axis: TimeAxis) -> Result<f64, StageError> {
        match (self.axis, axis) {
            (StageAxis::Sigma, _) => Ok(at.ve_sigma()),
            (StageAxis::Time, TimeAxis::Time | TimeAxis::DiscreteTime { .. }) => Ok(at.t),
            (StageAxis::Step { total }, TimeAxis::Time | TimeAxis::DiscreteTime { .. }) => {
                Ok(total as f64 * (at.t - 1.0 / total as f64))
            }
            (_, TimeAxis::Sigma) => Err(StageError::Axis(
                "the plan's time is sigma (EDM): give the stage boundaries in sigma, or convert the partition with Partition::to_sigma".into(),
            )),
        }
    }
}

/// How many model evaluations of `plan` fall in each stage of `partition` (the NFE weights of a multistage
/// model's per-stage cost). Every evaluation — including the intermediate points inside one solver step —
/// counts in the stage of its own time.
pub fn nfe_per_stage(plan: &Plan, partition: &Partition) -> Result<Vec<usize>, StageError> {
    let mut counts = vec![0; partition.num_stages()];
    for at in plan.evals() {
        counts[partition.stage_of(partition.value_at(at, plan.axis)?)] += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::VpLinear;
    use crate::solver::{self, DiscreteVp, Skip};

    #[test]
    fn boundary_values_go_to_the_lower_stage() {
        let p = Partition::in_time(vec![0.4420, 0.6308]).unwrap();
        assert_eq!(
            p.stages_of(&[0.0, 0.4420, 0.44201, 0.6308, 0.7, 1.0]),
            vec![0, 0, 1, 1, 2, 2]
        );
        assert_eq!(p.num_stages(), 3);
    }

    #[test]
    fn bad_boundaries_are_errors() {
        for b in [
            vec![0.6, 0.4],
            vec![0.0, 0.5],
            vec![0.5, 1.0],
            vec![0.3, 0.3],
            vec![f64::NAN],
        ] {
            let e = Partition::in_time(b).unwrap_err().to_string();
            assert!(e.contains("outside") || e.contains("increasing"), "{e}");
        }
        assert!(Partition::in_sigma(vec![-1.0]).is_err());
        assert!(Partition::in_steps(vec![442.0, 1000.0], 1000).is_err());
    }

    #[test]
    fn conversions_through_snr() {
        let vp = VpLinear::default();
        let s = Partition::in_time(vec![0.4420, 0.6308])
            .unwrap()
            .to_sigma(&vp)
            .unwrap();
        // The paper's footnote 3 and docs/paper-notes.md §1.6: 2.5103 and 7.4046.
        assert!((s.boundaries()[0] - 2.5103).abs() < 5e-4, "{s:?}");
        assert!((s.boundaries()[1] - 7.4046).abs() < 5e-4, "{s:?}");
        let back = s.to_time(&vp).unwrap();
        assert!((back.boundaries()[0] - 0.4420).abs() < 1e-12);
        // LDM's 442/631 under its own schedule: σ ≈ 2.15 and 5.32 (docs/paper-notes.md §1.6).
        let ldm = DiscreteVp::ldm_default();
        let st = Partition::in_steps(vec![442.0, 631.0], 1000).unwrap();
        let sg = st.to_sigma(&ldm).unwrap();
        assert!((sg.boundaries()[0] - 2.15).abs() < 0.01, "{sg:?}");
        assert!((sg.boundaries()[1] - 5.32).abs() < 0.01, "{sg:?}");
        assert_eq!(st.to_time(&ldm).unwrap().boundaries(), &[0.443, 0.632]);
    }

    #[test]
    fn the_papers_three_nfe_splits() {
        let vp = VpLinear::default();
        let ds = solver::dpm_solver_plan(&vp, TimeAxis::Time, &solver::DpmSolverConfig::default())
            .unwrap();
        let p = Partition::in_time(vec![0.4420, 0.6308]).unwrap();
        assert_eq!(nfe_per_stage(&ds, &p).unwrap(), vec![12, 2, 6]);
        let eps3 = solver::DpmSolverConfig {
            t_end: 1e-3,
            ..Default::default()
        };
        let ds3 = solver::dpm_solver_plan(&vp, TimeAxis::Time, &eps3).unwrap();
        assert_eq!(nfe_per_stage(&ds3, &p).unwrap(), vec![11, 2, 7]);

        let edm = solver::edm_plan(&solver::EdmConfig::default()).unwrap();
        let ps = Partition::in_sigma(vec![2.5103, 7.6577]).unwrap();
        assert_eq!(nfe_per_stage(&edm, &ps).unwrap(), vec![18, 4, 13]);
        assert!(nfe_per_stage(&edm, &p).is_err());

        let ldm = DiscreteVp::ldm_default();
        let cfg = solver::DpmSolverConfig {
            algorithm: solver::Algorithm::DpmSolverPlusPlus,
            method: solver::Method::Multistep,
            order: 2,
            steps: 20,
            skip: Skip::TimeUniform,
            t_end: 1e-3,
            lower_order_final: true,
            ..Default::default()
        };
        let plan =
            solver::dpm_solver_plan(&ldm, TimeAxis::DiscreteTime { steps: 1000 }, &cfg).unwrap();
        let steps = Partition::in_steps(vec![442.0, 631.0], 1000).unwrap();
        assert_eq!(nfe_per_stage(&plan, &steps).unwrap(), vec![8, 4, 8]);
        // docs/paper-notes.md §4.3: the network sees steps 999, 949.05, …, 49.95.
        let first = ldm.model_step(plan.times()[0]);
        let last = ldm.model_step(*plan.times().last().unwrap());
        assert!(
            (first - 999.0).abs() < 1e-9 && (last - 49.95).abs() < 1e-9,
            "{first} {last}"
        );
    }
}
