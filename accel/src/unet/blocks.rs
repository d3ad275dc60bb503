//! Building blocks shared by the three U-Net families, each with a forward pass on candle tensors and a
//! shape-only cost walk (multiply-accumulates) used by the accounting.
//!
//! Only ops whose gradients were checked (docs/conventions.md §6) are used: conv2d, conv_transpose2d,
//! GroupNorm, SiLU, avg_pool2d, matmul, the generic `candle_nn::ops::softmax`, cat/narrow/index_select,
//! broadcast+reshape nearest upsampling (never `upsample_nearest2d`, whose backward is wrong).

use std::sync::Mutex;

use candle_core::{DType, Result, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

use super::params::{Init, Pb};
use crate::kernels;

/// Channels × height × width of one feature map (batch excluded).
pub type Chw = (usize, usize, usize);

/// Multiply-accumulate counts of one forward pass at batch 1.
///
/// The counts use saturating arithmetic ([`macs_of`], [`Cost::add_macs`], `+`): a count that does not fit
/// in u64 sticks at `u64::MAX` instead of wrapping, and the accounting reports it as "model too large"
/// ([`super::accounting::model_info`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// The paper's convention (torchstat): Conv2d `(Cin·k²·Cout + Cout)·Hout·Wout` and Linear `in·out`, only for
    /// the layers torchstat sees (plain `nn.Conv2d`/`nn.Linear` in the authors' code).
    pub paper_macs: u64,
    /// All multiply-accumulates: every convolution (weights, no bias adds), linear/NIN layer, attention
    /// matmul (QKᵀ and AV) and resampling filter. True FLOPs = 2 × this.
    pub macs: u64,
}

impl Cost {
    /// Adds multiply-accumulates seen by the true-FLOP count only.
    pub fn add_macs(&mut self, macs: u64) {
        self.macs = self.macs.saturating_add(macs);
    }
    /// Adds multiply-accumulates seen by both counts.
    pub fn add_both(&mut self, macs: u64, paper_macs: u64) {
        self.macs = self.macs.saturating_add(macs);
        self.paper_macs = self.paper_macs.saturating_add(paper_macs);
    }
    /// Whether a count has saturated (did not fit u64).
    pub fn overflowed(&self) -> bool {
        self.macs == u64::MAX || self.paper_macs == u64::MAX
    }
}

/// The product of `factors` in u64, saturating at `u64::MAX` (never wrapping, in any build).
pub fn macs_of(factors: &[usize]) -> u64 {
    factors
        .iter()
        .fold(1u64, |a, &f| a.saturating_mul(f as u64))
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.add_both(o.macs, o.paper_macs);
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(mut self, o: Cost) -> Cost {
        self += o;
        self
    }
}

/// Forward-pass context: dropout is active only when a training RNG is given.
#[derive(Default)]
pub struct Ctx<'a> {
    pub train_rng: Option<&'a Mutex<StdRng>>,
}

impl Ctx<'_> {
    /// The seed of the next dropout mask with probability `p`, drawn from our own seeded training RNG
    /// (candle's CPU RNG cannot be seeded); `None` when dropout is off (evaluation, or `p ≤ 0`). The
    /// masks themselves: [`crate::kernels::dropout`].
    fn dropout_seed(&self, p: f64) -> Result<Option<u64>> {
        let Some(rng) = self.train_rng else {
            return Ok(None);
        };
        if p <= 0.0 {
            return Ok(None);
        }
        let seed = rng
            .lock()
            .map_err(|_| candle_core::Error::Msg("dropout RNG lock poisoned".into()))?
            .random::<u64>();
        Ok(Some(seed))
    }
}

