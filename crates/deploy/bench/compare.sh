#!/usr/bin/env bash
# Deploy speed, side by side on two Docker engines of this machine: the machine's engine and a
# second dockerd this script starts (its own data, exec root, socket and bridge; needs root).
# The two-service example: `web` (2 replicas, HTTP health check, published ports) on the first
# engine and `worker` (1 replica, running for 0 s) on both. Each round deploys the built image
# with `buildgrid deploy` and with a plain shell script doing the same work: `docker login`,
# `docker pull` and `docker run` on each engine, then a curl loop until the web replicas answer.
# Both pull from buildgrid's registry, and both then stop the previous round's containers.
#
# Printed per side, median of RUNS rounds (default 5):
#   healthy  from the start (the build's end) until every new replica is healthy
#   done     until the previous round's containers are stopped too
# Loopback only; bounded; cleans up after itself.
#   crates/deploy/bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."

RUNS=${RUNS:-5}
BG_PORT=${BG_PORT:-5191}
WEB_PORT=${WEB_PORT:-23100}
BASE=buildgrid-bench/busybox:local
WORK=$(mktemp -d /tmp/bgbench.XXXX)
E2=$WORK/e2
BRIDGE=bgbench$((RANDOM % 1000))
PIDS=()
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for host in "unix:///var/run/docker.sock" "unix://$E2/docker.sock"; do
        docker -H "$host" ps -aq --filter label=buildgrid.app=bench/app 2>/dev/null | xargs -r docker -H "$host" rm -f >/dev/null || true
        docker -H "$host" ps -aq --filter label=bench-plain=1 2>/dev/null | xargs -r docker -H "$host" rm -f >/dev/null || true
    done
    if [ -f "$E2/dockerd.pid" ]; then
        as_root kill "$(cat "$E2/dockerd.pid")" 2>/dev/null || true
        for _ in $(seq 1 100); do [ -f "$E2/dockerd.pid" ] || break; sleep 0.1; done
    fi
    as_root ip link del "$BRIDGE" 2>/dev/null || true
    as_root rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q -p buildgrid
BIN=target/release/buildgrid
bg() { "$BIN" --data "$WORK/data" "$@"; }
examples/base-image.sh "$BASE" >/dev/null

# The second engine, on a bridge of its own (`--bridge none` would delete the first's docker0).
mkdir -p "$E2"
echo '{}' >"$E2/daemon.json"
as_root ip link add "$BRIDGE" type bridge
as_root ip addr add "172.30.$((RANDOM % 200)).1/24" dev "$BRIDGE"
as_root ip link set "$BRIDGE" up
as_root dockerd --config-file "$E2/daemon.json" --data-root "$E2/data" --exec-root "$E2/exec" \
    --pidfile "$E2/dockerd.pid" -H "unix://$E2/docker.sock" --bridge "$BRIDGE" \
    --iptables=false --ip-masq=false --storage-driver vfs \
    --containerd-namespace bgbench --containerd-plugins-namespace bgbench-plugins \
    >"$WORK/dockerd.log" 2>&1 &
for _ in $(seq 1 150); do docker -H "unix://$E2/docker.sock" version >/dev/null 2>&1 && break; sleep 0.2; done
docker -H "unix://$E2/docker.sock" version >/dev/null || { tail "$WORK/dockerd.log"; exit 1; }

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
bg server add one --docker unix:///var/run/docker.sock >/dev/null
bg server add two --docker "unix://$E2/docker.sock" >/dev/null
bg service add bench/app web --command "hello serve" --port "$WEB_PORT:8080" --replicas 2 \
    --health-http / --stop-grace 1 --server one >/dev/null
bg service add bench/app worker --command "exec sleep 600" --health-running 0 \
    --stop-grace 1 --server one --server two >/dev/null
bg user create plain >/dev/null
bg namespace add-member bench plain >/dev/null
TOKEN=$(bg token create --user plain --name plain --scope pull:bench)

now_ms() { date +%s%3N; }
REPLICAS=4 # 2 web + a worker on each engine

