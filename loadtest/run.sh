#!/usr/bin/env bash
# The location-ingest benchmark of issue #3: geomatch and the generator on this machine,
# over loopback, in embedded mode and in Redis mode, with the Redis GEOADD peer measured
# in the same run. Prints every figure; takes about 3-5 minutes after the build.
#
#   loadtest/run.sh                 # from any directory
#   PUT_RATE=30000 loadtest/run.sh  # every knob below can be overridden the same way
#   MODES=redis loadtest/run.sh     # only one of the two parts (embedded, redis)
#   BIN=/some/dir loadtest/run.sh   # measure prebuilt geomatch + geomatch-loadtest binaries
#
# The generator and the server share the machine's cores. Before each step the script
# waits (up to QUIET_WAIT_S) for the machine to be idle, and after it prints how much CPU
# the server, Redis, the generator and everything else used, so a figure taken while
# something else was busy can be recognised.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PUT_RATE=${PUT_RATE:-50000}              # req/s
PUT_DURATION=${PUT_DURATION:-10}         # measured seconds
SLO_P99_MS=${SLO_P99_MS:-2}              # the put latency objective, for the step-down
STEP_DURATION=${STEP_DURATION:-5}        # measured seconds per step-down step
BATCH_RATE=${BATCH_RATE:-500000}         # updates/s, embedded
BATCH_SIZE=${BATCH_SIZE:-200}
BATCH_DURATION=${BATCH_DURATION:-10}
WS_DRIVERS=${WS_DRIVERS:-10000}
WS_INTERVAL_S=${WS_INTERVAL_S:-4}
WS_DURATION=${WS_DURATION:-16}
REDIS_BATCH_RATE=${REDIS_BATCH_RATE:-200000}   # updates/s, Redis mode
REDIS_BATCH_DURATION=${REDIS_BATCH_DURATION:-10}
GEOADD_PIPELINE=${GEOADD_PIPELINE:-32}
GEOADD_CONNECTIONS=${GEOADD_CONNECTIONS:-4}
GEOADD_DURATION=${GEOADD_DURATION:-5}
DRIVERS=${DRIVERS:-100000}
QUIET_WAIT_S=${QUIET_WAIT_S:-15}
MODES=${MODES:-embedded redis}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/geomatch-loadtest.XXXXXX")
SERVER_PID=""
REDIS_PID=""
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

