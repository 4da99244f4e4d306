#!/usr/bin/env bash
# A soak of collection under builds, pulls and crashes: `buildgrid serve` with one app whose
# retention keeps the last 2 builds, a `git push` of a new commit every BUILD_EVERY seconds,
# `buildgrid gc` every GC_EVERY seconds beside it, PULLERS clients that fetch the manifest and
# every blob of each current tag and check each digest, and every KILL_EVERY seconds a
# `kill -9` of serve (and of a collection running then), restarted at once.
#
#   registry/bench/soak.sh               # 600 s
#   DURATION=120 registry/bench/soak.sh
#   BIN=target/release/buildgrid registry/bench/soak.sh   # use that binary, do not build
#   KEEP=1 registry/bench/soak.sh        # keep the temporary directory (logs, data)
#
# At the end: digest mismatches, blobs missing for manifests that answered 200 (a blob 404 is
# a miss when the manifest it came from still answers 200 after it), other wrong answers (5xx,
# a listed tag without its manifest), a last pass over every tag with nothing running beside
# it, and `buildgrid fsck`; exits 1 when any is wrong.
# The app is examples/hello built on a busybox-static `docker import` (nothing is pulled from
# a registry). Needs docker, git, curl, python3 and busybox-static; everything listens on
# 127.0.0.1, lives in one temporary directory and stops by itself; the engine images it made
# are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-600}
PORT=${PORT:-15050}
PULLERS=${PULLERS:-16}
BUILD_EVERY=${BUILD_EVERY:-2}
GC_EVERY=${GC_EVERY:-5}
KILL_EVERY=${KILL_EVERY:-30}
BASE=buildgrid-soak/busybox:local

for tool in docker git curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install $tool"; exit 1; }
done
[ -x /bin/busybox ] || { echo "missing /bin/busybox: apt-get install busybox-static"; exit 1; }

if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p buildgrid
    BIN=target/release/buildgrid
fi
BIN=$(realpath "$BIN")

WORK=$(mktemp -d)
DATA=$WORK/data
SERVE_PID=
BACKGROUND=()
cleanup() {
    touch "$WORK/stop"
    for pid in "${BACKGROUND[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    # The engine's images of the builds that are left (collection removed the others' names).
    if [ -f "$WORK/commits" ]; then
        docker images --format '{{.Repository}}:{{.Tag}}' | grep -F -f "$WORK/commits" |
            xargs -r docker rmi >/dev/null 2>&1 || true
    fi
    docker rmi "$BASE" >/dev/null 2>&1 || true
    if [ -n "${KEEP:-}" ]; then echo "logs and data kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "making the base image $BASE from /bin/busybox"
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/tmp"
cp /bin/busybox "$WORK/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$WORK/rootfs/bin/$applet"
done
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
docker import -c "ENV PATH=/usr/local/bin:/bin" "$WORK/rootfs.tar" "$BASE" >/dev/null
rm -rf "$WORK/rootfs" "$WORK/rootfs.tar"

cli() { "$BIN" --data "$DATA" "$@"; }
cli app create soak/app --git https://git.example.com/soak/app.git --build-arg "BASE=$BASE" \
    --webhook-secret soak-webhook-secret >/dev/null
cli retention set soak/app --keep-last 2 >/dev/null
cli namespace public soak >/dev/null

mkdir "$WORK/src"
cp examples/hello/* "$WORK/src/"
export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=Soak GIT_AUTHOR_EMAIL=soak@example.com \
    GIT_COMMITTER_NAME=Soak GIT_COMMITTER_EMAIL=soak@example.com GIT_TERMINAL_PROMPT=0
git -C "$WORK/src" init -q -b main
: >"$WORK/commits"

start_serve() {
    "$BIN" --data "$DATA" serve --listen "127.0.0.1:$PORT" >>"$WORK/serve.out" 2>>"$WORK/serve.log" &
    SERVE_PID=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/v2/" && return 0; sleep 0.1; done
    echo "serve did not answer within 10 s:" >&2
    tail -20 "$WORK/serve.log" >&2
    return 1
}

# A new commit every BUILD_EVERY seconds, pushed to buildgrid's git endpoint (a push while
# serve is down fails; the next one carries its commit too).
pusher() {
    local n=0
    while [ ! -e "$WORK/stop" ]; do
        n=$((n + 1))
        echo "<p>soak build $n, $(date +%s.%N)</p>" >"$WORK/src/index.html"
        git -C "$WORK/src" add -A
        git -C "$WORK/src" commit -q -m "soak $n"
        git -C "$WORK/src" rev-parse HEAD >>"$WORK/commits"
        if out=$(timeout 30 git -C "$WORK/src" push "$PUSH_URL" main 2>&1); then
            echo "ok $(echo "$out" | sed -n 's/.*buildgrid: build \([0-9]*\).*/\1/p' | head -1)" >>"$WORK/pushes"
        else
            echo "failed" >>"$WORK/pushes"
        fi
        sleep "$BUILD_EVERY"
    done
}

