#!/usr/bin/env bash
# Debian packages the local cluster and its images need. Installs only what is missing.
set -euo pipefail
need=()
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v conntrack >/dev/null || need+=(conntrack)
# ipset: the node's NetworkPolicy agent (kube-router) keeps its peer sets in it.
command -v ipset >/dev/null || need+=(ipset)
command -v nsenter >/dev/null || need+=(util-linux)
# The node: containerd with runc and the CNI plugins (kubelet and crictl are built from Go).
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
# The images (modelship-cluster images): daemonless builds on a Debian base made here,
# the static pause binary, and the tools the image tests inspect with.
command -v buildah >/dev/null || need+=(buildah)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/include/signal.h ] || need+=(libc6-dev)
command -v strip >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
