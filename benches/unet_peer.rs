//! msd's side of the PyTorch peer comparison (`scripts/bench-peer.sh`): the multistage U-Nets' forward pass
//! and a full training step on the CPU, f32.
//!
//! A training step is: forward of one stage in training mode (dropout on), ε-MSE loss, backward,
//! global-norm gradient clipping to 1.0, one Adam update (candle-nn's AdamW with weight decay 0) of that
//! stage's parameters. A forward pass is the evaluation-mode forward of one stage through the model's frozen
//! view (`MultistageUNet::frozen`: no graph recorded, the counterpart of the peer's `torch.no_grad()`; the
//! view is what sampling and evaluation use).
//!
//! Three ways to run it:
//! - `cargo bench --bench unet_peer`: criterion timings of the small configs (`benches/peer/configs/`)
//!   at batch 8, forward and step, stage 0.
//! - One case, for the peer script (it runs each case in its own process so that the peak RSS is the case's):
//!   `MSD_PEER_CASE='model=benches/peer/configs/ncsnpp-small.toml stage=0 batch=32 mode=step warmup=1 reps=3'`
//!   `MSD_PEER_OUT=target/peer/x.json <this bench binary>` writes
//!   `{"times": [...], "median_s": .., "min_s": .., "max_rss_kb": ..}`. `model=` is a TOML path or
//!   `preset:NAME`.
//! - Without `--bench` and without `MSD_PEER_CASE` (as under `cargo test --all-targets`): one forward and one
//!   step of a tiny preset, to keep the target compiling and running.

use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use criterion::{BenchmarkId, Criterion};
use msd::accel::train::optim::global_norm;
use msd::accel::train::trainer::clip_factor;
use msd::accel::train::{Adam, AdamConfig};
use msd::accel::unet::{preset, Family, MultistageUNet, UNetConfig};
use ndarray_linalg as _;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// One timing case.
struct Case {
    model: String,
    stage: usize,
    batch: usize,
    step: bool,
    warmup: usize,
    reps: usize,
}

impl Case {
    fn parse(spec: &str) -> Result<Case> {
        let mut c = Case {
            model: String::new(),
            stage: 0,
            batch: 8,
            step: false,
            warmup: 1,
            reps: 3,
        };
        for kv in spec.split_whitespace() {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("MSD_PEER_CASE: {kv:?} is not key=value"))?;
            let num = |v: &str| -> Result<usize> {
                v.parse()
                    .with_context(|| format!("MSD_PEER_CASE: {k}={v} is not a count"))
            };
            match k {
                "model" => c.model = v.to_string(),
                "stage" => c.stage = num(v)?,
                "batch" => c.batch = num(v)?,
                "warmup" => c.warmup = num(v)?,
                "reps" => c.reps = num(v)?,
                "mode" => {
                    c.step = match v {
                        "fwd" => false,
                        "step" => true,
                        _ => bail!("MSD_PEER_CASE: mode={v} (expected fwd or step)"),
                    }
                }
                _ => bail!(
                    "MSD_PEER_CASE: unknown key {k:?} (model, stage, batch, mode, warmup, reps)"
                ),
            }
        }
        if c.model.is_empty() || c.batch == 0 || c.reps == 0 {
            bail!("MSD_PEER_CASE needs model=…, a batch >= 1 and reps >= 1");
        }
        Ok(c)
    }
}

fn load_config(model: &str) -> Result<UNetConfig> {
    if let Some(name) = model.strip_prefix("preset:") {
        return Ok(preset(name)?);
    }
    let text = std::fs::read_to_string(model).with_context(|| format!("reading {model}"))?;
    UNetConfig::from_toml(&text).map_err(|e| anyhow!("{model}: {e}"))
}

/// A time inside stage `k` in the family's own unit (the middle of its interval; an end stage: one unit
/// inside the boundary).
fn time_in_stage(cfg: &UNetConfig, k: usize) -> f64 {
    let b = &cfg.boundaries;
    let (lo, hi) = match cfg.family {
        Family::Ncsnpp(_) => (0.0, 1.0),
        Family::Ddpmpp(_) => (0.002, 80.0),
        Family::Ldm(_) => (0.0, 999.0),
    };
    let a = if k == 0 { lo } else { b[k - 1] };
    let z = if k == b.len() { hi } else { b[k] };
    0.5 * (a + z)
}

/// The model, an input batch, its times, the noise target, and the stage's trainable variables.
struct Setup {
    model: MultistageUNet,
    frozen: MultistageUNet,
    x: Tensor,
    t: Vec<f64>,
    eps: Tensor,
    stage: usize,
    vars: Vec<Var>,
    opt: Adam,
    rng: Mutex<StdRng>,
}

