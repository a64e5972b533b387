#!/usr/bin/env bash
# The main job: set up, build, train the default mhc-lite model (configs/default.toml) on the text of
# Debian's `fortunes` package, then print a sample. Re-running continues or reuses runs/fortunes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

corpus=$(scripts/fortunes.sh)
echo "corpus: $corpus ($(wc -c < "$corpus") bytes)"

run=runs/fortunes
resume=()
[ -e "$run/latest" ] && resume=(--resume)
./build/mhc train --config configs/default.toml --data "$corpus" --out "$run" "${resume[@]}"
./build/mhc sample --ckpt "$run/$(head -n 1 "$run/latest").safetensors" \
  --prompt "The " --max-new-tokens 400 --temperature 0.8 --top-k 40 --seed 1
