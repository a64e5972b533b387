#!/usr/bin/env bash
# The default training corpus: every fortune file of Debian's `fortunes` package (not the .dat
# indexes or the .u8 links), in a fixed order, as data/fortunes.txt (kept if it is there already).
# Prints its path. Used by scripts/demo.sh and scripts/gpu_check.sh --pack.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=data/fortunes.txt
if [ ! -s "$corpus" ]; then
  if [ ! -d /usr/share/games/fortunes ]; then
    echo "scripts/fortunes.sh: no /usr/share/games/fortunes (apt-get install fortunes)" >&2
    exit 1
  fi
  mkdir -p data
  find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | LC_ALL=C sort \
    | xargs cat > "$corpus.tmp"
  mv "$corpus.tmp" "$corpus"
fi
echo "$corpus"
