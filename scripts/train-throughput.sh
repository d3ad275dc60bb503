#!/usr/bin/env bash
# Training throughput of the Fashion-MNIST presets on this machine: for each preset and stage schedule, a short
# `msd train` (release build), then one table row with steps/s, images/s and the process's peak RSS. Not part of CI.
#
#   scripts/train-throughput.sh                 # 10 steps per run, both Fashion-MNIST presets, all five schedules
#   scripts/train-throughput.sh 5               # 5 steps per run (a quick check that everything runs)
#   MSD_THROUGHPUT_PRESETS=fmnist-ncsnpp-multistage MSD_THROUGHPUT_SCHEDULES="random mixed" \
#   MSD_THROUGHPUT_BATCH=16 scripts/train-throughput.sh 20
#   MSD_THROUGHPUT_PROFILE=dev MSD_THROUGHPUT_BATCH=4 scripts/train-throughput.sh 3   # smoke test of the script
#   MSD_BIN=target/release/msd scripts/train-throughput.sh                              # an existing binary
#
# steps/s and images/s come from the run's metrics.jsonl: the step time msd measures around each optimiser step
# (data, forward, backward, Adam, EMA), from the end of step 1 to the end of the last step, so start-up, data
# loading, the first step (allocations, warm-up) and the final checkpoint and sample grid are left out.
#   images/s  = training images drawn per second (batch x accumulation per step);
#   passes/s  = images through the loss per second (the `all` schedule runs every image once per stage).
# Peak RSS is the whole process's (/usr/bin/time -v), data set and final checkpoint included.
# Every run loads the first MSD_THROUGHPUT_LIMIT training images (default 2000; throughput does not depend on it).
# Runs are `nice -n 10`; the machine's load changes the numbers: compare rows of one run of the script.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-10}
if ! [[ "$steps" =~ ^[0-9]+$ ]] || [ "$steps" -lt 2 ]; then
    echo "error: STEPS must be a whole number of at least 2 (the first step is not timed), got '$steps'" >&2
    exit 2
fi
presets=${MSD_THROUGHPUT_PRESETS:-fmnist-ncsnpp-multistage fmnist-ncsnpp-unified}
schedules=${MSD_THROUGHPUT_SCHEDULES:-random round-robin all proportional mixed}
limit=${MSD_THROUGHPUT_LIMIT:-2000}
batch=()
if [ -n "${MSD_THROUGHPUT_BATCH:-}" ]; then batch=(--batch "$MSD_THROUGHPUT_BATCH"); fi
if [ ! -x /usr/bin/time ]; then
    echo "error: /usr/bin/time is missing (GNU time: apt-get install time)" >&2
    exit 1
fi
# MSD_THROUGHPUT_PROFILE=dev measures the dev build instead (dependencies at opt-level 3, msd's crates at 1):
# quicker to build where no release build exists, slower to run.
# MSD_BIN=PATH measures an already built binary (no build).
if [ -n "${MSD_BIN:-}" ]; then
    msd=$MSD_BIN
elif [ "${MSD_THROUGHPUT_PROFILE:-release}" = dev ]; then
    cargo build --bin msd
    msd=target/debug/msd
else
    cargo build --release --bin msd
    msd=target/release/msd
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf '%-26s %-13s %6s %6s %9s %9s %9s %12s\n' preset schedule batch steps "steps/s" "images/s" "passes/s" "peak RSS MB"
for preset in $presets; do
    for schedule in $schedules; do
        run="$work/$preset-$schedule"
        if ! /usr/bin/time -v -o "$work/time.txt" nice -n 10 "$msd" train --preset "$preset" \
            --data fashion-mnist --limit "$limit" --out "$run" --steps "$steps" --schedule "$schedule" \
            "${batch[@]}" --checkpoint-every 0 --sample-every 0 --sample-num 1 --quiet \
            > "$work/train.log" 2>&1; then
            echo "error: msd train --preset $preset --schedule $schedule failed:" >&2
            tail -n 5 "$work/train.log" >&2
            exit 1
        fi
        rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
        b=$(jq -r '.train.batch * .train.accum' "$run/run.json")
        # First and last training lines: (step, cumulative step seconds, cumulative loss passes).
        read -r s1 t1 p1 < <(jq -r 'select(.kind == "train") | "\(.step) \(.seconds) \(.images)"' \
            "$run/metrics.jsonl" | head -n 1)
        read -r sn tn pn < <(jq -r 'select(.kind == "train") | "\(.step) \(.seconds) \(.images)"' \
            "$run/metrics.jsonl" | tail -n 1)
        awk -v preset="$preset" -v sched="$schedule" -v b="$b" -v s1="$s1" -v t1="$t1" -v p1="$p1" \
            -v sn="$sn" -v tn="$tn" -v pn="$pn" -v rss="$rss_kb" 'BEGIN {
                dt = tn - t1; n = sn - s1;
                printf "%-26s %-13s %6d %6d %9.4f %9.2f %9.2f %12.0f\n",
                       preset, sched, b, sn, n / dt, n * b / dt, (pn - p1) / dt, rss / 1024 }'
        rm -rf "$run"
    done
done
