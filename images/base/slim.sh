#!/usr/bin/env bash
# Turn a `debootstrap --variant=minbase` tree into what debian:bookworm-slim is: dpkg told to
# leave out docs, man pages and locales (now and for every later apt-get install), apt told to
# keep no package lists or downloaded .debs, the point releases and security updates applied,
# and no logs, caches or machine identity left behind.
# Usage: slim.sh ROOTFS MIRROR SECURITY_MIRROR SUITE   (run as root; modelship-cluster images
# runs it with the mirrors of /etc/apt/sources.list.d/debian.sources)
set -euo pipefail
root=$1 mirror=$2 security=$3 suite=$4

cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
# As in debian:*-slim: no documentation, man pages or translations in the image.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
CFG
cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
cat > "$root/etc/apt/apt.conf.d/docker-no-languages" <<'CFG'
Acquire::Languages "none";
CFG
cat > "$root/etc/apt/apt.conf.d/docker-autoremove-suggests" <<'CFG'
Apt::AutoRemove::SuggestsImportant "false";
CFG
rm -f "$root/etc/apt/sources.list"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<CFG
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG

# The point release and security updates, with the host's resolver for the download only.
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -qq && apt-get upgrade -y -qq >/dev/null && apt-get clean'
umount "$root/proc"
trap - EXIT

# What dpkg.cfg.d/docker would have left out, had it been there from the start.
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{man,groff,info,lintian,linda,locale}/*
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
       "$root"/var/lib/dpkg/*-old "$root"/tmp/* "$root"/var/tmp/* \
       "$root"/root/.bash_history "$root"/etc/resolv.conf "$root"/etc/hostname
find "$root/var/log" -type f -delete
mkdir -p "$root/var/lib/apt/lists/partial" "$root/var/cache/apt/archives/partial"
: > "$root/etc/machine-id"
