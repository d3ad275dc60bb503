#!/usr/bin/env bash
# Makes candle's `cuda` feature buildable on a machine without a GPU: installs NVIDIA's CUDA 13.0 compiler,
# headers and libraries from PyPI into a venv, lays them out as a toolkit root, builds a link-only stub of the
# driver library (libcuda.so.1) and prints the environment to export (see docs/conventions.md §7).
#   usage: eval "$(bash scripts/cuda-toolchain.sh [PREFIX])"     (PREFIX default: ~/.cache/cuda13)
# WITH_CUDNN=1 also installs cuDNN 9 (candle's `cudnn` feature). Needs python3 -m venv, gcc, and cudarc's
# sources in the cargo registry (`cargo fetch` first). Safe to run again.
set -euo pipefail
prefix=${1:-$HOME/.cache/cuda13}
venv=$prefix/venv
root=$prefix/root
[[ -x $venv/bin/python ]] || python3 -m venv "$venv" >&2
# 13.0 to match the GPU machines' driver (580); cudarc 0.19 refuses anything above 13.4.
"$venv/bin/pip" install -q \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 \
  nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85 >&2
if [[ ${WITH_CUDNN:-0} == 1 ]]; then
  "$venv/bin/pip" install -q 'nvidia-cudnn-cu13>=9,<10' >&2
fi
cu=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
mkdir -p "$root/lib64"
for d in bin include nvvm; do ln -sfn "$cu/$d" "$root/$d"; done
for lib in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
  ln -sf "$cu/lib/lib$lib" "$root/lib64/lib$lib"
  ln -sf "$cu/lib/lib$lib" "$root/lib64/lib${lib%%.so*}.so"
done
if [[ ${WITH_CUDNN:-0} == 1 ]]; then
  dnn=$("$venv/bin/python" -c 'import nvidia.cudnn, os; print(list(nvidia.cudnn.__path__)[0])')
  for f in "$dnn"/lib/libcudnn*.so.9; do
    name=$(basename "$f")
    ln -sf "$f" "$root/lib64/$name"
    ln -sf "$f" "$root/lib64/${name%.9}"
  done
  for h in "$dnn"/include/*.h; do ln -sf "$h" "$cu/include/" 2>/dev/null || true; done
fi
# The stub only has to satisfy the linker: one empty function per driver symbol cudarc may look up. The GPU
# machine's real driver replaces it at run time.
if [[ ! -f $root/lib64/libcuda.so ]]; then
  sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs 2>/dev/null | head -n1)
  if [[ -z $sys ]]; then
    echo "cuda-toolchain.sh: cudarc 0.19 sources not found; run 'cargo fetch' in the project first" >&2
    exit 1
  fi
  grep -ohE 'load::<_F>\("cu[A-Za-z0-9_]+"\)' "$sys" | sed -E 's/.*\("(.*)"\)/\1/' | sort -u |
    sed -E 's/.*/void &(void) {}/' >"$root/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib64/libcuda.so" "$root/stub.c"
  ln -sf libcuda.so "$root/lib64/libcuda.so.1"
fi
echo "export CUDA_HOME=$root CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90} PATH=$root/bin:\$PATH"
