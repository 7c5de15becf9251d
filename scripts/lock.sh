#!/usr/bin/env bash
# Resolve every Python dependency once, with hashes, into requirements/lock.txt (the images
# and .venv both install from it), then derive each image's subset requirements/<image>.txt
# from its <image>.in constrained by the lock, so every subset pins the lock's versions.
# Run after changing pyproject.toml's dependencies or an <image>.in: `make lock`.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
common=(--quiet --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
        --no-header --annotation-style line)
upgrade=()
[ "${UPGRADE:-0}" = 1 ] && upgrade=(--upgrade)
echo "==> requirements/lock.txt from pyproject.toml (with [dev]) and requirements/build.in"
"$uv" pip compile "${common[@]}" "${upgrade[@]}" --extra dev \
  pyproject.toml requirements/build.in -o requirements/lock.txt
for in_file in requirements/*.in; do
  out=${in_file%.in}.txt
  echo "==> $out from $in_file (versions of lock.txt)"
  "$uv" pip compile "${common[@]}" -c requirements/lock.txt "$in_file" -o "$out"
done
