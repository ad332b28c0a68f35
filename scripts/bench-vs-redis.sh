#!/usr/bin/env bash
# cradle (driven by `cradle bench`, UDP) next to redis (driven by redis-benchmark, redis's own
# tool, over TCP). Two different tools and transports: the table is a side-by-side on the same
# machine and cores, not a like-for-like protocol comparison.
#
# Server pinned to SERVER_CPU, load tool to CLIENT_CPU; each server runs only during its own
# measurement; ROUNDS alternating rounds of SET then GET. Writes target/bench-report-redis/
# (report.md, latency.svg) through bench-vs-memcached.sh's report step. Kills only the
# processes it started.
#
# Settings (env): ROUNDS SECS WARMUP IN_FLIGHT VALUE_BYTES KEYS SERVER_CPU CLIENT_CPU
# CRADLE_PORT REDIS_PORT REDIS_REQUESTS PIPELINE (redis-benchmark -P; connections are
# IN_FLIGHT / PIPELINE) OFFLOAD (1: cradle's UDP GSO/GRO on, the default; 0: off) OUT.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
WARMUP=${WARMUP:-1}
IN_FLIGHT=${IN_FLIGHT:-32}
VALUE_BYTES=${VALUE_BYTES:-32}
KEYS=${KEYS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CRADLE_PORT=${CRADLE_PORT:-17000}
REDIS_PORT=${REDIS_PORT:-17379}
REDIS_REQUESTS=${REDIS_REQUESTS:-2000000}
PIPELINE=${PIPELINE:-1}

cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-report-redis}
CRADLE=target/release/cradle

source scripts/bench-common.sh # (the script runs from the repository root)

show() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); a=sys.argv; print("  %-15s %-4s r%s: %9.0f ops/s  p50 %7.1f  p99 %7.1f us" % (a[2], a[3], a[4], r["ops_per_sec"], r["p50_us"], r["p99_us"]))' "$@"
}

cradle_round() { # cradle_round OP ROUND
    start_cradle
    local cmd=(taskset -c "$CLIENT_CPU" "$CRADLE" bench --server "127.0.0.1:$CRADLE_PORT"
        --op "$1" --keys "$KEYS" --value-bytes "$VALUE_BYTES" --in-flight "$IN_FLIGHT"
        --duration "$SECS" --warmup "$WARMUP" --json --quiet "${GENERATOR_FLAGS[@]}")
    grep -qxF -- "${cmd[*]}" "$OUT/commands.txt" 2>/dev/null || echo "${cmd[*]}" >>"$OUT/commands.txt"
    "${cmd[@]}" >"$OUT/results/cradle__$1__r$2.json"
    stop_server
    show "$OUT/results/cradle__$1__r$2.json" cradle "$1" "$2"
}

redis_round() { # redis_round ROUND: SET then GET (the SETs populate the keys the GETs read)
    start_redis
    local op
    for op in set get; do
        local cmd=(taskset -c "$CLIENT_CPU" redis-benchmark -p "$REDIS_PORT" -t "$op"
            -n "$REDIS_REQUESTS" -c "$((IN_FLIGHT / PIPELINE))" -P "$PIPELINE" -d "$VALUE_BYTES"
            -r "$KEYS" --csv -q)
        grep -qxF -- "${cmd[*]}" "$OUT/commands.txt" 2>/dev/null || echo "${cmd[*]}" >>"$OUT/commands.txt"
        "${cmd[@]}" >"$TMP/redis.csv"
        # CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
        # "p99_latency_ms","max_latency_ms"; redis-benchmark reports no p99.9 or p99.99.
        python3 - "$TMP/redis.csv" "$OUT/results/redis-benchmark__${op}__r$1.json" "$op" <<'PY'
import csv, json, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))]
r = rows[-1]
ms = lambda k: round(float(r[k]) * 1000, 1)
json.dump({"protocol": "redis (TCP, redis-benchmark)", "op": sys.argv[3],
           "ops_per_sec": float(r["rps"]), "p50_us": ms("p50_latency_ms"),
           "p99_us": ms("p99_latency_ms"), "p999_us": None, "p9999_us": None,
           "max_us": ms("max_latency_ms"), "mean_us": ms("avg_latency_ms"),
           "errors": 0, "timeouts": 0}, open(sys.argv[2], "w"))
PY
        show "$OUT/results/redis-benchmark__${op}__r$1.json" redis-benchmark "$op" "$1"
    done
    stop_server
}

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "installing redis" >&2
    apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release --quiet
rm -rf "$OUT"
mkdir -p "$OUT/results"
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "redis: $(redis-server --version)"
    echo "cradle: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "DIFFERENT TOOLS: cradle measured by 'cradle bench' (UDP); redis by redis-benchmark (TCP)."
    echo "server CPU $SERVER_CPU, load tool CPU $CLIENT_CPU; $ROUNDS rounds; $IN_FLIGHT in flight"
    echo "(redis: $((IN_FLIGHT / PIPELINE)) connections x pipeline $PIPELINE), $VALUE_BYTES-byte values, $KEYS keys"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

for round in $(seq "$ROUNDS"); do
    if ((round % 2 == 1)); then
        cradle_round set "$round"
        cradle_round get "$round"
        redis_round "$round"
    else
        redis_round "$round"
        cradle_round set "$round"
        cradle_round get "$round"
    fi
done

scripts/bench-vs-memcached.sh report "$OUT" \
    "cradle (cradle bench, UDP) next to redis (redis-benchmark, TCP): different tools"
