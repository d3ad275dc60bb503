//! The FID variant of Inception-v3 (pytorch-fid's `fid_inception_v3`, the network of TensorFlow's
//! `inception-2015-12-05` graph): 2048-d pool3 features, forward only.
//!
//! Structure, as pytorch-fid builds it from torchvision's Inception-v3 with its FID patches:
//! - input B × 3 × H × W in [0, 1] (1 channel is repeated to 3, as converting grey images to RGB does),
//!   bilinearly resized to 299 × 299 (`F.interpolate(mode="bilinear", align_corners=False)`, no antialias),
//!   then scaled to [−1, 1] by 2x − 1;
//! - stem: Conv2d_1a_3x3 (3→32, stride 2), Conv2d_2a_3x3 (32→32), Conv2d_2b_3x3 (32→64, pad 1), max-pool 3/2,
//!   Conv2d_3b_1x1 (64→80), Conv2d_4a_3x3 (80→192), max-pool 3/2;
//! - Mixed_5b/5c/5d: FIDInceptionA (pool features 32, 64, 64); Mixed_6a: InceptionB;
//!   Mixed_6b..6e: FIDInceptionC (7×7 channels 128, 160, 160, 192); Mixed_7a: InceptionD;
//!   Mixed_7b: FIDInceptionE_1; Mixed_7c: FIDInceptionE_2; global average pool → 2048.
//! - Every convolution is a torchvision `BasicConv2d`: conv without bias, BatchNorm (eps = 0.001, running
//!   statistics) and ReLU. The batch norm is folded into the convolution at load time.
//! - The FID patches: the average-pool branches of A, C and E_1 exclude the zero padding from the average
//!   (`count_include_pad=False`, as TensorFlow does); E_2's pool branch is a 3 × 3 max-pool (stride 1, pad 1).
//!
//! Weights come from a safetensors file whose tensor names are pytorch-fid's state-dict keys, e.g.
//! `Mixed_5b.branch1x1.conv.weight`, `Mixed_5b.branch1x1.bn.{weight,bias,running_mean,running_var}`; the
//! full list is [`tensor_specs`]. `scripts/convert_inception_weights.py` converts pytorch-fid's
//! `pt_inception-2015-12-05-6726825d.pth` to that file. Extra tensors (`fc.*`, `num_batches_tracked`) are
//! ignored.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::AccelError;

/// Side of the square the network sees.
pub const INPUT_SIZE: usize = 299;
/// Dimension of the pool3 features.
pub const FEATURE_DIM: usize = 2048;
/// torchvision's BasicConv2d batch-norm epsilon.
pub const BN_EPS: f64 = 1e-3;

/// Kernel size, stride and padding of one convolution (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub kernel: (usize, usize),
    pub stride: usize,
    pub pad: (usize, usize),
}

const fn geom(kh: usize, kw: usize, stride: usize, ph: usize, pw: usize) -> ConvGeom {
    ConvGeom {
        kernel: (kh, kw),
        stride,
        pad: (ph, pw),
    }
}

const K1: ConvGeom = geom(1, 1, 1, 0, 0);
const K3: ConvGeom = geom(3, 3, 1, 0, 0);
const K3P: ConvGeom = geom(3, 3, 1, 1, 1);
const K3S2: ConvGeom = geom(3, 3, 2, 0, 0);
const K5P: ConvGeom = geom(5, 5, 1, 2, 2);
const K1X7: ConvGeom = geom(1, 7, 1, 0, 3);
const K7X1: ConvGeom = geom(7, 1, 1, 3, 0);
const K1X3: ConvGeom = geom(1, 3, 1, 0, 1);
const K3X1: ConvGeom = geom(3, 1, 1, 1, 0);

/// Conv + folded BatchNorm + ReLU (torchvision's BasicConv2d in eval mode).
#[derive(Debug, Clone)]
pub struct BasicConv {
    weight: Tensor,
    bias: Tensor,
    geom: ConvGeom,
}

