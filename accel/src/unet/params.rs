//! Parameter store: builds every parameter either as a real, trainable `Var` initialised from a seeded RNG,
//! or (shape-only mode) as a stride-0 broadcast of one zero, so that the paper-sized presets can be built,
//! counted and costed without allocating their weights.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How a parameter is initialised (the authors' initialisers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// score-SDE `variance_scaling(scale, 'fan_avg', 'uniform')`: U(±sqrt(3·scale/((fan_in+fan_out)/2))).
    /// A scale of 0 becomes 1e-10, as in the authors' `default_init`.
    FanAvgUniform {
        scale: f64,
    },
    /// EDM `xavier_uniform` times `gain`: U(±gain·sqrt(6/(fan_in+fan_out))).
    XavierUniform {
        gain: f64,
    },
    /// PyTorch's default Conv/Linear init (kaiming_uniform with a=√5): U(±1/sqrt(fan_in)).
    TorchDefault {
        fan_in: usize,
    },
}

/// One recorded parameter.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    /// `None` in shape-only mode.
    pub var: Option<Var>,
}

impl Param {
    pub fn numel(&self) -> u64 {
        // Saturating: a count that does not fit u64 sticks at u64::MAX (reported as "model too large").
        self.shape
            .iter()
            .fold(1u64, |a, &d| a.saturating_mul(d as u64))
    }
}

struct Inner {
    params: Vec<Param>,
    rng: Option<StdRng>,
    /// Frozen mode: the parameters of the model this one views, in construction order (see
    /// [`ParamStore::frozen`]).
    source: Option<Vec<Param>>,
    device: Device,
}

/// The parameters of one model, in construction order.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ParamStore({} params)",
            self.inner
                .lock()
                .expect("parameter store lock")
                .params
                .len()
        )
    }
}

/// Fan-in and fan-out of a weight with PyTorch layout `[out, in, k...]` (`[out, in]` for Linear).
fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 | 1 => (
            shape.first().copied().unwrap_or(1),
            shape.first().copied().unwrap_or(1),
        ),
        _ => {
            let rf: usize = shape[2..].iter().product();
            (shape[1] * rf, shape[0] * rf)
        }
    }
}