stop_geomatch() {
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

stop_redis() {
    if [ -n "$REDIS_PID" ]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=""
    fi
}

cleanup() {
    stop_geomatch
    stop_redis
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both the server and the generator inherit this: 10k WebSockets need 10k+ descriptors
# on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((WS_DRIVERS + 1024)) ]; then
    echo "open-file limit $(ulimit -n) is too low for $WS_DRIVERS WebSockets (need $((WS_DRIVERS + 1024)))" >&2
    exit 1
fi

if [ -z "${BIN:-}" ]; then
    echo "==> cargo build --release -p geomatch -p geomatch-loadtest"
    cargo build --release -p geomatch -p geomatch-loadtest
    # A private copy: the target directory may be shared, and rebuilt meanwhile.
    mkdir -p "$WORK/bin"
    cp "${CARGO_TARGET_DIR:-target}/release/geomatch" "${CARGO_TARGET_DIR:-target}/release/geomatch-loadtest" "$WORK/bin/"
    BIN="$WORK/bin"
fi

# A loopback port nobody listens on, below the ephemeral range.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# Busy CPU ticks (1/100 s) of the whole machine (all of it, or only interrupt and softirq
# time, where loopback TCP is mostly processed), and of one process.
machine_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
irq_ticks() { awk '/^cpu /{print $7+$8}' /proc/stat; }
proc_ticks() {
    if [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ]; then
        awk '{print $14+$15}' "/proc/$1/stat"
    else
        echo 0
    fi
}

# Waits until the machine is idle apart from our own idle processes.
wait_quiet() {
    local waited=0 a b
    while [ "$waited" -lt "$QUIET_WAIT_S" ]; do
        a=$(machine_ticks)
        sleep 1
        b=$(machine_ticks)
        if [ $((b - a)) -le 15 ]; then
            return 0
        fi
        if [ "$waited" -eq 0 ]; then
            echo "   (waiting for the machine to quiet down: $((b - a))% of a core busy)"
        fi
        waited=$((waited + 1))
    done
    echo "   (machine still busy after ${QUIET_WAIT_S} s; measuring anyway — see 'other' below)"
}

# Runs one generator step, then prints where the machine's CPU went meanwhile.
step() {
    local label=$1
    shift
    wait_quiet
    echo
    echo "==> $label: $BIN/geomatch-loadtest $*"
    local m0 i0 s0 r0 m1 i1 s1 r1 timefile="$WORK/time"
    m0=$(machine_ticks)
    i0=$(irq_ticks)
    s0=$(proc_ticks "$SERVER_PID")
    r0=$(proc_ticks "$REDIS_PID")
    local TIMEFORMAT='%U %S %R'
    { time { "$BIN/geomatch-loadtest" "$@" 2>&1 | tee "$WORK/step.log"; }; } 2>"$timefile"
    m1=$(machine_ticks)
    i1=$(irq_ticks)
    s1=$(proc_ticks "$SERVER_PID")
    r1=$(proc_ticks "$REDIS_PID")
    sed -n 's/^   result //p' "$WORK/step.log" | sed "s/^{/{\"step\":\"$label\",/" >>"$RESULTS"
    read -r gu gs real <"$timefile"
    awk -v m=$((m1 - m0)) -v i=$((i1 - i0)) -v s=$((s1 - s0)) -v r=$((r1 - r0)) \
        -v gu="$gu" -v gs="$gs" -v t="$real" -v n="$(nproc)" 'BEGIN {
        g = (gu + gs) * 100; o = m - i - s - r - g; if (o < 0) o = 0;
        printf "   CPU over %.1f s (%d cores): server %.2f cores, redis %.2f, generator %.2f (user %.1f s, system %.1f s), irq+softirq %.2f, other processes %.2f\n",
            t, n, s / 100 / t, r / 100 / t, g / 100 / t, gu, gs, i / 100 / t, o / 100 / t
    }'
}

# Updates the server has accepted so far (its Prometheus counter).
accepted_updates() {
    curl -fsS "$URL/metrics" 2>/dev/null |
        awk '/^ingest_updates_total\{/ && /outcome="accepted"/ {n += $NF} END {printf "%d\n", n}'
}

# Starts geomatch with extra `VAR=value` settings and waits until it is ready.
start_geomatch() {
    local port log="$WORK/geomatch.$RANDOM.log"
    port=$(free_port)
    URL="http://127.0.0.1:$port"
    env GEOMATCH__SERVER__HOST=127.0.0.1 \
        GEOMATCH__SERVER__PORT="$port" \
        GEOMATCH__SERVER__SHUTDOWN_TIMEOUT_S=2 \
        GEOMATCH__INGEST__RATE_PER_S=1000 \
        GEOMATCH__INGEST__BURST=1000 \
        GEOMATCH__LOG__LEVEL=warn \
        "$@" "$BIN/geomatch" serve >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 150); do
        if curl -fsS "$URL/health/ready" >/dev/null 2>&1; then
            echo "   geomatch (pid $SERVER_PID) ready at $URL: $* GEOMATCH__INGEST__RATE_PER_S=1000 GEOMATCH__INGEST__BURST=1000"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "geomatch exited during start-up:" >&2
            cat "$log" >&2
            SERVER_PID=""
            return 1
        fi
        sleep 0.1
    done
    echo "geomatch did not become ready within 15 s:" >&2
    cat "$log" >&2
    return 1
}

echo
echo "==> machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "    $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "    date: $(date -u +%Y-%m-%dT%H:%M:%SZ); git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "($(git status --porcelain 2>/dev/null | wc -l) paths differ from HEAD)"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    echo "    uncommitted: $(git status --porcelain | awk '{print $2}' | tr '\n' ' ')"
fi
echo "    the generator and the server share these cores"

echo "    binaries: $BIN"

if [[ " $MODES " == *" embedded "* ]]; then
echo
echo "#### 1. embedded mode"
start_geomatch
step "put" --target "$URL" put --rate "$PUT_RATE" --drivers "$DRIVERS" \
    --duration "$PUT_DURATION" --warmup 2
