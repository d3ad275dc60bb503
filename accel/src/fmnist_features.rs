//! A small Fashion-MNIST classifier whose penultimate activations give an FID-style distance for 28 × 28
//! grey images without external weights (`msd train-features` trains it; `--features fmnist:CKPT` uses it).
//!
//! Network (input B × 1 × 28 × 28 in [0, 1], scaled to [−1, 1] inside):
//! conv 3×3 1→32 (pad 1), ReLU, avg-pool 2 → 14²; conv 3×3 32→64 (pad 1), ReLU, avg-pool 2 → 7²;
//! flatten 3136 → linear 128, ReLU (**the features**, 128-d) → linear 10 (logits).
//! Average pooling rather than max pooling because candle 0.11's max-pool gradient is wrong (docs/conventions.md §6);
//! no batch norm or dropout, so the features are a deterministic function of the weights. Every op used in
//! training (conv2d, avg-pool, ReLU, linear, log-softmax + NLL) is checked against finite differences in
//! the tests. The convolutions run through the fast CPU kernel ([`crate::kernels::conv2d`]).
//!
//! Tensor names in the safetensors checkpoint: `conv1.weight` (32, 1, 3, 3), `conv1.bias` (32),
//! `conv2.weight` (64, 32, 3, 3), `conv2.bias` (64), `fc1.weight` (128, 3136), `fc1.bias` (128),
//! `fc2.weight` (10, 128), `fc2.bias` (10).
//!
//! History of [`ARCH`]: `fmnist-cnn-v1` had convolutions of 16 and 32 channels (87.4 % test accuracy after
//! its default 2 epochs); `fmnist-cnn-v2` doubles both and trains with a cosine learning-rate decay.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, Optimizer, VarBuilder, VarMap};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

use crate::AccelError;

/// Image side the network takes.
pub const SIDE: usize = 28;
/// Dimension of the penultimate features.
pub const FEATURE_DIM: usize = 128;
/// Number of classes.
pub const CLASSES: usize = 10;
/// Architecture tag written to the checkpoint sidecar; a checkpoint of another architecture is refused.
pub const ARCH: &str = "fmnist-cnn-v2";
/// Channels of the two convolutions (small: training runs on a shared 2-core CPU in minutes).
const C1: usize = 32;
const C2: usize = 64;

/// A 3 × 3 convolution (padding 1) with bias, through the fast CPU kernel of [`crate::kernels::conv2d`]
/// (im2col + one GEMM, with its own backward; candle's CPU conv2d gradients are direct loops, ~20× slower
/// here). On other devices, or with the kernels switched off, that function falls back to candle's conv2d.
#[derive(Debug, Clone)]
struct Conv3 {
    w: Tensor,
    b: Tensor,
}

