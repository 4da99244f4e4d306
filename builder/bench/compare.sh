#!/usr/bin/env bash
# Builder benchmark, side by side in one run, on loopback:
#   1. trigger-to-build-start latency (HTTP trigger → the build's first log line), 10 builds;
#   2. a warm rebuild (one source file changed): buildgrid's push-to-stored time minus a plain
#      `docker build` of the same context with the same cache;
#   3. storing a freshly built image with one new 200 MB layer: buildgrid's store step against
#      `docker push` of the same image to Debian's `docker-registry` (CNCF distribution);
#   4. a rebuild whose layers are unchanged: how many layers buildgrid compresses (expected 0).
# Needs docker, git, curl, python3, busybox-static and docker-registry.
set -euo pipefail
cd "$(dirname "$0")/../.."

LAYER_MB=${LAYER_MB:-200}
BG_PORT=${BG_PORT:-15100}
DIST_PORT=${DIST_PORT:-15101}
BASE=buildgrid-bench/busybox:local

for tool in docker git curl python3 docker-registry; do
    command -v "$tool" >/dev/null || { echo "missing $tool"; exit 1; }
done
[ -x /bin/busybox ] || { echo "missing /bin/busybox: apt-get install busybox-static"; exit 1; }

cargo build --release -q -p buildgrid
BIN=$PWD/target/release/buildgrid
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
bg() { "$BIN" --data "$WORK/data" "$@"; }

examples/base-image.sh "$BASE"

# The app: a small source file and a large data file, each its own layer.
SRC=$WORK/src
mkdir -p "$SRC"
git -C "$SRC" init -q -b main
cat > "$SRC/Dockerfile" <<DOCKERFILE
FROM $BASE
COPY app.sh /app.sh
CMD ["/bin/sh", "/app.sh"]
DOCKERFILE
echo 'echo version 1' > "$SRC/app.sh"
git -C "$SRC" -c user.name=b -c user.email=b@b add -A
git -C "$SRC" -c user.name=b -c user.email=b@b commit -qm one

bg app create bench/app --git https://bench.example.com/bench/app.git >/dev/null
bg user create bench --admin >/dev/null
bg namespace public bench >/dev/null
TOKEN=$(bg token create --user bench --name bench --scope admin)
RUST_LOG=warn "$BIN" --data "$WORK/data" serve --listen "127.0.0.1:$BG_PORT" >/dev/null 2>"$WORK/serve.log" &
PIDS+=($!)
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$BG_PORT/v2/" && break; sleep 0.1; done
PUSH_URL="http://bench:$TOKEN@127.0.0.1:$BG_PORT/git/bench/app.git"
API="http://127.0.0.1:$BG_PORT/api"

wait_build() { # id → prints the final state
    while :; do
        state=$(curl -sf "$API/builds/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
        case $state in succeeded|failed|cancelled|skipped) echo "$state"; return;; esac
        sleep 0.05
    done
}
first_log_ms() { curl -sf "$API/builds/$1/log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lines"][0]["at_ms"])'; }
log_ms() { # id, line prefix → at_ms of the first such line
    curl -sf "$API/builds/$1/log" | python3 -c "import json,sys; print(next(l['at_ms'] for l in json.load(sys.stdin)['lines'] if l['line'].startswith('$2')))"
}

git -C "$SRC" push -q "$PUSH_URL" main 2>/dev/null
[ "$(wait_build 1)" = succeeded ] || { echo "the first build failed"; bg build-log 1; exit 1; }

echo "1. trigger-to-build-start latency (10 forced builds of the same commit)"
LATENCIES=()
for _ in $(seq 1 10); do
    start=$(now_ms)
    id=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d '{"force":true}' "$API/apps/bench/app/builds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    [ "$(wait_build "$id")" = succeeded ] || { echo "build $id failed"; exit 1; }
    LATENCIES+=($(( $(first_log_ms "$id") - start )))
done
echo "   ms: ${LATENCIES[*]}"

echo "2. warm rebuild, one source file changed"
echo 'echo version 2' > "$SRC/app.sh"
git -C "$SRC" -c user.name=b -c user.email=b@b commit -qam two
start=$(now_ms)
out=$(git -C "$SRC" push "$PUSH_URL" main 2>&1)
id=$(echo "$out" | sed -n 's/.*buildgrid: build \([0-9]*\) queued.*/\1/p')
[ "$(wait_build "$id")" = succeeded ] || { echo "build $id failed"; exit 1; }
BG_REBUILD=$(( $(now_ms) - start ))
echo 'echo version 3' > "$SRC/app.sh"
docker build -q -t bench-plain:warmup "$SRC" >/dev/null
echo 'echo version 4' > "$SRC/app.sh"
start=$(now_ms)
docker build -q -t bench-plain:rebuild "$SRC" >/dev/null
PLAIN_REBUILD=$(( $(now_ms) - start ))
git -C "$SRC" checkout -q app.sh
docker rmi -f --no-prune bench-plain:warmup bench-plain:rebuild >/dev/null

