#!/usr/bin/env bash
# Builds the CUDA binaries here (no GPU needed; see docs/conventions.md §7) and packs them, with the
# OpenBLAS they link, into .device/bundle.tar.xz for scripts/device-check.sh on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/cuda-toolchain.sh)"
export CARGO_TARGET_DIR=target-cuda
# One cargo invocation: separate ones unify build-dependency features differently and rebuild candle's
# CUDA kernels (~10 minutes on 2 cores) each time.
cargo test --release --no-run --workspace --all-targets --features msd/cuda 2>&1 | tail -1
newest() { ls -t $1 | grep -v '\.d$' | head -n1; }
rm -rf .device && mkdir -p .device/stage/lib
cp "$(newest 'target-cuda/release/deps/msd_accel-*')" .device/stage/accel-tests
cp "$(newest 'target-cuda/release/deps/denoiser-*')" .device/stage/bench
cp target-cuda/release/msd .device/stage/msd
strip .device/stage/accel-tests .device/stage/bench .device/stage/msd
for l in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do cp -L /lib/x86_64-linux-gnu/$l .device/stage/lib/; done
tar cJf .device/bundle.tar.xz -C .device/stage .
rm -rf .device/stage
ls -la .device
