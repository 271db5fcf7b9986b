#!/usr/bin/env bash
# Build the local container image the Molecule scenarios use: Debian bookworm with systemd as
# PID 1, Python 3 (for Ansible and the workers' virtualenvs) and redis-server. No registry is
# reachable, so the root filesystem comes from debootstrap against this machine's apt mirror and
# is imported with `podman import`. Skipped when the image already exists.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${QUEUEOPS_IMAGE:-localhost/queueops-node:bookworm-1}
packages=systemd,systemd-sysv,dbus,python3,python3-venv,procps,iproute2,redis-server

if podman image exists "$image"; then
  echo "image $image: present"
  exit 0
fi
mirror=$("$here/apt-mirror.sh")
rootfs=$(mktemp -d /var/tmp/queueops-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "image $image: building with debootstrap from $mirror (about a minute)"
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# Units that make no sense in a container, and an apt cache nobody needs.
for unit in getty.target systemd-logind.service systemd-udevd.service systemd-remount-fs.service \
            redis-server.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --quiet \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >/dev/null
echo "image $image: built"
