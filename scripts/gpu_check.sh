#!/usr/bin/env bash
# The GPU check (docs/GPU.md): every GPU test on a machine with an NVIDIA GPU, a short table last.
#
#   scripts/gpu_check.sh --pack    here (Debian 12 with nvcc and the project's packages): configures
#                                  build-gpu/ with the CUDA backend (sm_90, -march=x86-64-v3), builds
#                                  mhc and mhc_tests, and copies them, stripped, with the shared
#                                  libraries they need that a CUDA machine may lack (OpenBLAS and
#                                  its Fortran runtime, libgomp, zlib; never the driver, the CUDA
#                                  runtime or cuBLAS) into gpu_pack/ (git-ignored), then packs that
#                                  into gpu_pack.tar.xz (what travels)
#   scripts/gpu_check.sh [--out DIR]
#                                  on the GPU machine (CUDA 13, no Debian packages, no network):
#                                  unpacks gpu_pack.tar.xz if gpu_pack/ is not there, runs the CUDA
#                                  suites of gpu_pack/bin/mhc_tests (filter *Cuda*) with cuBLAS from
#                                  the machine, writes DIR/gpu_tests.json and DIR/gpu_tests.log
#                                  (DIR: $OUT if set, else gpu_check_out/) and prints the table
# Exit status: 0 when every test passed (none failed, none skipped for want of a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=run out="${OUT:-gpu_check_out}"
while (($#)); do
  case "$1" in
    --pack) mode=pack ;;
    --out) out="$2"; shift ;;
    *) echo "usage: scripts/gpu_check.sh [--pack | --out DIR]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$mode" = pack ]; then
  B=build-gpu
  start=$(date +%s)
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMHC_CUDA=ON -DMHC_MARCH=x86-64-v3 \
    -DMHC_CUDA_EMU=OFF -DMHC_BUILD_BENCH=OFF >/dev/null
  cmake --build "$B" -j"$(nproc)" --target mhc mhc_tests
  rm -rf gpu_pack gpu_pack.tar.xz
  mkdir -p gpu_pack/bin gpu_pack/lib gpu_pack/lib/compat
  cp "$B/mhc" "$B/tests/mhc_tests" gpu_pack/bin/
  strip --strip-unneeded gpu_pack/bin/*
  # Shared libraries, resolved here: everything but the C library family (every machine has its
  # own), the GPU driver and the CUDA libraries (the GPU machine's must match its driver).
  ldd "$B/mhc" "$B/tests/mhc_tests" | awk '/=> \// { print $1, $3 }' | sort -u | while read -r name path; do
    case "$name" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libcuda.so*|libcudart*|libcublas*|libnvidia*) ;;
      libstdc++.so*|libgcc_s.so*) cp -L "$path" "gpu_pack/lib/compat/$name" ;;  # only if the machine's are older
      *) cp -L "$path" "gpu_pack/lib/$name" ;;
    esac
  done
  strip --strip-unneeded gpu_pack/lib/*.so* gpu_pack/lib/compat/*.so* 2>/dev/null || true
  git rev-parse HEAD > gpu_pack/COMMIT 2>/dev/null || true
  git status --porcelain --untracked-files=no | grep -q . && echo "(uncommitted changes)" >> gpu_pack/COMMIT
  tar -cJf gpu_pack.tar.xz gpu_pack
  du -sh gpu_pack gpu_pack.tar.xz
  ls -la gpu_pack/bin gpu_pack/lib gpu_pack/lib/compat
  echo "gpu_check: packed in $(( $(date +%s) - start )) s; on the GPU machine: scripts/gpu_check.sh (carry gpu_pack.tar.xz)"
  exit 0
fi

# ---- run mode -------------------------------------------------------------------------------------
if [ ! -x gpu_pack/bin/mhc_tests ]; then
  if [ -f gpu_pack.tar.xz ]; then
    tar -xJf gpu_pack.tar.xz
  else
    echo "gpu_check: no gpu_pack/ (or gpu_pack.tar.xz): run scripts/gpu_check.sh --pack on a build machine first," >&2
    echo "  or build here as docs/GPU.md's fallback says" >&2
    exit 2
  fi
fi
mkdir -p "$out"
log="$out/gpu_tests.log" json="$out/gpu_tests.json"
echo "gpu_check: pack of $(head -c 12 gpu_pack/COMMIT 2>/dev/null)$(sed -n 2p gpu_pack/COMMIT 2>/dev/null)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

# cuBLAS and the CUDA runtime from the machine: its CUDA toolkit, else the CUDA wheels of its Python.
libpath="$PWD/gpu_pack/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -e "$d/libcublas.so.13" ] && libpath="$libpath:$d"
done
if ! ls /usr/local/cuda/lib64/libcublas.so.13 >/dev/null 2>&1 && command -v python3 >/dev/null; then
  wheel=$(python3 - <<'EOF' 2>/dev/null || true
import glob, os, site
for base in site.getsitepackages():
    for hit in glob.glob(os.path.join(base, "nvidia", "**", "libcublas.so.13"), recursive=True):
        print(os.path.dirname(hit)); raise SystemExit
EOF
)
  [ -n "$wheel" ] && libpath="$libpath:$wheel"
fi
export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The machine's libstdc++ if it is new enough, else the one packed beside the binaries.
if ! gpu_pack/bin/mhc_tests --gtest_list_tests >/dev/null 2>&1; then
  export LD_LIBRARY_PATH="$PWD/gpu_pack/lib/compat:$LD_LIBRARY_PATH"
  if ! gpu_pack/bin/mhc_tests --gtest_list_tests >/dev/null 2>"$out/start.err"; then
    echo "gpu_check: mhc_tests does not start here:" >&2
    cat "$out/start.err" >&2
    ldd gpu_pack/bin/mhc_tests | grep "not found" >&2 || true
    exit 2
  fi
fi

start=$(date +%s)
rc=0
timeout 330 gpu_pack/bin/mhc_tests --gtest_filter='*Cuda*' --gtest_output="json:$json" >"$log" 2>&1 || rc=$?
echo "gpu_check: mhc_tests exited $rc after $(( $(date +%s) - start )) s (log: $log)"
grep -E "^\[  (FAILED|SKIPPED) |Failure|no CUDA device" "$log" | head -40 || true

python3 - "$json" "$rc" <<'EOF'
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    doc = json.load(open(path))
except (OSError, ValueError) as e:
    print(f"gpu_check: no test report ({e}); mhc_tests exited {rc}")
    sys.exit(1)
rows, counts = [], {"OK": 0, "FAILED": 0, "SKIPPED": 0}
for suite in doc.get("testsuites", []):
    for t in suite.get("testsuite", []):
        name = f"{suite['name']}.{t['name']}"
        if t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
            status = "SKIPPED"
        else:
            status = "FAILED" if t.get("failures") else "OK"
        counts[status] += 1
        err = t.get("max_rel_err", "")
        extra = f" loss diff {t['max_loss_diff']}" if "max_loss_diff" in t else ""
        rows.append((name, status, err + extra, t.get("time", "")))
w = max([len(r[0]) for r in rows] + [4])
print()
print(f"{'test':<{w}}  {'status':<7}  {'max rel err':<24}  time")
for name, status, err, time in rows:
    print(f"{name:<{w}}  {status:<7}  {err:<24}  {time}")
print(f"\ngpu_check: {counts['OK']} passed, {counts['FAILED']} failed, {counts['SKIPPED']} skipped")
sys.exit(0 if counts["FAILED"] == 0 and counts["SKIPPED"] == 0 and rc == 0 and rows else 1)
EOF
