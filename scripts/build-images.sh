#!/usr/bin/env bash
# Build the operator, serving and router images, tagged with the one version source
# (pyproject.toml's version, which is also the chart's appVersion and the default tags).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -nE 's/^version = "([^"]+)"/\1/p' pyproject.toml | head -1)
engine=${CONTAINER_ENGINE:-$(command -v docker || command -v podman || true)}
if [ -z "$engine" ] || ! "$engine" info >/dev/null 2>&1; then
  echo "no container engine answers here (docker or podman); images are not built." >&2
  echo "The local cluster needs none: its node agent maps modelship/* images to the" >&2
  echo "installed commands (cluster/modelship_cluster/images.yaml)." >&2
  exit 1
fi
registry=${REGISTRY:-modelship}
for component in operator serving router; do
  echo "==> building $registry/$component:$version"
  "$engine" build -f "$component/Dockerfile" -t "$registry/$component:$version" .
done