impl BasicConv {
    /// Loads `{prefix}.conv.weight` (out × in × kh × kw) and `{prefix}.bn.*` (out each) and folds the batch norm:
    /// w' = w·γ/√(var + ε), b' = β − mean·γ/√(var + ε).
    pub fn load(
        vb: &VarBuilder,
        cin: usize,
        cout: usize,
        geom: ConvGeom,
    ) -> Result<Self, AccelError> {
        let (kh, kw) = geom.kernel;
        let w = vb.pp("conv").get((cout, cin, kh, kw), "weight")?;
        let bn = vb.pp("bn");
        let gamma = bn.get(cout, "weight")?;
        let beta = bn.get(cout, "bias")?;
        let mean = bn.get(cout, "running_mean")?;
        let var = bn.get(cout, "running_var")?;
        let var_v: Vec<f32> = var.to_dtype(DType::F32)?.to_vec1()?;
        if let Some(v) = var_v.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(AccelError::Shape(format!(
                "{}.bn.running_var has an invalid value {v} (must be finite and >= 0)",
                vb.prefix()
            )));
        }
        let scale = ((var + BN_EPS)?.sqrt()?.recip()? * gamma)?;
        let weight = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
        let bias = (beta - (mean * &scale)?)?.reshape((1, cout, 1, 1))?;
        Ok(Self { weight, bias, geom })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, AccelError> {
        // candle's conv2d pads both sides of both axes equally; the 1×7 / 7×1 / 1×3 / 3×1 kernels need
        // different padding per axis, so pad explicitly.
        let (ph, pw) = self.geom.pad;
        let x = x
            .pad_with_zeros(D::Minus2, ph, ph)?
            .pad_with_zeros(D::Minus1, pw, pw)?;
        let y = x.conv2d(&self.weight, 0, self.geom.stride, 1, 1)?;
        Ok(y.broadcast_add(&self.bias)?.relu()?)
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
}

/// 3 × 3 average pool, stride 1, zero padding 1, averaging only over the positions inside the image
/// (`count_include_pad=False`).
pub fn avg_pool3_exclude_pad(x: &Tensor) -> Result<Tensor, AccelError> {
    let (_, _, h, w) = x.dims4()?;
    let sum = (x
        .pad_with_zeros(D::Minus2, 1, 1)?
        .pad_with_zeros(D::Minus1, 1, 1)?
        .avg_pool2d_with_stride(3, 1)?
        * 9.0)?;
    // Number of in-image positions in each window: rows(i)·cols(j).
    let valid =
        |n: usize, i: usize| -> f32 { (1 + usize::from(i > 0) + usize::from(i + 1 < n)) as f32 };
    let counts: Vec<f32> = (0..h)
        .flat_map(|i| (0..w).map(move |j| valid(h, i) * valid(w, j)))
        .collect();
    let counts = Tensor::from_vec(counts, (1, 1, h, w), x.device())?.to_dtype(x.dtype())?;
    Ok(sum.broadcast_div(&counts)?)
}

/// 3 × 3 max pool, stride 1, padding 1 (padding never wins: edge replication pads with values already
/// inside every window that reaches the padding, which is the same as padding with −∞).
pub fn max_pool3_same(x: &Tensor) -> Result<Tensor, AccelError> {
    Ok(x.pad_with_same(D::Minus2, 1, 1)?
        .pad_with_same(D::Minus1, 1, 1)?
        .max_pool2d_with_stride(3, 1)?)
}

/// 3 × 3 max pool with stride 2 and no padding (torchvision's MaxPool2d(3, stride=2)).
pub fn max_pool3_s2(x: &Tensor) -> Result<Tensor, AccelError> {
    Ok(x.max_pool2d_with_stride(3, 2)?)
}

/// FIDInceptionA: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool(excl. pad)→1×1; out 224 + pool_features.
#[derive(Debug, Clone)]
pub struct BlockA {
    b1: BasicConv,
    b5: [BasicConv; 2],
    b3: [BasicConv; 3],
    pool: BasicConv,
}

impl BlockA {
    pub fn load(vb: &VarBuilder, cin: usize, pool_features: usize) -> Result<Self, AccelError> {
        Ok(Self {
            b1: BasicConv::load(&vb.pp("branch1x1"), cin, 64, K1)?,
            b5: [
                BasicConv::load(&vb.pp("branch5x5_1"), cin, 48, K1)?,
                BasicConv::load(&vb.pp("branch5x5_2"), 48, 64, K5P)?,
            ],
            b3: [
                BasicConv::load(&vb.pp("branch3x3dbl_1"), cin, 64, K1)?,
                BasicConv::load(&vb.pp("branch3x3dbl_2"), 64, 96, K3P)?,
                BasicConv::load(&vb.pp("branch3x3dbl_3"), 96, 96, K3P)?,
            ],
            pool: BasicConv::load(&vb.pp("branch_pool"), cin, pool_features, K1)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, AccelError> {
        let a = self.b1.forward(x)?;
        let b = chain(&self.b5, x)?;
        let c = chain(&self.b3, x)?;
        let d = self.pool.forward(&avg_pool3_exclude_pad(x)?)?;
        Ok(Tensor::cat(&[a, b, c, d], 1)?)
    }
}

fn chain(convs: &[BasicConv], x: &Tensor) -> Result<Tensor, AccelError> {
    let mut y = x.clone();
    for c in convs {
        y = c.forward(&y)?;
    }
    Ok(y)
}

/// InceptionB (Mixed_6a): 3×3/2 | 1×1→3×3→3×3/2 | max-pool 3/2; out 384 + 96 + cin.
#[derive(Debug, Clone)]
pub struct BlockB {
    b3: BasicConv,
    b3dbl: [BasicConv; 3],
}

impl BlockB {
    pub fn load(vb: &VarBuilder, cin: usize) -> Result<Self, AccelError> {
        Ok(Self {
            b3: BasicConv::load(&vb.pp("branch3x3"), cin, 384, K3S2)?,
            b3dbl: [
                BasicConv::load(&vb.pp("branch3x3dbl_1"), cin, 64, K1)?,
                BasicConv::load(&vb.pp("branch3x3dbl_2"), 64, 96, K3P)?,
                BasicConv::load(&vb.pp("branch3x3dbl_3"), 96, 96, K3S2)?,
            ],
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, AccelError> {
        let a = self.b3.forward(x)?;
        let b = chain(&self.b3dbl, x)?;
        let c = max_pool3_s2(x)?;
        Ok(Tensor::cat(&[a, b, c], 1)?)
    }
}

/// FIDInceptionC: 1×1 | 1×1→1×7→7×1 | 1×1→7×1→1×7→7×1→1×7 | avg-pool(excl. pad)→1×1; out 768.
#[derive(Debug, Clone)]
pub struct BlockC {
    b1: BasicConv,
    b7: [BasicConv; 3],
    b7dbl: [BasicConv; 5],
    pool: BasicConv,
}

impl BlockC {
    pub fn load(vb: &VarBuilder, cin: usize, c7: usize) -> Result<Self, AccelError> {
        Ok(Self {
            b1: BasicConv::load(&vb.pp("branch1x1"), cin, 192, K1)?,
            b7: [
                BasicConv::load(&vb.pp("branch7x7_1"), cin, c7, K1)?,
                BasicConv::load(&vb.pp("branch7x7_2"), c7, c7, K1X7)?,
                BasicConv::load(&vb.pp("branch7x7_3"), c7, 192, K7X1)?,
            ],
            b7dbl: [
                BasicConv::load(&vb.pp("branch7x7dbl_1"), cin, c7, K1)?,
                BasicConv::load(&vb.pp("branch7x7dbl_2"), c7, c7, K7X1)?,
                BasicConv::load(&vb.pp("branch7x7dbl_3"), c7, c7, K1X7)?,
                BasicConv::load(&vb.pp("branch7x7dbl_4"), c7, c7, K7X1)?,
                BasicConv::load(&vb.pp("branch7x7dbl_5"), c7, 192, K1X7)?,
            ],
            pool: BasicConv::load(&vb.pp("branch_pool"), cin, 192, K1)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, AccelError> {
        let a = self.b1.forward(x)?;
        let b = chain(&self.b7, x)?;
        let c = chain(&self.b7dbl, x)?;
        let d = self.pool.forward(&avg_pool3_exclude_pad(x)?)?;
        Ok(Tensor::cat(&[a, b, c, d], 1)?)
    }
}

/// InceptionD (Mixed_7a): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max-pool 3/2; out 320 + 192 + cin.
#[derive(Debug, Clone)]
pub struct BlockD {
    b3: [BasicConv; 2],
    b7x3: [BasicConv; 4],
}

impl BlockD {
    pub fn load(vb: &VarBuilder, cin: usize) -> Result<Self, AccelError> {
        Ok(Self {
            b3: [
                BasicConv::load(&vb.pp("branch3x3_1"), cin, 192, K1)?,
                BasicConv::load(&vb.pp("branch3x3_2"), 192, 320, K3S2)?,
            ],
            b7x3: [
                BasicConv::load(&vb.pp("branch7x7x3_1"), cin, 192, K1)?,
                BasicConv::load(&vb.pp("branch7x7x3_2"), 192, 192, K1X7)?,
                BasicConv::load(&vb.pp("branch7x7x3_3"), 192, 192, K7X1)?,
                BasicConv::load(&vb.pp("branch7x7x3_4"), 192, 192, K3S2)?,
            ],
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, AccelError> {
        let a = chain(&self.b3, x)?;
        let b = chain(&self.b7x3, x)?;
        let c = max_pool3_s2(x)?;
        Ok(Tensor::cat(&[a, b, c], 1)?)
    }
}

/// Which pool the E block's pool branch uses: E_1 averages (excluding padding), E_2 takes the max.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EPool {
    Avg,
    Max,
}

/// FIDInceptionE_1 / E_2: 1×1 | 1×1→[1×3, 3×1] | 1×1→3×3→[1×3, 3×1] | pool→1×1; out 2048.
#[derive(Debug, Clone)]
pub struct BlockE {
    b1: BasicConv,
    b3_1: BasicConv,
    b3_2a: BasicConv,
    b3_2b: BasicConv,
    bd_1: BasicConv,
    bd_2: BasicConv,
    bd_3a: BasicConv,
    bd_3b: BasicConv,
    pool: BasicConv,
    pool_kind: EPool,
}

impl BlockE {
    pub fn load(vb: &VarBuilder, cin: usize, pool_kind: EPool) -> Result<Self, AccelError> {
        Ok(Self {
            b1: BasicConv::load(&vb.pp("branch1x1"), cin, 320, K1)?,
            b3_1: BasicConv::load(&vb.pp("branch3x3_1"), cin, 384, K1)?,
            b3_2a: BasicConv::load(&vb.pp("branch3x3_2a"), 384, 384, K1X3)?,
            b3_2b: BasicConv::load(&vb.pp("branch3x3_2b"), 384, 384, K3X1)?,
            bd_1: BasicConv::load(&vb.pp("branch3x3dbl_1"), cin, 448, K1)?,
            bd_2: BasicConv::load(&vb.pp("branch3x3dbl_2"), 448, 384, K3P)?,
            bd_3a: BasicConv::load(&vb.pp("branch3x3dbl_3a"), 384, 384, K1X3)?,
            bd_3b: BasicConv::load(&vb.pp("branch3x3dbl_3b"), 384, 384, K3X1)?,
            pool: BasicConv::load(&vb.pp("branch_pool"), cin, 192, K1)?,
            pool_kind,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, AccelError> {
        let a = self.b1.forward(x)?;
        let t = self.b3_1.forward(x)?;
        let b = Tensor::cat(&[self.b3_2a.forward(&t)?, self.b3_2b.forward(&t)?], 1)?;
        let u = self.bd_2.forward(&self.bd_1.forward(x)?)?;
        let c = Tensor::cat(&[self.bd_3a.forward(&u)?, self.bd_3b.forward(&u)?], 1)?;
        let p = match self.pool_kind {
            EPool::Avg => avg_pool3_exclude_pad(x)?,
            EPool::Max => max_pool3_same(x)?,
        };
        let d = self.pool.forward(&p)?;
        Ok(Tensor::cat(&[a, b, c, d], 1)?)
    }
}

/// Bilinear interpolation weights of PyTorch's `F.interpolate(size=out, mode="bilinear",
/// align_corners=False)` along one axis, as an out × in matrix: output i samples the input at
/// s = (i + ½)·in/out − ½, clamped below at 0, between ⌊s⌋ and min(⌊s⌋ + 1, in − 1).
pub fn bilinear_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    let mut m = vec![0f32; n_out * n_in];
    let scale = n_in as f64 / n_out as f64;
    for i in 0..n_out {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let l1 = src - i0 as f64;
        m[i * n_in + i0] += (1.0 - l1) as f32;
        m[i * n_in + i1] += l1 as f32;
    }
    m
}

/// Resizes B × C × H × W to B × C × out_h × out_w with [`bilinear_matrix`] along each axis (two matrix
/// products; the identity when the size already matches).
pub fn resize_bilinear(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor, AccelError> {
    let (b, c, h, w) = x.dims4()?;
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    let dev = x.device();
    let rw = Tensor::from_vec(bilinear_matrix(w, out_w), (out_w, w), dev)?.to_dtype(x.dtype())?;
    let rh = Tensor::from_vec(bilinear_matrix(h, out_h), (out_h, h), dev)?.to_dtype(x.dtype())?;
    let t = x
        .contiguous()?
        .reshape((b * c * h, w))?
        .matmul(&rw.t()?)?
        .reshape((b * c, h, out_w))?;
    let y = rh.broadcast_matmul(&t)?;
    Ok(y.reshape((b, c, out_h, out_w))?)
}

/// The FID Inception-v3 up to its 2048-d pool3 features.
#[derive(Debug, Clone)]
pub struct FidInception {
    stem: [BasicConv; 5],
    mixed_5: [BlockA; 3],
    mixed_6a: BlockB,
    mixed_6: [BlockC; 4],
    mixed_7a: BlockD,
    mixed_7b: BlockE,
    mixed_7c: BlockE,
}

impl FidInception {
    /// Builds the network from tensors named as in pytorch-fid's state dict (see [`tensor_specs`]).
    pub fn new(vb: &VarBuilder) -> Result<Self, AccelError> {
        Ok(Self {
            stem: [
                BasicConv::load(&vb.pp("Conv2d_1a_3x3"), 3, 32, geom(3, 3, 2, 0, 0))?,
                BasicConv::load(&vb.pp("Conv2d_2a_3x3"), 32, 32, K3)?,
                BasicConv::load(&vb.pp("Conv2d_2b_3x3"), 32, 64, K3P)?,
                BasicConv::load(&vb.pp("Conv2d_3b_1x1"), 64, 80, K1)?,
                BasicConv::load(&vb.pp("Conv2d_4a_3x3"), 80, 192, K3)?,
            ],
            mixed_5: [
                BlockA::load(&vb.pp("Mixed_5b"), 192, 32)?,
                BlockA::load(&vb.pp("Mixed_5c"), 256, 64)?,
                BlockA::load(&vb.pp("Mixed_5d"), 288, 64)?,
            ],
            mixed_6a: BlockB::load(&vb.pp("Mixed_6a"), 288)?,
            mixed_6: [
                BlockC::load(&vb.pp("Mixed_6b"), 768, 128)?,
                BlockC::load(&vb.pp("Mixed_6c"), 768, 160)?,
                BlockC::load(&vb.pp("Mixed_6d"), 768, 160)?,
                BlockC::load(&vb.pp("Mixed_6e"), 768, 192)?,
            ],
            mixed_7a: BlockD::load(&vb.pp("Mixed_7a"), 768)?,
            mixed_7b: BlockE::load(&vb.pp("Mixed_7b"), 1280, EPool::Avg)?,
            mixed_7c: BlockE::load(&vb.pp("Mixed_7c"), 2048, EPool::Max)?,
        })
    }

    /// Loads a safetensors file of pytorch-fid's weights (converted with
    /// `scripts/convert_inception_weights.py`) onto `device`, as f32.
    pub fn from_safetensors(path: &Path, device: &Device) -> Result<Self, AccelError> {
        let vb = crate::safetensors_io::f32_var_builder(path, device, "Inception weights")?;
        Self::new(&vb).map_err(|e| {
            AccelError::Shape(format!(
                "{}: not pytorch-fid Inception weights: {e} (convert pt_inception-2015-12-05 with \
                 scripts/convert_inception_weights.py)",
                path.display()
            ))
        })
    }

    /// Features of images given at 299 × 299 in [−1, 1] (after resizing and scaling).
    pub fn forward_prepared(&self, x: &Tensor) -> Result<Tensor, AccelError> {
        let [c1a, c2a, c2b, c3b, c4a] = &self.stem;
        let mut x = c2b.forward(&c2a.forward(&c1a.forward(x)?)?)?;
        x = max_pool3_s2(&x)?;
        x = c4a.forward(&c3b.forward(&x)?)?;
        x = max_pool3_s2(&x)?;
        for a in &self.mixed_5 {
            x = a.forward(&x)?;
        }
        x = self.mixed_6a.forward(&x)?;
        for c in &self.mixed_6 {
            x = c.forward(&x)?;
        }
        x = self.mixed_7a.forward(&x)?;
        x = self.mixed_7b.forward(&x)?;
        x = self.mixed_7c.forward(&x)?;
        Ok(x.flatten_from(2)?.mean(2)?)
    }

    /// pool3 features (B × 2048) of images B × C × H × W (C = 1 or 3) with values in [0, 1].
    pub fn features(&self, images: &Tensor) -> Result<Tensor, AccelError> {
        let (_, c, _, _) = images.dims4()?;
        let x = match c {
            3 => images.clone(),
            1 => images.repeat((1, 3, 1, 1))?,
            _ => {
                return Err(AccelError::Shape(format!(
                    "Inception takes 1- or 3-channel images, got {c} channels"
                )))
            }
        };
        let x = resize_bilinear(&x.to_dtype(DType::F32)?, INPUT_SIZE, INPUT_SIZE)?;
        let x = ((x * 2.0)? - 1.0)?;
        self.forward_prepared(&x)
    }
}

impl Module for FidInception {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.features(xs)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

/// Names and shapes of every tensor the network reads, in pytorch-fid's state-dict naming. Per BasicConv
/// `P`: `P.conv.weight` (out, in, kh, kw) and `P.bn.weight`, `P.bn.bias`, `P.bn.running_mean`,
/// `P.bn.running_var` (out).
pub fn tensor_specs() -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut conv = |p: &str, cin: usize, cout: usize, g: ConvGeom| {
        out.push((
            format!("{p}.conv.weight"),
            vec![cout, cin, g.kernel.0, g.kernel.1],
        ));
        for t in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{p}.bn.{t}"), vec![cout]));
        }
    };
    conv("Conv2d_1a_3x3", 3, 32, geom(3, 3, 2, 0, 0));
    conv("Conv2d_2a_3x3", 32, 32, K3);
    conv("Conv2d_2b_3x3", 32, 64, K3P);
    conv("Conv2d_3b_1x1", 64, 80, K1);
    conv("Conv2d_4a_3x3", 80, 192, K3);
    for (name, cin, pf) in [
        ("Mixed_5b", 192, 32),
        ("Mixed_5c", 256, 64),
        ("Mixed_5d", 288, 64),
    ] {
        conv(&format!("{name}.branch1x1"), cin, 64, K1);
        conv(&format!("{name}.branch5x5_1"), cin, 48, K1);
        conv(&format!("{name}.branch5x5_2"), 48, 64, K5P);
        conv(&format!("{name}.branch3x3dbl_1"), cin, 64, K1);
        conv(&format!("{name}.branch3x3dbl_2"), 64, 96, K3P);
        conv(&format!("{name}.branch3x3dbl_3"), 96, 96, K3P);
        conv(&format!("{name}.branch_pool"), cin, pf, K1);
    }
    conv("Mixed_6a.branch3x3", 288, 384, K3S2);
    conv("Mixed_6a.branch3x3dbl_1", 288, 64, K1);
    conv("Mixed_6a.branch3x3dbl_2", 64, 96, K3P);
    conv("Mixed_6a.branch3x3dbl_3", 96, 96, K3S2);
    for (name, c7) in [
        ("Mixed_6b", 128),
        ("Mixed_6c", 160),
        ("Mixed_6d", 160),
        ("Mixed_6e", 192),
    ] {
        conv(&format!("{name}.branch1x1"), 768, 192, K1);
        conv(&format!("{name}.branch7x7_1"), 768, c7, K1);
        conv(&format!("{name}.branch7x7_2"), c7, c7, K1X7);
        conv(&format!("{name}.branch7x7_3"), c7, 192, K7X1);
        conv(&format!("{name}.branch7x7dbl_1"), 768, c7, K1);
        conv(&format!("{name}.branch7x7dbl_2"), c7, c7, K7X1);
        conv(&format!("{name}.branch7x7dbl_3"), c7, c7, K1X7);
        conv(&format!("{name}.branch7x7dbl_4"), c7, c7, K7X1);
        conv(&format!("{name}.branch7x7dbl_5"), c7, 192, K1X7);
        conv(&format!("{name}.branch_pool"), 768, 192, K1);
    }
    conv("Mixed_7a.branch3x3_1", 768, 192, K1);
    conv("Mixed_7a.branch3x3_2", 192, 320, K3S2);
    conv("Mixed_7a.branch7x7x3_1", 768, 192, K1);
    conv("Mixed_7a.branch7x7x3_2", 192, 192, K1X7);
    conv("Mixed_7a.branch7x7x3_3", 192, 192, K7X1);
    conv("Mixed_7a.branch7x7x3_4", 192, 192, K3S2);
    for (name, cin) in [("Mixed_7b", 1280), ("Mixed_7c", 2048)] {
        conv(&format!("{name}.branch1x1"), cin, 320, K1);
        conv(&format!("{name}.branch3x3_1"), cin, 384, K1);
        conv(&format!("{name}.branch3x3_2a"), 384, 384, K1X3);
        conv(&format!("{name}.branch3x3_2b"), 384, 384, K3X1);
        conv(&format!("{name}.branch3x3dbl_1"), cin, 448, K1);
        conv(&format!("{name}.branch3x3dbl_2"), 448, 384, K3P);
        conv(&format!("{name}.branch3x3dbl_3a"), 384, 384, K1X3);
        conv(&format!("{name}.branch3x3dbl_3b"), 384, 384, K3X1);
        conv(&format!("{name}.branch_pool"), cin, 192, K1);
    }
    out
}

#[cfg(test)]
#[path = "inception_tests.rs"]
mod tests;
