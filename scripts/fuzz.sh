#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang, ASan and UBSan into build-fuzz/ and runs each.
#   scripts/fuzz.sh [--smoke | --runs N | --time S] [--target NAME]... [--seeds]
#   --smoke     (the default) 20000 executions per target from the committed seeds only, with a
#               fixed seed (-seed=1), a fresh working corpus and no address randomisation, so a
#               CI run is repeatable
#   --runs N    N executions per target; new inputs accumulate in build-fuzz/corpus/<target>
#   --time S    S seconds per target, likewise
#   --target T  only this target (safetensors, tokens, config, tokenizer); may be repeated
#   --seeds     regenerate the committed seed corpora fuzz/corpus/* with the library, then stop
# Exits non-zero on any finding (crash, sanitizer report, uncaught non-std exception, timeout,
# out-of-memory); the input is kept in build-fuzz/findings/ and the command to replay it printed.
# Needs clang-14, libclang-rt-14-dev (libFuzzer) and libomp-14-dev (OpenMP for the clang configure).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=smoke runs=20000 secs=0 seeds=0 targets=()
while (($#)); do
  case "$1" in
    --smoke) mode=smoke runs=20000 ;;
    --runs) mode=runs runs="$2"; shift ;;
    --time) mode=time secs="$2"; shift ;;
    --target) targets+=("$2"); shift ;;
    --seeds) seeds=1 ;;
    *) echo "usage: scripts/fuzz.sh [--smoke | --runs N | --time S] [--target NAME]... [--seeds]" >&2; exit 2 ;;
  esac
  shift
done
((${#targets[@]})) || targets=(safetensors tokens config tokenizer)

B=build-fuzz
# Tests and benchmarks are not needed here (and would be built with clang for nothing).
if [ ! -f "$B/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMHC_FUZZ=ON \
    -DMHC_BUILD_TESTS=OFF -DMHC_BUILD_BENCH=OFF -DMHC_CUDA=OFF >/dev/null
fi
if ((seeds)); then
  cmake --build "$B" --target fuzz_make_seeds
  rm -rf fuzz/corpus
  "$B/fuzz/fuzz_make_seeds" . fuzz/corpus
  du -sh fuzz/corpus
  exit 0
fi
cmake --build "$B" --target "${targets[@]/#/fuzz_}"

mkdir -p "$B/findings" "$B/logs"
# Memory and time limits: anything beyond them is a finding, like a crash. The largest seed is
# about 5 KB; 16 KB leaves the mutations room without making every run slow.
common=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -max_len=16384 -print_final_stats=1)
# A repeatable smoke run needs more than -seed: no periodic corpus reload (timed), and no address
# randomisation, since compare tracing sees pointer values. setarch -R where the system allows it.
norand=()
if [ "$mode" = smoke ] && setarch "$(uname -m)" -R true 2>/dev/null; then norand=(setarch "$(uname -m)" -R); fi
# One target: its result line (and a finding's details) go to $B/logs/<target>.result.
fuzz_one() {
  local t="$1" bin="$B/fuzz/fuzz_$1" work extra log start rc=0 wall execs rate
  case "$mode" in
    smoke) work=$(mktemp -d); extra=(-runs="$runs" -seed=1 -reload=0) ;;
    runs) work="$B/corpus/$t"; extra=(-runs="$runs") ;;
    time) work="$B/corpus/$t"; extra=(-max_total_time="$secs") ;;
  esac
  mkdir -p "$work"
  log="$B/logs/$t.log"
  start=$(date +%s.%N)
  "${norand[@]}" "$bin" "${common[@]}" "${extra[@]}" -dict="fuzz/$t.dict" -artifact_prefix="$B/findings/$t-" \
    "$work" "fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  [ "$mode" = smoke ] && rm -rf "$work"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(awk -v n="${execs:-0}" -v s="$wall" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
  {
    printf 'fuzz %-11s %9s executions in %7s s (%s exec/s)' "$t" "${execs:-?}" "$wall" "$rate"
    if [ "$rc" -ne 0 ]; then
      echo "  FINDING (exit $rc)"
      grep -E "ERROR: |runtime error|SUMMARY|Test unit written|==[0-9]+==" "$log" | head -8 | sed 's/^/    /' || true
      echo "    log: $log; replay: $bin <the input above>"
    else
      echo "  ok"
    fi
  } >"$B/logs/$t.result"
  return "$rc"
}
# The targets run side by side, one per core (each is single-threaded); results print in order.
jobs_max=$(nproc)
pids=()
for t in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs_max)); do wait -n || true; done
  rm -f "$B/logs/$t.result"
  fuzz_one "$t" &
  pids+=($!)
done
status=0
for i in "${!targets[@]}"; do
  wait "${pids[$i]}" || status=1
  cat "$B/logs/${targets[$i]}.result"
done
exit "$status"
