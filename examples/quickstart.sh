#!/usr/bin/env bash
# Runs buildgrid on 127.0.0.1:5000 (LISTEN overrides) with the example app: it registers
# `examples/hello`, pushes its code to buildgrid with git, waits for the build, and keeps
# serving the image it made. Needs cargo, git, a Docker engine and busybox-static (the example
# builds on a base image made locally from it, so no registry is needed).
set -euo pipefail
cd "$(dirname "$0")/.."

LISTEN=${LISTEN:-127.0.0.1:5000}
DATA=${BUILDGRID_DATA:-buildgrid-data}
BASE=buildgrid-example/busybox:local

docker info >/dev/null 2>&1 || { echo "no Docker engine answers: start dockerd first"; exit 1; }
[ -x /bin/busybox ] || { echo "missing /bin/busybox: apt-get install busybox-static"; exit 1; }

echo "==> building buildgrid"
cargo build --release -q -p buildgrid
BIN=$PWD/target/release/buildgrid
bg() { "$BIN" --data "$DATA" "$@"; }

echo "==> making the base image $BASE from busybox-static (once)"
examples/base-image.sh "$BASE"

echo "==> starting buildgrid on http://$LISTEN (data in $DATA)"
bg serve --listen "$LISTEN" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -s -o /dev/null "http://$LISTEN/v2/" && break; sleep 0.1; done

if ! bg app list | grep -q '^examples/hello'; then
    bg app create examples/hello --git https://github.com/buildgrid/examples-hello.git \
        --build-arg "BASE=$BASE" >/dev/null
fi
# Namespaces are private by default; the example's images may be pulled by anyone.
bg namespace public examples >/dev/null
TOKEN=$(bg token create --name quickstart --scope build:examples/hello)

echo "==> pushing examples/hello to buildgrid"
src=$(mktemp -d)
cp -r examples/hello/. "$src"
git -C "$src" init -q -b main
git -C "$src" add -A
git -C "$src" -c user.name=quickstart -c user.email=quickstart@localhost commit -qm "hello"
push=$(git -C "$src" push "http://quickstart:$TOKEN@$LISTEN/git/examples/hello.git" main 2>&1)
echo "$push" | grep 'buildgrid:' || true
id=$(echo "$push" | sed -n 's/.*buildgrid: \(build \([0-9]*\) queued\|.* already built by build \([0-9]*\)\).*/\2\3/p' | head -1)
rm -rf "$src"
IMAGE=$(bg build-log "$id" --follow | tail -1)

cat <<MSG

==> built and stored: $IMAGE
    try:  docker pull $IMAGE
          docker run --rm $IMAGE
          open http://$LISTEN/ in a browser
    Ctrl-C stops buildgrid.
MSG
wait $SERVER