/// 2-D convolution, weight `[out, in, k, k]`, optional bias `[out]`.
#[derive(Debug, Clone)]
pub struct Conv {
    w: Tensor,
    b: Option<Tensor>,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// Whether torchstat counts this layer (a plain `nn.Conv2d` in the authors' code).
    pub paper_visible: bool,
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pb: &Pb,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        init: Init,
        paper_visible: bool,
    ) -> Result<Self> {
        let w = pb.get("weight", &[cout, cin, k, k], init)?;
        let b = Some(pb.get("bias", &[cout], bias_init(init, cin * k * k))?);
        Ok(Self {
            w,
            b,
            cin,
            cout,
            k,
            stride,
            pad,
            paper_visible,
        })
    }

    pub fn new_no_bias(pb: &Pb, cin: usize, cout: usize, k: usize, init: Init) -> Result<Self> {
        let w = pb.get("weight", &[cout, cin, k, k], init)?;
        Ok(Self {
            w,
            b: None,
            cin,
            cout,
            k,
            stride: 1,
            pad: k / 2,
            paper_visible: true,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if kernels::enabled() && x.device().is_cpu() {
            // im2col + one GEMM per batch chunk, for 1×1 too, the bias added in the same pass (see
            // `crate::kernels`).
            return match &self.b {
                Some(b) => kernels::conv2d_bias(x, &self.w, b, self.stride, self.pad),
                None => kernels::conv2d(x, &self.w, self.stride, self.pad),
            };
        } else if self.k == 1 && self.stride == 1 {
            // 1×1 convolution as a batched matmul (avoids im2col copies).
            let (b, c, h, w) = x.dims4()?;
            let w2 = self.w.reshape((self.cout, self.cin))?;
            w2.broadcast_matmul(&x.reshape((b, c, h * w))?)?
                .reshape((b, self.cout, h, w))?
        } else {
            x.conv2d(&self.w, self.pad, self.stride, 1, 1)?
        };
        match &self.b {
            Some(b) => y.broadcast_add(&b.reshape((1, self.cout, 1, 1))?),
            None => Ok(y),
        }
    }

    /// `forward(x)` plus `extra` (`[B, Cout]`, e.g. a block's time embedding) broadcast over positions. With
    /// the kernels the two biases are summed first (`[B, Cout]`) and added by the convolution's output pass:
    /// one activation-sized tensor and one pass fewer than a separate broadcast add.
    pub fn forward_biased(&self, x: &Tensor, extra: &Tensor) -> Result<Tensor> {
        if kernels::enabled() && x.device().is_cpu() {
            let bias = match &self.b {
                Some(own) => extra.broadcast_add(&own.reshape((1, self.cout))?)?,
                None => extra.clone(),
            };
            return kernels::conv2d_bias(x, &self.w, &bias, self.stride, self.pad);
        }
        self.forward(x)?
            .broadcast_add(&extra.reshape((x.dim(0)?, self.cout, 1, 1))?)
    }

    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.pad - self.k) / self.stride + 1,
            (w + 2 * self.pad - self.k) / self.stride + 1,
        )
    }

    /// Cost at input size `h × w`; returns the output map.
    pub fn cost(&self, (c, h, w): Chw, cost: &mut Cost) -> Chw {
        debug_assert_eq!(c, self.cin);
        let (ho, wo) = self.out_hw(h, w);
        let mac = macs_of(&[self.cin, self.k, self.k, self.cout, ho, wo]);
        if self.paper_visible {
            let bias = if self.b.is_some() {
                macs_of(&[self.cout, ho, wo])
            } else {
                0
            };
            cost.add_both(mac, mac.saturating_add(bias));
        } else {
            cost.add_macs(mac);
        }
        (self.cout, ho, wo)
    }
}

fn bias_init(init: Init, fan_in: usize) -> Init {
    match init {
        Init::TorchDefault { .. } => Init::TorchDefault { fan_in },
        _ => Init::Zeros,
    }
}

/// Fully connected layer, weight `[out, in]`, bias `[out]` (optional).
#[derive(Debug, Clone)]
pub struct Linear {
    w: Tensor,
    b: Option<Tensor>,
    pub fin: usize,
    pub fout: usize,
    pub paper_visible: bool,
}