cat > "$WORK/distribution.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/dist
http:
  addr: 127.0.0.1:$DIST_PORT
YAML
docker-registry serve "$WORK/distribution.yml" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$DIST_PORT/v2/" >/dev/null && break; sleep 0.1; done

# store_big KIND: builds a commit adding a new LAYER_MB layer of KIND data (random: worst case
# for compression; files: the machine's own libraries and binaries), then prints buildgrid's
# store time and docker push's time in ms.
store_big() {
    rm -f "$SRC/big.bin"
    if [ "$1" = random ]; then
        head -c "${LAYER_MB}M" /dev/urandom > "$SRC/big.bin"
    else
        tar -cf - /usr/lib /usr/bin /usr/share 2>/dev/null | head -c "${LAYER_MB}M" > "$SRC/big.bin" || true
    fi
    grep -q big.bin "$SRC/Dockerfile" || echo 'COPY big.bin /data/big.bin' >> "$SRC/Dockerfile"
    git -C "$SRC" -c user.name=b -c user.email=b@b add -A
    git -C "$SRC" -c user.name=b -c user.email=b@b commit -qm "big $1"
    local out id commit start push
    out=$(git -C "$SRC" push "$PUSH_URL" main 2>&1)
    id=$(echo "$out" | sed -n 's/.*buildgrid: build \([0-9]*\) queued.*/\1/p')
    [ "$(wait_build "$id")" = succeeded ] || { echo "build $id failed" >&2; bg build-log "$id" >&2; exit 1; }
    bg build-log "$id" | grep -E '^(exported|stored)' | sed 's/^/   /' >&2
    commit=$(git -C "$SRC" rev-parse HEAD)
    docker tag "bench/app.bench-example-com-bench-app:$commit" "127.0.0.1:$DIST_PORT/bench/app:$1"
    start=$(now_ms)
    docker push -q "127.0.0.1:$DIST_PORT/bench/app:$1" >/dev/null
    push=$(( $(now_ms) - start ))
    docker rmi --no-prune "127.0.0.1:$DIST_PORT/bench/app:$1" >/dev/null
    echo "$(( $(log_ms "$id" "digest:") - $(log_ms "$id" "storing ") )) $push"
}

echo "3. storing an image with a new ${LAYER_MB} MB layer (random bytes, then system files)"
read -r BG_STORE_RANDOM PUSH_RANDOM < <(store_big random)
read -r BG_STORE_FILES PUSH_FILES < <(store_big files)

echo "4. a rebuild with unchanged layers"
id=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"force":true}' "$API/apps/bench/app/builds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
[ "$(wait_build "$id")" = succeeded ] || { echo "build $id failed"; exit 1; }
STORED_LINE=$(bg build-log "$id" | grep '^stored:')

python3 - "$BG_REBUILD" "$PLAIN_REBUILD" "$BG_STORE_RANDOM" "$PUSH_RANDOM" "$BG_STORE_FILES" "$PUSH_FILES" "$STORED_LINE" "${LATENCIES[@]}" <<'PY'
import statistics, sys
rebuild, plain = int(sys.argv[1]), int(sys.argv[2])
store_r, push_r, store_f, push_f = (int(x) for x in sys.argv[3:7])
stored = sys.argv[7]
lat = [int(x) for x in sys.argv[8:]]
print()
print(f"trigger-to-build-start      median {statistics.median(lat):.0f} ms, max {max(lat)} ms   (target < 300 ms)")
print(f"warm rebuild                buildgrid {rebuild} ms, docker build {plain} ms, overhead {(rebuild - plain) / 1000:.2f} s   (target <= 0.5 s)")
print(f"store 200 MB random layer   buildgrid {store_r} ms, docker push to distribution {push_r} ms, {push_r / store_r:.1f}x faster   (target >= 3x)")
print(f"store 200 MB files layer    buildgrid {store_f} ms, docker push to distribution {push_f} ms, {push_f / store_f:.1f}x faster   (target >= 3x)")
print(f"unchanged rebuild           {stored}")
PY