# The highest rate with p99 within the objective: from 70 % of the target, down by 30 %
# a step, then once halfway back up.
step "put p99 <= ${SLO_P99_MS} ms" --target "$URL" put --rate "$((PUT_RATE * 7 / 10))" \
    --drivers "$DRIVERS" --duration "$STEP_DURATION" --warmup 1 \
    --slo-p99-ms "$SLO_P99_MS" --step-factor 0.7 --step-duration "$STEP_DURATION" --min-rate 4000
step "batch" --target "$URL" batch --rate "$BATCH_RATE" --batch-size "$BATCH_SIZE" \
    --drivers "$DRIVERS" --duration "$BATCH_DURATION" --warmup 2
step "ws" --target "$URL" ws --drivers "$WS_DRIVERS" --interval-s "$WS_INTERVAL_S" \
    --duration "$WS_DURATION" --warmup "$WS_INTERVAL_S"
stop_geomatch
fi

if [[ " $MODES " == *" redis "* ]]; then
echo
echo "#### 2. redis mode"
mkdir -p "$WORK/redis"
SOCKET="$WORK/redis/redis.sock"
redis-server --port 0 --unixsocket "$SOCKET" --unixsocketperm 700 \
    --save '' --appendonly no --dir "$WORK/redis" --logfile "$WORK/redis/redis.log" &
REDIS_PID=$!
for _ in $(seq 1 100); do
    [ "$(redis-cli -s "$SOCKET" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
[ "$(redis-cli -s "$SOCKET" ping)" = PONG ]
REDIS_URL="redis+unix://$SOCKET"
echo "   redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') (pid $REDIS_PID) at $REDIS_URL, no persistence"
# A fresh 32+ byte secret: Redis mode refuses the development one.
SECRET="loadtest-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
start_geomatch GEOMATCH__MODE=redis GEOMATCH__REDIS__URL="$REDIS_URL" GEOMATCH__AUTH__JWT_SECRET="$SECRET"
redis-cli -s "$SOCKET" config resetstat >/dev/null
updates0=$(accepted_updates)
redis0=$(proc_ticks "$REDIS_PID")
server0=$(proc_ticks "$SERVER_PID")
step "redis batch" --target "$URL" batch --jwt-secret "$SECRET" --rate "$REDIS_BATCH_RATE" \
    --batch-size "$BATCH_SIZE" --drivers "$DRIVERS" --duration "$REDIS_BATCH_DURATION" --warmup 2
# CPU time per accepted update over the whole step (warm-up and drain included): what
# each update costs Redis and the server, however busy the machine was.
awk -v n=$(($(accepted_updates) - updates0)) -v r=$(($(proc_ticks "$REDIS_PID") - redis0)) \
    -v s=$(($(proc_ticks "$SERVER_PID") - server0)) 'BEGIN {
    if (n > 0) printf "   CPU per accepted update: redis %.2f us, server %.2f us (%d updates)\n", r * 1e4 / n, s * 1e4 / n, n
}'
echo "   redis commands during the batch run (per-update script and what it calls):"
redis-cli -s "$SOCKET" info commandstats | tr -d '\r' | grep '^cmdstat_' |
    sed 's/^cmdstat_//' | sort -t= -k2 -rn | head -12 | sed 's/^/     /'
stop_geomatch

step "geoadd" geoadd --redis-url "$REDIS_URL" --pipeline "$GEOADD_PIPELINE" \
    --connections "$GEOADD_CONNECTIONS" --drivers "$DRIVERS" --duration "$GEOADD_DURATION"

wait_quiet
echo
echo "==> cross-check of the peer with Redis's own client:" \
    "redis-benchmark -c $GEOADD_CONNECTIONS -P $GEOADD_PIPELINE GEOADD (random members of $DRIVERS)"
redis-benchmark -s "$SOCKET" -n 2000000 -c "$GEOADD_CONNECTIONS" -P "$GEOADD_PIPELINE" \
    -r "$DRIVERS" -q GEOADD loadtest:rb 127.0 37.5 __rand_int__ | tr '\r' '\n' | tail -n 1
stop_redis
fi

echo
echo "#### results (one JSON object per run)"
cat "$RESULTS"
