#!/usr/bin/env bash
# The first second of a fresh node (issue #13 point 4): a node started on an empty data
# directory takes SETs at once, and the generator's first (and only) measured second says
# its throughput and its worst latency, where each endpoint's first write creates its first
# segment file. BASELINE=path/to/older/cradle alternates an older node with this build's,
# round by round, same generator. Server pinned to SERVER_CPU, generator to CLIENT_CPU; kills
# only the processes it started.
#
# Settings (env): ROUNDS KEYS IN_FLIGHT SERVER_CPU CLIENT_CPU CRADLE_PORT DURABILITY BASELINE OUT.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
KEYS=${KEYS:-100000}
IN_FLIGHT=${IN_FLIGHT:-32}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CRADLE_PORT=${CRADLE_PORT:-17100}

cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-first-second}
CRADLE=target/release/cradle
cargo build --release --bin cradle >/dev/null
mkdir -p "$OUT"

source scripts/bench-common.sh # (the script runs from the repository root)

builds=("$CRADLE")
[[ -n ${BASELINE:-} ]] && builds+=("$BASELINE")
for round in $(seq "$ROUNDS"); do
    for node in "${builds[@]}"; do
        name=$([[ $node == "$CRADLE" ]] && echo this || echo baseline)
        CRADLE_NODE=$node start_cradle
        timeout 30 taskset -c "$CLIENT_CPU" "$CRADLE" bench --server "127.0.0.1:$CRADLE_PORT" \
            --op set --keys "$KEYS" --in-flight "$IN_FLIGHT" --duration 1 --warmup 0 --json \
            "${GENERATOR_FLAGS[@]}" >"$OUT/$name-$round.json" 2>/dev/null
        stop_server
        python3 - "$OUT/$name-$round.json" "$name" "$round" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"round {sys.argv[3]} {sys.argv[2]:>8}: {r['ops_per_sec']:>10,.0f} SETs/s  "
      f"p99 {r['p99_us']:>8.1f} us  max {r['max_us']:>8.1f} us  timeouts {r['timeouts']}")
EOF
    done
done
