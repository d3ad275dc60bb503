#!/usr/bin/env bash
# Quick start: builds msd, prints the paper's stage boundaries in every schedule, and runs the optimal
# denoiser (Proposition 1) on a synthetic dataset with both backends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --bin msd --example denoise_demo
msd=target/release/msd
echo "== The paper's split points t1 = 0.4420, t2 = 0.6308 (VP-linear) and their VE/EDM sigmas"
for t in 0.4420 0.6308; do $msd schedule --schedule vp-linear --t $t; done
echo "== The optimal denoiser on synthetic data"
target/release/examples/denoise_demo demo 4000 256
$msd denoise --data demo/data.npy --x demo/x.npy --t 0.5 --schedule vp-linear --out demo/eps_ref.npy
$msd denoise --data demo/data.npy --x demo/x.npy --t 0.5 --schedule vp-linear --backend accel --out demo/eps_accel.npy
echo "== Done: demo/eps_ref.npy (f64 reference) and demo/eps_accel.npy (candle f32); see README for more."