impl Conv3 {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> candle_core::Result<Self> {
        // The values are set by `init_seeded` (training) or read from the checkpoint.
        Ok(Self {
            w: vb.get_with_hints((cout, cin, 3, 3), "weight", candle_nn::Init::Const(0.0))?,
            b: vb.get_with_hints(cout, "bias", candle_nn::Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::kernels::conv2d(x, &self.w, 1, 1)?.broadcast_add(&self.b.reshape((1, (), 1, 1))?)
    }
}

/// The classifier.
#[derive(Debug, Clone)]
pub struct FmnistNet {
    conv1: Conv3,
    conv2: Conv3,
    fc1: Linear,
    fc2: Linear,
}

impl FmnistNet {
    /// Builds the network from `vb` (a VarMap's builder to train, or loaded tensors).
    pub fn new(vb: &VarBuilder) -> Result<Self, AccelError> {
        Ok(Self {
            conv1: Conv3::new(vb.pp("conv1"), 1, C1)?,
            conv2: Conv3::new(vb.pp("conv2"), C1, C2)?,
            fc1: candle_nn::linear(C2 * 7 * 7, FEATURE_DIM, vb.pp("fc1"))?,
            fc2: candle_nn::linear(FEATURE_DIM, CLASSES, vb.pp("fc2"))?,
        })
    }

    /// Loads a checkpoint written by `msd train-features` (safetensors, names above) onto `device`.
    pub fn from_safetensors(path: &Path, device: &Device) -> Result<Self, AccelError> {
        let vb = crate::safetensors_io::f32_var_builder(
            path,
            device,
            "the Fashion-MNIST feature checkpoint",
        )?;
        Self::from_builder(&vb, &path.display().to_string())
    }

    /// Like [`Self::from_safetensors`], from the bytes of a safetensors file (`name` labels errors), e.g. a
    /// checkpoint embedded in a binary.
    pub fn from_safetensors_bytes(
        bytes: &[u8],
        name: &str,
        device: &Device,
    ) -> Result<Self, AccelError> {
        let vb = crate::safetensors_io::f32_var_builder_from_bytes(
            bytes,
            name,
            device,
            "the Fashion-MNIST feature checkpoint",
        )?;
        Self::from_builder(&vb, name)
    }

    fn from_builder(vb: &VarBuilder, name: &str) -> Result<Self, AccelError> {
        Self::new(vb).map_err(|e| {
            AccelError::Shape(format!(
                "{name}: not a Fashion-MNIST feature checkpoint ({ARCH}): {e}"
            ))
        })
    }

    fn check_input(x: &Tensor) -> Result<(), AccelError> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != 1 || dims[2] != SIDE || dims[3] != SIDE {
            return Err(AccelError::Shape(format!(
                "the Fashion-MNIST feature network takes 1 x {SIDE} x {SIDE} grey images, got shape {dims:?}"
            )));
        }
        Ok(())
    }

    /// Penultimate features (B × 128) of images B × 1 × 28 × 28 in [0, 1].
    pub fn features(&self, x: &Tensor) -> Result<Tensor, AccelError> {
        Self::check_input(x)?;
        let x = ((x * 2.0)? - 1.0)?;
        let h = self.conv1.forward(&x)?.relu()?.avg_pool2d(2)?;
        let h = self.conv2.forward(&h)?.relu()?.avg_pool2d(2)?;
        let h = h.flatten_from(1)?;
        Ok(self.fc1.forward(&h)?.relu()?)
    }

    /// Class logits (B × 10).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor, AccelError> {
        Ok(self.fc2.forward(&self.features(x)?)?)
    }
}

/// Sets every variable of `varmap` from a seeded generator (candle's own CPU generator cannot be seeded):
/// weights uniform in ±1/√fan_in (PyTorch's default bound for conv and linear layers), biases 0. Variables
/// are visited in name order so the result depends on the seed only.
pub fn init_seeded(varmap: &VarMap, seed: u64) -> Result<(), AccelError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let vals: Vec<f64> = if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let bound = 1.0 / (fan_in as f64).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        } else {
            vec![0.0; n]
        };
        let t = Tensor::from_vec(vals, dims.as_slice(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// How the learning rate changes over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Half a cosine from the base rate (first step) to 0 (after the last step).
    #[default]
    Cosine,
}

impl LrSchedule {
    /// The rate of step `step` (0-based) of `total`.
    pub fn rate(self, base: f64, step: usize, total: usize) -> f64 {
        match self {
            Self::Constant => base,
            Self::Cosine => {
                let frac = step as f64 / total.max(1) as f64;
                0.5 * base * (1.0 + (std::f64::consts::PI * frac).cos())
            }
        }
    }
}

/// Training hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam base learning rate (β = 0.9, 0.999, ε = 1e-8, no weight decay).
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    /// Seeds the initialisation and the per-epoch shuffles.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 64,
            lr: 1e-3,
            lr_schedule: LrSchedule::Cosine,
            seed: 0,
        }
    }
}

/// Trains `net` (whose variables live in `varmap`) on `images` (N × 1 × 28 × 28, [0, 1]) and `labels`
/// (N, u32 in 0..10) with Adam on the mean cross-entropy. Returns the mean training loss of each epoch;
/// `on_step(epoch, step, steps_per_epoch, loss)` is called after every step (for progress bars).
pub fn train(
    net: &FmnistNet,
    varmap: &VarMap,
    images: &Tensor,
    labels: &Tensor,
    cfg: &TrainConfig,
    mut on_step: impl FnMut(usize, usize, usize, f64),
) -> Result<Vec<f64>, AccelError> {
    let n = images.dim(0)?;
    if labels.dims() != [n] {
        return Err(AccelError::Shape(format!(
            "{n} images but labels of shape {:?}",
            labels.dims()
        )));
    }
    if n == 0 || cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(AccelError::Shape(
            "training needs at least one image, one epoch and a batch size of at least 1".into(),
        ));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(AccelError::Shape(format!(
            "the learning rate must be > 0, got {}",
            cfg.lr
        )));
    }
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    // A different stream from the initialisation's, derived from the same seed.
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed_5eed_5eed_5eed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let steps = n.div_ceil(cfg.batch_size);
    let mut epoch_losses = Vec::with_capacity(cfg.epochs);
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0;
        for (step, idx) in order.chunks(cfg.batch_size).enumerate() {
            opt.set_learning_rate(cfg.lr_schedule.rate(
                cfg.lr,
                epoch * steps + step,
                cfg.epochs * steps,
            ));
            let idx = Tensor::new(idx, images.device())?;
            let x = images.index_select(&idx, 0)?;
            let y = labels.index_select(&idx, 0)?;
            let loss = candle_nn::loss::cross_entropy(&net.logits(&x)?, &y)?;
            opt.backward_step(&loss)?;
            let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !l.is_finite() {
                return Err(AccelError::NonFinite("the training loss"));
            }
            total += l * idx.dim(0)? as f64;
            on_step(epoch, step, steps, l);
        }
        epoch_losses.push(total / n as f64);
    }
    Ok(epoch_losses)
}

