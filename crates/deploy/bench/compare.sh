#!/usr/bin/env bash
# Deploy speed, side by side on this machine's Docker engine: the time from a finished build to
# every replica healthy with `buildgrid deploy` (a web service of 2 replicas with an HTTP health
# check and a worker), against a plain shell script doing the same work with `docker login`,
# `docker pull` and `docker run` plus a curl loop. Both pull from buildgrid's registry.
# Loopback only; bounded: RUNS rounds (default 3); cleans up after itself.
#   crates/deploy/bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."

RUNS=${RUNS:-3}
BG_PORT=${BG_PORT:-5191}
WEB_PORT=${WEB_PORT:-23100}
BASE=buildgrid-bench/busybox:local
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    docker ps -aq --filter label=buildgrid.app=bench/app | xargs -r docker rm -f >/dev/null
    docker ps -aq --filter label=bench-plain=1 | xargs -r docker rm -f >/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q -p buildgrid
BIN=target/release/buildgrid
bg() { "$BIN" --data "$WORK/data" "$@"; }
examples/base-image.sh "$BASE" >/dev/null

SRC=$WORK/src
cp -r examples/hello "$SRC"
git -C "$SRC" init -q -b main
git -C "$SRC" -c user.name=b -c user.email=b@b add -A
git -C "$SRC" -c user.name=b -c user.email=b@b commit -qm one
git clone -q --bare "$SRC" "$WORK/upstream.git"

bg app create bench/app --git "file://localhost$WORK/upstream.git" --build-arg "BASE=$BASE" >/dev/null
RUST_LOG=warn "$BIN" --data "$WORK/data" serve --listen "127.0.0.1:$BG_PORT" >/dev/null 2>"$WORK/serve.log" &
PIDS+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$BG_PORT/v2/" && break; sleep 0.1; done
bg app auto-deploy bench/app off >/dev/null
bg build bench/app --wait >/dev/null
IMAGE=$(bg build-log 1 | sed -n 's/^.*image: //p' | tail -1)
bg server add local --docker unix:///var/run/docker.sock >/dev/null
bg service add bench/app web --command "hello serve" --port "$WEB_PORT:8080" --replicas 2 \
    --health-http / --stop-grace 1 --server local >/dev/null
bg service add bench/app worker --command "exec sleep 600" --health-running 0 \
    --stop-grace 1 --server local >/dev/null
bg user create plain >/dev/null
bg namespace add-member bench plain >/dev/null
TOKEN=$(bg token create --user plain --name plain --scope pull:bench)

now_ms() { date +%s%3N; }

SLOT=0
plain() {
    local config started old
    config=$(mktemp -d)
    old=$(docker ps -aq --filter label=bench-plain=1)
    # Like buildgrid, start the new replicas on the ports the old ones do not hold.
    SLOT=$((1 - SLOT))
    started=$(now_ms)
    echo "$TOKEN" | docker --config "$config" login "127.0.0.1:$BG_PORT" -u plain --password-stdin >/dev/null 2>&1
    docker --config "$config" pull -q "$IMAGE" >/dev/null
    docker run -d --label bench-plain=1 -p "$((WEB_PORT + 10 + SLOT)):8080" "$IMAGE" /bin/sh -c "hello serve" >/dev/null
    docker run -d --label bench-plain=1 -p "$((WEB_PORT + 12 + SLOT)):8080" "$IMAGE" /bin/sh -c "hello serve" >/dev/null
    docker run -d --label bench-plain=1 "$IMAGE" /bin/sh -c "exec sleep 600" >/dev/null
    for port in $((WEB_PORT + 10 + SLOT)) $((WEB_PORT + 12 + SLOT)); do
        until curl -sf -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.05; done
    done
    # Then stop the previous round's containers one at a time, with the same grace.
    for id in $old; do docker stop -t 1 "$id" >/dev/null; docker rm "$id" >/dev/null; done
    echo $(( $(now_ms) - started ))
    rm -rf "$config"
}

deploy() {
    local started
    started=$(now_ms)
    bg deploy bench/app --build 1 >/dev/null
    echo $(( $(now_ms) - started ))
}

declare -a BG PLAIN
for i in $(seq 1 "$RUNS"); do
    BG+=("$(deploy)")
    PLAIN+=("$(plain)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
BG_MED=$(median "${BG[@]}")
PLAIN_MED=$(median "${PLAIN[@]}")
printf '\nbuild end -> 2 web replicas (HTTP-healthy) + 1 worker running, %s runs each\n' "$RUNS"
printf '%-40s %s ms (runs: %s)\n' "buildgrid deploy" "$BG_MED" "${BG[*]}"
printf '%-40s %s ms (runs: %s)\n' "plain docker login/pull/run + curl" "$PLAIN_MED" "${PLAIN[*]}"
OVER=()
for i in "${!BG[@]}"; do OVER+=("$((BG[i] - PLAIN[i]))"); done
printf '%-40s %s ms (per round: %s; target <= 1000 ms)\n' "overhead, median of rounds" "$(median "${OVER[@]}")" "${OVER[*]}"
echo "(both stop the previous round's 3 containers one at a time with a 1 s grace, after the new ones are up;"
echo " busybox ignores SIGTERM as PID 1, so each stop takes the whole grace)"
