#!/usr/bin/env bash
# The closing-note runs of `msd cluster` on full Fashion-MNIST train (N = 60000, d = 784), VP linear, paper
# settings: Algorithm 1 for seeds 0, 1, 2 (K = $K1, default 50000) and Algorithm 2 for n = 2..5 from one
# similarity matrix per grid (paper grid 0.025 in eps space; authors' grid 0.05 in x0 space with <).
# Output: one JSON object per run in $OUT (default notes/clustering-runs/). Takes minutes per run on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-notes/clustering-runs}
K1=${K1:-50000}
SEEDS=${SEEDS:-"0 1 2"}
D2=${D2:-1000}
mkdir -p "$OUT"
cargo build --release --locked --bin msd
MSD=target/release/msd
for seed in $SEEDS; do
  $MSD cluster --data fashion-mnist:train --stages 3 --samples "$K1" --seed "$seed" --json \
    --plot "$OUT/alg1-seed$seed.svg" > "$OUT/alg1-seed$seed.json"
done
$MSD cluster --data fashion-mnist:train --stages 3 --algorithm 2 --samples "$D2" --seed 0 --json \
  --save-similarity "$OUT/sim-paper.npy" --plot "$OUT/alg2-paper-n3.svg" > "$OUT/alg2-paper-n3.json"
$MSD cluster --data fashion-mnist:train --stages 3 --algorithm 2 --samples "$D2" --seed 0 --json \
  --grid-step 0.05 --space x0 --compare lt --objective authors \
  --save-similarity "$OUT/sim-authors.npy" --plot "$OUT/alg2-authors-n3.svg" > "$OUT/alg2-authors-n3.json"
for n in 2 4 5; do
  $MSD cluster --stages "$n" --similarity "$OUT/sim-paper.npy" --json > "$OUT/alg2-paper-n$n.json"
  $MSD cluster --stages "$n" --similarity "$OUT/sim-authors.npy" --grid-step 0.05 --objective authors \
    --json > "$OUT/alg2-authors-n$n.json"
done
