//! The candle executor of sampler plans (see the `msd-plan` crate): the same straight-line program the
//! reference runs on ndarray, on tensors of any shape (B × d, or NCHW images) and any float dtype.
//!
//! The plan's coefficients are f64; each linear combination is applied to the registers in the tensors'
//! dtype (f32 by default). Noise comes from the plan's seeded [`NoiseStream`] (f64 draws, rounded to the
//! tensors' dtype, row-major), never from candle's unseedable RNG, so the reference and this executor see
//! the same noise.

use candle_core::{Device, Tensor};

use crate::denoiser::{check_finite, OptimalDenoiser};
use crate::AccelError;
pub use msd_plan::{EvalPoint, NoiseStream, Op, Plan, TimeAxis, Want};

/// A denoising model on tensors: given x and an evaluation point, return ε̂ or x̂₀ (= D(x; σ) for EDM),
/// with the shape of x.
pub trait TensorModel {
    fn predict(&mut self, x: &Tensor, at: &EvalPoint, want: Want) -> Result<Tensor, AccelError>;
}

/// The Proposition 1 optimal denoiser as a model (x is B × d, or any shape that flattens to it per sample).
pub struct OracleModel<'a> {
    pub denoiser: &'a OptimalDenoiser,
}

impl TensorModel for OracleModel<'_> {
    fn predict(&mut self, x: &Tensor, at: &EvalPoint, want: Want) -> Result<Tensor, AccelError> {
        let shape = x.shape().clone();
        let flat = x.flatten_from(1)?;
        let out = match want {
            Want::X0 => self.denoiser.posterior_mean(&flat, at.alpha, at.sigma)?,
            Want::Eps => self.denoiser.eps(&flat, at.alpha, at.sigma)?,
        };
        Ok(out.to_dtype(x.dtype())?.reshape(shape)?)
    }
}

/// A dummy model that returns its input (for measuring the executor's own overhead).
pub struct IdentityModel;

impl TensorModel for IdentityModel {
    fn predict(&mut self, x: &Tensor, _at: &EvalPoint, _want: Want) -> Result<Tensor, AccelError> {
        Ok(x.clone())
    }
}

/// Called after each outer step with (step, t, state).
pub type OnRecord<'a> = dyn FnMut(usize, f64, &Tensor) -> Result<(), AccelError> + 'a;

/// Σ c_i·x_i in the tensors' dtype.
fn combine(terms: &[(usize, f64)], regs: &[Option<Tensor>]) -> Result<Tensor, AccelError> {
    let reg = |r: usize| regs[r].as_ref().expect("validated plan");
    let mut acc: Option<Tensor> = None;
    for &(r, c) in terms {
        let x = reg(r);
        acc = Some(match acc {
            None => x.affine(c, 0.0)?,
            Some(a) => {
                if c == 1.0 {
                    (a + x)?
                } else {
                    (a + x.affine(c, 0.0)?)?
                }
            }
        });
    }
    match acc {
        Some(a) => Ok(a),
        None => Err(AccelError::Shape(
            "a linear combination with no terms".into(),
        )),
    }
}

