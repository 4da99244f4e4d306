#!/usr/bin/env bash
# Side-by-side benchmark of buildgrid and CNCF distribution (Debian's `docker-registry`, 2.8)
# with their blobs in the same S3-compatible store: a one-node Garage on loopback, a bucket each.
#
#   registry/bench/s3.sh                           # 10 s per wrk run, 200 MB layers
#   DURATION=30 LAYER_MB=500 registry/bench/s3.sh
#   BIN=target/release/buildgrid registry/bench/s3.sh   # use that binary, do not build
#
# Prints manifest GETs per second (64 connections) and their ratio; the time to pull one layer
# with curl from each streaming it (distribution with `redirect: disable`) and from each
# answering with a redirect to a presigned Garage URL (distribution's default, buildgrid's
# `serve --blob-redirect`); the time to store a new image with a new layer, `buildgrid import`
# of a `docker save` archive against `skopeo copy` of the same archive (and `docker push` of
# the image) to distribution; the servers' peak memory (VmHWM).
# Needs garage (`cargo install garage --version 2.5.0 --locked`), docker, skopeo, wrk, curl,
# python3, docker-registry and busybox-static; everything listens on 127.0.0.1 and stops by
# itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
LAYER_MB=${LAYER_MB:-200}
BG_PORT=${BG_PORT:-15000}
DIST_PORT=${DIST_PORT:-15001}
BG_REDIRECT_PORT=${BG_REDIRECT_PORT:-15002}
DIST_STREAM_PORT=${DIST_STREAM_PORT:-15003}
# Garage's S3 port; its RPC and admin ports are the next two.
GARAGE_PORT=${GARAGE_PORT:-15010}
# How long buildgrid's presigned URLs are valid.
REDIRECT_SECONDS=${REDIRECT_SECONDS:-300}

for tool in docker skopeo wrk curl python3 docker-registry; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install $tool"; exit 1; }
done
[ -x /bin/busybox ] || { echo "missing /bin/busybox: apt-get install busybox-static"; exit 1; }
GARAGE=$(command -v garage || echo "$HOME/.cargo/bin/garage")
[ -x "$GARAGE" ] || { echo "missing garage: cargo install garage --version 2.5.0 --locked"; exit 1; }

if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p buildgrid
    BIN=target/release/buildgrid
fi
# Before buildgrid could keep blobs in S3, only distribution's half can run.
BUILDGRID=yes
"$BIN" --help | grep -q -- --blob-store || BUILDGRID=
[ -n "$BUILDGRID" ] || echo "$BIN has no --blob-store option: measuring distribution only"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    docker rmi -f buildgrid-s3-bench:a buildgrid-s3-bench:b "127.0.0.1:$DIST_PORT/bench/pushed:v1" \
        >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Seconds (3 decimals) a command takes; its output goes to $WORK/last.log.
seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" >"$WORK/last.log" 2>&1 || { echo "failed: $*" >&2; cat "$WORK/last.log" >&2; return 1; }
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2fx", a / b }'; }
rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
wait_http() { # port log
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/v2/" && return 0; sleep 0.1; done
    echo "nothing answers on 127.0.0.1:$1:" >&2
    cat "$2" >&2
    return 1
}

echo "starting a one-node Garage on 127.0.0.1:$GARAGE_PORT"
mkdir "$WORK/garage"
cat > "$WORK/garage/garage.toml" <<TOML
metadata_dir = "$WORK/garage/meta"
data_dir = "$WORK/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$((GARAGE_PORT + 1))"
rpc_public_addr = "127.0.0.1:$((GARAGE_PORT + 1))"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$GARAGE_PORT"

[admin]
api_bind_addr = "127.0.0.1:$((GARAGE_PORT + 2))"
admin_token = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TOML
"$GARAGE" -c "$WORK/garage/garage.toml" server >"$WORK/garage.log" 2>&1 &
PIDS+=($!)
garage() { "$GARAGE" -c "$WORK/garage/garage.toml" "$@"; }
# `garage status` asks the server over RPC: it answers once the server is up.
for _ in $(seq 1 100); do garage status >/dev/null 2>&1 && break; sleep 0.1; done
garage status >/dev/null || { echo "garage did not start:"; cat "$WORK/garage.log"; exit 1; }
NODE=$(garage node id -q | cut -d@ -f1)
garage layout assign -z dc1 -c 100G "$NODE" >/dev/null
garage layout apply --version 1 >/dev/null
KEY=$(garage key create bench)
KEY_ID=$(echo "$KEY" | sed -n 's/^Key ID: *//p')
SECRET=$(echo "$KEY" | sed -n 's/^Secret key: *//p')
for bucket in buildgrid distribution; do
    garage bucket create "$bucket" >/dev/null
    garage bucket allow --read --write --owner "$bucket" --key "$KEY_ID" >/dev/null
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$GARAGE_PORT" AWS_REGION=garage
export AWS_ACCESS_KEY_ID="$KEY_ID" AWS_SECRET_ACCESS_KEY="$SECRET"

