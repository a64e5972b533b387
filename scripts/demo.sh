#!/usr/bin/env bash
# The main job, until the training engine exists: set up, build, and run one stack of sites of each
# connection variant forward and backward, printing the SPEC §6 diagnostics.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
./build/mhc_conn_demo
