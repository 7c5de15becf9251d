#!/bin/sh
# Slim an image's virtual environment in its build stage: drop test suites, C/Cython
# sources and headers, caches; strip debug symbols from shared objects; compile bytecode
# once, checked by hash (valid whatever the files' times, so a read-only root filesystem
# never needs a write). pip and setuptools stay until the image's last build stage drops
# them (see the Dockerfiles' `venv` stage).
# Usage: slim-venv.sh VENV
set -eu
venv=$1
site=$(echo "$venv"/lib/python3*/site-packages)
find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
find "$site" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.c' \
  -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \) -delete
# Not the libraries auditwheel vendored under <project>.libs/: patchelf rewrote them, and
# strip breaks those ("ELF load command address/offset not page-aligned"); they come
# stripped anyway.
find "$site" -type f -name '*.so*' -not -path '*.libs/*' -exec strip --strip-unneeded {} +
"$venv/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$site"
