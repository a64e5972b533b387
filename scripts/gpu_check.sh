#!/usr/bin/env bash
# The GPU check (docs/GPU.md): on a machine with an NVIDIA GPU, every GPU test, `--device cuda` end to
# end, and a short `mhc bench --device cuda`, with a short table last; well inside 6 minutes.
#
#   scripts/gpu_check.sh --pack    HERE (Debian 12 with nvcc and the project's packages, scripts/setup.sh):
#                                  builds build-gpu/ (CUDA on, sm_90, -march=x86-64-v3, no emulation),
#                                  then gpu_pack/ (git-ignored): mhc and mhc_tests, stripped, with the
#                                  shared libraries they need that a CUDA machine may lack (OpenBLAS and
#                                  its Fortran runtime, SentencePiece, PCRE2, zlib, libgomp; libstdc++ and
#                                  libgcc_s apart, for a machine whose own are older), never the driver,
#                                  the CUDA runtime (linked statically) or cuBLAS (the machine's, which
#                                  matches its driver); checks that the binaries resolve every library
#                                  from the pack or the C library; adds the fortunes corpus
#                                  (scripts/fortunes.sh); packs it all into gpu_pack.tar.xz
#   scripts/gpu_check.sh [--out DIR]
#                                  THERE (the CUDA toolkit or its Python wheels, no Debian packages, no
#                                  network): unpacks gpu_pack.tar.xz unless gpu_pack/ is there; runs
#                                  1. mhc_tests' GPU suites (*Cuda*), 2. tests/cli/test_device.py with the
#                                  packed mhc on the GPU, 3. mhc bench --device cuda (every variant, the
#                                  mHC-lite authors' model, 10 steps; then mhc_lite with recompute, and
#                                  none and mhc_lite in dtype bf16, mhc_lite in bf16 untimed and with
#                                  cuda_graphs), 4. the default model 300 steps on
#                                  the fortunes corpus in fp32 and in bf16 (validation losses within 1%,
#                                  bf16's mixing matrices doubly stochastic to 1e-6); writes their logs
#                                  and JSON into DIR ($OUT if set, else gpu_check_out/) and prints the
#                                  table last.
#                                  Here (no GPU) it checks that the pack starts: the GPU tests are skipped
#                                  and the exit status is 1.
#   scripts/gpu_check.sh --gpt2 [--out DIR]
#                                  THERE, after the check: the speed issue's GPT-2-small benchmark,
#                                  bench/side_by_side.py --device cuda (mhc in dtype bf16 and the
#                                  PyTorch reference in bf16 autocast; none, hc, mhc, mhc_lite, kromhc)
#                                  and mhc_lite with recompute, untimed and with cuda_graphs, then mhc's time per op and step for
#                                  each variant; about 3 minutes, 10 at most.
# Exit status: 0 when every GPU test ran and passed, test_device.py passed, the benches ran and the
# bf16 run met its bounds.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=run out="${OUT:-gpu_check_out}"
while (($#)); do
  case "$1" in
    --pack) mode=pack ;;
    --gpt2) mode=gpt2 ;;
    --out) out="$2"; shift ;;
    *) echo "usage: scripts/gpu_check.sh [--pack | --gpt2 | --out DIR]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$mode" = pack ]; then
  set -e
  B=build-gpu
  start=$(date +%s)
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache) || launcher=()
  [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ] && export CUDACXX=/usr/local/cuda/bin/nvcc
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMHC_CUDA=ON -DMHC_MARCH=x86-64-v3 \
    -DMHC_CUDA_EMU=OFF -DMHC_BUILD_BENCH=OFF -DMHC_MPI=OFF "${launcher[@]}" >/dev/null
  cmake --build "$B" -j"$(nproc)" --target mhc mhc_tests
  rm -rf gpu_pack gpu_pack.tar.xz
  mkdir -p gpu_pack/bin gpu_pack/lib/compat gpu_pack/data
  cp "$B/mhc" "$B/tests/mhc_tests" gpu_pack/bin/
  cp "$(scripts/fortunes.sh)" gpu_pack/data/fortunes.txt
  strip --strip-unneeded gpu_pack/bin/*
  # Shared libraries, resolved here: all but the C library's own (every machine has them, matched to
  # its kernel), the GPU driver and the CUDA libraries (the GPU machine's must match its driver).
  ldd "$B/mhc" "$B/tests/mhc_tests" | awk '/=> \// { print $1, $3 }' | sort -u | while read -r name path; do
    case "$name" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libcuda.so*|libcudart*|libcublas*|libnvidia*) ;;
      libstdc++.so*|libgcc_s.so*) cp -L "$path" "gpu_pack/lib/compat/$name" ;;  # used only if the machine's are older
      *) cp -L "$path" "gpu_pack/lib/$name" ;;
    esac
  done
  strip --strip-unneeded gpu_pack/lib/*.so* gpu_pack/lib/compat/*.so* 2>/dev/null || true
  # Every library the binaries load must come from the pack or be one the machine has anyway.
  bad=$(LD_LIBRARY_PATH="$PWD/gpu_pack/lib" ldd gpu_pack/bin/mhc gpu_pack/bin/mhc_tests | awk '/=>/ { print $1, $3 }' |
        grep -vE "^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libcublas|libcublasLt|ld-linux)[.-]" |
        grep -v " $PWD/gpu_pack/lib/" || true)
  if [ -n "$bad" ]; then echo "gpu_check --pack: libraries not in the pack:" >&2; echo "$bad" >&2; exit 1; fi
  { git rev-parse HEAD; git status --porcelain --untracked-files=no | grep -q . && echo "(uncommitted changes)"; } \
    > gpu_pack/COMMIT 2>/dev/null || true
  tar -cJf gpu_pack.tar.xz gpu_pack
  du -sh gpu_pack gpu_pack.tar.xz
  echo "gpu_check --pack: done in $(( $(date +%s) - start )) s; on the GPU machine: scripts/gpu_check.sh" \
       "(carry gpu_pack.tar.xz, $(du -h gpu_pack.tar.xz | cut -f1))"
  exit 0
fi

# ---- run mode (the GPU machine) ------------------------------------------------------------------
t0=$(date +%s)
if [ ! -x gpu_pack/bin/mhc_tests ]; then
  if [ -f gpu_pack.tar.xz ]; then
    tar -xJf gpu_pack.tar.xz || exit 2
  else
    echo "gpu_check: no gpu_pack/ or gpu_pack.tar.xz here: run scripts/gpu_check.sh --pack on a build machine" \
         "and carry gpu_pack.tar.xz (docs/GPU.md)" >&2
    exit 2
  fi
fi
mkdir -p "$out"
echo "gpu_check: pack of commit $(head -c 12 gpu_pack/COMMIT 2>/dev/null) $(sed -n 2p gpu_pack/COMMIT 2>/dev/null)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# cuBLAS from the machine: its CUDA toolkit, else the CUDA wheels of its Python.
libpath="$PWD/gpu_pack/lib"
cublas=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib; do
  [ -z "$cublas" ] && [ -e "$d/libcublas.so.13" ] && cublas="$d"
done
if [ -z "$cublas" ] && command -v python3 >/dev/null; then
  cublas=$(python3 - <<'EOF' 2>/dev/null
import glob, os, site, sys
for base in site.getsitepackages() + [site.getusersitepackages()] + sys.path:
    for hit in glob.glob(os.path.join(base, "nvidia", "**", "libcublas.so.13"), recursive=True):
        print(os.path.dirname(hit)); raise SystemExit
EOF
)
fi
[ -n "$cublas" ] && libpath="$libpath:$cublas"
export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The machine's libstdc++ if it is new enough, else the one packed beside the binaries.
if ! gpu_pack/bin/mhc_tests --gtest_list_tests >/dev/null 2>&1; then
  export LD_LIBRARY_PATH="$PWD/gpu_pack/lib/compat:$LD_LIBRARY_PATH"
  if ! gpu_pack/bin/mhc_tests --gtest_list_tests >/dev/null 2>"$out/start.err"; then
    echo "gpu_check: mhc_tests does not start here (cuBLAS found in: ${cublas:-nowhere}):" >&2
    cat "$out/start.err" >&2
    ldd gpu_pack/bin/mhc_tests | grep "not found" >&2
    exit 2
  fi
fi
export OMP_WAIT_POLICY=passive

if [ "$mode" = gpt2 ]; then
  # The speed issue's benchmark (docs/PERFORMANCE.md): GPT-2 small, T = 1024, vocabulary 50,304,
  # n = 4, the same batch for every variant; mhc (dtype bf16) beside the PyTorch reference (bf16
  # autocast, fused attention) on this GPU, then mhc_lite again with activation recompute.
  gpt2=(--set n_layer=12 --set n_head=12 --set n_embd=768 --set block_size=1024 --set vocab_size=50304
        --set batch_size=8 --set hyper_conn_n=4)
  timeout 420 python3 bench/side_by_side.py --mhc gpu_pack/bin/mhc --device cuda --threads 4 --steps 10 \
    --warmup 3 --variants none,hc,mhc,mhc_lite,kromhc "${gpt2[@]}" --out "$out/gpt2_small.md" \
    2> >(tee "$out/gpt2_small.err" >&2)
  rc=$?
  timeout 120 gpu_pack/bin/mhc bench --device cuda --variants mhc_lite --steps 5 --warmup 2 "${gpt2[@]}" \
    --set dtype=bf16 --set recompute=true --json > "$out/gpt2_recompute.log" 2>&1 || rc=$?
  timeout 45 gpu_pack/bin/mhc bench --device cuda --variants mhc_lite --steps 5 --warmup 2 "${gpt2[@]}" \
    --set dtype=bf16 --no-op-times --json > "$out/gpt2_untimed.log" 2>&1 || rc=$?
  timeout 45 gpu_pack/bin/mhc bench --device cuda --variants mhc_lite --steps 5 --warmup 2 "${gpt2[@]}" \
    --set dtype=bf16 --set cuda_graphs=true --json > "$out/gpt2_graphs.log" 2>&1 || rc=$?
  python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
for name, log in (("recompute", "gpt2_recompute"), ("no op timing", "gpt2_untimed"), ("cuda_graphs", "gpt2_graphs")):
    try:
        r = json.loads(open("%s/%s.log" % (out, log)).read().strip().splitlines()[-1])["results"][0]
        print("mhc_lite with %s: %.0f tok/s, step %.1f ms, peak GPU memory %.0f MB (device in use %.0f MB), "
              "MFU16 %.1f%%" % (name, r["tokens_per_s"], 1e3 * r["step_s_median"], r["device_peak_mb"],
                                r.get("device_used_mb") or -1, 100 * r.get("mfu_bf16", 0)))
    except (OSError, ValueError, KeyError, IndexError):
        print("mhc_lite with %s: no result (%s/%s.log)" % (name, out, log))
# Where the step goes, op by op (mhc bench's ops_s), for each variant of the side-by-side run.
try:
    res = json.load(open(out + "/gpt2_small.json"))["mhc"]["results"]
    ops = sorted(set().union(*(r["ops_s"] for r in res)), key=lambda op: -res[-1]["ops_s"].get(op, 0))
    print("ms per step by op:   " + " ".join("%9s" % r["variant"] for r in res))
    for op in ops:
        print("%-20s " % op + " ".join("%9.2f" % (1e3 * r["ops_s"].get(op, 0)) for r in res))
except (OSError, ValueError, KeyError, IndexError):
    print("ms per step by op: no result (%s/gpt2_small.json)" % out)
EOF
  echo "gpu_check --gpt2: exit $rc; the table and both sides' JSON in $out/gpt2_small.md, .json"
  exit $rc
fi

# 1. Every GPU test of mhc_tests.
s=$(date +%s)
timeout 130 gpu_pack/bin/mhc_tests --gtest_filter='*Cuda*' --gtest_output="json:$out/gpu_tests.json" \
  >"$out/gpu_tests.log" 2>&1
rc_tests=$?
t_tests=$(( $(date +%s) - s ))
# 2. --device cuda end to end: the packed mhc is both the CPU's and the GPU's program here.
s=$(date +%s)
timeout 70 python3 tests/cli/test_device.py gpu_pack/bin/mhc gpu_pack/bin/mhc >"$out/device_test.log" 2>&1
rc_device=$?
t_device=$(( $(date +%s) - s ))
# 3. A short bench on the GPU: every variant, the mHC-lite authors' model (mhc bench's default).
s=$(date +%s)
timeout 45 gpu_pack/bin/mhc bench --device cuda --steps 10 --warmup 3 --json >"$out/bench.log" 2>&1
rc_bench=$?
# mhc-lite again with activation recompute: its step time and peak GPU memory beside the above.
timeout 20 gpu_pack/bin/mhc bench --device cuda --variants mhc_lite --steps 5 --warmup 2 --set recompute=true \
  --json >"$out/bench_recompute.log" 2>&1 || rc_bench=$?
# none and mhc_lite again in dtype bf16 (products and attention on the tensor cores, bf16 activations).
timeout 25 gpu_pack/bin/mhc bench --device cuda --variants none,mhc_lite --steps 5 --warmup 2 --set dtype=bf16 \
  --json >"$out/bench_bf16.log" 2>&1 || rc_bench=$?
# Whether replaying each step as CUDA graphs pays: mhc_lite in bf16 untimed (no CUDA event around
# each op, which a graph cannot hold), without and with cuda_graphs.
timeout 15 gpu_pack/bin/mhc bench --device cuda --variants mhc_lite --steps 5 --warmup 2 --set dtype=bf16 \
  --no-op-times --json >"$out/bench_untimed.log" 2>&1 || rc_bench=$?
timeout 15 gpu_pack/bin/mhc bench --device cuda --variants mhc_lite --steps 5 --warmup 2 --set dtype=bf16 \
  --set cuda_graphs=true --json >"$out/bench_graphs.log" 2>&1 || rc_bench=$?
t_bench=$(( $(date +%s) - s ))
for b in bench bench_recompute bench_bf16 bench_untimed bench_graphs; do tail -n 1 "$out/$b.log" > "$out/$b.json"; done
# 4. bf16 numerics: the default model 300 steps on the fortunes corpus, in fp32 and in bf16.
s=$(date +%s)
rc_bf16=0
for d in fp32 bf16; do
  rm -rf "$out/fortunes_$d"
  timeout 20 gpu_pack/bin/mhc train --config configs/default.toml --data gpu_pack/data/fortunes.txt \
    --out "$out/fortunes_$d" --device cuda --set dtype=$d --set max_iters=300 --set eval_interval=100 \
    --quiet --json >"$out/fortunes_$d.log" 2>&1 || rc_bf16=$?
done
t_bf16=$(( $(date +%s) - s ))

python3 - "$out" "$rc_tests" "$t_tests" "$rc_device" "$t_device" "$rc_bench" "$t_bench" "$rc_bf16" "$t_bf16" \
  "$(( $(date +%s) - t0 ))" <<'EOF'
import json, re, sys
out, rc_tests, t_tests, rc_device, t_device, rc_bench, t_bench, rc_bf16, t_bf16, t_all = sys.argv[1:]
ok = True
print()
# 1. GPU tests, by suite: counts, the worst relative error any check measured, time.
try:
    doc = json.load(open(out + "/gpu_tests.json"))
except (OSError, ValueError) as e:
    doc = {"testsuites": []}
    print("GPU tests: no report (%s); mhc_tests exited %s" % (e, rc_tests))
    ok = False
rows, total = [], {"OK": 0, "FAILED": 0, "SKIPPED": 0}
losses = []
for suite in doc.get("testsuites", []):
    c = {"OK": 0, "FAILED": 0, "SKIPPED": 0}
    worst = 0.0
    for t in suite.get("testsuite", []):
        st = "SKIPPED" if t.get("result") == "SKIPPED" else "FAILED" if t.get("failures") else "OK"
        c[st] += 1
        try:
            worst = max(worst, float(t.get("max_rel_err", 0)))
        except ValueError:
            pass
        if "max_loss_diff" in t:
            losses.append("%s %s" % (t["name"].split("/")[-1], t["max_loss_diff"]))
    for k in c:
        total[k] += c[k]
    rows.append((suite["name"], c["OK"], c["FAILED"], c["SKIPPED"], "%.2g" % worst if worst else "-"))
w = max([len(r[0]) for r in rows] + [10])
print("%-*s %6s %6s %7s %12s" % (w, "GPU suite", "passed", "failed", "skipped", "max rel err"))
for r in rows:
    print("%-*s %6d %6d %7d %12s" % (w, *r))
if losses:
    print("20 steps GPU vs CPU, max |loss difference|: " + ", ".join(losses))
ok = ok and total["FAILED"] == 0 and total["SKIPPED"] == 0 and total["OK"] > 0 and rc_tests == "0"
# 2. test_device.py's last line.
last = ""
try:
    last = [l for l in open(out + "/device_test.log").read().splitlines() if l.strip()][-1]
except (OSError, IndexError):
    pass
m = re.match(r"(\d+) passed, (\d+) failed", last)
print("--device cuda end to end (tests/cli/test_device.py): %s (exit %s, %s s)" % (last or "no result", rc_device, t_device))
ok = ok and rc_device == "0" and m is not None
# 3. The bench.
try:
    b = json.load(open(out + "/bench.json"))
    print("mhc bench --device cuda, %s, batch %d, block %d, %d layers x %d, cuBLAS peaks: fp32 %.0f, bf16 %.0f "
          "GFLOP/s (MFU16 against the latter):" % (
        b["device"], b["config"]["batch_size"], b["config"]["block_size"], b["config"]["n_layer"],
        b["config"]["n_embd"], b["sgemm_peak_gflops"], b["bf16_peak_gflops"]))
    print("  %-9s %9s %8s %6s %6s %7s %7s  ms per step: %s" % ("variant", "tok/s", "step ms", "MFU", "MFU16", "GPU MB", "dev MB",
          " ".join("%8s" % p[:8] for p in b["results"][0]["phases_s"])))
    rows = b["results"]
    for extra, names in (("recompute", ["+recomp"]), ("bf16", ["none16", "lite16"]),
                         ("untimed", ["lite16u"]), ("graphs", ["lite16g"])):
        try:
            got = json.load(open(out + "/bench_%s.json" % extra))["results"]
            rows = rows + [dict(r, variant=name) for r, name in zip(got, names)]
            ok = ok and len(got) == len(names)
        except (OSError, ValueError, KeyError, IndexError):
            print("  (%s: no result; %s/bench_%s.log)" % (" and ".join(names), out, extra))
            ok = False
    for r in rows:
        print("  %-9s %9.0f %8.1f %5.1f%% %5.1f%% %7.1f %7.0f  %s%s" % (r["variant"], r["tokens_per_s"],
              1e3 * r["step_s_median"], 100 * r["mfu"], 100 * r["mfu_bf16"], r["device_peak_mb"],
              r.get("device_used_mb") or -1, " " * len("ms per step: "),
              " ".join("%8.2f" % (1e3 * v) for v in r["phases_s"].values())))
except (OSError, ValueError, KeyError) as e:
    print("mhc bench --device cuda: no result (exit %s; %s/bench.log)" % (rc_bench, out))
    ok = False
# 4. bf16 numerics: the final validation losses, and SPEC §6's DS error of every site in bf16.
try:
    def run_of(d):
        recs = [json.loads(l) for l in open("%s/fortunes_%s/metrics.jsonl" % (out, d)) if l.strip()]
        return [r["val_loss"] for r in recs if "val_loss" in r][-1], recs
    (v32, _), (v16, recs16) = run_of("fp32"), run_of("bf16")
    ds = [s["ds_error_max"] for r in recs16 if "diag" in r for s in r["diag"]["sites"]]
    gap = abs(v16 - v32) / v32
    good = gap <= 0.01 and ds and max(ds) <= 1e-6 and rc_bf16 == "0"
    print("300 steps of the default model on fortunes: val loss fp32 %.4f, bf16 %.4f (%+.2f%%, bound 1%%); bf16 "
          "DS error max %.2g over %d site readings (bound 1e-6); %s s: %s" % (
              v32, v16, 100 * (v16 - v32) / v32, max(ds) if ds else float("nan"), len(ds), t_bf16,
              "ok" if good else "FAILED"))
    ok = ok and good
except (OSError, ValueError, KeyError, IndexError) as e:
    print("300 steps fp32 vs bf16: no result (exit %s; %s/fortunes_*.log): %s" % (rc_bf16, out, e))
    ok = False
print("gpu_check: %s: %d GPU tests passed, %d failed, %d skipped (%s s); test_device %s s; bench %s s; %s s in all" % (
    "PASS" if ok else "FAIL", total["OK"], total["FAILED"], total["SKIPPED"], t_tests, t_device, t_bench, t_all))
sys.exit(0 if ok else 1)
EOF
