#!/usr/bin/env bash
# Garbage collection of a store of 200,000 blobs of which 90 % are garbage: `buildgrid gc`
# online beside CNCF distribution's `docker-registry garbage-collect --delete-untagged` (2.8,
# offline, as its documentation asks) on the same blobs, with a bounded pull load on each
# server measured idle and while its collection runs.
#
#   registry/bench/gc.sh                 # 200,000 blobs
#   BLOBS=20000 registry/bench/gc.sh     # a quick try
#   GC_TIMEOUT=3600 registry/bench/gc.sh # give buildgrid gc an hour (default 1200 s)
#   BIN=… FILL=… registry/bench/gc.sh    # use these binaries (buildgrid, the gc_store example)
#
# The store: apps of 200 successful builds each, every image 3 small layers of its own plus
# config and manifest, stored through the real ingest (`crates/store/examples/gc_store.rs`);
# server-wide retention keeps the newest 20 builds of each app. distribution gets the same blob
# bytes in its filesystem layout with only those kept builds tagged, so its garbage is exactly
# the untagged manifests and their blobs. The pull load (RATE requests/s over 4 connections:
# a kept image's manifest by tag, then one of its blobs, each checked against its digest) runs
# IDLE_SECONDS before collection and for the whole collection.
#
# Prints deletions per second (blobs, manifests included, deleted by the wall time of the whole
# command) and pull p99 idle and during collection. Needs docker-registry, curl and python3;
# everything listens on 127.0.0.1, lives in one temporary directory and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

BLOBS=${BLOBS:-200000}
BG_PORT=${BG_PORT:-15040}
DIST_PORT=${DIST_PORT:-15041}
RATE=${RATE:-200}
IDLE_SECONDS=${IDLE_SECONDS:-15}
# A collection still running after this long is stopped (its one transaction rolls back, so
# nothing is deleted) and reported as unfinished.
GC_TIMEOUT=${GC_TIMEOUT:-1200}
# The pull load stops by itself after this long, whatever happens.
MAX_SECONDS=$((GC_TIMEOUT + 60))

for tool in docker-registry curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install $tool"; exit 1; }
done

if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p buildgrid
    BIN=target/release/buildgrid
fi
if [ -z "${FILL:-}" ]; then
    cargo build --release -q -p buildgrid-store --example gc_store
    FILL=target/release/examples/gc_store
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
# No Docker engine: `buildgrid gc` then says it skipped the engine's clean-up, and the time
# measured is the store's collection alone.
export DOCKER_HOST="unix://$WORK/no-engine.sock"

cat >"$WORK/pull.py" <<'PYTHON'
"""A bounded pull load: RATE requests/s over CONNECTIONS keep-alive connections, each a kept
image's manifest by tag or one of its blobs, checked against its digest; stops at STOP (a file
appearing) or after MAX seconds. Prints JSON: requests, p50/p99/max in ms of all requests and
of manifests and blobs apart, errors."""
import hashlib, http.client, json, os, random, sys, threading, time

port, kept_list, rate, max_seconds, stop, out = sys.argv[1:]
rate, max_seconds = float(rate), float(max_seconds)
CONNECTIONS = 4
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
kept = [line.split() for line in open(kept_list)]
latencies, errors, lock = {"manifest": [], "blob": []}, {}, threading.Lock()
deadline = time.monotonic() + max_seconds

def error(kind):
    with lock:
        errors[kind] = errors.get(kind, 0) + 1

def worker(seed):
    rnd = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    interval = CONNECTIONS / rate
    next_at = time.monotonic() + rnd.random() * interval
    while time.monotonic() < deadline and not os.path.exists(stop):
        repo, tag, manifest, *blobs = rnd.choice(kept)
        blob = rnd.choice(blobs)
        for kind, path, digest in (("manifest", f"/v2/{repo}/manifests/{tag}", manifest),
                                   ("blob", f"/v2/{repo}/blobs/{blob}", blob)):
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            started = time.perf_counter()
            try:
                conn.request("GET", path, headers={"Accept": ACCEPT})
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as e:
                error(type(e).__name__)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies[kind].append(elapsed)
            if response.status != 200:
                error(f"HTTP {response.status}")
            elif "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                error("digest mismatch")

threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
for t in threads: t.start()
for t in threads: t.join()
def summary(times):
    times = sorted(times)
    at = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000 if times else 0.0
    return {"requests": len(times), "p50": at(0.5), "p99": at(0.99), "max": at(1.0)}
result = {kind: summary(times) for kind, times in latencies.items()}
result["all"] = summary(latencies["manifest"] + latencies["blob"])
result["errors"] = errors
json.dump(result, open(out, "w"))
PYTHON

# Runs the pull load against a port: idle for IDLE_SECONDS, or until the file `stop` appears.
load() { # port name [stop]
    if [ -n "${3:-}" ]; then
        python3 "$WORK/pull.py" "$1" "$WORK/kept.txt" "$RATE" "$MAX_SECONDS" "$3" "$WORK/load-$2.json"
    else
        python3 "$WORK/pull.py" "$1" "$WORK/kept.txt" "$RATE" "$IDLE_SECONDS" "$WORK/never" "$WORK/load-$2.json"
    fi
}
field() { # load kind field
    python3 -c "import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]]; print(f'{v:.2f}' if isinstance(v, float) else v)" \
        "$WORK/load-$1.json" "$2" "$3"
}
errors() { python3 -c "import json,sys; e=json.load(open(sys.argv[1]))['errors']; print(', '.join(f'{k} x {v}' for k, v in e.items()) or 'none')" "$WORK/load-$1.json"; }
wait_http() { # port log
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/v2/" && return 0; sleep 0.1; done
    echo "nothing answers on 127.0.0.1:$1:" >&2
    cat "$2" >&2
    return 1
}
blob_count() { find "$@" -type f | wc -l; }
seconds_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'; }

echo "storing $BLOBS blobs through ingest, and the same in distribution's layout"
"$FILL" "$WORK/bg" "$WORK/dist" "$WORK/kept.txt" "$BLOBS"
"$BIN" --data "$WORK/bg" namespace public bench >/dev/null
sync

echo "buildgrid: pulls idle, then buildgrid gc under the same load"
RUST_LOG=warn "$BIN" --data "$WORK/bg" serve --listen "127.0.0.1:$BG_PORT" >/dev/null 2>"$WORK/bg.log" &
PIDS+=($!)
BG_PID=$!
wait_http "$BG_PORT" "$WORK/bg.log"
load "$BG_PORT" bg-idle
BG_BEFORE=$(blob_count "$WORK/bg/blobs")
load "$BG_PORT" bg-gc "$WORK/bg-gc.stop" &
LOAD_PID=$!
sleep 1
started=$(date +%s.%N)
status=0
timeout "$GC_TIMEOUT" "$BIN" --data "$WORK/bg" gc >"$WORK/bg-gc.out" 2>"$WORK/bg-gc.err" || status=$?
BG_SECONDS=$(seconds_since "$started")
sleep 1
touch "$WORK/bg-gc.stop"
wait "$LOAD_PID"
BG_AFTER=$(blob_count "$WORK/bg/blobs")
if [ "$status" = 124 ]; then
    echo "buildgrid gc did not finish within $GC_TIMEOUT s: stopped"
    BG_SECONDS=">$GC_TIMEOUT"
    BG_DELETED=0
    BG_RATE="<$((BLOBS * 9 / 10 / GC_TIMEOUT))"
elif [ "$status" != 0 ]; then
    echo "buildgrid gc failed:"
    cat "$WORK/bg-gc.err"
    exit 1
else
    grep '^deleted' "$WORK/bg-gc.out"
    BG_DELETED=$(sed -n 's/^deleted .* manifests, \([0-9]*\) blobs .*/\1/p' "$WORK/bg-gc.out")
    BG_RATE=$(awk -v n="$BG_DELETED" -v s="$BG_SECONDS" 'BEGIN { printf "%.0f", n / s }')
