#!/usr/bin/env bash
# A flood of wrong sign-ins against the real binary on loopback: half web sign-ins (POST
# /login), half registry Basic auth (GET /auth/token), all at once, each from its own loopback
# address so that the per-client limit does not refuse them before their password is checked.
#
#   registry/bench/flood.sh              # 400 sign-ins
#   COUNT=800 registry/bench/flood.sh
#
# Prints the answers by status, the server's peak and final memory (VmHWM, VmRSS), and how long
# `GET /v2/` took while the flood ran. Listens on 127.0.0.1 only and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

COUNT=${COUNT:-400}
PORT=${PORT:-15080}
MAX_TIME=${MAX_TIME:-30}

cargo build --release -q -p buildgrid
BIN=target/release/buildgrid

WORK=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" serve --data "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/out" 2>"$WORK/log" &
PID=$!
for _ in $(seq 100); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT"

# The sign-in form's double-submit token: the same value in its cookie and its hidden field.
LOGIN_TOKEN=$(curl -s -c "$WORK/cookies" "$URL/login" | grep -o 'name="login_token" value="[0-9a-f]*"' | grep -o '[0-9a-f]\{32\}')
[ -n "$LOGIN_TOKEN" ] || { echo "no sign-in form at $URL/login"; exit 1; }

# One curl config entry per sign-in, each from its own source address in 127.0.0.0/8.
: >"$WORK/flood.cfg"
for i in $(seq "$COUNT"); do
    source_ip="127.0.$((1 + i / 250)).$((1 + i % 250))"
    {
        echo "next"
        echo "interface = \"$source_ip\""
        echo "max-time = $MAX_TIME"
        echo "output = \"/dev/null\""
        echo "write-out = \"%{http_code}\\n\""
        if [ $((i % 2)) = 0 ]; then
            echo "url = \"$URL/login\""
            echo "cookie = \"bg_login=$LOGIN_TOKEN\""
            echo "data = \"login_token=$LOGIN_TOKEN&next=%2F&name=admin&password=wrong-$i\""
        else
            echo "url = \"$URL/auth/token?service=bench&scope=repository:acme/app:pull\""
            echo "user = \"admin:wrong-$i\""
        fi
    } >>"$WORK/flood.cfg"
done
sed -i '1d' "$WORK/flood.cfg"

# Memory, every 50 ms, until the flood ends.
sample() {
    while kill -0 "$PID" 2>/dev/null; do
        grep -E 'VmRSS' /proc/"$PID"/status | awk '{print $2}' >>"$WORK/rss"
        sleep 0.05
    done
}
# `GET /v2/` (anonymous: answered at once with a challenge), every 100 ms.
probe() {
    while [ ! -e "$WORK/done" ]; do
        curl -s -o /dev/null -m 10 -w '%{time_total} %{http_code}\n' "$URL/v2/" >>"$WORK/probes"
        sleep 0.1
    done
}
sample & SAMPLER=$!
probe & PROBER=$!

before_kib=$(awk '/VmRSS/{print $2}' /proc/"$PID"/status)
started=$(date +%s.%N)
curl -s --parallel --parallel-immediate --parallel-max "$COUNT" -K "$WORK/flood.cfg" >"$WORK/codes" 2>/dev/null || true
ended=$(date +%s.%N)
touch "$WORK/done"
wait "$PROBER"
sleep 1
after_kib=$(awk '/VmRSS/{print $2}' /proc/"$PID"/status)
peak_kib=$(awk '/VmHWM/{print $2}' /proc/"$PID"/status)
kill "$SAMPLER" 2>/dev/null || true

echo "sign-ins: $COUNT wrong ($((COUNT / 2)) web, $((COUNT - COUNT / 2)) registry), all at once, in $(echo "$ended - $started" | bc | cut -c1-5) s"
echo "answers:  $(sort "$WORK/codes" | uniq -c | awk '{printf "%s x %s  ", $2, $1}')"
echo "memory:   before $((before_kib / 1024)) MB, peak (VmHWM) $((peak_kib / 1024)) MB, sampled max $(( $(sort -n "$WORK/rss" | tail -1) / 1024 )) MB, 1 s after $((after_kib / 1024)) MB"
sort -n "$WORK/probes" | awk '
    { t[NR] = $1 * 1000; codes[$2]++ }
    END {
        printf "GET /v2/: %d probes during the flood, median %.1f ms, max %.1f ms, answers", NR, t[int((NR + 1) / 2)], t[NR];
        for (c in codes) printf " %s x %d", c, codes[c];
        printf "\n";
    }'
if grep -q ERROR "$WORK/log"; then echo "server log errors:"; grep ERROR "$WORK/log" | head -5; fi