# One buildgrid round: prints "<ms to all healthy> <ms to done>".
deploy() {
    local started healthy=0 seen=0 line
    started=$(now_ms)
    while IFS= read -r line; do
        case "$line" in
        *"] healthy")
            seen=$((seen + 1))
            [ "$seen" = "$REPLICAS" ] && healthy=$(now_ms)
            ;;
        esac
    done < <(bg deploy bench/app --build 1)
    echo "$((healthy - started)) $(($(now_ms) - started))"
}

# One plain round (number $1), the same work by hand: prints "<ms to all healthy> <ms to done>".
plain() {
    local config started healthy old1 old2 e2="unix://$E2/docker.sock" SLOT=$(($1 % 2))
    config=$(mktemp -d)
    old1=$(docker ps -aq --filter label=bench-plain=1)
    old2=$(docker -H "$e2" ps -aq --filter label=bench-plain=1)
    # Like buildgrid, start the new web replicas on the ports the old ones do not hold.
    started=$(now_ms)
    for host in "unix:///var/run/docker.sock" "$e2"; do
        echo "$TOKEN" | docker -H "$host" --config "$config" login "127.0.0.1:$BG_PORT" -u plain --password-stdin >/dev/null 2>&1
        docker -H "$host" --config "$config" pull -q "$IMAGE" >/dev/null
    done
    docker run -d --label bench-plain=1 -p "$((WEB_PORT + 10 + SLOT)):8080" "$IMAGE" /bin/sh -c "hello serve" >/dev/null
    docker run -d --label bench-plain=1 -p "$((WEB_PORT + 12 + SLOT)):8080" "$IMAGE" /bin/sh -c "hello serve" >/dev/null
    docker run -d --label bench-plain=1 "$IMAGE" /bin/sh -c "exec sleep 600" >/dev/null
    docker -H "$e2" run -d --label bench-plain=1 "$IMAGE" /bin/sh -c "exec sleep 600" >/dev/null
    for port in $((WEB_PORT + 10 + SLOT)) $((WEB_PORT + 12 + SLOT)); do
        until curl -sf -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.05; done
    done
    healthy=$(now_ms)
    # Then stop the previous round's containers one at a time, with the same grace.
    for id in $old1; do docker stop -t 1 "$id" >/dev/null; docker rm "$id" >/dev/null; done
    for id in $old2; do docker -H "$e2" stop -t 1 "$id" >/dev/null; docker -H "$e2" rm "$id" >/dev/null; done
    echo "$((healthy - started)) $(($(now_ms) - started))"
    rm -rf "$config"
}

declare -a BG_H BG_D PL_H PL_D
for round in $(seq 1 "$RUNS"); do
    echo "round $round" >&2
    read -r h d < <(deploy)
    BG_H+=("$h"); BG_D+=("$d")
    read -r h d < <(plain "$round")
    PL_H+=("$h"); PL_D+=("$d")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '\ntwo services on two engines: 2 web replicas (HTTP-healthy) on one, a worker on each; %s rounds\n' "$RUNS"
printf '%-34s %8s %8s   %s\n' "" "healthy" "done" "(ms; rounds: healthy/done)"
rounds() { local -n h=$1 d=$2; local out=""; for i in "${!h[@]}"; do out+="${h[i]}/${d[i]} "; done; echo "$out"; }
printf '%-34s %8s %8s   %s\n' "buildgrid deploy" "$(median "${BG_H[@]}")" "$(median "${BG_D[@]}")" "$(rounds BG_H BG_D)"
printf '%-34s %8s %8s   %s\n' "plain docker login/pull/run+curl" "$(median "${PL_H[@]}")" "$(median "${PL_D[@]}")" "$(rounds PL_H PL_D)"
OVER_H=(); OVER_D=()
for i in "${!BG_H[@]}"; do OVER_H+=("$((BG_H[i] - PL_H[i]))"); OVER_D+=("$((BG_D[i] - PL_D[i]))"); done
printf '%-34s %8s %8s   (median of per-round differences; target <= 1000 ms)\n' "overhead" "$(median "${OVER_H[@]}")" "$(median "${OVER_D[@]}")"
echo "(both stop the previous round's containers one at a time with a 1 s grace after the new ones"
echo " are up; busybox ignores SIGTERM as PID 1, so each stop takes the whole grace)"