impl Linear {
    pub fn new(
        pb: &Pb,
        fin: usize,
        fout: usize,
        bias: bool,
        init: Init,
        paper_visible: bool,
    ) -> Result<Self> {
        let w = pb.get("weight", &[fout, fin], init)?;
        let b = if bias {
            Some(pb.get("bias", &[fout], bias_init(init, fin))?)
        } else {
            None
        };
        Ok(Self {
            w,
            b,
            fin,
            fout,
            paper_visible,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w.t()?)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    pub fn cost(&self, cost: &mut Cost) {
        let mac = macs_of(&[self.fin, self.fout]);
        if self.paper_visible {
            cost.add_both(mac, mac);
        } else {
            cost.add_macs(mac);
        }
    }
}

/// score-SDE `NIN`: a per-pixel linear layer with weight `W [in, out]` and bias `b [out]` (custom module:
/// invisible to torchstat).
#[derive(Debug, Clone)]
pub struct Nin {
    w: Tensor,
    b: Tensor,
    pub cin: usize,
    pub cout: usize,
}

impl Nin {
    pub fn new(pb: &Pb, cin: usize, cout: usize, init_scale: f64) -> Result<Self> {
        let w = pb.get("W", &[cin, cout], Init::FanAvgUniform { scale: init_scale })?;
        let b = pb.get("b", &[cout], Init::Zeros)?;
        Ok(Self { w, b, cin, cout })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if kernels::enabled() && x.device().is_cpu() {
            // A 1×1 convolution with weight Wᵀ: the bias is added in the kernel's output pass and its
            // gradient summed there, where the broadcast add below costs an activation-sized tensor and a
            // reduction over batch and positions in the backward (~3 % of an NCSN++ training step).
            let w = self.w.t()?.reshape((self.cout, self.cin, 1, 1))?;
            return kernels::conv2d_bias(x, &w, &self.b, 1, 0);
        }
        let (b, c, h, w) = x.dims4()?;
        let y = self.w.t()?.broadcast_matmul(&x.reshape((b, c, h * w))?)?;
        y.broadcast_add(&self.b.reshape((1, self.cout, 1))?)?
            .reshape((b, self.cout, h, w))
    }

    pub fn cost(&self, (_, h, w): Chw, cost: &mut Cost) {
        cost.add_macs(macs_of(&[self.cin, self.cout, h, w]));
    }
}

/// GroupNorm with affine weight/bias (`weight`, `bias`, `[C]`).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    pub channels: usize,
    pub groups: usize,
}

/// The group rule of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Groups {
    /// `min(C / 4, max)` groups (score-SDE NCSN++ with `model.group = 16`, EDM with 16).
    MinQuarter(usize),
    /// A fixed number of groups (LDM `GroupNorm32`).
    Fixed(usize),
}

impl Groups {
    pub fn for_channels(self, c: usize) -> usize {
        match self {
            Groups::MinQuarter(m) => (c / 4).clamp(1, m),
            Groups::Fixed(g) => g,
        }
    }
}

impl GroupNorm {
    pub fn new(pb: &Pb, channels: usize, rule: Groups, eps: f64) -> Result<Self> {
        let groups = rule.for_channels(channels);
        if groups == 0 || channels % groups != 0 {
            candle_core::bail!(
                "GroupNorm {}: {groups} groups do not divide {channels} channels",
                pb.prefix()
            );
        }
        let w = pb.get("weight", &[channels], Init::Ones)?;
        let b = pb.get("bias", &[channels], Init::Zeros)?;
        Ok(Self {
            weight: w,
            bias: b,
            eps,
            channels,
            groups,
        })
    }

    /// The error of an input whose channel count is not this layer's.
    fn check_channels(&self, x: &Tensor) -> Result<()> {
        if x.dims().get(1) != Some(&self.channels) {
            candle_core::bail!(
                "GroupNorm: expected {} channels, got input shape {:?}",
                self.channels,
                x.dims()
            );
        }
        Ok(())
    }

