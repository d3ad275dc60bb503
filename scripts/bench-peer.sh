#!/usr/bin/env bash
# msd's candle U-Nets against the PyTorch peer (benches/peer/), same config, batch, f32 and thread count, in one
# run; prints one table (also written to target/peer/table.md and results.json). Not part of CI.
#
#   scripts/bench-peer.sh                     # default cases (~15 min on the 2-core machine)
#   scripts/bench-peer.sh --cases all         # adds the paper-size training steps (slow in candle today)
#   scripts/bench-peer.sh --cases 'paper s0 b8 fwd,ncsnpp-small s0 b32 step'
#   PEER_THREADS=4 scripts/bench-peer.sh      # thread count of both sides (default 2)
#   scripts/bench-peer.sh --rounds 2          # two alternating processes per side, best kept (noisy VMs)
#
# List the cases with: target/peer-venv/bin/python benches/peer/bench.py list
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${PEER_VENV:-target/peer-venv}"
scripts/peer-venv.sh "$venv"
# PEER_PROFILE=dev uses the dev profile (dependencies, i.e. candle's kernels, at opt-level 3; msd's own crates at
# opt-level 1): much quicker to build when no release build exists. Default: release.
if [ "${PEER_PROFILE:-release}" = dev ]; then
    prof=(); msd_bin=target/debug/msd
else
    prof=(--release); msd_bin=target/release/msd
fi
cargo build "${prof[@]}" --bin msd
# The criterion target: take its binary from cargo's JSON messages.
bench_bin=$(cargo build "${prof[@]}" --bench unet_peer --message-format=json 2>/dev/null |
    "$venv/bin/python" -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "unet_peer" and m.get("executable"):
        print(m["executable"])
')
if [ -z "$bench_bin" ]; then
    echo "bench-peer: could not build the unet_peer bench (run: cargo build --bench unet_peer)" >&2
    exit 1
fi
exec nice -n "${PEER_NICE:-0}" "$venv/bin/python" benches/peer/bench.py run --msd "$msd_bin" \
    --msd-bench "$bench_bin" --threads "${PEER_THREADS:-2}" "$@"
