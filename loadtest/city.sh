#!/usr/bin/env bash
# The matching benchmark of issue #4: a simulated city (a moving fleet, riders at a
# constant rate, agents answering offers) against geomatch on this machine, over
# loopback: embedded greedy, embedded batched (same workload), and Redis mode with two
# replicas (separate processes) on one redis-server. Prints every figure.
#
#   loadtest/city.sh                      # from any directory
#   RIDES_PER_S=500 loadtest/city.sh      # every knob below can be overridden
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DRIVERS=${DRIVERS:-100000}
UPDATES_PER_S=${UPDATES_PER_S:-25000}
RIDES_PER_S=${RIDES_PER_S:-1000}
DURATION=${DURATION:-20}
DRAIN=${DRAIN:-30}
BATCH_WINDOW_MS=${BATCH_WINDOW_MS:-2000}
RUNS=${RUNS:-"greedy batched redis"}
REPLICAS=${REPLICAS:-2}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/geomatch-city.XXXXXX")
PIDS=()

stop_all() {
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

echo "==> cargo build --release -p geomatch -p geomatch-loadtest"
cargo build --release -p geomatch -p geomatch-loadtest
# Private copies: another build in the same target directory must not swap them mid-run.
mkdir -p "$WORK/bin"
cp target/release/geomatch target/release/geomatch-loadtest "$WORK/bin/"
BIN=$WORK/bin

wait_ready() {
    for _ in $(seq 1 200); do
        if curl -fsS "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "server on port $1 did not become ready" >&2
    exit 1
}

# serve PORT [ENV=VALUE ...]: a geomatch process with extra settings.
serve() {
    local port=$1
    shift
    env GEOMATCH__SERVER__PORT="$port" GEOMATCH__LOG__LEVEL=warn "$@" \
        "$BIN/geomatch" serve >>"$WORK/server-$port.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$port"
}

city() {
    local name=$1
    shift
    echo
    echo "==> $name: $DRIVERS drivers, $UPDATES_PER_S updates/s, $RIDES_PER_S rides/s for ${DURATION}s"
    local TIMEFORMAT="   CPU of the load generator: %U s user + %S s system over %R s"
    time "$BIN/geomatch-loadtest" --threads 2 city --name "$name" "$@" --drivers "$DRIVERS" \
        --updates-per-s "$UPDATES_PER_S" --rides-per-s "$RIDES_PER_S" \
        --duration "$DURATION" --drain "$DRAIN" ${SECRET:+--jwt-secret "$SECRET"}
    # CPU time of every server process (and redis-server) over the whole run, start-up and
    # the 100k drivers going online included: how much of the machine each one took.
    local tck
    tck=$(getconf CLK_TCK)
    for p in "${PIDS[@]}"; do
        printf '   CPU of %s: %s s\n' "$(ps -o comm= -p "$p")" \
            "$(awk -v t="$tck" '{printf "%.1f", ($14 + $15) / t}' "/proc/$p/stat")"
    done
}

for run in $RUNS; do
    case $run in
    greedy)
        serve 18080
        SECRET="" city "embedded greedy" --targets http://127.0.0.1:18080
        stop_all
        ;;
    batched)
        serve 18080 GEOMATCH__MATCHING__BATCH_WINDOW_MS="$BATCH_WINDOW_MS"
        SECRET="" city "embedded batched (${BATCH_WINDOW_MS} ms window)" --targets http://127.0.0.1:18080
        stop_all
        ;;
    redis)
        redis-server --port 0 --unixsocket "$WORK/redis.sock" --unixsocketperm 700 \
            --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 1 100); do [ -S "$WORK/redis.sock" ] && break; sleep 0.1; done
        SECRET="city-benchmark-secret-0123456789abcdef"
        targets=()
        for i in $(seq 1 "$REPLICAS"); do
            port=$((18080 + i))
            serve "$port" GEOMATCH__MODE=redis GEOMATCH__REDIS__URL="redis+unix://$WORK/redis.sock" \
                GEOMATCH__AUTH__JWT_SECRET="$SECRET" GEOMATCH__REDIS__POOL_SIZE="${REDIS_POOL_SIZE:-16}"
            targets+=("http://127.0.0.1:$port")
        done
        city "redis, $REPLICAS replica(s)" --targets "$(IFS=,; echo "${targets[*]}")"
        stop_all
        ;;
    *)
        echo "unknown run $run (greedy, batched, redis)" >&2
        exit 2
        ;;
    esac
done
