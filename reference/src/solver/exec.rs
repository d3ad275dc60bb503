//! The reference executor: runs a [`Plan`] on an `ndarray` state (B × d, f64), with the model abstracted as
//! "given x and an evaluation point, return ε̂ or x̂₀ (= D(x; σ) for EDM)".

use ndarray::{Array2, ArrayView2, Zip};

use super::SolverError;
use crate::denoiser::{check_finite, NoiseLevel, OptimalDenoiser, Prediction};
use msd_plan::{EvalPoint, NoiseStream, Op, Plan, Want};

/// A denoising model on f64 arrays.
pub trait Model {
    /// The prediction `want` at x (B × d) and the evaluation point `at` (time and noise level).
    fn predict(
        &mut self,
        x: ArrayView2<f64>,
        at: &EvalPoint,
        want: Want,
    ) -> Result<Array2<f64>, SolverError>;
}

/// Converts a data prediction into a noise prediction at `at`: ε̂ = (x − α·x̂₀)/σ.
pub fn eps_of_x0(x: ArrayView2<f64>, x0: Array2<f64>, at: &EvalPoint) -> Array2<f64> {
    let mut out = x0;
    Zip::from(&mut out)
        .and(x)
        .for_each(|o, &xv| *o = (xv - at.alpha * *o) / at.sigma);
    out
}

/// The Proposition 1 optimal denoiser of a dataset as a model: the exact posterior mean, so sampler error is
/// pure discretisation error.
pub struct OracleModel<'a> {
    pub denoiser: OptimalDenoiser<'a>,
}

impl Model for OracleModel<'_> {
    fn predict(
        &mut self,
        x: ArrayView2<f64>,
        at: &EvalPoint,
        want: Want,
    ) -> Result<Array2<f64>, SolverError> {
        let level = NoiseLevel::new(at.alpha, at.sigma)?;
        let pred = match want {
            Want::Eps => Prediction::Eps,
            Want::X0 => Prediction::X0,
        };
        Ok(self.denoiser.predict(x, level, pred)?)
    }
}

/// Data distributed as N(μ, s²·I) in every coordinate: E[x₀ | x] = μ + α s²/(α² s² + σ²)·(x − α μ) in closed
/// form, and the probability-flow ODE maps x_T to α_t μ + √(α_t² s² + σ_t²)·(x_T − α_T μ)/√(α_T² s² + σ_T²).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianModel {
    pub mean: f64,
    pub std: f64,
}

impl GaussianModel {
    /// Where the exact probability-flow ODE takes x from noise level `from` to `to`.
    pub fn exact_flow(&self, x: ArrayView2<f64>, from: &EvalPoint, to: &EvalPoint) -> Array2<f64> {
        let sd =
            |p: &EvalPoint| (p.alpha * p.alpha * self.std * self.std + p.sigma * p.sigma).sqrt();
        let k = sd(to) / sd(from);
        x.mapv(|v| to.alpha * self.mean + k * (v - from.alpha * self.mean))
    }
}

impl Model for GaussianModel {
    fn predict(
        &mut self,
        x: ArrayView2<f64>,
        at: &EvalPoint,
        want: Want,
    ) -> Result<Array2<f64>, SolverError> {
        let (a, s2) = (at.alpha, self.std * self.std);
        let gain = a * s2 / (a * a * s2 + at.sigma * at.sigma);
        let x0 = x.mapv(|v| self.mean + gain * (v - a * self.mean));
        Ok(match want {
            Want::X0 => x0,
            Want::Eps => eps_of_x0(x, x0, at),
        })
    }
}

/// Called after each outer step with (step, t, state).
pub type OnRecord<'a> = dyn FnMut(usize, f64, ArrayView2<f64>) -> Result<(), SolverError> + 'a;

/// Runs `plan` from the initial noise `z` (B × d; the plan scales it, e.g. by σ_max for EDM). Noise ops draw
/// from `noise` (see [`NoiseStream`]); `on_record(step, t, state)` sees the state after each outer step.
pub fn execute(
    plan: &Plan,
    z: ArrayView2<f64>,
    model: &mut dyn Model,
    noise: &mut NoiseStream,
    on_record: &mut OnRecord,
) -> Result<Array2<f64>, SolverError> {
    plan.validate().map_err(SolverError::Plan)?;
    check_finite("the initial noise", z)?;
    let dim = z.dim();
    let mut regs: Vec<Option<Array2<f64>>> = vec![None; plan.registers];
    regs[Plan::STATE] = Some(z.to_owned());
    // validate() guarantees every read register has been written.
    let get = |regs: &[Option<Array2<f64>>], r: usize| -> Array2<f64> {
        regs[r].clone().expect("validated plan")
    };
    for op in &plan.ops {
        match op {
            Op::Eval { dst, src, at, want } => {
                let x = regs[*src].as_ref().expect("validated plan");
                let out = model.predict(x.view(), at, *want)?;
                if out.dim() != dim {
                    return Err(SolverError::Shape {
                        what: "the model output",
                        got: out.shape().to_vec(),
                        expected: format!("the state is {dim:?}"),
                    });
                }
                if out.iter().any(|v| !v.is_finite()) {
                    return Err(SolverError::NonFiniteOutput { t: at.t });
                }
                regs[*dst] = Some(out);
            }
            Op::Combine { dst, terms } => {
                let mut acc = Array2::<f64>::zeros(dim);
                for &(r, c) in terms {
                    let src = regs[r].as_ref().expect("validated plan");
                    acc.scaled_add(c, src);
                }
                regs[*dst] = Some(acc);
            }
            Op::Noise { dst } => {
                let v = noise.draw(dim.0 * dim.1);
                regs[*dst] = Some(Array2::from_shape_vec(dim, v).expect("B*d draws"));
            }
            Op::Record { step, t } => {
                let s = regs[Plan::STATE].as_ref().expect("state");
                on_record(*step, *t, s.view())?;
            }
        }
    }
    Ok(get(&regs, Plan::STATE))
}
