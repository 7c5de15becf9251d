#!/usr/bin/env bash
# Create the project's virtual environment and install modelship (editable) with its dev tools.
# Idempotent: re-running only installs what changed. pip's own cache keeps the second run fast.
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
echo "==> installing modelship and dev tools into $venv (pip cache: ${PIP_CACHE_DIR:-~/.cache/pip})"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --progress-bar off -e '.[dev]' | grep -vE '^(Requirement already satisfied|  )' || true
echo "==> $venv ready"
