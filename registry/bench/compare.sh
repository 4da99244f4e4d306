#!/usr/bin/env bash
# Side-by-side benchmark of buildgrid's registry and CNCF distribution (Debian's
# `docker-registry`, 2.8) serving the same image on loopback.
#
#   registry/bench/compare.sh            # 10 s per measurement
#   DURATION=30 registry/bench/compare.sh
#
# Prints manifest GETs per second (64 connections), MB/s for one 200 MB layer (8 connections),
# the ratios, and buildgrid's peak memory (RSS) under that load. Needs docker, skopeo, wrk,
# docker-registry and busybox-static; everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
LAYER_MB=${LAYER_MB:-200}
BG_PORT=${BG_PORT:-15000}
DIST_PORT=${DIST_PORT:-15001}

for tool in docker skopeo wrk docker-registry; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install ${tool/docker-registry/docker-registry}"; exit 1; }
done
[ -x /bin/busybox ] || { echo "missing /bin/busybox: apt-get install busybox-static"; exit 1; }

cargo build --release -q -p buildgrid
BIN=target/release/buildgrid

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    docker rmi -f buildgrid-bench:latest >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "building a test image with a ${LAYER_MB} MB layer"
mkdir "$WORK/context"
cp /bin/busybox "$WORK/context/busybox"
head -c "${LAYER_MB}M" /dev/urandom > "$WORK/context/big.bin"
cat > "$WORK/context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
COPY big.bin /data/big.bin
CMD ["/bin/busybox", "true"]
DOCKERFILE
docker build -q -t buildgrid-bench:latest "$WORK/context" >/dev/null
docker save -o "$WORK/image.tar" buildgrid-bench:latest
rm -rf "$WORK/context"

"$BIN" --data "$WORK/bg" import "$WORK/image.tar" --repo bench/image --tag v1 2>/dev/null >/dev/null
"$BIN" --data "$WORK/bg" import "$WORK/image.tar" --repo private/image --tag v1 2>/dev/null >/dev/null
# distribution runs without auth: compare against a public namespace, and show what credentials
# cost on a private one.
"$BIN" --data "$WORK/bg" namespace public bench >/dev/null
"$BIN" --data "$WORK/bg" user create bencher >/dev/null
"$BIN" --data "$WORK/bg" namespace add-member private bencher >/dev/null
BG_PASSWORD=$("$BIN" --data "$WORK/bg" user registry-password bencher | sed -n 's/^password: //p')
RUST_LOG=warn "$BIN" --data "$WORK/bg" serve --listen "127.0.0.1:$BG_PORT" >/dev/null 2>"$WORK/bg.log" &
PIDS+=($!)
BG_PID=$!

cat > "$WORK/distribution.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/dist
  delete:
    enabled: false
http:
  addr: 127.0.0.1:$DIST_PORT
YAML
docker-registry serve "$WORK/distribution.yml" >/dev/null 2>"$WORK/dist.log" &
PIDS+=($!)
DIST_PID=$!

for port in "$BG_PORT" "$DIST_PORT"; do
    for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.2; done
done

echo "  buildgrid peak RSS at start: $(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$BG_PID/status") MB"
# The same bytes in both: copy buildgrid's image into distribution unchanged.
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
    "docker://127.0.0.1:$BG_PORT/bench/image:v1" "docker://127.0.0.1:$DIST_PORT/bench/image:v1"

ACCEPT="application/vnd.oci.image.manifest.v1+json"
MANIFEST=$(curl -sf -H "Accept: $ACCEPT" "http://127.0.0.1:$BG_PORT/v2/bench/image/manifests/v1")
LAYER=$(echo "$MANIFEST" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(max(m["layers"], key=lambda l: l["size"])["digest"])')
DIST_MANIFEST=$(curl -sf -H "Accept: $ACCEPT" "http://127.0.0.1:$DIST_PORT/v2/bench/image/manifests/v1")
[ "$MANIFEST" = "$DIST_MANIFEST" ] || { echo "the two registries serve different manifests"; exit 1; }

requests_per_sec() { awk '/Requests\/sec/ {print $2}'; }
transfer_mb() {
    awk '/Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
        if (u=="GB") n*=1024; else if (u=="KB") n/=1024; printf "%.0f", n}'
}

run_wrk() { # connections url [wrk options]
    local connections=$1 url=$2
    shift 2
    wrk -t2 -c"$connections" -d"${DURATION}s" --timeout 30s -H "Accept: $ACCEPT" "$@" "$url"
}

echo "manifest GETs: 64 connections, ${DURATION}s each"
BG_RPS=$(run_wrk 64 "http://127.0.0.1:$BG_PORT/v2/bench/image/manifests/v1" | requests_per_sec)
DIST_RPS=$(run_wrk 64 "http://127.0.0.1:$DIST_PORT/v2/bench/image/manifests/v1" | requests_per_sec)

rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
echo "  buildgrid peak RSS so far: $(rss_mb "$BG_PID") MB"
echo "private manifest GETs with credentials: 64 connections, ${DURATION}s each"
BASIC="Authorization: Basic $(printf '%s' "bencher:$BG_PASSWORD" | base64 -w0)"
BEARER="Authorization: Bearer $(curl -sf -H "$BASIC" \
    "http://127.0.0.1:$BG_PORT/auth/token?service=bench&scope=repository:private/image:pull" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
BASIC_RPS=$(run_wrk 64 "http://127.0.0.1:$BG_PORT/v2/private/image/manifests/v1" -H "$BASIC" | requests_per_sec)
BEARER_RPS=$(run_wrk 64 "http://127.0.0.1:$BG_PORT/v2/private/image/manifests/v1" -H "$BEARER" | requests_per_sec)

echo "  buildgrid peak RSS so far: $(rss_mb "$BG_PID") MB"
echo "${LAYER_MB} MB layer: 8 connections, ${DURATION}s each"
BG_MBS=$(run_wrk 8 "http://127.0.0.1:$BG_PORT/v2/bench/image/blobs/$LAYER" | transfer_mb)
DIST_MBS=$(run_wrk 8 "http://127.0.0.1:$DIST_PORT/v2/bench/image/blobs/$LAYER" | transfer_mb)

BG_RSS=$(rss_mb "$BG_PID")
DIST_RSS=$(rss_mb "$DIST_PID")

printf '\n%-28s %14s %14s %8s\n' "" "buildgrid" "distribution" "ratio"
printf '%-28s %14s %14s %8s\n' "manifest GET/s (64 conn)" "$BG_RPS" "$DIST_RPS" \
    "$(python3 -c "print(f'{$BG_RPS/$DIST_RPS:.2f}x')")"
printf '%-28s %14s %14s %8s\n' "${LAYER_MB} MB layer MB/s (8 conn)" "$BG_MBS" "$DIST_MBS" \
    "$(python3 -c "print(f'{$BG_MBS/$DIST_MBS:.2f}x')")"
printf '%-28s %14s %14s\n' "  private, Basic creds" "$BASIC_RPS" "-"
printf '%-28s %14s %14s\n' "  private, bearer token" "$BEARER_RPS" "-"
printf '%-28s %14s %14s\n' "peak RSS MB" "$BG_RSS" "$DIST_RSS"
echo "targets: manifest GETs >= 5x, layer throughput >= 1.2x, buildgrid peak RSS <= 64 MB"
