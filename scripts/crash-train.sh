#!/usr/bin/env bash
# Crash safety of `msd train`: SIGKILL it at random moments, check after every kill that the run directory
# holds only complete checkpoints and that the newest loads, continue with --resume, and compare the final
# weights, EMA and optimiser state bit for bit with an uninterrupted run.
#   scripts/crash-train.sh [KILLS] [STEPS]      (defaults 25 kills, 8 steps)
# A checkpoint is written after every step. Every other kill waits for a checkpoint write to begin (a new
# `checkpoints/step-*.tmp/`) and then kills within 0-50 ms, inside the write; the others kill after a delay
# uniform in (0, 3 step-times). A run that reaches STEPS is compared with the uninterrupted one and a fresh
# run starts for the remaining kills; the last run is finished without kills and compared too.
# Needs the release binary (cargo build --release) and Fashion-MNIST (see `msd train --help`).
# Not part of `cargo test`: it takes minutes (tens of minutes on a loaded machine).
set -euo pipefail
cd "$(dirname "$0")/.."
kills="${1:-25}"
steps="${2:-8}"
msd="$PWD/target/release/msd"
[ -x "$msd" ] || { echo "build the release binary first: cargo build --release" >&2; exit 2; }
work="$(mktemp -d "${TMPDIR:-/tmp}/msd-crash.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# Tiny model, 8 images, a checkpoint after every step, two kept.
train_args=(--data fashion-mnist --limit 8 --batch 2 --sample-num 1 --checkpoint-every 1 --keep 2 --seed 3
  --quiet --steps "$steps")
fresh=(train --preset tiny-ncsnpp-multistage "${train_args[@]}" --out "$work/run")
resume=(train --resume "$work/run" --steps "$steps" --sample-num 1 --quiet)
final_name="$(printf 'step-%08d' "$steps")"

fail() { echo "FAIL: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }

t0=$(now_ms)
"$msd" train --preset tiny-ncsnpp-multistage "${train_args[@]}" --out "$work/ref" 2>"$work/ref.log"
wall_ms=$(($(now_ms) - t0))
step_ms=$((wall_ms / steps))
echo "uninterrupted run: $steps steps in ${wall_ms} ms"

# Every directory named like a checkpoint must be complete; the newest must load. Prints its name.
check_run() {
  local ck newest=none
  for ck in "$work"/run/checkpoints/step-????????; do
    [ -d "$ck" ] || continue
    for f in model.safetensors ema.safetensors optim.safetensors state.json; do
      [ -s "$ck/$f" ] || fail "$ck lacks $f"
    done
    newest="$ck"
  done
  if [ "$newest" != none ]; then
    "$msd" sample --checkpoint "$work/run" --num 1 --solver ddim --steps 2 --out "$work/probe.npy" \
      2>"$work/probe.log" || fail "newest checkpoint $newest does not load: $(cat "$work/probe.log")"
    rm -f "$work/probe.npy"
    newest="$(basename "$newest")"
  fi
  echo "$newest"
}

compare_with_ref() {
  local f
  for f in model.safetensors ema.safetensors optim.safetensors; do
    cmp -s "$work/ref/checkpoints/$final_name/$f" "$work/run/checkpoints/$final_name/$f" \
      || fail "$1: $f differs from the uninterrupted run"
  done
}

# Whether a checkpoint write has begun since the start: a step-*.tmp whose inode is not in $stale.
new_tmp() {
  local d
  for d in "$work"/run/checkpoints/step-*.tmp; do
    [ -d "$d" ] || continue
    case "$stale" in *" $(stat -c %i "$d" 2>/dev/null) "*) ;; *) return 0 ;; esac
  done
  return 1
}

in_write=0; loads=0; none=0; fresh_starts=0; finished=0; identical=0
for ((i = 1; i <= kills; i++)); do
  if [ -f "$work/run/run.json" ]; then
    cmd=("${resume[@]}")
  else
    rm -rf "$work/run"
    cmd=("${fresh[@]}")
    fresh_starts=$((fresh_starts + 1))
  fi
  stale=" $( (stat -c %i "$work"/run/checkpoints/step-*.tmp 2>/dev/null || true) | tr '\n' ' ')"
  "$msd" "${cmd[@]}" >"$work/kill-$i.log" 2>&1 &
  pid=$!
  if ((i % 2 == 0)); then
    # Inside a checkpoint write: wait for a new step-*.tmp (not one a killed run left), then 0-50 ms.
    mode="in a checkpoint write"
    while kill -0 "$pid" 2>/dev/null && ! new_tmp; do
      sleep 0.005
    done
    delay_ms=$((RANDOM % 51))
  else
    mode="at a random moment"
    delay_ms=$(((RANDOM * 32768 + RANDOM) % (3 * step_ms) + 1))
  fi
  sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  if kill -KILL "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    state="killed $mode (+${delay_ms} ms)"
  else
    wait "$pid" || fail "run $i: msd exited with an error: $(tail -n 3 "$work/kill-$i.log")"
    state="finished before the kill"
  fi
  tmps=$(compgen -G "$work/run/checkpoints/step-*.tmp" | wc -l || true)
  [ "$tmps" -gt 0 ] && in_write=$((in_write + 1))
  newest=$(check_run) || exit 1
  if [ "$newest" = none ]; then none=$((none + 1)); else loads=$((loads + 1)); fi
  if [ "$newest" = none ]; then newest="none yet"; else newest="$newest (loads)"; fi
  echo "kill $i: $state; unfinished checkpoint left: $tmps; newest checkpoint: $newest"
  if [ "$state" = "finished before the kill" ]; then
    compare_with_ref "run finished at kill $i"
    finished=$((finished + 1)); identical=$((identical + 1))
    rm -rf "$work/run"
  fi
done
if [ -f "$work/run/run.json" ]; then
  "$msd" "${resume[@]}" >"$work/final.log" 2>&1 || fail "final resume: $(tail -n 3 "$work/final.log")"
else
  rm -rf "$work/run"
  "$msd" "${fresh[@]}" >"$work/final.log" 2>&1 || fail "final run: $(tail -n 3 "$work/final.log")"
fi
compare_with_ref "final run"
identical=$((identical + 1))
left=$(compgen -G "$work/run/checkpoints/step-*.[to][ml][pd]" | wc -l || true)
[ "$left" -eq 0 ] || fail "$left leftover temporary checkpoint directories after the final run"
echo "OK: $kills kills, $in_write of them left an unfinished checkpoint write; after every kill each" \
  "checkpoint directory was complete, and the newest loaded ($loads times; $none kills came before the" \
  "first checkpoint); $fresh_starts fresh runs, $identical runs reached step $steps with model/ema/optim" \
  "identical byte for byte to the uninterrupted run"
