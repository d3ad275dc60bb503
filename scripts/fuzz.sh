#!/usr/bin/env bash
# Fuzz every parser of msd for SECONDS each (default 60), on the stable toolchain (see fuzz/README.md).
#   scripts/fuzz.sh [SECONDS] [TARGET...]        (FUZZ_JOBS=N runs N targets at a time)
# Builds fuzz/ with libFuzzer's coverage instrumentation (plain -C flags, no nightly), runs each target
# with its corpus in fuzz/corpus/TARGET, and prints executions and findings per target. Crashes are saved
# under fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(npy_parse npz_stats idx_raw idx_gz cifar_batch image_decode safetensors_weights toml_config data_spec plan_json checkpoint_sidecar)
fi
triple="$(rustc -vV | sed -n 's/^host: //p')"
# What cargo-fuzz passes, minus the sanitizer (-Zsanitizer needs nightly): SanitizerCoverage for
# libFuzzer's guidance, debug assertions and overflow checks so that arithmetic bugs crash.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does.
[ -n "${FUZZ_NO_BUILD:-}" ] || nice -n 15 cargo build --release --target "$triple" --bins
# One target: run it, then print executions, corpus size, coverage and findings.
run_target() {
  local t="$1" log execs crashes corpus cov
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  # -rss_limit_mb: a parser that allocates what a header declares is a finding, not an OOM of the host.
  local dirs=("corpus/$t")
  [ -d "seeds/$t" ] && dirs+=("seeds/$t")
  nice -n 10 "target/$triple/release/$t" "${dirs[@]}" -max_total_time="$secs" \
    -rss_limit_mb=2048 -max_len=65536 -timeout=20 -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
    >"$log" 2>&1 || true
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)
  corpus=$(find "corpus/$t" -type f | wc -l)
  crashes=$(find "artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  echo "$t: ${execs:-?} executions in ${secs} s, corpus ${corpus} inputs, ${cov:-cov ?}, ${crashes} findings (log: fuzz/$log)"
}
# FUZZ_JOBS targets run at the same time (default 1).
jobs="${FUZZ_JOBS:-1}"
for ((lane = 0; lane < jobs; lane++)); do
  (
    for ((i = lane; i < ${#targets[@]}; i += jobs)); do
      run_target "${targets[$i]}"
    done
  ) &
done
wait
