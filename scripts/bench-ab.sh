#!/usr/bin/env bash
# Two cradle builds in the same run, alternating (server on CPU 0, the generator of the second
# build on CPU 1): `scripts/bench-ab.sh OLD_CRADLE NEW_CRADLE [ROUNDS] [SECS]`.
# Prints ops/s and p99 per round, build and op (memory class, 1 core, 32 in flight).
set -euo pipefail
old=$1 new=$2 rounds=${3:-3} secs=${4:-4}
gen=$new
port=7600
for round in $(seq "$rounds"); do
    for build in "$old" "$new"; do
        dir=$(mktemp -d)
        taskset -c 0 "$build" node --listen 127.0.0.1:$port --cores 1 --durability memory \
            --data-dir "$dir/data" > "$dir/log" 2>&1 &
        pid=$!
        for _ in $(seq 100); do grep -q "cradle ready" "$dir/log" && break; sleep 0.1; done
        for op in get set; do
            taskset -c 1 "$gen" bench --server 127.0.0.1:$port --op "$op" --in-flight 32 \
                --duration "$secs" --warmup 1 --keys 10000 --json --quiet |
                python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $build $op:', int(d['ops_per_sec']), 'ops/s, p99', d['p99_us'], 'us')"
        done
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        rm -rf "$dir"
    done
done
