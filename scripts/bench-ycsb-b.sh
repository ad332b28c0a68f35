#!/usr/bin/env bash
# A YCSB-B-like mix (95 % GETs, 5 % SETs, zipfian keys, 100-byte values, 32 in flight,
# closed loop), one server core: cradle in its default class (`flushed`: a write is answered
# after its batch's fdatasync), cradle in the `memory` class, and memcached (UDP, one
# thread), alternating in the same run with the same generator (`cradle bench`). Prints each
# run and the medians with the ratios to memcached. Kills only the processes it started.
#
#   ROUNDS=5 SECS=10 scripts/bench-ycsb-b.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CRADLE=${CRADLE:-target/release/cradle}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CRADLE_PORT=${CRADLE_PORT:-47170}
MEMCACHED_PORT=${MEMCACHED_PORT:-47171}
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
KEYS=${KEYS:-100000}
source scripts/bench-common.sh

if ! command -v memcached >/dev/null; then
    echo "installing memcached" >&2
    apt-get update -qq && apt-get install -y -qq memcached >/dev/null
fi
cargo build --release --quiet

MIX=(--op mix --mix-get-ratio 0.95 --distribution zipf --value-bytes 100 --keys "$KEYS"
    --in-flight 32 --duration "$SECS" --json --quiet)
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) $(nproc) CPUs:" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); memcached $(memcached -V)"
echo "# cradle bench ${MIX[*]}; $ROUNDS rounds"
run() { # SYSTEM ROUND
    local server
    case $1 in
    memcached)
        start_memcached
        server=(--server "127.0.0.1:$MEMCACHED_PORT" --protocol memcache-udp)
        ;;
    *)
        DURABILITY=${1#cradle-} start_cradle
        server=(--server "127.0.0.1:$CRADLE_PORT")
        ;;
    esac
    taskset -c "$CLIENT_CPU" "$CRADLE" bench "${server[@]}" "${MIX[@]}" >"$TMP/$1.r$2.json"
    stop_server
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print("  %-15s r%s: %9.0f ops/s  p50 %7.1f  p99 %7.1f us  errors %d timeouts %d" % (sys.argv[2],
    sys.argv[3], r["ops_per_sec"], r["p50_us"], r["p99_us"], r["errors"], r["timeouts"]))' \
        "$TMP/$1.r$2.json" "$1" "$2"
}
for round in $(seq "$ROUNDS"); do
    order=(cradle-flushed memcached cradle-memory)
    ((round % 2 == 0)) && order=(memcached cradle-memory cradle-flushed)
    for system in "${order[@]}"; do
        run "$system" "$round"
    done
done
python3 - "$TMP" <<'EOF'
import glob, json, statistics, sys
med = {}
for system in ("cradle-flushed", "cradle-memory", "memcached"):
    runs = [json.load(open(p)) for p in glob.glob(f"{sys.argv[1]}/{system}.r*.json")]
    med[system] = (statistics.median(r["ops_per_sec"] for r in runs),
                   statistics.median(r["p99_us"] for r in runs))
m_ops, m_p99 = med["memcached"]
print("median:")
for system, (ops, p99) in med.items():
    print(f"  {system:15} {ops:9.0f} ops/s ({ops / m_ops:4.2f}x memcached)  "
          f"p99 {p99:7.1f} us ({p99 / m_p99:4.2f}x)")
EOF
