#!/usr/bin/env bash
# Archive downloads that never read, against the real binary on loopback: one public image (a
# busybox layer and 24 MiB of random bytes, more than loopback's socket buffers hold), then
# COUNT anonymous downloads of its archive (`/archives/…`) opened at once and held without
# reading a byte, while `GET /v2/`, the app list and the image page are probed.
#
#   web/bench/flood.sh               # 600 downloads held 40 s
#   COUNT=300 HOLD=20 web/bench/flood.sh
#
# Needs docker (to make the image with `docker import` and `docker save`), python3 and curl.
# Prints the answers the downloads got, the server's threads and memory while they were held
# (from /proc/<pid>/status), and the latency of each probe. Listens on 127.0.0.1 only, and
# removes what it made when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

COUNT=${COUNT:-600}
HOLD=${HOLD:-40}
PORT=${PORT:-15081}
NAMESPACE=flood
REPO=$NAMESPACE/busybox
TAG=v1
DOCKER_TAG=buildgrid-flood:$$

cargo build --release -q -p buildgrid
BIN=$PWD/target/release/buildgrid

WORK=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
    docker rmi -f "$DOCKER_TAG" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The image: busybox and a file of random bytes, FROM scratch.
mkdir -p "$WORK/rootfs/bin"
cp "$(command -v busybox || echo /bin/busybox)" "$WORK/rootfs/bin/busybox"
head -c $((24 << 20)) /dev/urandom >"$WORK/rootfs/noise.bin"
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
docker import "$WORK/rootfs.tar" "$DOCKER_TAG" >/dev/null
docker save -o "$WORK/image.tar" "$DOCKER_TAG"

"$BIN" serve --data "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/out" 2>"$WORK/log" &
PID=$!
for _ in $(seq 100); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$WORK/out" || { echo "the server did not start:"; cat "$WORK/log"; exit 1; }
URL="http://127.0.0.1:$PORT"
"$BIN" import "$WORK/image.tar" --repo "$REPO" --tag "$TAG" --data "$WORK/data" >/dev/null 2>&1
"$BIN" namespace public "$NAMESPACE" --data "$WORK/data" >/dev/null 2>&1
archive_bytes=$(curl -s -o /dev/null -w '%{size_download}' "$URL/archives/$REPO/$TAG")
echo "image:     $REPO:$TAG, archive $((archive_bytes >> 20)) MiB"

status() { awk -v k="$1" '$1 == k":" {print $2}' /proc/"$PID"/status; }
threads_before=$(status Threads)
rss_before=$(status VmRSS)

# Threads and memory every 250 ms while the downloads are held.
sample() {
    while [ ! -e "$WORK/done" ]; do
        echo "$(status Threads) $(status VmRSS)" >>"$WORK/samples"
        sleep 0.25
    done
}
# Each probe every 500 ms: its latency and status.
probe() {
    local name=$1 path=$2
    while [ ! -e "$WORK/done" ]; do
        curl -s -o /dev/null -m 10 -w "%{time_total} %{http_code}\n" "$URL$path" >>"$WORK/probe-$name" || echo "10 timeout" >>"$WORK/probe-$name"
        sleep 0.5
    done
}

# The downloads: COUNT sockets, each sends its request and reads nothing (small receive
# buffers, as a slow or stalled client has) until HOLD seconds have passed; then the first line
# each got is read.
cat >"$WORK/hold.py" <<'EOF'
import socket, sys, time
port, count, hold, path = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
socks, refused = [], 0
for _ in range(count):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        socks.append(s)
    except OSError:
        refused += 1
print(f"opened {len(socks)} connections ({refused} refused)", flush=True)
open(sys.argv[5], "w").close()
time.sleep(hold)
answers = {}
for s in socks:
    s.settimeout(2)
    try:
        line = s.recv(64).split(b"\r\n")[0].decode(errors="replace") or "closed"
    except OSError as e:
        line = f"no answer ({e.__class__.__name__})"
    answers[line] = answers.get(line, 0) + 1
    s.close()
for line, n in sorted(answers.items(), key=lambda kv: -kv[1]):
    print(f"{n:5} x {line}")
EOF

sample & SAMPLER=$!
python3 "$WORK/hold.py" "$PORT" "$COUNT" "$HOLD" "/archives/$REPO/$TAG" "$WORK/opened" >"$WORK/answers" &
HOLDER=$!
for _ in $(seq 600); do [ -e "$WORK/opened" ] && break; sleep 0.1; done
probe v2 /v2/ & P1=$!
probe apps / & P2=$!
probe image "/images/$REPO/$TAG" & P3=$!
wait "$HOLDER"
touch "$WORK/done"
wait "$P1" "$P2" "$P3" "$SAMPLER"
sleep 1

echo "downloads: $COUNT at once, held $HOLD s without reading; $(head -1 "$WORK/answers")"
echo "answers (first line each connection had received when it started reading):"
tail -n +2 "$WORK/answers"
sort -n -k1 "$WORK/samples" | tail -1 | awk -v b="$threads_before" '{printf "threads:   %d before, at most %d while held\n", b, $1}'
sort -n -k2 "$WORK/samples" | tail -1 | awk -v b="$rss_before" '{printf "memory:    %d MB before, at most %d MB while held (VmRSS)\n", b / 1024, $2 / 1024}'
echo "after:     $(status Threads) threads, $(( $(status VmRSS) / 1024 )) MB, 1 s after the clients left"
for name in v2 apps image; do
    sort -n "$WORK/probe-$name" | awk -v name="$name" '
        { t[NR] = $1 * 1000; codes[$2]++ }
        END {
            label = name == "v2" ? "GET /v2/" : name == "apps" ? "GET /" : "image page";
            printf "%-10s %d probes while held, median %.1f ms, max %.1f ms, answers", label ":", NR, t[int((NR + 1) / 2)], t[NR];
            for (c in codes) printf " %s x %d", c, codes[c];
            printf "\n";
        }'
done
if grep -q ERROR "$WORK/log"; then echo "server log errors:"; grep ERROR "$WORK/log" | head -5; fi