echo "building two test images, each with a new ${LAYER_MB} MB layer"
for image in a b; do
    mkdir "$WORK/context"
    cp /bin/busybox "$WORK/context/busybox"
    head -c "${LAYER_MB}M" /dev/urandom > "$WORK/context/big.bin"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY big.bin /data/big.bin\nCMD ["/bin/busybox", "true"]\n' \
        > "$WORK/context/Dockerfile"
    docker build -q -t "buildgrid-s3-bench:$image" "$WORK/context" >/dev/null 2>"$WORK/build.log" ||
        { cat "$WORK/build.log"; exit 1; }
    docker save -o "$WORK/$image.tar" "buildgrid-s3-bench:$image"
    rm -rf "$WORK/context"
done

distribution_config() { # port redirect-disabled
    cat <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: $KEY_ID
    secretkey: $SECRET
    region: garage
    regionendpoint: http://127.0.0.1:$GARAGE_PORT
    forcepathstyle: true
    bucket: distribution
    secure: false
    v4auth: true
    rootdirectory: /
  delete:
    enabled: false
  redirect:
    disable: $2
http:
  addr: 127.0.0.1:$1
YAML
}
distribution_config "$DIST_PORT" false > "$WORK/distribution.yml"
distribution_config "$DIST_STREAM_PORT" true > "$WORK/distribution-stream.yml"
# Debian's build panics with "unable to load custom CA bundle" when AWS_CA_BUNDLE is set.
env -u AWS_CA_BUNDLE docker-registry serve "$WORK/distribution.yml" >/dev/null 2>"$WORK/dist.log" &
PIDS+=($!)
DIST_PID=$!
env -u AWS_CA_BUNDLE docker-registry serve "$WORK/distribution-stream.yml" >/dev/null \
    2>"$WORK/dist-stream.log" &
PIDS+=($!)
DIST_STREAM_PID=$!
wait_http "$DIST_PORT" "$WORK/dist.log"
wait_http "$DIST_STREAM_PORT" "$WORK/dist-stream.log"

# Image a is already in both; image b's layer is new to both.
skopeo copy -q --dest-tls-verify=false "docker-archive:$WORK/a.tar" "docker://127.0.0.1:$DIST_PORT/bench/image:v1"
echo "storing image b (a new ${LAYER_MB} MB layer)"
DIST_STORE=$(seconds skopeo copy -q --dest-tls-verify=false "docker-archive:$WORK/b.tar" \
    "docker://127.0.0.1:$DIST_PORT/bench/image:v2")
