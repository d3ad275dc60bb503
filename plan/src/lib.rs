//! `msd-plan`: a diffusion sampler as plain data.
//!
//! A sampler is scalar math (at which times to evaluate the model, which linear combinations of earlier
//! results to take) plus tensor arithmetic. `msd-reference` computes the scalar part once, in f64, as a
//! [`Plan`]; each backend (ndarray in the reference, candle in accel) executes the same plan with its own
//! tensors. This crate holds only the data types and the noise stream, so that both executors can depend on
//! it without depending on each other (accel must not pull in the reference's BLAS/LAPACK math, and the
//! reference must not pull in candle).
//!
//! A plan is a straight-line program over numbered registers, each holding one B × d array:
//! - register [`Plan::STATE`] (0) holds the initial noise z when execution starts and the sample at the end;
//! - [`Op::Eval`] writes the model's prediction (ε̂ or x̂₀ = D(x; σ)) at one evaluation point;
//! - [`Op::Combine`] writes a linear combination of registers (coefficients computed in f64);
//! - [`Op::Noise`] writes fresh standard normal noise from the seeded stream ([`NoiseStream`]);
//! - [`Op::Record`] marks the end of an outer step (for trajectories); it changes nothing.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// What a model evaluation must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Want {
    /// The noise prediction ε̂(x, t) (x = α·x₀ + σ·ε).
    Eps,
    /// The data prediction x̂₀(x, t); for EDM this is the denoiser D(x; σ).
    X0,
}

/// One model evaluation point: the schedule's time variable and the noise level there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    /// The schedule's time: t ∈ [0, 1] for VP schedules (continuous t also for the discrete LDM schedule,
    /// whose network input is N·(t − 1/N)); σ itself for EDM.
    pub t: f64,
    /// x = alpha·x₀ + sigma·ε at this time.
    pub alpha: f64,
    pub sigma: f64,
}

impl EvalPoint {
    /// The half-log-SNR λ = log(α/σ).
    pub fn lambda(&self) -> f64 {
        self.alpha.ln() - self.sigma.ln()
    }
    /// The σ of the VE/EDM process with the same SNR: σ/α.
    pub fn ve_sigma(&self) -> f64 {
        self.sigma / self.alpha
    }
}

/// One instruction of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// reg[dst] = model(reg[src]; at), returning `want`.
    Eval {
        dst: usize,
        src: usize,
        at: EvalPoint,
        want: Want,
    },
    /// reg[dst] = Σ coeff·reg[src] over `terms` (dst may appear among the sources).
    Combine {
        dst: usize,
        terms: Vec<(usize, f64)>,
    },
    /// reg[dst] = the next B × d standard normal draws of the noise stream.
    Noise { dst: usize },
    /// End of outer step `step` (1-based; the state now sits at time `t`).
    Record { step: usize, t: f64 },
}

/// Which time variable the plan's [`EvalPoint::t`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeAxis {
    /// Continuous time t ∈ [0, 1] of a VP schedule.
    Time,
    /// Continuous time of a discrete-step schedule with `steps` steps (network input N·(t − 1/N)).
    DiscreteTime { steps: usize },
    /// The noise level σ itself (EDM).
    Sigma,
}

/// A sampler as plain data. Build one with `msd_reference::solver`; execute it with
/// `msd_reference::solver::execute` (ndarray, f64) or `msd_accel::sampler::execute` (candle).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// A short description (`dpm-solver-3 singlestep logSNR`, `edm-heun`, ...).
    pub name: String,
    pub axis: TimeAxis,
    /// Number of registers the program uses (register 0 is the state).
    pub registers: usize,
    pub ops: Vec<Op>,
    /// The outer time grid, from the start time down to the end (t_T, …, t_end; for EDM σ_max, …, σ_min, 0).
    pub grid: Vec<f64>,
}

impl Plan {
    /// The register that holds the initial noise z at the start and the sample at the end.
    pub const STATE: usize = 0;

    /// The model evaluation points in execution order.
    pub fn evals(&self) -> impl Iterator<Item = &EvalPoint> {
        self.ops.iter().filter_map(|op| match op {
            Op::Eval { at, .. } => Some(at),
            _ => None,
        })
    }

    /// Number of function (model) evaluations.
    pub fn nfe(&self) -> usize {
        self.evals().count()
    }

    /// The times of the model evaluations, in execution order.
    pub fn times(&self) -> Vec<f64> {
        self.evals().map(|e| e.t).collect()
    }

