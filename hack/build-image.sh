#!/usr/bin/env bash
# Build the local container image the Molecule scenarios use: Debian bookworm with systemd as
# PID 1, Python 3 (for Ansible and the workers' virtualenvs), redis-server (which brings
# redis-cli through redis-tools), openssh-server, so that Ansible and testinfra reach the
# worker containers over SSH as they reach production hosts, and Debian's PostgreSQL, which the
# faults fleets run as a service container (/usr/local/sbin/queueops-postgres) for the sample app's
# transactional task. No registry is reachable, so the
# root filesystem comes from debootstrap against this machine's apt mirror and is imported with
# `podman import`. Skipped when the image already exists; bump the tag when the contents change.
#
# sshd: root logs in by key only (the key is made per Molecule run and mounted as
# /root/.ssh/authorized_keys by molecule/shared/create.yml); no passwords, no DNS look-ups. Each
# container makes its own ed25519 host key when ssh.service first starts, so no two containers
# (and no two runs) share one; create.yml reads it with `podman exec` for the run's known_hosts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${QUEUEOPS_IMAGE:-localhost/queueops-node:bookworm-4}
packages=systemd,systemd-sysv,dbus,python3,python3-venv,procps,iproute2,redis-server,redis-sentinel,openssh-server,postgresql

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
            redis-server.service redis-sentinel.service postgresql.service ssh.socket; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

# --- PostgreSQL ---------------------------------------------------------------------------------
# The package's postinst made a cluster nobody uses; the service container makes its own at first
# start: a password for the role sampleapp (QUEUEOPS_PG_PASSWORD, default sampleapp), its database,
# and SCRAM logins from the container's own networks only (samenet).
rm -rf "$rootfs"/var/lib/postgresql/*/main "$rootfs"/etc/postgresql/*/main
cat >"$rootfs/usr/local/sbin/queueops-postgres" <<'SCRIPT'
#!/bin/sh
# queueops test image: Debian's PostgreSQL in the foreground, as a service container's command.
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
data=/var/lib/postgresql/queueops
password=${QUEUEOPS_PG_PASSWORD:-sampleapp}
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
if [ ! -s "$data/PG_VERSION" ]; then
  install -d -o postgres -g postgres -m 0700 "$data"
  as_postgres "$bin/initdb" -D "$data" -U postgres -E UTF8 --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  echo "host all all samenet scram-sha-256" >>"$data/pg_hba.conf"
  printf "CREATE ROLE sampleapp LOGIN PASSWORD '%s';\nCREATE DATABASE sampleapp OWNER sampleapp;\n" "$password" \
    | as_postgres "$bin/postgres" --single -D "$data" postgres >/dev/null
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
  "$bin/postgres" -D "$data" -c listen_addresses='*' -c unix_socket_directories=/tmp
SCRIPT
chmod 0755 "$rootfs/usr/local/sbin/queueops-postgres"

# --- sshd ---------------------------------------------------------------------------------------
# Debian's sshd_config reads sshd_config.d/*.conf first, and the first value of a keyword wins.
cat >"$rootfs/etc/ssh/sshd_config.d/queueops.conf" <<'CONF'
# queueops test image: root by key only, one ed25519 host key made at first boot.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintLastLog no
HostKey /etc/ssh/ssh_host_ed25519_key
CONF
# The host keys debootstrap's postinst made would be shared by every container: make one per
# container instead, before Debian's own `sshd -t` check runs.
rm -f "$rootfs"/etc/ssh/ssh_host_*
mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
cat >"$rootfs/etc/systemd/system/ssh.service.d/queueops-host-key.conf" <<'CONF'
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || exec /usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
CONF
# sshd at boot (the package's postinst enables it already; say so here rather than rely on it).
mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
ln -sf /lib/systemd/system/ssh.service "$rootfs/etc/systemd/system/multi-user.target.wants/ssh.service"
install -d -m 0700 "$rootfs/root/.ssh"

tar -C "$rootfs" -c . | podman import --quiet \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >/dev/null
echo "image $image: built"
