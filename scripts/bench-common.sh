# Process handling shared by the bench-vs-* scripts (sourced, not run): every server they
# start is recorded in PIDS and ended, by PID, on exit; scratch files live in TMP.
# Needs SERVER_CPU, CRADLE and CRADLE_PORT set by the sourcing script (CRADLE_NODE, if set, is
# the binary start_cradle runs instead of CRADLE); OFFLOAD=0 runs cradle
# with one datagram per message (no UDP GSO/GRO), as GENERATOR_FLAGS does for the generator.

PIDS=()
TMP=$(mktemp -d)
NODE_FLAGS=()
GENERATOR_FLAGS=()
if [[ ${OFFLOAD:-1} == 0 ]]; then
    NODE_FLAGS+=(--no-udp-offload)
    GENERATOR_FLAGS+=(--no-udp-offload)
fi
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

stop_server() {
    local pid=${PIDS[-1]}
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset 'PIDS[-1]'
}

start_cradle() {
    rm -rf "$TMP/data"
    taskset -c "$SERVER_CPU" "${CRADLE_NODE:-$CRADLE}" node --cores 1 --listen "127.0.0.1:$CRADLE_PORT" \
        --durability "${DURABILITY:-memory}" --data-dir "$TMP/data" "${NODE_FLAGS[@]}" \
        >"$TMP/cradle.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        grep -q "cradle ready" "$TMP/cradle.log" && return 0
        sleep 0.05
    done
    cat "$TMP/cradle.log" >&2
    echo "cradle did not start" >&2
    exit 1
}
