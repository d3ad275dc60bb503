#!/usr/bin/env bash
# Sets up and runs every check CI runs: formatting, clippy, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
# The kernels once more on the gemm crate's products: the run above used oneDNN where it is installed.
MSD_GEMM=crate cargo test --workspace --lib --locked -- kernels::
