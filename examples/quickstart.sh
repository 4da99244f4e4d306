#!/usr/bin/env bash
# Builds buildgrid and the example app, stores the app's image in a fresh data directory and
# serves it on 127.0.0.1:5000 (LISTEN overrides). Needs cargo, a Docker engine and
# busybox-static (for a base image made locally, so no registry is needed).
set -euo pipefail
cd "$(dirname "$0")/.."

LISTEN=${LISTEN:-127.0.0.1:5000}
DATA=${BUILDGRID_DATA:-buildgrid-data}
BASE=buildgrid-example/busybox:local

docker info >/dev/null 2>&1 || { echo "no Docker engine answers: start dockerd first"; exit 1; }
[ -x /bin/busybox ] || { echo "missing /bin/busybox: apt-get install busybox-static"; exit 1; }

echo "==> building buildgrid"
cargo build --release -q -p buildgrid
BIN=target/release/buildgrid

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    echo "==> making the base image $BASE from busybox-static"
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs/bin" "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
    done
    tar -C "$rootfs" -c . | docker import -c 'ENV PATH=/usr/local/bin:/bin' - "$BASE" >/dev/null
    rm -rf "$rootfs"
fi

echo "==> building the example app (examples/hello)"
docker build -q --build-arg "BASE=$BASE" -t buildgrid-example/hello:quickstart examples/hello >/dev/null
archive=$(mktemp --suffix=.tar)
docker save -o "$archive" buildgrid-example/hello:quickstart

echo "==> storing it in buildgrid ($DATA)"
"$BIN" --data "$DATA" import "$archive" --repo examples/hello --tag quickstart
rm -f "$archive"

cat <<MSG
==> serving on http://$LISTEN (Ctrl-C stops)
    try:  docker pull $LISTEN/examples/hello:quickstart
          docker run --rm $LISTEN/examples/hello:quickstart
          open http://$LISTEN/ in a browser
MSG
exec "$BIN" --data "$DATA" serve --listen "$LISTEN"