# `buildgrid gc` every GC_EVERY seconds, its pid in $WORK/gc.pid while it runs. The engine's
# build cache is shared with whatever else runs on this machine: a budget of 1 TiB leaves it.
collector() {
    while [ ! -e "$WORK/stop" ]; do
        "$BIN" --data "$DATA" gc --engine-cache-budget 1TiB >>"$WORK/gc.out" 2>>"$WORK/gc.log" &
        echo $! >"$WORK/gc.pid"
        if wait $!; then echo ok; else echo "exit $?"; fi >>"$WORK/gcs"
        rm -f "$WORK/gc.pid"
        sleep "$GC_EVERY"
    done
}

cat >"$WORK/pull.py" <<'PYTHON'
"""Pullers: each pulls every tag of every soak/ repository (its manifest, index children,
config and layers) again and again, and checks every digest. A blob that answers 404 is
missing when the manifest it came from still answers 200 afterwards (collection deletes a
manifest's row before any of its blobs, so a collected image's manifest answers 404 first).
Connection errors (serve killed) are counted, not failures. With `once`, one pass by one
puller with nothing running beside it: then a listed tag whose manifest answers 404 is wrong
too. Prints JSON."""
import hashlib, http.client, json, os, random, sys, threading, time
from collections import Counter

port, pullers, stop, out, mode = sys.argv[1:]
ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])
stats, problems, lock = Counter(), [], threading.Lock()

class Unavailable(Exception):
    pass

def count(kind, n=1):
    with lock:
        stats[kind] += n

def problem(kind, text):
    with lock:
        stats[kind] += 1
        problems.append(f"{kind}: {text}")

def sha256(body):
    return "sha256:" + hashlib.sha256(body).hexdigest()

class Client:
    def __init__(self):
        self.conn = None

    def get(self, path):
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
            self.conn.request("GET", path, headers={"Accept": ACCEPT})
            response = self.conn.getresponse()
            return response.status, response.getheader("Docker-Content-Digest"), response.read()
        except (OSError, http.client.HTTPException) as e:
            if self.conn:
                self.conn.close()
            self.conn = None
            raise Unavailable(type(e).__name__)

def pull_manifest(client, repo, reference, body, digest):
    document = json.loads(body)
    for child in document.get("manifests", []):
        status, _, child_body = client.get(f"/v2/{repo}/manifests/{child['digest']}")
        if status == 200:
            if sha256(child_body) != child["digest"]:
                problem("digest mismatch", f"{repo}@{child['digest']}: {sha256(child_body)}")
            pull_manifest(client, repo, child["digest"], child_body, child["digest"])
        else:
            missing(client, repo, digest, child["digest"], status)
    blobs = [document["config"]["digest"]] if "config" in document else []
    blobs += [layer["digest"] for layer in document.get("layers", [])]
    for blob in blobs:
        status, _, data = client.get(f"/v2/{repo}/blobs/{blob}")
        if status == 200:
            count("blobs")
            count("bytes", len(data))
            if sha256(data) != blob:
                problem("digest mismatch", f"{repo} blob {blob} of {reference}: {sha256(data)}")
        else:
            missing(client, repo, digest, blob, status)

def missing(client, repo, manifest, blob, status):
    again, _, _ = client.get(f"/v2/{repo}/manifests/{manifest}")
    if status != 404:
        problem(f"HTTP {status}", f"{repo} blob {blob} of {manifest}, which answers {again} after")
    elif again == 200:
        problem("missing blob", f"{repo}@{manifest} answers 200 but {blob} answered 404")
    else:
        count("blob gone with its manifest")