    /// Whether the plan draws noise beyond the initial z.
    pub fn is_stochastic(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, Op::Noise { .. }))
    }

    /// Checks that every register index is in range and every register is written before it is read
    /// (register 0 starts out written). Executors call this before running anything.
    pub fn validate(&self) -> Result<(), String> {
        let mut written = vec![false; self.registers];
        if self.registers == 0 {
            return Err("a plan needs at least the state register".into());
        }
        written[Self::STATE] = true;
        let check_read = |r: usize, written: &[bool], i: usize| -> Result<(), String> {
            match written.get(r) {
                Some(true) => Ok(()),
                Some(false) => Err(format!("op {i} reads register {r} before it is written")),
                None => Err(format!("op {i} reads register {r} of {}", written.len())),
            }
        };
        for (i, op) in self.ops.iter().enumerate() {
            let dst = match op {
                Op::Eval { dst, src, at, .. } => {
                    check_read(*src, &written, i)?;
                    if !(at.alpha.is_finite()
                        && at.sigma.is_finite()
                        && at.alpha > 0.0
                        && at.sigma > 0.0)
                    {
                        return Err(format!(
                            "op {i} evaluates at alpha = {}, sigma = {}",
                            at.alpha, at.sigma
                        ));
                    }
                    *dst
                }
                Op::Combine { dst, terms } => {
                    for &(r, c) in terms {
                        check_read(r, &written, i)?;
                        if !c.is_finite() {
                            return Err(format!("op {i} has a non-finite coefficient {c}"));
                        }
                    }
                    *dst
                }
                Op::Noise { dst } => *dst,
                Op::Record { .. } => continue,
            };
            match written.get_mut(dst) {
                Some(w) => *w = true,
                None => {
                    return Err(format!(
                        "op {i} writes register {dst} of {}",
                        self.registers
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The noise stream of stochastic samplers (and of initial noise drawn by `msd`), reproducible from a seed.
///
/// Draws are f64 standard normals from `rand_distr::StandardNormal` on `rand::rngs::StdRng` (rand 0.9:
/// ChaCha12) seeded with `StdRng::seed_from_u64(seed)`. Each [`Op::Noise`] takes the next B·d draws, filled
/// row-major (sample 0's d coordinates first). Every executor draws through this type in the same order,
/// so the reference (f64) and accel (rounded to f32) backends see the same noise. candle's own CPU RNG
/// cannot be seeded, which is why the noise never comes from candle.
#[derive(Debug, Clone)]
pub struct NoiseStream {
    rng: StdRng,
}

impl NoiseStream {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next `n` standard normal draws.
    pub fn draw(&mut self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_reproducible_and_standard() {
        let a = NoiseStream::new(3).draw(20_000);
        assert_eq!(a, NoiseStream::new(3).draw(20_000));
        assert_ne!(a[..10], NoiseStream::new(4).draw(10)[..]);
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / a.len() as f64;
        // 5 standard errors: mean ± 0.035, variance ± 0.05.
        assert!(mean.abs() < 0.035, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }

    #[test]
    fn validate_catches_reads_before_writes() {
        let at = EvalPoint {
            t: 0.5,
            alpha: 0.5,
            sigma: 0.8,
        };
        let mut plan = Plan {
            name: "t".into(),
            axis: TimeAxis::Time,
            registers: 2,
            ops: vec![Op::Eval {
                dst: 1,
                src: 0,
                at,
                want: Want::Eps,
            }],
            grid: vec![],
        };
        assert!(plan.validate().is_ok());
        plan.ops.insert(
            0,
            Op::Combine {
                dst: 0,
                terms: vec![(1, 1.0)],
            },
        );
        assert!(plan
            .validate()
            .unwrap_err()
            .contains("before it is written"));
        plan.ops[0] = Op::Noise { dst: 2 };
        assert!(plan.validate().unwrap_err().contains("writes register 2"));
    }
}

/// The stage rule, defined once for every crate: the stage of a value `v` on a partition with strictly
/// increasing interior `boundaries` is the number of boundaries strictly below `v`. A boundary value
/// therefore belongs to the lower stage, and the smallest noise levels are stage 0.
pub fn stage_of(boundaries: &[f64], v: f64) -> usize {
    boundaries.iter().filter(|&&b| b < v).count()
}

#[cfg(test)]
mod stage_rule_tests {
    use super::stage_of;

    #[test]
    fn boundary_values_belong_to_the_lower_stage() {
        let b = [0.25, 0.5];
        assert_eq!(stage_of(&b, 0.0), 0);
        assert_eq!(stage_of(&b, 0.25), 0);
        assert_eq!(stage_of(&b, 0.2500001), 1);
        assert_eq!(stage_of(&b, 0.5), 1);
        assert_eq!(stage_of(&b, 0.75), 2);
        assert_eq!(stage_of(&[], 0.75), 0);
    }
}