fi
[ "$BG_DELETED" = $((BG_BEFORE - BG_AFTER)) ] ||
    echo "buildgrid gc said it deleted $BG_DELETED blobs; $((BG_BEFORE - BG_AFTER)) files went"
if "$BIN" --data "$WORK/bg" fsck >"$WORK/fsck.out" 2>&1; then BG_FSCK=clean; else BG_FSCK="NOT CLEAN"; fi
kill "$BG_PID"

echo "distribution: pulls idle (read-only), then garbage-collect --delete-untagged under the same load"
cat >"$WORK/distribution.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/dist
  delete:
    enabled: true
  maintenance:
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:$DIST_PORT
YAML
env -u AWS_CA_BUNDLE docker-registry serve "$WORK/distribution.yml" >/dev/null 2>"$WORK/dist.log" &
PIDS+=($!)
DIST_PID=$!
wait_http "$DIST_PORT" "$WORK/dist.log"
load "$DIST_PORT" dist-idle
DIST_BEFORE=$(blob_count "$WORK/dist/docker/registry/v2/blobs")
load "$DIST_PORT" dist-gc "$WORK/dist-gc.stop" &
LOAD_PID=$!
sleep 1
started=$(date +%s.%N)
env -u AWS_CA_BUNDLE docker-registry garbage-collect --delete-untagged "$WORK/distribution.yml" \
    >"$WORK/dist-gc.out" 2>&1 || { echo "docker-registry garbage-collect failed:"; tail "$WORK/dist-gc.out"; exit 1; }
DIST_SECONDS=$(seconds_since "$started")
sleep 1
touch "$WORK/dist-gc.stop"
wait "$LOAD_PID"
DIST_AFTER=$(blob_count "$WORK/dist/docker/registry/v2/blobs")
DIST_DELETED=$((DIST_BEFORE - DIST_AFTER))
kill "$DIST_PID"

per_second() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'; }
row() { printf '%-34s %16s %16s\n' "$@"; }
echo
row "" "buildgrid" "distribution"
row "blobs before" "$BG_BEFORE" "$DIST_BEFORE"
row "blobs deleted" "$BG_DELETED" "$DIST_DELETED"
row "collection time (s)" "$BG_SECONDS" "$DIST_SECONDS"
row "deletions/s" "$BG_RATE" "$(per_second "$DIST_DELETED" "$DIST_SECONDS")"
row "pull p99 idle (ms)" "$(field bg-idle all p99)" "$(field dist-idle all p99)"
row "pull p99 during collection (ms)" "$(field bg-gc all p99)" "$(field dist-gc all p99)"
row "  during / idle" "$(ratio "$(field bg-gc all p99)" "$(field bg-idle all p99)")" \
    "$(ratio "$(field dist-gc all p99)" "$(field dist-idle all p99)")"
for kind in manifest blob; do
    row "$kind p99 idle / during (ms)" "$(field bg-idle $kind p99) / $(field bg-gc $kind p99)" \
        "$(field dist-idle $kind p99) / $(field dist-gc $kind p99)"
    row "$kind p50 idle / during (ms)" "$(field bg-idle $kind p50) / $(field bg-gc $kind p50)" \
        "$(field dist-idle $kind p50) / $(field dist-gc $kind p50)"
done
row "pull max during collection (ms)" "$(field bg-gc all max)" "$(field dist-gc all max)"
row "pulls idle / during" "$(field bg-idle all requests) / $(field bg-gc all requests)" \
    "$(field dist-idle all requests) / $(field dist-gc all requests)"
row "fsck after" "$BG_FSCK" "-"
echo "pull errors: buildgrid idle $(errors bg-idle), during $(errors bg-gc);" \
    "distribution idle $(errors dist-idle), during $(errors dist-gc)"
echo "load: $RATE requests/s (a kept image's manifest by tag, then one of its blobs) on 4 connections"
echo "targets: buildgrid >= 3,000 deletions/s, pull p99 during collection <= 1.5x idle"
[ "$BG_FSCK" = clean ] || { cat "$WORK/fsck.out"; exit 1; }
