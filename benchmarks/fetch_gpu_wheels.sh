#!/usr/bin/env bash
# Downloads into .whl/ the wheels that benchmarks/gpu_check.sh needs on a GPU
# machine without network access (docs/gpu.md): the Python 3.12 x86-64
# wheels of the packages hpe_jax imports that the device image lacks
# (/work/.library/device/KINDS.md lists what it has), pinned to the versions
# of this checkout's environment, without their dependencies (all the others
# are in the image).
#
#   bash benchmarks/fetch_gpu_wheels.sh        # from any directory
#
# Environment: PYTHON, the interpreter whose installed versions are pinned
# (default .venv/bin/python, else python3); DEST, where the wheels go
# (default .whl in the repository root, which .gitignore ignores).
#
# Needs a pip index: PyPI or a local mirror (this workplace's pip config
# points at one). Older wheels of the same packages in DEST are removed
# first: two versions of one package stop the install on the device.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEST=${DEST:-.whl}

# hpe_jax's requirements missing from the device image, and their own
# requirements missing there (grain: array-record, portpicker). Everything
# else they require (absl-py, etils, fsspec, zipp, cloudpickle, protobuf,
# psutil, pyyaml, wrapt, packaging, typing-extensions, numpy, jax, flax) is
# in the image.
PACKAGES=(grain array-record portpicker ml-collections clu pycocotools tensorboardX)

PLATFORMS=()
for p in manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 \
         manylinux_2_35_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done

mkdir -p "$DEST"
if ! git check-ignore -q "$DEST/x.whl" 2>/dev/null; then
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  echo "/$DEST/" >> "$exclude"
  echo "added /$DEST/ to $exclude"
fi

shopt -s nullglob nocaseglob
for name in "${PACKAGES[@]}"; do
  version=$("$PYTHON" -c 'import importlib.metadata as m, sys
print(m.version(sys.argv[1]))' "$name") || {
    echo "$name is not installed in $PYTHON: cannot pin its version" >&2
    exit 1
  }
  stem=${name//-/_}
  for old in "$DEST/$stem"-*.whl; do
    old_name=$(basename "$old")
    [[ "${old_name,,}" == "${stem,,}-$version-"* ]] || rm -v "$old"
  done
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$DEST" -q "$name==$version"
done

echo "wheels in $DEST:"
du -h "$DEST"/*.whl
du -ch "$DEST"/*.whl | tail -1
# What else travels with a device call: tracked and untracked-not-ignored
# files (the limit is 64 MiB with the carried paths).
echo "working tree that travels, without $DEST:"
git ls-files -co --exclude-standard -z | du -ch --files0-from=- 2>/dev/null | tail -1
