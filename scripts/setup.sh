#!/usr/bin/env bash
# Installs what mhc needs to build and test on Debian 12 (only what is missing), then configures
# and builds into build/. Used by scripts/demo.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  g++ cmake ninja-build pkg-config git   # toolchain
  libopenblas-openmp-dev                # CPU matrix products (OpenBLAS built with OpenMP)
  nlohmann-json3-dev                    # safetensors headers, metrics and configs as JSON
  libtomlplusplus-dev libcli11-dev      # TOML configs, the command line
  zlib1g-dev                            # crc32 checksums of checkpoints
  libopenmpi-dev openmpi-bin            # data-parallel training under mpirun (Open MPI)
  libsentencepiece-dev sentencepiece    # tokenizers: SentencePiece models (the library; its spm_encode CLI is the tests' oracle)
  libpcre2-dev                          # tokenizer.json: the GPT-2 pre-tokenizer regex needs Unicode properties (\p{L}, \p{N}) and lookahead
  libgtest-dev libbenchmark-dev         # tests and benchmarks
  python3-torch python3-numpy           # the PyTorch reference used as test oracle
  fortunes                              # the default training corpus (the main job)
  gnuplot-nox                           # `mhc compare` draws its report's plots with gnuplot
  clang libclang-rt-14-dev libomp-14-dev llvm   # fuzzing: clang-14, libFuzzer + sanitizer runtimes, llvm-symbolizer
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The CUDA backend is built when a CUDA compiler is found (docs/GPU.md): on the PATH, or nvcc in
# CUDA's default place.
if ! command -v nvcc >/dev/null && [ -z "${CUDACXX:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
# MHC_CUDA (AUTO, ON, OFF) from the environment: CI sets ON, so that a CUDA compile error fails it.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMHC_CUDA="${MHC_CUDA:-AUTO}" >/dev/null
cmake --build build -j"$(nproc)"
