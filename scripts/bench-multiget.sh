#!/usr/bin/env bash
# Multi-get keys/s of one server core, in one run (issue #13 point 1): cradle driven by
# `cradle bench --keys-per-request N` (N GETs in one datagram, as the client's get_many packs
# them), memcached driven by `cradle bench --protocol memcache-udp --keys-per-request N` (one
# `get k1 … kN` line over UDP), redis driven by its own `redis-benchmark -P N -t get` (N GETs
# pipelined per TCP connection). Different tool and transport for redis: its row is what
# redis's own tooling gets on this machine and cores, not a protocol comparison.
#
# Each server alone on SERVER_CPU while it is measured, the load tool on CLIENT_CPU; the
# systems alternate round by round (the order rotates); medians over ROUNDS; ratios of keys/s.
# With BASELINE=path/to/an/older/cradle, that binary's node is measured too ("cradle-base",
# same generator), for a before/after in the same run. Every command is bounded in time
# (`timeout`). Kills only the processes it started. Installs memcached and redis with apt-get
# if they are missing (as root).
#
#   scripts/bench-multiget.sh                      # 5 rounds x 5 s, 16 keys per request
#   ROUNDS=7 SECS=4 BASELINE=/tmp/cradle-old scripts/bench-multiget.sh
#
# Settings (env): ROUNDS SECS WARMUP KEYS_PER_REQUEST IN_FLIGHT (requests: cradle bench's
# --in-flight, redis-benchmark's -c, so the same keys are in flight) VALUE_BYTES KEYS
# SERVER_CPU CLIENT_CPU CRADLE_PORT MEMCACHED_PORT REDIS_PORT REDIS_RATE_GUESS (GETs/s, sets
# redis-benchmark -n to about SECS of work) BUSY_POLL (1: cradle bench spins when idle)
# BASELINE CRADLE (the binary; default $CARGO_TARGET_DIR/release/cradle) OUT.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
KEYS_PER_REQUEST=${KEYS_PER_REQUEST:-16}
IN_FLIGHT=${IN_FLIGHT:-32}
VALUE_BYTES=${VALUE_BYTES:-32}
KEYS=${KEYS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CRADLE_PORT=${CRADLE_PORT:-17000}
MEMCACHED_PORT=${MEMCACHED_PORT:-17211}
REDIS_PORT=${REDIS_PORT:-17379}
REDIS_RATE_GUESS=${REDIS_RATE_GUESS:-1000000}
BUSY_POLL=${BUSY_POLL:-1}
BASELINE=${BASELINE:-}

cd "$(dirname "$0")/.."
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/bench-multiget}
CRADLE=${CRADLE:-${CARGO_TARGET_DIR:-target}/release/cradle}
# Every load is bounded by its own duration; this is the backstop if a tool hangs.
LIMIT=$(python3 -c "print(int($WARMUP + $SECS + 60))")

source scripts/bench-common.sh # (the script runs from the repository root)

note_command() {
    grep -qxF -- "$*" "$OUT/commands.txt" 2>/dev/null || echo "$*" >>"$OUT/commands.txt"
}

bench_round() { # bench_round SYSTEM ROUND: cradle, cradle-base or memcached
    local server=(--server "127.0.0.1:$CRADLE_PORT")
    case $1 in
        memcached)
            server=(--server "127.0.0.1:$MEMCACHED_PORT" --protocol memcache-udp)
            start_memcached
            ;;
        cradle-base) CRADLE_NODE=$BASELINE start_cradle ;;
        *) CRADLE_NODE=$CRADLE start_cradle ;;
    esac
    local poll=()
    [[ $BUSY_POLL == 1 ]] && poll=(--busy-poll)
    local cmd=(taskset -c "$CLIENT_CPU" "$CRADLE" bench "${server[@]}" --op get
        --keys-per-request "$KEYS_PER_REQUEST" --keys "$KEYS" --value-bytes "$VALUE_BYTES"
        --in-flight "$IN_FLIGHT" --duration "$SECS" --warmup "$WARMUP" --json --quiet
        "${poll[@]}")
    note_command "${cmd[@]}"
    timeout "$LIMIT" "${cmd[@]}" >"$OUT/results/$1__r$2.json" || echo "  $1 r$2: failed" >&2
    stop_server
}