/// Runs `plan` from the initial noise `z` (any shape with the batch first; the plan scales it, e.g. by
/// σ_max for EDM). Noise ops take the next `z.elem_count()` draws of `noise`.
pub fn execute(
    plan: &Plan,
    z: &Tensor,
    model: &mut dyn TensorModel,
    noise: &mut NoiseStream,
    on_record: &mut OnRecord,
) -> Result<Tensor, AccelError> {
    plan.validate().map_err(AccelError::Shape)?;
    check_finite("the initial noise", z)?;
    let (shape, dtype, device): (_, _, Device) = (z.shape().clone(), z.dtype(), z.device().clone());
    let mut regs: Vec<Option<Tensor>> = vec![None; plan.registers];
    regs[Plan::STATE] = Some(z.clone());
    for op in &plan.ops {
        match op {
            Op::Eval { dst, src, at, want } => {
                let x = regs[*src].as_ref().expect("validated plan");
                let out = model.predict(x, at, *want)?;
                if out.shape() != &shape {
                    return Err(AccelError::Shape(format!(
                        "the model returned shape {:?} for a state of shape {:?}",
                        out.dims(),
                        shape.dims()
                    )));
                }
                regs[*dst] = Some(out);
            }
            Op::Combine { dst, terms } => {
                regs[*dst] = Some(combine(terms, &regs)?);
            }
            Op::Noise { dst } => {
                let v: Vec<f32> = noise
                    .draw(shape.elem_count())
                    .into_iter()
                    .map(|x| x as f32)
                    .collect();
                regs[*dst] = Some(Tensor::from_vec(v, shape.clone(), &device)?.to_dtype(dtype)?);
            }
            Op::Record { step, t } => {
                on_record(*step, *t, regs[Plan::STATE].as_ref().expect("state"))?;
            }
        }
    }
    let out = regs[Plan::STATE].take().expect("state");
    check_finite("the final sample", &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use msd_reference::solver::{self as rs, Skip};
    use msd_reference::{schedule::VpLinear, OptimalDenoiser as RefDenoiser};
    use ndarray::Array2;
    use proptest::prelude::*;

    fn to_tensor(a: &Array2<f64>) -> Tensor {
        let v: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        Tensor::from_vec(v, a.dim(), &Device::Cpu).unwrap()
    }

    fn to_array(t: &Tensor) -> Array2<f64> {
        let (r, c) = t.dims2().unwrap();
        let v = t
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        Array2::from_shape_vec((r, c), v).unwrap()
    }

    /// Every sampler family, on VP-linear or EDM, chosen by `which`.
    /// `smooth`: stop where the oracle's posterior is still smooth (t ≥ 0.3 for VP, σ ≥ 0.5 for EDM).
    fn plan_for(which: usize, steps: usize, smooth: bool) -> Plan {
        let vp = VpLinear::default();
        let t_end = if smooth { 0.3 } else { 1e-3 };
        let edm =
            msd_reference::schedule::Edm::new(if smooth { 0.5 } else { 0.002 }, 80.0, 7.0).unwrap();
        let grid = rs::VpGridConfig {
            steps,
            skip: Skip::LogSnr,
            t_end,
            ..Default::default()
        };
        match which {
            0 => rs::dpm_solver_plan(
                &vp,
                TimeAxis::Time,
                &rs::DpmSolverConfig {
                    steps: steps.max(3),
                    t_end,
                    ..Default::default()
                },
            ),
            1 => rs::dpm_solver_plan(
                &vp,
                TimeAxis::Time,
                &rs::DpmSolverConfig {
                    algorithm: rs::Algorithm::DpmSolverPlusPlus,
                    method: rs::Method::Multistep,
                    order: 3,
                    steps: steps.max(3),
                    t_end,
                    denoise: true,
                    ..Default::default()
                },
            ),
            2 => rs::edm_plan(&rs::EdmConfig {
                steps: steps.max(2),
                s_churn: 10.0,
                schedule: edm,
                ..Default::default()
            }),
            3 => rs::ddim_plan(&vp, TimeAxis::Time, &grid, 0.5),
            4 => rs::ancestral_plan(&vp, TimeAxis::Time, &grid),
            _ => rs::euler_maruyama_plan(&vp, TimeAxis::Time, &grid),
        }
        .unwrap()
    }

    /// The largest Σ|c_i|·max|x_i| over the plan's linear combinations, run in f64 with the Gaussian model:
    /// the scale of the f32 rounding each combination commits (the DPM-Solver steps cancel terms of size
    /// α_t/α_s·|x| ≫ |x_t| on coarse grids, so this, not |x_t|, sets the error).
    fn max_term(plan: &Plan, z: &Array2<f64>, model: &mut rs::GaussianModel, seed: u64) -> f64 {
        use msd_reference::solver::Model;
        let mut regs: Vec<Option<Array2<f64>>> = vec![None; plan.registers];
        regs[0] = Some(z.clone());
        let mut noise = NoiseStream::new(seed);
        let mut worst = 0.0f64;
        let maxabs = |a: &Array2<f64>| a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for op in &plan.ops {
            match op {
                Op::Eval { dst, src, at, want } => {
                    let out = model
                        .predict(regs[*src].as_ref().unwrap().view(), at, *want)
                        .unwrap();
                    worst = worst.max(maxabs(&out));
                    regs[*dst] = Some(out);
                }
                Op::Combine { dst, terms } => {
                    let mut acc = Array2::<f64>::zeros(z.dim());
                    let mut size = 0.0;
                    for &(r, c) in terms {
                        let x = regs[r].as_ref().unwrap();
                        size += c.abs() * maxabs(x);
                        acc.scaled_add(c, x);
                    }
                    worst = worst.max(size);
                    regs[*dst] = Some(acc);
                }
                Op::Noise { dst } => {
                    regs[*dst] =
                        Some(Array2::from_shape_vec(z.dim(), noise.draw(z.len())).unwrap());
                }
                Op::Record { .. } => {}
            }
        }
        worst
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Same plan, same model, same noise: the candle executor (f32) gives the reference's (f64) samples.
        /// Checked twice: with a Gaussian data model implemented on both sides (the executors alone), and with
        /// the two backends' optimal denoisers (the oracle of a 4-point dataset). Bound: f32 rounds each
        /// combination to ~1e-7 of its largest term, and a few dozen steps carry it on: 64·ε₃₂·max term.
        #[test]
        fn executors_agree(
            which in 0usize..6,
            steps in 3usize..9,
            seed in 0u64..1000,
            data in proptest::collection::vec(-1.0f64..1.0, 4 * 3),
        ) {
            let data = Array2::from_shape_vec((4, 3), data).unwrap();
            let plan = plan_for(which, steps, false);
            let z = Array2::from_shape_vec((5, 3), NoiseStream::new(seed ^ 77).draw(15)).unwrap();
            let mut gauss = rs::GaussianModel { mean: 0.2, std: 0.7 };
            let want_ref = rs::execute(&plan, z.view(), &mut gauss, &mut NoiseStream::new(seed), &mut |_, _, _| Ok(())).unwrap();
            struct G(rs::GaussianModel);
            impl TensorModel for G {
                fn predict(&mut self, x: &Tensor, at: &EvalPoint, want: Want) -> Result<Tensor, AccelError> {
                    let (a, s2) = (at.alpha, self.0.std * self.0.std);
                    let gain = a * s2 / (a * a * s2 + at.sigma * at.sigma);
                    let x0 = x.affine(gain, self.0.mean * (1.0 - gain * a))?;
                    Ok(match want {
                        Want::X0 => x0,
                        Want::Eps => ((x - x0.affine(a, 0.0)?)? / at.sigma)?,
                    })
                }
            }
            let got = execute(&plan, &to_tensor(&z), &mut G(gauss), &mut NoiseStream::new(seed), &mut |_, _, _| Ok(())).unwrap();
            let err = (&to_array(&got) - &want_ref).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let bound = 64.0 * f32::EPSILON as f64 * max_term(&plan, &z, &mut gauss, seed);
            prop_assert!(err <= bound, "{}: err {err}, bound {bound}", plan.name);

            // The oracle: reference OptimalDenoiser vs accel OptimalDenoiser inside the two executors. As σ
            // falls the posterior softmax becomes a hard nearest-point choice, and a sample on a decision
            // boundary between two training points may legitimately go either way in f32 (the sampler map is
            // discontinuous there). So this part stops where the posterior is still smooth (σ/α ≳ 0.5), where
            // f32 errors are amplified by at most ~spread²/σ² and 1e-3 relative is a safe bound.
            let plan = plan_for(which, steps, true);
            let mut oracle = rs::OracleModel { denoiser: RefDenoiser::new(data.view()).unwrap() };
            let want_ref = rs::execute(&plan, z.view(), &mut oracle, &mut NoiseStream::new(seed), &mut |_, _, _| Ok(())).unwrap();
            let den = OptimalDenoiser::new(&to_tensor(&data)).unwrap();
            let got = execute(&plan, &to_tensor(&z), &mut OracleModel { denoiser: &den }, &mut NoiseStream::new(seed), &mut |_, _, _| Ok(())).unwrap();
            let err = (&to_array(&got) - &want_ref).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let scale = want_ref.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            prop_assert!(err <= 1e-3 * scale, "{} oracle: err {err}, scale {scale}", plan.name);
        }
    }

    #[test]
    fn records_every_step_and_checks_shapes() {
        let plan = plan_for(0, 20, false);
        let z = Tensor::zeros((2, 3, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut steps = Vec::new();
        let out = execute(
            &plan,
            &z,
            &mut IdentityModel,
            &mut NoiseStream::new(0),
            &mut |s, _, x| {
                steps.push(s);
                assert_eq!(x.dims(), &[2, 3, 4, 4]);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(steps, (1..=7).collect::<Vec<_>>());
        assert_eq!(out.dims(), &[2, 3, 4, 4]);
        struct Bad;
        impl TensorModel for Bad {
            fn predict(
                &mut self,
                x: &Tensor,
                _: &EvalPoint,
                _: Want,
            ) -> Result<Tensor, AccelError> {
                Ok(x.flatten_all()?)
            }
        }
        let e = execute(
            &plan,
            &z,
            &mut Bad,
            &mut NoiseStream::new(0),
            &mut |_, _, _| Ok(()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("shape"), "{e}");
    }
}
