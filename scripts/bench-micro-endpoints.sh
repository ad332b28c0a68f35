#!/usr/bin/env bash
# Issue #15: many endpoints on one core. For each partition count in PARTITIONS (default
# "256 100000"), alternately, ROUNDS times: a fresh 1-core node (`memory` class), KEYS keys
# (default 10^6) of 100-byte values through `cradle import`; then the node's open
# descriptors, maps, RSS, disk bytes against live bytes; then a restart (replay time, every
# key back through `cradle export`). Then `cradle bench --op mix` (flushed class, 90 % GETs)
# against a fresh node at each partition count, in the same run.
#
#   ROUNDS=2 scripts/bench-micro-endpoints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CRADLE=${CRADLE:-target/release/cradle}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CRADLE_PORT=${CRADLE_PORT:-47150}
KEYS=${KEYS:-1000000}
ROUNDS=${ROUNDS:-1}
PARTITIONS=${PARTITIONS:-"256 100000"}
MIX_SECS=${MIX_SECS:-10}
source scripts/bench-common.sh
cargo build --release --quiet

python3 -c "
import sys
v = 'v' * 100
w = sys.stdout.write
for i in range($KEYS):
    w('{\"key\":\"k:%014d\",\"value\":\"%s\"}\n' % (i, v))
" >"$TMP/keys.jsonl"

start_node() { # PARTITIONS DURABILITY [keep]
    [[ ${3:-} == keep ]] || rm -rf "$TMP/data"
    taskset -c "$SERVER_CPU" "$CRADLE" node --cores 1 --partitions "$1" \
        --listen "127.0.0.1:$CRADLE_PORT" --durability "$2" --data-dir "$TMP/data" \
        >"$TMP/cradle.log" 2>&1 &
    PIDS+=($!)
    local started=$EPOCHREALTIME
    for _ in $(seq 2000); do
        if grep -q "cradle ready" "$TMP/cradle.log"; then
            READY_MS=$(python3 -c "print(round(($EPOCHREALTIME - $started) * 1000))")
            return 0
        fi
        sleep 0.01
    done
    cat "$TMP/cradle.log" >&2
    echo "cradle did not start" >&2
    exit 1
}

status_field() { # NAME: from `cradle status`
    "$CRADLE" status --json --server "127.0.0.1:$CRADLE_PORT" 2>/dev/null |
        python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) keys=$KEYS (100-byte values)"
printf "%-10s %10s %6s %6s %9s %9s %9s %8s %9s %9s %8s\n" partitions import/s fds maps \
    rss_MiB B/key disk_MiB disk/live ready_ms replay/s keys_back
for round in $(seq "$ROUNDS"); do
    for p in $PARTITIONS; do
        start_node "$p" memory
        pid=${PIDS[-1]}
        t0=$EPOCHREALTIME
        taskset -c "$CLIENT_CPU" "$CRADLE" import --server "127.0.0.1:$CRADLE_PORT" \
            <"$TMP/keys.jsonl" >/dev/null 2>"$TMP/import.log"
        rate=$(python3 -c "print(round($KEYS / ($EPOCHREALTIME - $t0)))")
        sleep 0.5 # (the sizes are summed every 250 ms)
        fds=$(ls "/proc/$pid/fd" | wc -l)
        maps=$(wc -l <"/proc/$pid/maps")
        rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
        live=$(status_field live_bytes)
        stop_server
        disk=$(du -s --block-size=1 "$TMP/data" | cut -f1) # allocated, not apparent
        start_node "$p" memory keep
        # The node's own line: "... N MiB of log replayed in S s (R MiB/s)".
        replay=$(grep -o '([0-9]* MiB/s)' "$TMP/cradle.log" | tr -d '()' | tr ' ' '_' || echo -)
        keys_back=$(taskset -c "$CLIENT_CPU" "$CRADLE" export --server "127.0.0.1:$CRADLE_PORT" \
            2>/dev/null | wc -l)
        stop_server
        python3 -c "
print('%-10s %10d %6d %6d %9.1f %9.1f %9.1f %8.2f %9s %9s %8d' % ($p, $rate, $fds, $maps,
    $rss_kib / 1024, $rss_kib * 1024 / $KEYS, $disk / 2**20, $disk / max($live, 1), $READY_MS, '$replay',
    $keys_back))"
    done
done

echo
echo "# cradle bench --op mix --mix-get-ratio 0.9 --value-bytes 100 --keys 100000, flushed class, ${MIX_SECS}s"
for round in $(seq "$ROUNDS"); do
    for p in $PARTITIONS; do
        start_node "$p" flushed
        printf "partitions %-8s " "$p"
        taskset -c "$CLIENT_CPU" "$CRADLE" bench --server "127.0.0.1:$CRADLE_PORT" --op mix \
            --mix-get-ratio 0.9 --value-bytes 100 --keys 100000 --in-flight 32 \
            --duration "$MIX_SECS" 2>&1 | tail -4 | tr '\n' ' '
        echo
        stop_server
    done
done