impl Setup {
    fn new(cfg: &UNetConfig, stage: usize, batch: usize) -> Result<Setup> {
        let dev = Device::Cpu;
        let model = MultistageUNet::new(cfg, &dev, 0)?;
        if stage >= model.num_stages() {
            bail!("stage {stage} out of range ({} stages)", model.num_stages());
        }
        let (c, r) = cfg.input_chw();
        let mut rng = StdRng::seed_from_u64(1);
        let mut normal = |n: usize| -> Result<Tensor> {
            let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
            Ok(Tensor::from_vec(v, (batch, c, r, r), &dev)?)
        };
        let x = normal(batch * c * r * r)?;
        let eps = normal(batch * c * r * r)?;
        let t = vec![time_in_stage(cfg, stage); batch];
        let vars = model.stage_vars(stage);
        // msd's own optimiser, as `msd train` runs it (Adam, β 0.9/0.999, ε 1e-8, no decay).
        let named = vars
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("p{i}"), v.clone()))
            .collect();
        let opt = Adam::new(AdamConfig::default(), named)?;
        Ok(Setup {
            frozen: model.frozen()?,
            model,
            x,
            t,
            eps,
            stage,
            vars,
            opt,
            rng: Mutex::new(StdRng::seed_from_u64(2)),
        })
    }

    fn forward(&self) -> Result<Tensor> {
        Ok(self.frozen.forward_stage(&self.x, &self.t, self.stage)?)
    }

    /// Forward (training mode), ε-MSE, backward, clip to global norm 1.0, Adam. Returns the loss.
    fn step(&mut self) -> Result<f32> {
        let out = self
            .model
            .forward_stage_train(&self.x, &self.t, self.stage, &self.rng)?;
        let loss = (out - &self.eps)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        // As the trainer: global norm in f64, clip to 1.0 folded into the Adam step.
        let grads: Vec<Option<Tensor>> = self
            .vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned())
            .collect();
        let clip = clip_factor(Some(1.0), global_norm(&grads)?);
        self.opt.step_scaled(&grads, clip, 2e-4)?;
        Ok(loss.to_scalar::<f32>()?)
    }

    fn run(&mut self, step: bool) -> Result<()> {
        if step {
            let l = self.step()?;
            if !l.is_finite() {
                bail!("non-finite loss {l}");
            }
        } else {
            let y = self.forward()?;
            // Force the result (candle is eager; this only reads one value back).
            y.flatten_all()?
                .get(0)?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?;
        }
        Ok(())
    }
}

fn max_rss_kb() -> i64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) == 0 {
            u.ru_maxrss
        } else {
            -1
        }
    }
}

fn peer_case(spec: &str, out: Option<String>) -> Result<()> {
    let case = Case::parse(spec)?;
    let cfg = load_config(&case.model)?;
    let mut s = Setup::new(&cfg, case.stage, case.batch)?;
    for _ in 0..case.warmup {
        s.run(case.step)?;
    }
    let mut times = Vec::new();
    for _ in 0..case.reps {
        let t0 = Instant::now();
        s.run(case.step)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let json = serde_json::json!({
        "model": case.model,
        "stage": case.stage,
        "batch": case.batch,
        "mode": if case.step { "step" } else { "fwd" },
        "times": times,
        "median_s": sorted[sorted.len() / 2],
        "min_s": sorted[0],
        "max_rss_kb": max_rss_kb(),
        "threads": candle_core::utils::get_num_threads(),
        // Which SIMD kernel set the gemm crate ran on this CPU.
        "gemm_kernels": msd::accel::kernels::blas::gemm_library(),
    });
    match out {
        Some(p) => std::fs::write(&p, json.to_string()).with_context(|| format!("writing {p}"))?,
        None => println!("{json}"),
    }
    Ok(())
}

fn criterion_run() -> Result<()> {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(5))
        .configure_from_args();
    let mut g = c.benchmark_group("unet_peer");
    for fam in ["ncsnpp", "ddpmpp", "ldm"] {
        let path = format!(
            "{}/benches/peer/configs/{fam}-small.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let cfg = load_config(&path)?;
        for step in [false, true] {
            let mut s = Setup::new(&cfg, 0, 8)?;
            let id = BenchmarkId::new(
                if step { "step" } else { "forward" },
                format!("{fam}-small-b8"),
            );
            g.bench_function(id, |b| b.iter(|| s.run(step).expect("unet_peer case")));
        }
    }
    g.finish();
    c.final_summary();
    Ok(())
}

fn smoke() -> Result<()> {
    for name in [
        "tiny-ncsnpp-multistage",
        "tiny-ddpmpp-multistage",
        "tiny-ldm-multistage",
    ] {
        let cfg = preset(name)?;
        let mut s = Setup::new(&cfg, 1, 2)?;
        s.run(false)?;
        s.run(true)?;
    }
    println!("unet_peer: smoke run of the tiny presets passed (cargo bench --bench unet_peer times them)");
    Ok(())
}

fn main() -> Result<()> {
    // The `msd` binary's process settings (see `msd::runtime`), so that the timings are msd's.
    msd::runtime::configure();
    if let Ok(spec) = std::env::var("MSD_PEER_CASE") {
        return peer_case(&spec, std::env::var("MSD_PEER_OUT").ok());
    }
    if std::env::args().any(|a| a == "--bench") {
        criterion_run()
    } else {
        smoke()
    }
}
