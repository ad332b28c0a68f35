#!/usr/bin/env bash
# Kernel bypass against the kernel, same generator (`cradle bench`), same run, as root:
#
#   dpdk-echo      bare echo (examples/echo.rs: no cradle logic) over net_memif, generator
#                  over net_memif too: the limit of the DPDK path on this machine
#   dpdk-cradle    cradle node --io dpdk over net_memif, generator over net_memif
#   socket-echo    the same bare echo on a kernel UDP socket (recvmmsg/sendmmsg, GSO/GRO)
#   socket-cradle  cradle node on kernel sockets (the default), generator on sockets
#   xdp-cradle     cradle node --io af-xdp on one end of a veth pair (namespace A), the
#                  generator on kernel sockets at the other end (namespace B)
#   veth-cradle    cradle node on kernel sockets on that same veth end
#
# GETs of VALUE_BYTES-byte values, closed loop, IN_FLIGHT in flight; server on SERVER_CPU,
# generator on CLIENT_CPU; ROUNDS rounds in alternating order; medians. Reserves hugepages
# (HUGEPAGES x 2 MiB) for the DPDK runs. Kills only what it started (by PID) and removes
# the namespaces it made. Writes $OUT/report.md and prints it.
#
#   ROUNDS=3 SECS=5 scripts/bench-bypass.sh
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
IN_FLIGHT=${IN_FLIGHT:-32}
VALUE_BYTES=${VALUE_BYTES:-32}
KEYS=${KEYS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
HUGEPAGES=${HUGEPAGES:-512}
XDP=${XDP:-1}

cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-bypass}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
CRADLE=$TARGET/release/cradle
ECHO=$TARGET/release/examples/echo
[[ $(id -u) == 0 ]] || { echo "bench-bypass: needs root (hugepages, memif, namespaces)" >&2; exit 1; }

PIDS=()
NETNS=()
TMP=$(mktemp -d)
cleanup() {
    local pid ns
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$TMP" /var/run/dpdk/cradle-bench-*-$$
}
trap cleanup EXIT

# ---------------------------------------------------------------------------- setup
scripts/hwtests.sh none >/dev/null # installs DPDK and the build tools (runs no test)
cargo build --release --quiet --features dpdk,af-xdp --bin cradle
cargo build --release --quiet -p dataplane --features dpdk --example echo
echo "$HUGEPAGES" >/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
mountpoint -q /dev/hugepages || { mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages; }
rm -rf "$OUT"
mkdir -p "$OUT/results"
steal() { awk '/^cpu /{print $9}' /proc/stat; }
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "dpdk: $(pkg-config --modversion libdpdk), hugepages: $(grep HugePages_Total /proc/meminfo | awk '{print $2}') x 2 MiB"
    echo "cradle: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "server CPU $SERVER_CPU, generator CPU $CLIENT_CPU; $ROUNDS rounds x ${SECS}s (+${WARMUP}s warm-up);"
    echo "GET, $IN_FLIGHT in flight, $VALUE_BYTES-byte values, $KEYS keys, generator busy-polls"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
steal_start=$(steal)
cat "$OUT/machine.txt"

SOCK=$TMP/memif.sock
eal() { # eal ROLE CPU PREFIX
    echo "-l $2 -n 1 -m 256 --no-pci --huge-unlink --file-prefix cradle-bench-$3-$$ --vdev net_memif0,role=$1,socket=$SOCK"
}

start() { # start LOG READY CMD...: starts a server, waits for READY in LOG
    local log=$1 ready=$2 i
    shift 2
    echo "server: $*" >>"$OUT/commands.txt.all"
    "$@" >"$log" 2>&1 &
    PIDS+=($!)
    for i in $(seq 200); do
        grep -q "$ready" "$log" && return 0
        sleep 0.05
    done
    cat "$log" >&2
    echo "server did not start: $*" >&2
    exit 1
}

stop() {
    local pid=${PIDS[-1]}
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset 'PIDS[-1]'
}

