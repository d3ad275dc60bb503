#!/usr/bin/env bash
# Runs on a lent GPU machine (no Rust there): the CUDA build's accel tests, a full-size CLI cross-check of
# the CUDA denoiser against the f64 reference, and the backend benchmark. Expects .device/bundle.tar.xz made
# by scripts/device-bundle.sh here. Writes logs to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
cd .device && tar xJf bundle.tar.xz || exit 1
nv=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')
export LD_LIBRARY_PATH=$PWD/lib:$nv:${LD_LIBRARY_PATH:-}
nvidia-smi -L; nproc
echo "== accel tests on CUDA"
MSD_TEST_DEVICE=cuda ./accel-tests 2>&1 | tee "$OUT/tests-cuda.log" | tail -15
echo "== CLI cross-check, N=60000 d=784 B=1000"
python3 - <<'PY'
import numpy as np
rng = np.random.default_rng(1)
y = rng.random((60000, 784))
t_alpha = None
np.save("d.npy", y)
# queries: training points noised at VP-linear t = 0.3, 0.5, 0.8 (alpha/sigma from the schedule)
import math
def level(t):
    la = -0.25 * 19.9 * t * t - 0.05 * t
    return math.exp(la), math.sqrt(-math.expm1(2 * la))
for t in (0.3, 0.5, 0.8):
    a, s = level(t)
    x = a * y[:1000] + s * rng.standard_normal((1000, 784))
    np.save(f"x{t}.npy", x)
PY
for t in 0.3 0.5 0.8; do
  ./msd denoise --data d.npy --x x$t.npy --t $t --schedule vp-linear --predict x0 --out ref$t.npy --json
  ./msd denoise --data d.npy --x x$t.npy --t $t --schedule vp-linear --predict x0 --out gpu$t.npy --json --backend accel --device cuda
  ./msd denoise --data d.npy --x x$t.npy --t $t --schedule vp-linear --predict x0 --out cpu$t.npy --json --backend accel
  python3 -c "
import numpy as np
r, g, c = np.load('ref$t.npy'), np.load('gpu$t.npy'), np.load('cpu$t.npy')
for name, a in (('cuda', g), ('cpu-f32', c)):
    print('t=$t', name, 'max|diff| %.3e  rel-fro %.3e' % (abs(a - r).max(), np.linalg.norm(a - r) / np.linalg.norm(r)))
"
done 2>&1 | tee "$OUT/cli-check.log"
echo "== benchmark"
MSD_BENCH_SECONDS=${MSD_BENCH_SECONDS:-4} ./bench --bench 2>&1 | tee "$OUT/bench.log" | grep -E "^denoiser|time:|thrpt:"
