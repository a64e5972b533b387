#!/usr/bin/env bash
# Set up, build, and run the whole test suite (C++ unit tests, finite differences, the PyTorch
# reference's self-check and the C++/PyTorch parity tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
