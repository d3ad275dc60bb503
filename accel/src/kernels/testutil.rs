//! Shared test helpers: seeded tensors, gradients of a random linear functional, finite differences.

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Uniform values in [-1, 1].
pub fn rand_tensor(dims: &[usize], seed: u64, dtype: DType, dev: &Device) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..=1.0)).collect();
    Tensor::from_vec(v, dims, dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// The values of `t`, flattened, as f64.
pub fn to_vec(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Output of `f` and gradients of `Σ f(inputs)·r` (r uniform in [-1, 1], seeded) with respect to every input.
pub fn value_and_grads<F>(inputs: &[&Tensor], f: F, seed: u64) -> Vec<Vec<f64>>
where
    F: Fn(&[Tensor]) -> candle_core::Result<Tensor>,
{
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let r = rand_tensor(y.dims(), seed, y.dtype(), y.device());
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![to_vec(&y)];
    for t in &ts {
        out.push(to_vec(g.get(t).expect("no gradient for an input")));
    }
    out
}

/// Output and gradients of the fast and the plain implementation, same cotangent.
pub fn compare_grads<F, G>(
    inputs: &[&Tensor],
    fast: F,
    plain: G,
    seed: u64,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>)
where
    F: Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    G: Fn(&[Tensor]) -> candle_core::Result<Tensor>,
{
    (
        value_and_grads(inputs, fast, seed),
        value_and_grads(inputs, plain, seed),
    )
}

/// Every entry within `tol` (absolute).
pub fn assert_close_all(got: &[Vec<f64>], want: &[Vec<f64>], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "entry {i}: lengths");
        let worst = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= tol,
            "entry {i} (0 = output, then gradients): max |diff| {worst:e} > tol {tol:e}"
        );
    }
}

/// Checks the gradients of `L = Σ f(inputs)·r` (f64 inputs) against central differences on every entry.
pub fn check_finite_differences<F>(inputs: &[&Tensor], f: F, seed: u64)
where
    F: Fn(&[Tensor]) -> candle_core::Result<Tensor>,
{
    let grads = value_and_grads(inputs, &f, seed);
    let y = f(&inputs.iter().map(|t| (*t).clone()).collect::<Vec<_>>()).unwrap();
    let r = rand_tensor(y.dims(), seed, DType::F64, y.device());
    let loss = |ts: &[Tensor]| -> f64 {
        (f(ts).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let h = 1e-6;
    for (i, t) in inputs.iter().enumerate() {
        let base = to_vec(t);
        for j in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[j] += d;
                let mut ts: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
                ts[i] = Tensor::from_vec(v, t.dims(), t.device()).unwrap();
                loss(&ts)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let an = grads[i + 1][j];
            // Central differences: truncation O(h²) and round-off ~ε·|L|/h ≈ 1e-9 at these sizes.
            assert!(
                (fd - an).abs() <= 1e-6 * (1.0 + fd.abs()),
                "input {i} entry {j}: finite difference {fd} vs gradient {an}"
            );
        }
    }
}