def pull_tag(client, repo, tag):
    status, header, body = client.get(f"/v2/{repo}/manifests/{tag}")
    if status == 404:
        if mode == "once":
            problem("listed tag without manifest", f"{repo}:{tag}")
        else:
            count("tag collected before its pull")
        return
    if status != 200:
        problem(f"HTTP {status}", f"manifest {repo}:{tag}")
        return
    count("manifests")
    digest = sha256(body)
    if header != digest:
        problem("digest mismatch", f"{repo}:{tag} says {header}, its body is {digest}")
    pull_manifest(client, repo, tag, body, digest)

def puller(seed):
    client, rnd = Client(), random.Random(seed)
    while not os.path.exists(stop):
        try:
            status, _, body = client.get("/v2/_catalog")
            repos = [r for r in json.loads(body)["repositories"] if r.startswith("soak/")] if status == 200 else []
            for repo in repos:
                status, _, body = client.get(f"/v2/{repo}/tags/list")
                tags = (json.loads(body).get("tags") or []) if status == 200 else []
                rnd.shuffle(tags)
                for tag in tags:
                    pull_tag(client, repo, tag)
            count("rounds")
        except Unavailable as e:
            count(f"unavailable ({e})")
            time.sleep(0.2)
        if mode == "once":
            return
        time.sleep(0.1)

threads = [threading.Thread(target=puller, args=(i,)) for i in range(int(pullers))]
for t in threads: t.start()
for t in threads: t.join()
json.dump({"stats": dict(stats), "problems": problems[:50]}, open(out, "w"), indent=1)
PYTHON

# The first start makes the admin user, whose token pushes.
start_serve
TOKEN=$(cli token create --name soak --scope admin | tail -1)
PUSH_URL="http://push:$TOKEN@127.0.0.1:$PORT/git/soak/app.git"
echo "soaking for ${DURATION}s: a push every ${BUILD_EVERY}s, gc every ${GC_EVERY}s, $PULLERS pullers, kill -9 of serve every ${KILL_EVERY}s"
python3 "$WORK/pull.py" "$PORT" "$PULLERS" "$WORK/stop" "$WORK/pulls.json" loop &
PULL_PID=$!
pusher &
BACKGROUND+=($!)
collector &
BACKGROUND+=($!)

KILLS=0
GC_KILLS=0
end=$((SECONDS + DURATION))
while [ "$SECONDS" -lt "$end" ]; do
    sleep $((KILL_EVERY < end - SECONDS ? KILL_EVERY : end - SECONDS))
    [ "$SECONDS" -lt "$end" ] || break
    gc_pid=$(cat "$WORK/gc.pid" 2>/dev/null || true)
    if [ -n "$gc_pid" ] && kill -9 "$gc_pid" 2>/dev/null; then GC_KILLS=$((GC_KILLS + 1)); fi
    if kill -9 "$SERVE_PID" 2>/dev/null; then
        KILLS=$((KILLS + 1))
    else
        echo "serve exited by itself before kill $((KILLS + 1)):" >>"$WORK/exits"
        tail -5 "$WORK/serve.log" >>"$WORK/exits"
    fi
    wait "$SERVE_PID" 2>/dev/null || true
    start_serve
done

echo "stopping: pushes, collections and pullers"
touch "$WORK/stop"
wait "$PULL_PID"
for pid in "${BACKGROUND[@]}"; do wait "$pid" 2>/dev/null || true; done
BACKGROUND=()
# Builds still queued or running finish, then one last collection with nothing beside it.
for _ in $(seq 1 120); do
    busy=$(curl -s "http://127.0.0.1:$PORT/metrics" -H "Authorization: Bearer $TOKEN" |
        awk '/^buildgrid_builds_unfinished/ {n += $2} END {print n + 0}')
    [ "$busy" = 0 ] && break
    sleep 1
done
cli gc --engine-cache-budget 1TiB >>"$WORK/gc.out" 2>>"$WORK/gc.log" && echo ok >>"$WORK/gcs" || echo "exit $?" >>"$WORK/gcs"
python3 "$WORK/pull.py" "$PORT" 1 "$WORK/never" "$WORK/final.json" once

# Every build's state, through the build API.
: >"$WORK/states"
last=$(awk '$1 == "ok" && $2 != "" {print $2}' "$WORK/pushes" | sort -n | tail -1)
for id in $(seq 1 "${last:-0}"); do
    curl -s "http://127.0.0.1:$PORT/api/builds/$id" |
        python3 -c 'import json,sys