redis_round() { # redis_round ROUND: SETs populate the keys (not measured), then the GETs
    start_redis
    timeout "$LIMIT" taskset -c "$CLIENT_CPU" redis-benchmark -p "$REDIS_PORT" -t set \
        -n "$((KEYS * 4))" -c "$IN_FLIGHT" -P "$KEYS_PER_REQUEST" -d "$VALUE_BYTES" -r "$KEYS" \
        -q >/dev/null
    local requests
    requests=$(python3 -c "print(int($REDIS_RATE_GUESS * $SECS))")
    local cmd=(taskset -c "$CLIENT_CPU" redis-benchmark -p "$REDIS_PORT" -t get -n "$requests"
        -c "$IN_FLIGHT" -P "$KEYS_PER_REQUEST" -d "$VALUE_BYTES" -r "$KEYS" --csv -q)
    note_command "${cmd[@]}"
    timeout "$LIMIT" "${cmd[@]}" >"$TMP/redis.csv" || echo "  redis r$1: failed" >&2
    # CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    # "p99_latency_ms","max_latency_ms"; one GET is one key.
    python3 - "$TMP/redis.csv" "$OUT/results/redis__r$1.json" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
r = rows[-1]
ms = lambda k: round(float(r[k]) * 1000, 1)
json.dump({"protocol": "redis (TCP, redis-benchmark)", "ops_per_sec": float(r["rps"]),
           "keys_per_sec": float(r["rps"]), "p50_us": ms("p50_latency_ms"),
           "p99_us": ms("p99_latency_ms"), "errors": 0, "timeouts": 0}, open(sys.argv[2], "w"))
PY
    stop_server
}

summary() { # summary DIR: per-round keys/s, medians and ratios; writes DIR/report.md
    python3 - "$1" <<'PY'
import glob, json, os, re, statistics, sys
out = sys.argv[1]
runs = {}
for path in sorted(glob.glob(os.path.join(out, "results", "*.json"))):
    system, rnd = re.match(r"(.+)__r(\d+)\.json", os.path.basename(path)).groups()
    text = open(path).read().strip()
    if text:
        runs.setdefault(system, {})[int(rnd)] = json.loads(text.splitlines()[-1])
order = [s for s in ("cradle", "cradle-base", "memcached", "redis") if s in runs]
lines = ["```", open(os.path.join(out, "machine.txt")).read().strip(), "```", "",
         "| system | keys/s per round | median keys/s | median requests/s | p50 / p99 µs (median) | errors | timeouts |",
         "|---|---|---:|---:|---:|---:|---:|"]
med = lambda system, k: statistics.median(r[k] for r in runs[system].values())
for s in order:
    rounds = ", ".join(f"{runs[s][n]['keys_per_sec']:,.0f}" for n in sorted(runs[s]))
    errs = sum(r.get("errors", 0) for r in runs[s].values())
    tos = sum(r.get("timeouts", 0) for r in runs[s].values())
    lines.append(f"| {s} | {rounds} | {med(s, 'keys_per_sec'):,.0f} | {med(s, 'ops_per_sec'):,.0f} | "
                 f"{med(s, 'p50_us'):.1f} / {med(s, 'p99_us'):.1f} | {errs} | {tos} |")
lines += [""]
for a in [s for s in ("cradle", "cradle-base") if s in runs]:
    for b in [s for s in order if s not in (a, "cradle-base", "cradle") or (a == "cradle" and s == "cradle-base")]:
        lines.append(f"- {a} / {b}: keys/s **{med(a, 'keys_per_sec') / med(b, 'keys_per_sec'):.2f}x**")
cmds = open(os.path.join(out, "commands.txt")).read().strip()
lines += ["", "```", cmds, "```"]
open(os.path.join(out, "report.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
}

if [[ ${1:-} == report ]]; then
    summary "$2"
    exit 0
fi
need=()
command -v memcached >/dev/null || need+=(memcached)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin cradle # (into CARGO_TARGET_DIR, where CRADLE points)
[[ -z $BASELINE || -x $BASELINE ]] || { echo "BASELINE $BASELINE is not a program" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT/results"
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cradle: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')${BASELINE:+, baseline $BASELINE}"
    echo "memcached: $(memcached -V); redis: $(redis-server --version | cut -d' ' -f3)"
    echo "server CPU $SERVER_CPU, load tool CPU $CLIENT_CPU; $ROUNDS rounds of $SECS s (+$WARMUP s warm-up)"
    echo "$KEYS_PER_REQUEST keys per request, $IN_FLIGHT requests in flight, $VALUE_BYTES-byte values, $KEYS keys"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

systems=(cradle memcached redis)
[[ -n $BASELINE ]] && systems=(cradle cradle-base memcached redis)
for round in $(seq "$ROUNDS"); do
    # Rotate the order, so no system always follows the same one.
    n=${#systems[@]}
    for i in $(seq 0 $((n - 1))); do
        system=${systems[$(((i + round - 1) % n))]}
        if [[ $system == redis ]]; then redis_round "$round"; else bench_round "$system" "$round"; fi
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  r%s %-12s %10.0f keys/s  %9.0f req/s  p50 %7.1f  p99 %7.1f us" % (sys.argv[2], sys.argv[3], r["keys_per_sec"], r["ops_per_sec"], r["p50_us"], r["p99_us"]))' \
            "$OUT/results/${system}__r$round.json" "$round" "$system" || true
    done
done
summary "$OUT"