record() { # record NAME ROUND CMD...: one generator run into results/NAME__rROUND.json
    local name=$1 round=$2
    shift 2
    echo "$name: $*" >>"$OUT/commands.txt.all"
    "$@" --keys "$KEYS" --value-bytes "$VALUE_BYTES" --in-flight "$IN_FLIGHT" --duration "$SECS" \
        --warmup "$WARMUP" --timeout-ms 1000 --busy-poll --json --quiet \
        >"$OUT/results/${name}__r${round}.json" 2>"$TMP/bench.err" || {
        cat "$TMP/bench.err" >&2
        echo "{}" >"$OUT/results/${name}__r${round}.json"
    }
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  %-14s r%s: %10.0f ops/s  p50 %7.1f  p99 %8.1f us  errors %s timeouts %s" % (sys.argv[2], sys.argv[3], r.get("ops_per_sec", 0), r.get("p50_us", 0), r.get("p99_us", 0), r.get("errors"), r.get("timeouts")))' \
        "$OUT/results/${name}__r${round}.json" "$name" "$round"
}

generator=(taskset -c "$CLIENT_CPU" "$CRADLE" bench --server 127.0.0.1:7000)

run_dpdk_echo() {
    start "$TMP/echo.log" "echo ready" taskset -c "$SERVER_CPU" "$ECHO" dpdk 127.0.0.1:7000 3600 \
        "$(eal server "$SERVER_CPU" echo)"
    record dpdk-echo "$1" "${generator[@]}" --protocol echo --io dpdk \
        --dpdk-eal "$(eal client "$CLIENT_CPU" gen)"
    stop
}

run_dpdk_cradle() {
    rm -rf "$TMP/data"
    start "$TMP/node.log" "cradle ready" taskset -c "$SERVER_CPU" "$CRADLE" node --io dpdk \
        --dpdk-eal "$(eal server "$SERVER_CPU" node)" --listen 127.0.0.1:7000 --cores 1 \
        --durability memory --spin-us 1000000 --data-dir "$TMP/data"
    grep -q "falling back" "$TMP/node.log" && { cat "$TMP/node.log" >&2; exit 1; }
    record dpdk-cradle "$1" "${generator[@]}" --io dpdk --dpdk-eal "$(eal client "$CLIENT_CPU" gen)"
    stop
}

run_socket_echo() {
    start "$TMP/echo.log" "echo ready" taskset -c "$SERVER_CPU" "$ECHO" socket 127.0.0.1:7000 3600
    record socket-echo "$1" "${generator[@]}" --protocol echo
    stop
}

run_socket_cradle() {
    rm -rf "$TMP/data"
    start "$TMP/node.log" "cradle ready" taskset -c "$SERVER_CPU" "$CRADLE" node --listen 127.0.0.1:7000 \
        --cores 1 --durability memory --spin-us 1000000 --data-dir "$TMP/data"
    record socket-cradle "$1" "${generator[@]}"
    stop
}

# ---------------------------------------------------------------------------- veth
NS_A=cradle-bench-a-$$
NS_B=cradle-bench-b-$$
setup_veth() {
    ip netns add "$NS_A"
    NETNS+=("$NS_A")
    ip netns add "$NS_B"
    NETNS+=("$NS_B")
    ip link add cba$$ type veth peer name cbb$$
    ip link set cba$$ netns "$NS_A"
    ip link set cbb$$ netns "$NS_B"
    ip -n "$NS_A" link set lo up
    ip -n "$NS_A" addr add 10.78.0.1/24 dev cba$$
    ip -n "$NS_A" link set cba$$ up
    ip -n "$NS_B" link set lo up
    ip -n "$NS_B" addr add 10.78.0.2/24 dev cbb$$
    ip -n "$NS_B" link set cbb$$ up
    # XDP sees frames before their UDP checksums are filled in: the sender computes them.
    ip netns exec "$NS_B" ethtool -K cbb$$ tx off >/dev/null
}

veth_generator=(ip netns exec "$NS_B" taskset -c "$CLIENT_CPU" "$CRADLE" bench --server 10.78.0.1:7000)

