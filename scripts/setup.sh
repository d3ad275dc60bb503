#!/usr/bin/env bash
# Installs the system packages msd builds against (idempotent; as root on Debian, or with sudo).
set -euo pipefail
# dataset-fashion-mnist: the real-data test of src/data reads /usr/share/datasets/fashion-mnist.
# libdnnl-dev: oneDNN, whose f32 GEMM the CPU kernels open at run time where present (faster than the
# built-in one on AVX-512; see docs/resources.md). msd builds and runs without it.
pkgs=(libopenblas-dev pkg-config dataset-fashion-mnist libdnnl-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