    /// The fused kernel on the CPU, candle_nn's GroupNorm otherwise (see `crate::kernels`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_channels(x)?;
        kernels::group_norm(x, self.groups, &self.weight, &self.bias, self.eps)
    }

    /// `silu(self.forward(x))`, fused into one kernel on the CPU.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.check_channels(x)?;
        kernels::group_norm_silu(x, self.groups, &self.weight, &self.bias, self.eps)
    }

    /// `dropout(self.forward_silu(x), p)` as one kernel on the CPU, with a mask seed drawn from the
    /// context's training RNG; without one (evaluation) or with `p ≤ 0` just [`Self::forward_silu`].
    /// A bad input is refused before a seed is drawn, so it leaves the RNG as it was.
    pub fn forward_silu_dropout(&self, x: &Tensor, ctx: &Ctx, p: f64) -> Result<Tensor> {
        self.check_channels(x)?;
        let (w, b) = (&self.weight, &self.bias);
        match ctx.dropout_seed(p)? {
            Some(seed) => kernels::group_norm_silu_dropout(x, self.groups, w, b, self.eps, p, seed),
            None => kernels::group_norm_silu(x, self.groups, w, b, self.eps),
        }
    }
}

pub fn silu(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(x)
}

// The FIR resampling (score-SDE's `[1,3,3,1]` up/down/blur) lives with its fast kernel; it falls back to
// candle's per-channel (transposed) convolutions when the kernels are off.
pub use crate::kernels::{fir_blur_pad2, fir_down, fir_up};

/// MACs of a 4×4 per-channel FIR producing `c × ho × wo`.
pub fn fir_cost(c: usize, ho: usize, wo: usize) -> u64 {
    macs_of(&[16, c, ho, wo])
}

// Nearest-neighbour ×2 up-sampling (EDM's `[1,1]` transposed filter and LDM's `F.interpolate(nearest)` are
// both this) and EDM's `[1,1]` box-filter down-sampling (2×2 average pooling) live with their fast kernel;
// they fall back to candle's broadcast copy and `avg_pool2d` when the kernels are off.
pub use crate::kernels::{box_down, nearest_up};

// Multi-head dot-product attention over positions (`q`, `k`, `v`: `[B·heads, C', T]`, `scale` multiplies the
// logits) lives with its fused kernel; candle's matmul/softmax composition when the kernels are off.
pub use crate::kernels::attention;

/// MACs of attention over `t` positions with `c` total channels (QKᵀ and AV).
pub fn attention_cost(c: usize, t: usize) -> u64 {
    macs_of(&[2, c, t, t])
}

