# Process handling shared by the bench-vs-* scripts (sourced, not run): every server they
# start is recorded in PIDS and ended, by PID, on exit; scratch files live in TMP.
# Needs SERVER_CPU, CRADLE and CRADLE_PORT set by the sourcing script (CRADLE_NODE, if set, is
# the binary start_cradle runs instead of CRADLE); OFFLOAD=0 runs cradle
# with one datagram per message (no UDP GSO/GRO), as GENERATOR_FLAGS does for the generator.

PIDS=()
TMP=$(mktemp -d)
NODE_FLAGS=()
GENERATOR_FLAGS=()
# SPIN_US: how long cradle's loop busy-polls before it blocks (`--spin-us`; the node's default
# when unset).
[[ -n ${SPIN_US:-} ]] && NODE_FLAGS+=(--spin-us "$SPIN_US")
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

# memcached with one thread, UDP only, on SERVER_CPU (MEMCACHED_PORT).
start_memcached() {
    local user=()
    [[ $(id -u) == 0 ]] && user=(-u root)
    taskset -c "$SERVER_CPU" memcached -U "$MEMCACHED_PORT" -p 0 -t 1 -m 1024 -l 127.0.0.1 \
        "${user[@]}" >"$TMP/memcached.log" 2>&1 &
    PIDS+=($!)
    sleep 0.3
    kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$TMP/memcached.log" >&2; exit 1; }
}

# redis without persistence on SERVER_CPU (REDIS_PORT); waits until it answers PING.
start_redis() {
    taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
        --appendonly no --daemonize no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    cat "$TMP/redis.log" >&2
    echo "redis-server did not start" >&2
    exit 1
}
