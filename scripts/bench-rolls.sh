#!/usr/bin/env bash
# What a segment roll costs the serving loop (issue #15 point 2): a 1-core node with small
# log segments (SEGMENT_BYTES, default 1 MiB, so a SET load rolls into a new segment tens of
# times a second), SETs of 100-byte values for SECS seconds, closed loop. Reports SETs/s, the
# generator's p99, p99.9 and max, and the loop's longest iteration (`cradle status`).
# BASELINE=path/to/older/cradle alternates an older node with this build's, round by round,
# same generator. Server pinned to SERVER_CPU, generator to CLIENT_CPU; kills only the
# processes it started.
#
# Settings (env): ROUNDS SECS KEYS IN_FLIGHT SEGMENT_BYTES DURABILITY SERVER_CPU CLIENT_CPU
# CRADLE_PORT BASELINE.
#
#   BASELINE=/tmp/cradle-before ROUNDS=5 scripts/bench-rolls.sh
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
KEYS=${KEYS:-100000}
IN_FLIGHT=${IN_FLIGHT:-32}
SEGMENT_BYTES=${SEGMENT_BYTES:-1048576}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CRADLE_PORT=${CRADLE_PORT:-17140}

cd "$(dirname "$0")/.."
CRADLE=target/release/cradle
cargo build --release --bin cradle >/dev/null
source scripts/bench-common.sh # (the script runs from the repository root)

printf '[storage]\nsegment_bytes = %s\n' "$SEGMENT_BYTES" >"$TMP/node.toml"
NODE_FLAGS+=(--config "$TMP/node.toml")

builds=("$CRADLE")
[[ -n ${BASELINE:-} ]] && builds+=("$BASELINE")
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) segment_bytes=$SEGMENT_BYTES" \
    "durability=${DURABILITY:-memory} ${SECS}s rounds=$ROUNDS"
for round in $(seq "$ROUNDS"); do
    for node in "${builds[@]}"; do
        name=$([[ $node == "$CRADLE" ]] && echo this || echo baseline)
        CRADLE_NODE=$node start_cradle
        timeout $((SECS + 30)) taskset -c "$CLIENT_CPU" "$CRADLE" bench \
            --server "127.0.0.1:$CRADLE_PORT" --op set --keys "$KEYS" --value-bytes 100 \
            --in-flight "$IN_FLIGHT" --duration "$SECS" --json "${GENERATOR_FLAGS[@]}" \
            >"$TMP/bench.json" 2>/dev/null
        "$CRADLE" status --json --server "127.0.0.1:$CRADLE_PORT" >"$TMP/status.json"
        segments=$(find "$TMP/data/core-0" -name '*.seg' | wc -l)
        stop_server
        python3 - "$TMP/bench.json" "$TMP/status.json" "$name" "$round" "$segments" <<'EOF'
import json, sys
r, s = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
core = s  # (one core: its counters are the node's)
loop_max = core["loop_iteration_ns_max"] / 1000
print(f"round {sys.argv[4]} {sys.argv[3]:>8}: {r['ops_per_sec']:>10,.0f} SETs/s  "
      f"p99 {r['p99_us']:>7.1f}  p99.9 {r['p999_us']:>8.1f}  max {r['max_us']:>8.1f} us  "
      f"loop max {loop_max:>7.0f} us  stalls {core['loop_stalls']}  files {sys.argv[5]}  "
      f"timeouts {r['timeouts']}")
EOF
    done
done
