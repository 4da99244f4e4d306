#!/usr/bin/env bash
# The proxy against Debian's nginx in front of the same two replicas, on loopback.
#
# Replicas: two nginx servers answering a short fixed body ("v1" and "v2" pairs, so a switch can
# be seen). Peer: nginx as a reverse proxy (upstream with kept-alive connections, workers =
# cores). buildgrid: `buildgrid proxy run`, routes set through its control socket.
#
# Printed:
#   throughput   wrk (-t1, CONNECTIONS kept-alive connections, DURATION s): requests/s and
#                latency p50/p99 through each proxy, and straight to one replica for reference
#   switch       SWITCHES switches of the route between the v1 and v2 pairs while 4 clients
#                send requests: time from sending the switch (replicas already healthy) to the
#                start of the last request the old pair answered (p50, p99, max), and how many
#                requests started after the switch's answer got the old version (must be 0)
# Bounded in time; everything binds 127.0.0.1 and stops at the end.
#   crates/proxy/bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
SWITCHES=${SWITCHES:-50}
BIN=${BIN:-target/release/buildgrid}
WORK=$(mktemp -d /tmp/bgproxy.XXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$BIN" ] || cargo build --release -q -p buildgrid
command -v nginx >/dev/null || { echo "needs Debian's nginx"; exit 1; }
command -v wrk >/dev/null || { echo "needs wrk"; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
R1=$(free_port); R2=$(free_port); R3=$(free_port); R4=$(free_port)
NGINX_PORT=$(free_port); PROXY_PORT=$(free_port)

# Replicas: one nginx, four servers, one worker per pair of replicas' worth of work.
mkdir -p "$WORK/replicas" "$WORK/peer" "$WORK/state"
cat >"$WORK/replicas/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/replicas/nginx.pid;
error_log $WORK/replicas/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$R1; location / { return 200 "v1\n"; } }
    server { listen 127.0.0.1:$R2; location / { return 200 "v1\n"; } }
    server { listen 127.0.0.1:$R3; location / { return 200 "v2\n"; } }
    server { listen 127.0.0.1:$R4; location / { return 200 "v2\n"; } }
}
CONF
nginx -c "$WORK/replicas/nginx.conf" -p "$WORK/replicas" -g 'daemon off;' &
PIDS+=($!)

cat >"$WORK/peer/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/peer/nginx.pid;
error_log $WORK/peer/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream replicas { server 127.0.0.1:$R1; server 127.0.0.1:$R2; keepalive 256; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
CONF
nginx -c "$WORK/peer/nginx.conf" -p "$WORK/peer" -g 'daemon off;' &
PIDS+=($!)

RUST_LOG=warn "$BIN" proxy run --state "$WORK/state" --bind 127.0.0.1 >"$WORK/proxy.log" 2>&1 &
PIDS+=($!)
PROXY_PID=$!
for _ in $(seq 1 100); do [ -S "$WORK/state/control.sock" ] && break; sleep 0.05; done
"$BIN" proxy deploy --state "$WORK/state" --port "$PROXY_PORT" --service bench \
    --target "127.0.0.1:$R1" --target "127.0.0.1:$R2" --health-path / >/dev/null
for port in "$NGINX_PORT" "$PROXY_PORT"; do
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.05; done
done

measure() { # name port
    local out
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/" >"$WORK/wrk.out" 2>&1
    local rps p50 p99 errors
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
    p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.out")
    p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.out")
    errors=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' "$WORK/wrk.out")
    printf '  %-22s %10s req/s   p50 %8s   p99 %8s   %s\n' "$1" "$rps" "$p50" "$p99" "${errors:-no errors}"
}

echo "throughput ($CONNECTIONS connections, ${DURATION} s each, $(nproc) cores shared by client, proxy and replicas)"
measure "replica (no proxy)" "$R1"
measure "nginx proxy" "$NGINX_PORT"
measure "buildgrid proxy" "$PROXY_PORT"
measure "nginx proxy" "$NGINX_PORT"
measure "buildgrid proxy" "$PROXY_PORT"
echo "  proxy RSS after: $(awk '/VmHWM/ {print $2 " kB peak"}' /proc/$PROXY_PID/status)"

echo "switch ($SWITCHES switches between the v1 and v2 pairs under 4 clients)"
python3 - "$WORK/state/control.sock" "$PROXY_PORT" "$SWITCHES" "$R1" "$R2" "$R3" "$R4" <<'PY'
import http.client, json, socket, sys, threading, time

control, port, switches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pairs = {"v1": [f"127.0.0.1:{sys.argv[4]}", f"127.0.0.1:{sys.argv[5]}"],
         "v2": [f"127.0.0.1:{sys.argv[6]}", f"127.0.0.1:{sys.argv[7]}"]}
log, stop, lock = [], False, threading.Lock()

def client():
    conn = http.client.HTTPConnection("127.0.0.1", port)
    while not stop:
        start = time.monotonic()
        conn.request("GET", "/")
        body = conn.getresponse().read().decode().strip()
        with lock:
            log.append((start, body))

def switch(version):
    s = socket.socket(socket.AF_UNIX)
    s.connect(control)
    command = {"command": "deploy", "drain_ms": 5000,
               "route": {"port": port, "service": "bench", "targets": pairs[version]}}
    sent = time.monotonic()
    s.sendall((json.dumps(command) + "\n").encode())
    reply = s.makefile().readline()
    answered = time.monotonic()
    s.close()
    assert '"done"' in reply, reply
    return sent, answered

threads = [threading.Thread(target=client) for _ in range(4)]
for t in threads: t.start()
time.sleep(0.5)
current, lags, late = "v1", [], 0
for i in range(switches):
    new = "v2" if current == "v1" else "v1"
    sent, answered = switch(new)
    time.sleep(0.2)
    with lock:
        old = [start for start, body in log if body == current and start >= sent - 1]
        late += sum(1 for start, body in log if body == current and start > answered)
    lags.append(max(0.0, (max(old) - sent)) * 1000 if old else 0.0)
    current = new
stop = True
for t in threads: t.join()
lags.sort()
pct = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
print(f"  last old request after the switch was sent: p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, max {lags[-1]:.2f} ms")
print(f"  requests started after the switch answered that got the old version: {late} (of {len(log)} requests)")
PY