/// Sinusoidal embedding `[sin(x·f_k), cos(x·f_k)]` with `f_k = exp(−k·ln(max_period)/denom)`, `k < dim/2`.
/// `cos_first` swaps the halves (openai/LDM order).
pub fn sinusoid(
    xs: &[f64],
    dim: usize,
    denom: f64,
    cos_first: bool,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(xs.len() * dim);
    for &x in xs {
        let args: Vec<f64> = (0..half)
            .map(|k| x * (-(k as f64) * (10000f64).ln() / denom).exp())
            .collect();
        let (first, second): (Vec<f64>, Vec<f64>) = if cos_first {
            (
                args.iter().map(|a| a.cos()).collect(),
                args.iter().map(|a| a.sin()).collect(),
            )
        } else {
            (
                args.iter().map(|a| a.sin()).collect(),
                args.iter().map(|a| a.cos()).collect(),
            )
        };
        out.extend(first.iter().chain(second.iter()).map(|&v| v as f32));
        out.extend(std::iter::repeat_n(0.0f32, dim - 2 * half));
    }
    Tensor::from_vec(out, (xs.len(), dim), device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Direct f64 upfirdn2d (score-SDE semantics: zero-insert by `up`, pad, correlate with the flipped
    /// kernel, keep every `down`-th sample) on one channel.
    fn upfirdn(
        x: &[f64],
        n: usize,
        k: &[f64; 4],
        up: usize,
        down: usize,
        p0: usize,
        p1: usize,
    ) -> Vec<f64> {
        let m = n * up + p0 + p1;
        let mut u = vec![0.0; m * m];
        for i in 0..n {
            for j in 0..n {
                u[(i * up + p0) * m + j * up + p0] = x[i * n + j];
            }
        }
        let o = m - 3;
        let mut y = Vec::new();
        for i in (0..o).step_by(down) {
            for j in (0..o).step_by(down) {
                let mut s = 0.0;
                for a in 0..4 {
                    for b in 0..4 {
                        s += u[(i + a) * m + j + b] * k[3 - a] * k[3 - b];
                    }
                }
                y.push(s);
            }
        }
        y
    }

    fn data(n: usize) -> Vec<f64> {
        (0..n * n)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0)
            .collect()
    }

    fn run(f: fn(&Tensor) -> Result<Tensor>, x: &[f64], n: usize) -> Vec<f64> {
        let t = Tensor::from_vec(
            x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (1, 1, n, n),
            &Device::Cpu,
        )
        .unwrap();
        f(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    #[test]
    fn fir_resampling_matches_upfirdn2d() {
        // Both the fast kernels and the plain candle ops against the direct f64 upfirdn2d.
        for on in [true, false] {
            crate::kernels::with_kernels(on, fir_resampling_checks);
        }
    }

    fn fir_resampling_checks() {
        let n = 6;
        let x = data(n);
        let kd = [1.0 / 8.0, 3.0 / 8.0, 3.0 / 8.0, 1.0 / 8.0];
        let want = upfirdn(&x, n, &kd, 1, 2, 1, 1);
        let got = run(fir_down, &x, n);
        assert_eq!(got.len(), 9);
        assert!(
            got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
            "{got:?} {want:?}"
        );
        let ku = [2.0 / 8.0, 6.0 / 8.0, 6.0 / 8.0, 2.0 / 8.0]; // gain 4 = 2 per axis
        let want = upfirdn(&x, n, &ku, 2, 1, 2, 1);
        let got = run(fir_up, &x, n);
        assert_eq!(got.len(), 144);
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5));
        let want = upfirdn(&x, n, &kd, 1, 1, 2, 2);
        let got = run(fir_blur_pad2, &x, n);
        assert_eq!(got.len(), 49);
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn nearest_up_values_and_accumulating_gradient() {
        let x = Var::from_tensor(
            &Tensor::arange(0f32, 4.0, &Device::Cpu)
                .unwrap()
                .reshape((1, 1, 2, 2))
                .unwrap(),
        )
        .unwrap();
        let y = nearest_up(x.as_tensor()).unwrap();
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            v,
            [0., 0., 1., 1., 0., 0., 1., 1., 2., 2., 3., 3., 2., 2., 3., 3.]
        );
        // The input is used twice: d/dx [Σ up(x)·w + Σ x] = 4 (per copy, weights 1) + 1 (upsample_nearest2d's
        // buggy backward would give 4 or 1, not 5).
        let loss = (y.sum_all().unwrap() + x.as_tensor().sum_all().unwrap()).unwrap();
        let g = loss.backward().unwrap();
        let gv: Vec<f32> = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(gv, [5.0; 4]);
    }

    #[test]
    fn attention_gradient_matches_finite_differences() {
        // logits scale and softmax over keys; check d/dq of Σ out² against central differences.
        let mut rng_vals = (0..24).map(|i| ((i * 7919 % 23) as f32 - 11.0) / 10.0);
        let mk = |r: &mut dyn Iterator<Item = f32>| -> Vec<f32> {
            (0..8).map(|_| r.next().unwrap()).collect()
        };
        let (q0, k0, v0) = (mk(&mut rng_vals), mk(&mut rng_vals), mk(&mut rng_vals));
        let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), (1, 2, 4), &Device::Cpu).unwrap();
        let f = |q: &[f32]| -> f64 {
            let o = attention(&t(q), &t(&k0), &t(&v0), 0.7).unwrap();
            o.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let qv = Var::from_tensor(&t(&q0)).unwrap();
        let o = attention(qv.as_tensor(), &t(&k0), &t(&v0), 0.7).unwrap();
        let g = o.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let gq: Vec<f32> = g
            .get(qv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for i in 0..8 {
            let h = 1e-2f32;
            let mut a = q0.clone();
            a[i] += h;
            let mut b = q0.clone();
            b[i] -= h;
            let fd = (f(&a) - f(&b)) / (2.0 * h as f64);
            assert!(
                (fd - gq[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                "{i}: fd {fd} vs {}",
                gq[i]
            );
        }
    }
}
