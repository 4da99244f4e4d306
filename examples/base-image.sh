#!/usr/bin/env bash
# Makes a small base image NAME from Debian's busybox-static with `docker import`, so the
# examples build with no registry at all. Does nothing when NAME exists.
set -euo pipefail
name=${1:?usage: examples/base-image.sh NAME}
docker image inspect "$name" >/dev/null 2>&1 && exit 0
[ -x /bin/busybox ] || { echo "missing /bin/busybox: apt-get install busybox-static"; exit 1; }
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
tar -C "$rootfs" -c . | docker import -c 'ENV PATH=/usr/local/bin:/bin' - "$name" >/dev/null