impl ParamStore {
    /// Real parameters on `device`, initialised from a `StdRng` seeded with `seed` (candle's own CPU RNG cannot
    /// be seeded, so values are drawn here and uploaded).
    pub fn real(device: &Device, seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                params: Vec::new(),
                rng: Some(StdRng::seed_from_u64(seed)),
                source: None,
                device: device.clone(),
            })),
        }
    }

    /// Shape-only parameters: nothing is allocated beyond one scalar per parameter.
    pub fn shapes_only() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                params: Vec::new(),
                rng: None,
                source: None,
                device: Device::Cpu,
            })),
        }
    }

    /// A no-grad view of `source`'s parameters: building the same model again hands out each parameter as a
    /// detached tensor sharing the variable's storage (no copy; later `Var::set`s show through), so candle
    /// records no ops on them and a forward pass keeps no graph of activations. The recorded `Param`s keep
    /// the original variables, for names and weight I/O; training through this view gets no gradients.
    pub fn frozen(source: &ParamStore) -> Self {
        let inner = source.inner.lock().expect("parameter store lock");
        Self {
            inner: Arc::new(Mutex::new(Inner {
                params: Vec::new(),
                rng: None,
                source: Some(inner.params.clone()),
                device: inner.device.clone(),
            })),
        }
    }

    /// Whether the parameters hold values (a trainable store or a frozen view of one).
    pub fn is_real(&self) -> bool {
        let inner = self.inner.lock().expect("parameter store lock");
        inner.rng.is_some()
            || inner
                .source
                .as_ref()
                .is_some_and(|s| s.iter().all(|p| p.var.is_some()))
    }

    pub fn device(&self) -> Device {
        self.inner
            .lock()
            .expect("parameter store lock")
            .device
            .clone()
    }

    /// All parameters in construction order.
    pub fn params(&self) -> Vec<Param> {
        self.inner
            .lock()
            .expect("parameter store lock")
            .params
            .clone()
    }

    /// Number of scalars in parameters whose name starts with `prefix`.
    pub fn count(&self, prefix: &str) -> u64 {
        self.inner
            .lock()
            .expect("parameter store lock")
            .params
            .iter()
            .filter(|p| p.name.starts_with(prefix))
            .map(Param::numel)
            .fold(0u64, u64::saturating_add)
    }

    /// The trainable variables (empty in shape-only mode).
    pub fn vars(&self) -> Vec<Var> {
        self.inner
            .lock()
            .expect("parameter store lock")
            .params
            .iter()
            .filter_map(|p| p.var.clone())
            .collect()
    }

    pub fn root(&self) -> Pb {
        Pb {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    fn get(&self, name: String, shape: &[usize], init: Init) -> Result<Tensor> {
        let mut inner = self.inner.lock().expect("parameter store lock");
        if inner.params.iter().any(|p| p.name == name) {
            candle_core::bail!("duplicate parameter name {name}");
        }
        let device = inner.device.clone();
        if let Some(source) = &inner.source {
            // Same config, same construction order: the i-th request is the source's i-th parameter.
            let i = inner.params.len();
            let p = match source.get(i) {
                Some(p) if p.name == name && p.shape == shape => p.clone(),
                _ => candle_core::bail!(
                    "frozen view: parameter {i} ({name} {shape:?}) does not match the source model"
                ),
            };
            let tensor = match &p.var {
                Some(v) => v.as_tensor().detach(),
                None => shape_only(shape)?,
            };
            inner.params.push(p);
            return Ok(tensor);
        }
        let (tensor, var) = match inner.rng.as_mut() {
            None => {
                let t = shape_only(shape)?;
                (t, None)
            }
            Some(rng) => {
                let n: usize = shape.iter().product();
                let (fan_in, fan_out) = fans(shape);
                let bound = match init {
                    Init::Zeros | Init::Ones => 0.0,
                    Init::FanAvgUniform { scale } => {
                        let scale = if scale == 0.0 { 1e-10 } else { scale };
                        (3.0 * scale / ((fan_in + fan_out) as f64 / 2.0)).sqrt()
                    }
                    Init::XavierUniform { gain } => gain * (6.0 / (fan_in + fan_out) as f64).sqrt(),
                    Init::TorchDefault { fan_in } => 1.0 / (fan_in as f64).sqrt(),
                };
                let data: Vec<f32> = match init {
                    Init::Zeros => vec![0.0; n],
                    Init::Ones => vec![1.0; n],
                    _ => (0..n)
                        .map(|_| (bound * (2.0 * rng.random::<f64>() - 1.0)) as f32)
                        .collect(),
                };
                let var = Var::from_tensor(&Tensor::from_vec(data, shape, &device)?)?;
                (var.as_tensor().clone(), Some(var))
            }
        };
        inner.params.push(Param {
            name,
            shape: shape.to_vec(),
            var,
        });
        Ok(tensor)
    }
}

/// A shape-only parameter: a stride-0 broadcast of one zero (nothing allocated beyond the scalar).
fn shape_only(shape: &[usize]) -> Result<Tensor> {
    Tensor::zeros((), DType::F32, &Device::Cpu)?.broadcast_as(shape)
}

/// A parameter builder positioned at a dotted name prefix (like candle-nn's `VarBuilder::pp`).
#[derive(Clone, Debug)]
pub struct Pb {
    store: ParamStore,
    prefix: String,
}

impl Pb {
    pub fn pp(&self, name: impl std::fmt::Display) -> Pb {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Pb {
            store: self.store.clone(),
            prefix,
        }
    }

    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.store
            .get(format!("{}.{}", self.prefix, name), shape, init)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn device(&self) -> Device {
        self.store.device()
    }
}
