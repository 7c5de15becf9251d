#!/usr/bin/env bash
# Create the project's virtual environment and install modelship (editable) with its dev tools.
# Every dependency comes from requirements/lock.txt (hash-checked), the lock the images install
# from too, so the tests run the versions the images ship. Idempotent: re-running only installs
# what changed. pip's own cache keeps the second run fast.
set -euo pipefail
venv="${1:-.venv}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "modelship needs Python >= 3.11 (found $("$python" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv"
  "$python" -m venv "$venv"
fi
echo "==> installing requirements/lock.txt and modelship (editable) into $venv (pip cache: ${PIP_CACHE_DIR:-~/.cache/pip})"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --progress-bar off --require-hashes -r requirements/lock.txt \
  | grep -vE '^(Requirement already satisfied|  )' || true
# The build backend is in the lock too: no unpinned download for the editable install.
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e '.[dev]'
# The Python client is its own distribution (client/pyproject.toml); its dependencies are in
# the lock through modelship's.
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e client/
"$venv/bin/python" -m pip check
echo "==> $venv ready"
