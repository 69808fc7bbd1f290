#!/usr/bin/env bash
# Train on a lent GPU machine (its image has PyTorch, not our other packages or the host CTs).
# Here: bash scripts/device_bundle.sh 1, then call the machine with carry [.devbundle] and
#   bash scripts/device_train.sh stage
# at once (while it is warm): bash scripts/device_bundle.sh 2, then with carry [.devbundle]
#   bash scripts/device_train.sh train [RECIPE] [MINUTES] [INIT] [SECTION.KEY=VALUE ...]
# "stage" unpacks the bundle into .devstage/ (git-ignored, kept on a warm machine) and runs
# training.device_check on the GPU (seconds); "train" stages what it carries, trains RECIPE
# (default training/configs/gpu_dense.yaml) from INIT (default the embedded weights; or an exported
# .pt carried in .devbundle/) with the --set values for MINUTES (default 7), and leaves best.pt and
# last.pt (slimmed), the log and the summary under $OUT (default out/); export them with
# training.export where they come back. On a CUDA error in the first run it trains on the CPUs.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: device_train.sh stage | train [RECIPE] [MINUTES] [INIT] [SECTION.KEY=VALUE ...]}
recipe=${2:-training/configs/gpu_dense.yaml}
minutes=${3:-7}
init=${4:-BoneMetSegLib/weights/default.pt}
sets=("${@:5}")
OUT=${OUT:-out}
S=$PWD/.devstage
mkdir -p "$S/site" "$S/cache" "$S/shared_data" "$OUT"
if [ -f .devbundle/simpleitk.tar.xz ]; then tar -C "$S/site" -xJf .devbundle/simpleitk.tar.xz; fi
if [ -d .devbundle/wheels ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$S/site" .devbundle/wheels/*.whl
fi
for d in .devbundle/*-*.*; do [ -d "$d" ] && cp -r "$d" "$S/cache/"; done  # fetched samples (package-version/)
[ -d .devbundle/totalsegmentator-example ] && cp -r .devbundle/totalsegmentator-example "$S/shared_data/"
export PYTHONPATH="$S/site:$PWD" BONEMETSEG_CACHE="$S/cache" BONEMETSEG_SHARED_DATA="$S/shared_data"
export PYTHONUNBUFFERED=1
python3 -c "import SimpleITK, monai, torch, training.train; print('staged: torch', torch.__version__, \
'cuda', torch.cuda.is_available(), '| monai', monai.__version__, '| SimpleITK', SimpleITK.Version_VersionString())"
ls "$S/cache" "$S/shared_data"
# the recipe's model on the GPU: two training steps and a prediction, seconds (a device bug shows here)
python3 -m training.device_check --config "$recipe" --device cuda || echo "DEVICE CHECK FAILED"
[ "$mode" = stage ] && exit 0

run=$S/run
rm -rf "$run"
common=(--config "$recipe" --init "$init" --no-progress)
python3 -m training.train "${common[@]}" --run-dir "$run" --device cuda --max-minutes "$minutes" \
    ${sets[@]:+--set "${sets[@]}"} 2>&1 | tee "$OUT/train.log"
if [ ! -f "$run/last.pt" ]; then
    echo "CUDA run left no checkpoint: training on the CPUs instead" | tee -a "$OUT/train.log"
    OMP_NUM_THREADS=12 python3 -m training.train "${common[@]}" --run-dir "$run" --device cpu \
        --max-minutes "$minutes" --set data.num_workers=4 optim.batch_size=4 "${sets[@]}" 2>&1 | tee -a "$OUT/train.log"
fi
# the checkpoints without optimiser state, weights in float16 (what export keeps anyway): 9 MB
# instead of 55, under the 16 MB a returned file may have; training.export reads them as they are
for c in best last; do
    [ -f "$run/$c.pt" ] && python3 -m training.checkpoint slim "$run/$c.pt" "$OUT/ckpt_$c.pt"
done
cp "$run/log.jsonl" "$run/summary.json" "$OUT/" 2>/dev/null
ls -la "$OUT"
