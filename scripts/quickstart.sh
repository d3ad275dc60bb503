#!/usr/bin/env bash
# Quick start: builds msd, trains a small multistage NCSN++ on Fashion-MNIST for a few minutes on the CPU
# (boundaries from Algorithm 1), samples a grid from it and plots its loss per stage; then prints the paper's
# stage boundaries in every schedule, runs the optimal denoiser (Proposition 1) on a synthetic dataset with
# both backends, and shows the tools built on it: stage boundaries from the optimal denoiser (Algorithm 1) on
# Fashion-MNIST, a baseline, a sampler's NFE split over the stages, and the multistage U-Net's cost per stage.
# MSD_QUICKSTART_STEPS sets the number of training steps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --bin msd --example denoise_demo
msd=target/release/msd
# 300 steps (~10k images) take about a minute on an idle 2-core machine and show the first shapes among noise; the preset's own 2000
# steps (MSD_QUICKSTART_STEPS=2000) give recognisable garments (docs/training.md has grids and times).
steps=${MSD_QUICKSTART_STEPS:-300}
echo "== Training a multistage NCSN++ (en 16, de 24/16/8, t1 = 0.2845, t2 = 0.6111) on Fashion-MNIST, $steps steps"
rm -rf demo/run
$msd train --preset fmnist-ncsnpp-multistage --data fashion-mnist --out demo/run --steps "$steps" \
  --batch 32 --sample-every 0 --checkpoint-every 100
$msd sample --checkpoint demo/run --ema --num 36 --seed 1 --nfe 20 --out demo/samples.npy --grid demo/samples.png
$msd plot-metrics demo/run --out demo/loss.png
echo "== Scoring 200 samples against 2000 test images (built-in Fashion-MNIST features; logged to metrics.jsonl)"
$msd eval --checkpoint demo/run --ema --nfe 20 --num 200 --ref fashion-mnist:test --ref-limit 2000 --features fmnist
echo "   run: demo/run (checkpoints, metrics.jsonl), grid: demo/samples.png, loss plot: demo/loss.png"
echo "== The paper's split points t1 = 0.4420, t2 = 0.6308 (VP-linear) and their VE/EDM sigmas"
for t in 0.4420 0.6308; do $msd schedule --schedule vp-linear --t $t; done
echo "== The optimal denoiser on synthetic data"
target/release/examples/denoise_demo demo 4000 256
$msd denoise --data demo/data.npy --x demo/x.npy --t 0.5 --schedule vp-linear --out demo/eps_ref.npy
$msd denoise --data demo/data.npy --x demo/x.npy --t 0.5 --schedule vp-linear --backend accel --out demo/eps_accel.npy
echo "== Algorithm 1 (optimal-denoiser clustering) on the first 2000 Fashion-MNIST training images, K = 2000"
echo "   (the full run, N = 60000 and K = 50000, takes minutes: see notes/clustering.md)"
$msd cluster --data fashion-mnist:train --limit 2000 --stages 3 --samples 2000 --plot demo/alg1.svg
echo "== The SNR baseline of Table 4"
$msd cluster --method snr --stages 3
echo "== DPM-Solver-3, 20 NFE: which stage each evaluation uses, at the paper's CIFAR-10 boundaries"
echo "   0.4420, 0.6308 (not the Fashion-MNIST ones printed above: the U-Net below is the CIFAR-10 model)"
$msd plan --solver dpm-solver --order 3 --method singlestep --skip logsnr --nfe 20 --t-end 1e-4 \
  --boundaries 0.4420,0.6308 --json > demo/plan.json
head -c 300 demo/plan.json; echo " ..."
echo "== The CIFAR-10 NCSN++ multistage U-Net, its cost weighted by that plan's NFE split"
$msd model-info --preset cifar10-ncsnpp-multistage --plan demo/plan.json
echo "== Done: demo/ holds the trained run (demo/run), its sample grid (samples.png), loss plot (loss.png), the denoiser outputs (eps_ref.npy f64, eps_accel.npy candle f32), alg1.svg, plan.json."