try: b = json.load(sys.stdin)
except ValueError: b = {}
print(b.get("state", "unknown"), "interrupted" if "interrupted" in (b.get("reason") or "") else "")' >>"$WORK/states"
done
TAGS=$(curl -s "http://127.0.0.1:$PORT/v2/_catalog" | python3 -c '
import json, sys, urllib.request
for repo in json.load(sys.stdin)["repositories"]:
    if repo.startswith("soak/"):
        tags = json.load(urllib.request.urlopen(f"http://127.0.0.1:'"$PORT"'/v2/{repo}/tags/list"))["tags"]
        print(len(tags), "tags:", " ".join(sorted(t if len(t) < 40 else t[:12] for t in tags)))')
kill "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
SERVE_PID=
if cli fsck >"$WORK/fsck.out" 2>&1; then FSCK=clean; else FSCK="NOT CLEAN"; fi

stat_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"].get(sys.argv[2], 0))' "$@"; }
stats() { python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["stats"]; print(", ".join(f"{k} {v}" for k, v in sorted(s.items()) if k.startswith(sys.argv[2])) or "none")' "$@"; }
MISMATCHES=$(( $(stat_of "$WORK/pulls.json" "digest mismatch") + $(stat_of "$WORK/final.json" "digest mismatch") ))
MISSING=$(( $(stat_of "$WORK/pulls.json" "missing blob") + $(stat_of "$WORK/final.json" "missing blob") ))
OTHER=$(python3 -c 'import json,sys; print(sum(len(json.load(open(f))["problems"]) for f in sys.argv[1:]))' \
    "$WORK/pulls.json" "$WORK/final.json")
OTHER=$((OTHER - MISMATCHES - MISSING))

echo
echo "soak: ${DURATION}s, serve killed $KILLS times (and $GC_KILLS collections with it)"
echo "pushes:        $(grep -c '^ok' "$WORK/pushes" || true) ok, $(grep -c '^failed' "$WORK/pushes" || true) failed (serve down)"
echo "builds:        $(sort "$WORK/states" | uniq -c | awk '{printf "%s%s %s", sep, $2 ($3 ? " (" $3 ")" : ""), $1; sep=", "}')"
echo "collections:   $(sort "$WORK/gcs" | uniq -c | awk '{printf "%s%s %s", sep, $2 ($3 ? " " $3 : ""), $1; sep=", "}'); $(grep -c '^deleted' "$WORK/gc.out" || true) finished, $(awk '/^deleted/ {m += $4; b += $6} END {print m + 0 " manifests, " b + 0 " blobs"}' "$WORK/gc.out") deleted"
echo "pulls:         $(stat_of "$WORK/pulls.json" rounds) rounds, $(stat_of "$WORK/pulls.json" manifests) manifests, $(stat_of "$WORK/pulls.json" blobs) blobs ($(( $(stat_of "$WORK/pulls.json" bytes) / 1048576 )) MiB) checked"
echo "  benign:      $(stats "$WORK/pulls.json" tag), $(stats "$WORK/pulls.json" "blob gone"), $(stats "$WORK/pulls.json" unavailable)"
echo "final pass:    $(stat_of "$WORK/final.json" manifests) manifests, $(stat_of "$WORK/final.json" blobs) blobs; $TAGS"
echo "digest mismatches:                       $MISMATCHES"
echo "missing blobs of manifests answering 200: $MISSING"
echo "other problems (5xx, dangling tags):     $OTHER"
echo "fsck: $FSCK"
sed 's/^/  /' "$WORK/fsck.out"
python3 -c 'import json,sys
for f in sys.argv[1:]:
    for p in json.load(open(f))["problems"]: print("  ", p)' "$WORK/pulls.json" "$WORK/final.json"
if grep -q "panicked" "$WORK/serve.log" "$WORK/gc.log"; then
    echo "panics:"; grep -h "panicked" "$WORK/serve.log" "$WORK/gc.log" | head -5
fi
[ "$MISMATCHES" = 0 ] && [ "$MISSING" = 0 ] && [ "$OTHER" = 0 ] && [ "$FSCK" = clean ] &&
    [ "$(grep -c '^succeeded' "$WORK/states" || true)" -gt 0 ]
