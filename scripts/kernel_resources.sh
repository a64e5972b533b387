#!/usr/bin/env bash
# Registers, stack frame, spills and static shared memory of every CUDA kernel, as ptxas reports
# them for sm_90 (nvcc --resource-usage, the build's flags), one line per kernel, largest stack
# frame first. Needs nvcc, no GPU. Exits 1 if a kernel spills registers, or if one outside the
# coefficient kernels (whose frames the engine reserves) has a stack frame over 1 KB.
#
#   scripts/kernel_resources.sh [file.cu ...]    (default: every src/**/*.cu; 95 s on 2 idle cores, up to 3.5 min on busy ones; a phase of CI)
#
# Why it matters on a GPU (docs/GPU.md, "Kernel resources"): a kernel with a stack frame makes the
# driver reserve that many bytes of local memory for every thread the device can hold at once,
# beside the engine's own buffers; a spill is local-memory traffic in a hot loop.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$NVCC" ] || { echo "kernel_resources.sh: no nvcc (set NVCC or put it on the PATH)" >&2; exit 2; }
files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(git ls-files 'src/*.cu')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "kernel_resources.sh: $f: no such file" >&2; exit 2; }
  "$NVCC" -DMHC_HAVE_CUDA=1 -Isrc -Iinclude -O3 -DNDEBUG -std=c++20 --generate-code=arch=compute_90,code=sm_90 \
    --resource-usage -x cu -c "$f" -o "$tmp/k.o" 2>&1 | sed "s|^|$(basename "$f") |" >>"$tmp/log"
done
# ptxas prints, per entry function: its name, then "N bytes stack frame, S bytes spill stores, L
# bytes spill loads", then "Used R registers, ... M bytes smem".
awk '
  /Compiling entry function/ { match($0, /\x27[^\x27]+\x27/); name = substr($0, RSTART + 1, RLENGTH - 2); file = $1 }
  /bytes stack frame/ { for (i = 1; i <= NF; i++) { if ($(i+1) == "bytes" && $(i+2) == "stack") st = $i;
                                                   if ($(i+2) == "spill" && $(i+3) == "stores,") ss = $i;
                                                   if ($(i+2) == "spill" && $(i+3) == "loads") sl = $i } }
  /Used [0-9]+ registers/ { r = 0; sm = 0
                            for (i = 1; i <= NF; i++) { if ($(i+1) == "registers,") r = $i; if ($(i+1) == "bytes" && $(i+2) == "smem") sm = $i }
                            print st, r, ss + sl, sm, file, name }
' "$tmp/log" | sort -k1,1nr -k2,2nr | c++filt >"$tmp/table"
printf '%8s %5s %7s %7s  %s\n' "stack B" "regs" "spill B" "smem B" "kernel (file)"
while read -r st r sp sm file name; do
  printf '%8s %5s %7s %7s  %s (%s)\n' "$st" "$r" "$sp" "$sm" "$(sed -E 's/\((.{100}).*/(\1...)/' <<<"$name")" "$file"
done <"$tmp/table"
n=$(wc -l <"$tmp/table")
spills=$(awk '$3 > 0' "$tmp/table" | wc -l)
# The engine reserves the stack before a run (cuda.h: reserve_stack) for the coefficient kernels'
# frames only (conn_stack_bytes_cuda); any other kernel must stay within the driver's first 1 KB.
framed=$(awk '$1 > 1024 && $5 != "coef.cu" && $5 != "coef_warp.cu"' "$tmp/table" | wc -l)
echo "$n kernels, $spills with spills, $framed outside coef.cu and coef_warp.cu with a stack frame over 1 KB"
[ "$spills" -eq 0 ] && [ "$framed" -eq 0 ]