run_xdp_cradle() {
    rm -rf "$TMP/data"
    start "$TMP/node.log" "cradle ready" ip netns exec "$NS_A" taskset -c "$SERVER_CPU" "$CRADLE" node \
        --io af-xdp --xdp-ifname cba$$ --listen 10.78.0.1:7000 --cores 1 --durability memory \
        --spin-us 1000000 --data-dir "$TMP/data"
    grep -q "falling back" "$TMP/node.log" && { cat "$TMP/node.log" >&2; exit 1; }
    record xdp-cradle "$1" "${veth_generator[@]}"
    stop
}

run_veth_cradle() {
    rm -rf "$TMP/data"
    start "$TMP/node.log" "cradle ready" ip netns exec "$NS_A" taskset -c "$SERVER_CPU" "$CRADLE" node \
        --listen 10.78.0.1:7000 --cores 1 --durability memory --spin-us 1000000 --data-dir "$TMP/data"
    record veth-cradle "$1" "${veth_generator[@]}"
    stop
}

# ---------------------------------------------------------------------------- rounds
runs=(dpdk_echo dpdk_cradle socket_echo socket_cradle)
if [[ $XDP == 1 ]]; then
    setup_veth
    runs+=(xdp_cradle veth_cradle)
fi
for round in $(seq "$ROUNDS"); do
    order=("${runs[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#runs[@]} - 1; i >= 0; i--)); do order+=("${runs[i]}"); done
    fi
    for run in "${order[@]}"; do "run_$run" "$round"; done
done
steal_ticks=$(($(steal) - steal_start))
echo "CPU time stolen by the hypervisor during the run: $((steal_ticks * 10)) ms of ${SECONDS} s x $(nproc) CPUs" >>"$OUT/machine.txt"
sort -u "$OUT/commands.txt.all" | sed -E "s/-[0-9]+([ ,])/-PID\1/g; s#$TMP#TMP#g" | sort -u >"$OUT/commands.txt"

# ---------------------------------------------------------------------------- report
python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}
for path in sorted(glob.glob(os.path.join(out, "results", "*.json"))):
    name = os.path.basename(path).split("__")[0]
    r = json.load(open(path))
    if r:
        runs.setdefault(name, []).append(r)
def med(name, key):
    vals = [r[key] for r in runs.get(name, []) if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")
lines = ["# Kernel bypass: cradle over DPDK memif and AF_XDP vs kernel sockets", "",
         "```", open(os.path.join(out, "machine.txt")).read().strip(), "```", "",
         "| run | rounds | ops/s (median) | ops/s (each round) | p50 µs | p99 µs | p99.9 µs | errors | timeouts |",
         "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
for name in ["dpdk-echo", "dpdk-cradle", "socket-echo", "socket-cradle", "xdp-cradle", "veth-cradle"]:
    if name not in runs:
        continue
    rs = runs[name]
    each = ", ".join(f"{r['ops_per_sec']:,.0f}" for r in rs)
    lines.append(f"| {name} | {len(rs)} | {med(name, 'ops_per_sec'):,.0f} | {each} | {med(name, 'p50_us'):.1f} | "
                 f"{med(name, 'p99_us'):.1f} | {med(name, 'p999_us'):.1f} | {sum(r['errors'] for r in rs)} | "
                 f"{sum(r['timeouts'] for r in rs)} |")
def ratio(a, b, what):
    x, y = med(a, "ops_per_sec"), med(b, "ops_per_sec")
    if x == x and y == y and y:
        lines.append(f"- {what}: {a} / {b} = **{x / y:.2f}x**")
lines += ["", "Ratios of medians:", ""]
ratio("dpdk-cradle", "dpdk-echo", "cradle's share of the DPDK path's limit")
ratio("dpdk-cradle", "socket-cradle", "DPDK over sockets, cradle")
ratio("socket-cradle", "socket-echo", "cradle's share of the kernel socket path's limit")
ratio("xdp-cradle", "veth-cradle", "AF_XDP over sockets on a veth, cradle")
lines += ["", "Commands (PID and scratch-directory parts replaced):", "", "```",
          open(os.path.join(out, "commands.txt")).read().strip(), "```", ""]
open(os.path.join(out, "report.md"), "w").write("\n".join(lines))
print("\n".join(lines))
PY
