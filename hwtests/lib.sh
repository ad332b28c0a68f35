# Shared by the hardware tests (sourced). Each test is a script that exits 0 (passed), 77
# (skipped: it printed `skipped: <reason>`) or anything else (failed). Every process a test
# starts is recorded in PIDS and ended by PID on exit; scratch files live in HW_TMP.
# Needs CRADLE (a cradle built with --features dpdk,af-xdp) and, for some, DPDK_TOOL.

set -euo pipefail
PIDS=()
HW_TMP=$(mktemp -d /tmp/cradle-hw.XXXXXX)
CLEANUPS=()

hw_cleanup() {
    local pid step
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for step in "${CLEANUPS[@]}"; do
        eval "$step" || true
    done
    rm -rf "$HW_TMP"
}
trap hw_cleanup EXIT

skip() {
    echo "skipped: $*"
    exit 77
}

fail() {
    echo "FAILED: $*" >&2
    exit 1
}

need_root() {
    [[ $(id -u) == 0 ]] || skip "needs root ($1)"
}

# need_feature BACKEND: skip unless $CRADLE was built with it.
need_feature() {
    [[ -x ${CRADLE:-} ]] || skip "no cradle binary (CRADLE is unset; run scripts/hwtests.sh)"
    local out
    # Without its settings a node refuses to start; how it refuses tells whether it has it.
    out=$("$CRADLE" node --io "$1" --data-dir "$HW_TMP/probe" 2>&1 </dev/null || true)
    if grep -q "built without it" <<<"$out"; then
        skip "cradle was built without --features $1"
    fi
}

# wait_for FILE PATTERN SECONDS: until PATTERN shows up in FILE, or fail.
wait_for() {
    local i
    for i in $(seq $(($3 * 20))); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    cat "$1" >&2 || true
    fail "no '$2' in $1 within $3 s"
}

# json_field FILE FIELD: one field of the last line (cradle bench --json).
json_field() {
    python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])[sys.argv[2]])' "$1" "$2"
}

# stop_pid PID: SIGTERM, then wait (at most 10 s) for it to exit; fails if it crashed.
stop_pid() {
    local pid=$1 i status=0
    kill "$pid" 2>/dev/null || fail "process $pid is already gone"
    for i in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; fail "process $pid ignored SIGTERM"; }
    wait "$pid" || status=$?
    [[ $status == 0 || $status == 143 ]] || fail "process $pid ended with status $status"
}