# The engine's own push of the same image: it compresses the layer itself.
docker tag buildgrid-s3-bench:b "127.0.0.1:$DIST_PORT/bench/pushed:v1"
PUSH=$(seconds docker push "127.0.0.1:$DIST_PORT/bench/pushed:v1" || echo -)
BG_STORE=-
if [ -n "$BUILDGRID" ]; then
    BG=("$BIN" --data "$WORK/bg" --blob-store s3://buildgrid)
    seconds "${BG[@]}" import "$WORK/a.tar" --repo bench/image --tag v1 >/dev/null
    BG_STORE=$(seconds "${BG[@]}" import "$WORK/b.tar" --repo bench/image --tag v2)
    "${BG[@]}" namespace public bench >/dev/null
fi

ACCEPT="application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"
layer_of() { # port: the digest of the image's largest layer
    curl -sf -H "Accept: $ACCEPT" "http://127.0.0.1:$1/v2/bench/image/manifests/v1" |
        python3 -c 'import json,sys; m=json.load(sys.stdin); print(max(m["layers"], key=lambda l: l["size"])["digest"])'
}
requests_per_sec() { awk '/Requests\/sec/ {print $2}'; }
manifest_rps() { # port
    wrk -t2 -c64 -d"${DURATION}s" --timeout 30s -H "Accept: $ACCEPT" \
        "http://127.0.0.1:$1/v2/bench/image/manifests/v1" | requests_per_sec
}
# Pulls the layer once with curl, following redirects, and checks its digest; prints
# "seconds MB redirects".
pull() { # port digest
    local out
    out=$(curl -sfL -o "$WORK/layer" -w '%{time_total} %{size_download} %{num_redirects}' \
        "http://127.0.0.1:$1/v2/bench/image/blobs/$2")
    [ "sha256:$(sha256sum "$WORK/layer" | cut -d' ' -f1)" = "$2" ] ||
        { echo "the layer pulled from 127.0.0.1:$1 does not match $2" >&2; return 1; }
    rm -f "$WORK/layer"
    echo "$out" | awk '{ printf "%.3f %.1f %d", $1, $2 / 1048576, $3 }'
}

echo "manifest GETs: 64 connections, ${DURATION}s each; one ${LAYER_MB} MB layer pulled with curl"
DIST_RPS=$(manifest_rps "$DIST_PORT")
DIST_LAYER=$(layer_of "$DIST_PORT")
read -r DIST_PULL DIST_PULL_MB DIST_REDIRECTS <<<"$(pull "$DIST_PORT" "$DIST_LAYER")"
read -r DIST_STREAM_PULL DIST_STREAM_MB _ <<<"$(pull "$DIST_STREAM_PORT" "$DIST_LAYER")"

BG_RPS=- BG_PULL=- BG_PULL_MB=- BG_REDIRECT_PULL=- BG_REDIRECT_MB=- BG_REDIRECTS=- BG_RSS=- BG_REDIRECT_RSS=-
if [ -n "$BUILDGRID" ]; then
    RUST_LOG=warn "${BG[@]}" serve --listen "127.0.0.1:$BG_PORT" >/dev/null 2>"$WORK/bg.log" &
    PIDS+=($!)
    BG_PID=$!
    wait_http "$BG_PORT" "$WORK/bg.log"
    BG_LAYER=$(layer_of "$BG_PORT")
    BG_RPS=$(manifest_rps "$BG_PORT")
    read -r BG_PULL BG_PULL_MB _ <<<"$(pull "$BG_PORT" "$BG_LAYER")"
    BG_RSS=$(rss_mb "$BG_PID")
    kill "$BG_PID"
    wait "$BG_PID" 2>/dev/null || true

    RUST_LOG=warn "${BG[@]}" serve --listen "127.0.0.1:$BG_REDIRECT_PORT" --blob-redirect "$REDIRECT_SECONDS" \
        >/dev/null 2>"$WORK/bg-redirect.log" &
    PIDS+=($!)
    BG_REDIRECT_PID=$!
    wait_http "$BG_REDIRECT_PORT" "$WORK/bg-redirect.log"
    read -r BG_REDIRECT_PULL BG_REDIRECT_MB BG_REDIRECTS <<<"$(pull "$BG_REDIRECT_PORT" "$BG_LAYER")"
    BG_REDIRECT_RSS=$(rss_mb "$BG_REDIRECT_PID")
fi
DIST_RSS=$(rss_mb "$DIST_STREAM_PID")
DIST_REDIRECT_RSS=$(rss_mb "$DIST_PID")

row() { printf '%-40s %14s %14s %8s\n' "$@"; }
echo
row "" buildgrid distribution ratio
row "manifest GET/s (64 conn)" "$BG_RPS" "$DIST_RPS" "$(ratio "$BG_RPS" "$DIST_RPS")"
row "${LAYER_MB} MB layer pull s, streamed" "$BG_PULL" "$DIST_STREAM_PULL" "$(ratio "$DIST_STREAM_PULL" "$BG_PULL")"
row "${LAYER_MB} MB layer pull s, redirected" "$BG_REDIRECT_PULL" "$DIST_PULL" "$(ratio "$DIST_PULL" "$BG_REDIRECT_PULL")"
row "  MB received streamed" "$BG_PULL_MB" "$DIST_STREAM_MB" ""
row "  MB received redirected (redirects)" "$BG_REDIRECT_MB ($BG_REDIRECTS)" "$DIST_PULL_MB ($DIST_REDIRECTS)" ""
row "new image, ${LAYER_MB} MB layer: import/skopeo s" "$BG_STORE" "$DIST_STORE" "$(ratio "$DIST_STORE" "$BG_STORE")"
row "  distribution by docker push s" "" "$PUSH" "$(ratio "$PUSH" "$BG_STORE")"
row "peak RSS MB, streaming" "$BG_RSS" "$DIST_RSS" ""
row "peak RSS MB, redirecting" "$BG_REDIRECT_RSS" "$DIST_REDIRECT_RSS" ""
echo "pull and store ratios are distribution's time over buildgrid's: above 1x, buildgrid is faster"