/// Fraction of `images` whose arg-max logit equals the label.
pub fn accuracy(
    net: &FmnistNet,
    images: &Tensor,
    labels: &Tensor,
    batch: usize,
) -> Result<f64, AccelError> {
    let n = images.dim(0)?;
    if n == 0 {
        return Err(AccelError::Shape("accuracy of an empty set".into()));
    }
    let mut correct = 0usize;
    let mut lo = 0;
    while lo < n {
        let len = batch.max(1).min(n - lo);
        let pred = net.logits(&images.narrow(0, lo, len)?)?.argmax(1)?;
        let y = labels.narrow(0, lo, len)?.to_dtype(DType::U32)?;
        let hits: Vec<u8> = pred.eq(&y)?.to_vec1()?;
        correct += hits.iter().filter(|&&h| h != 0).count();
        lo += len;
    }
    Ok(correct as f64 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(dtype: DType, seed: u64) -> (FmnistNet, VarMap) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
        let net = FmnistNet::new(&vb).unwrap();
        init_seeded(&vm, seed).unwrap();
        (net, vm)
    }

    /// Synthetic 10-class images: class c is a bright horizontal bar at rows 2c..2c+3 plus noise.
    fn toy(n: usize, seed: u64) -> (Tensor, Tensor) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut px = Vec::with_capacity(n * SIDE * SIDE);
        let mut ys = Vec::with_capacity(n);
        for i in 0..n {
            let c = (i % CLASSES) as u32;
            ys.push(c);
            for r in 0..SIDE {
                for _ in 0..SIDE {
                    let bar = (r as u32 >= 2 * c + 2 && (r as u32) < 2 * c + 5) as u8 as f32;
                    px.push((0.8 * bar + 0.2 * rng.random::<f32>()).min(1.0));
                }
            }
        }
        (
            Tensor::from_vec(px, (n, 1, SIDE, SIDE), &Device::Cpu).unwrap(),
            Tensor::from_vec(ys, n, &Device::Cpu).unwrap(),
        )
    }

    #[test]
    fn shapes_and_bad_input() {
        let (net, vm) = fresh(DType::F32, 1);
        let (x, _) = toy(3, 2);
        assert_eq!(net.features(&x).unwrap().dims(), &[3, FEATURE_DIM]);
        assert_eq!(net.logits(&x).unwrap().dims(), &[3, CLASSES]);
        let params: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        // 32·9 + 32 + 64·32·9 + 64 + 3136·128 + 128 + 128·10 + 10.
        assert_eq!(params, 320 + 18_496 + 401_536 + 1_290);
        let bad = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert!(net
            .features(&bad)
            .unwrap_err()
            .to_string()
            .contains("28 x 28"));
    }

    #[test]
    fn seeded_initialisation_is_reproducible() {
        let (a, _) = fresh(DType::F32, 7);
        let (b, _) = fresh(DType::F32, 7);
        let (c, _) = fresh(DType::F32, 8);
        let (x, _) = toy(2, 3);
        let fa: Vec<Vec<f32>> = a.features(&x).unwrap().to_vec2().unwrap();
        assert_eq!(fa, b.features(&x).unwrap().to_vec2::<f32>().unwrap());
        assert_ne!(fa, c.features(&x).unwrap().to_vec2::<f32>().unwrap());
    }

    #[test]
    fn loss_gradients_match_finite_differences() {
        // f64 so that central differences are accurate to ~1e-8; checks conv2d, avg-pool, ReLU, linear,
        // log-softmax and NLL together, on a few entries of every parameter tensor.
        let (net, vm) = fresh(DType::F64, 3);
        let (x, y) = toy(4, 4);
        let x = x.to_dtype(DType::F64).unwrap();
        let loss_of = |net: &FmnistNet| {
            candle_nn::loss::cross_entropy(&net.logits(&x).unwrap(), &y)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let loss = candle_nn::loss::cross_entropy(&net.logits(&x).unwrap(), &y).unwrap();
        let grads = loss.backward().unwrap();
        let data = vm.data().lock().unwrap();
        for name in [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
        ] {
            let var = &data[name];
            let g: Vec<f64> = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for k in [0, base.len() / 3, base.len() - 1] {
                let h = 1e-5;
                let eval = |delta: f64| {
                    let mut v = base.clone();
                    v[k] += delta;
                    var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
                        .unwrap();
                    loss_of(&net)
                };
                let fd = (eval(h) - eval(-h)) / (2.0 * h);
                eval(0.0);
                assert!(
                    (fd - g[k]).abs() <= 1e-6 + 1e-4 * fd.abs(),
                    "{name}[{k}]: autograd {} vs finite difference {fd}",
                    g[k]
                );
            }
        }
    }

    #[test]
    fn training_decreases_the_loss_on_a_tiny_set() {
        let (net, vm) = fresh(DType::F32, 5);
        let (x, y) = toy(60, 6);
        let cfg = TrainConfig {
            epochs: 4,
            batch_size: 20,
            lr: 3e-3,
            lr_schedule: LrSchedule::Constant,
            seed: 5,
        };
        let mut steps = 0;
        let losses = train(&net, &vm, &x, &y, &cfg, |_, _, n, _| {
            assert_eq!(n, 3);
            steps += 1;
        })
        .unwrap();
        assert_eq!(steps, 12);
        assert!(losses[3] < 0.5 * losses[0], "{losses:?}");
        // ln 10 ≈ 2.30 is the loss of a uniform guess; the initial epoch starts near it.
        assert!(losses[0] < 2.6, "{losses:?}");
        let acc = accuracy(&net, &x, &y, 7).unwrap();
        assert!(acc > 0.5, "accuracy {acc}");
    }

    #[test]
    fn learning_rate_schedules() {
        let base = 0.4;
        for step in [0, 3, 9] {
            assert_eq!(LrSchedule::Constant.rate(base, step, 10), base);
        }
        let c = |step| LrSchedule::Cosine.rate(base, step, 8);
        // Half a cosine: the base rate at the start, half of it midway, (1 − cos 45°)/2 of it at 3/4.
        assert!((c(0) - 0.4).abs() < 1e-15);
        assert!((c(4) - 0.2).abs() < 1e-15);
        assert!((c(6) - 0.4 * (1.0 - 0.5f64.sqrt()) / 2.0).abs() < 1e-15);
        assert!(c(7) > 0.0 && c(7) < c(6));
    }

    #[test]
    fn training_applies_the_schedule() {
        // Same seed and data: only the rates differ, so the weights must (one step per epoch, so the
        // second epoch runs at half the rate under the cosine and at the full rate without it).
        let (x, y) = toy(20, 11);
        let run = |lr_schedule| {
            let (net, vm) = fresh(DType::F32, 12);
            let cfg = TrainConfig {
                epochs: 2,
                batch_size: 20,
                lr: 1e-2,
                lr_schedule,
                seed: 13,
            };
            train(&net, &vm, &x, &y, &cfg, |_, _, _, _| {}).unwrap();
            net.features(&x).unwrap().to_vec2::<f32>().unwrap()
        };
        assert_ne!(run(LrSchedule::Constant), run(LrSchedule::Cosine));
    }

    #[test]
    fn checkpoint_round_trip() {
        let (net, vm) = fresh(DType::F32, 9);
        let dir = std::env::temp_dir().join(format!("msd-fmnist-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.safetensors");
        vm.save(&path).unwrap();
        let back = FmnistNet::from_safetensors(&path, &Device::Cpu).unwrap();
        let (x, _) = toy(2, 10);
        assert_eq!(
            net.features(&x).unwrap().to_vec2::<f32>().unwrap(),
            back.features(&x).unwrap().to_vec2::<f32>().unwrap()
        );
        std::fs::write(&path, b"junk").unwrap();
        let err = FmnistNet::from_safetensors(&path, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
