#!/usr/bin/env bash
# memcached vs cradle's memcached door, driven by the same independent tool: memaslap
# (libmemcached-tools; Debian names it memcaslap). One server core each (memcached -t 1,
# cradle --cores 1, both pinned to SERVER_CPU), memaslap with one thread on CLIENT_CPU.
# GET and SET, TCP and UDP; for each round the two servers alternate, each running only
# during its own measurement. Prints a table of medians (ops/s, and p99 as memaslap's log2
# latency bucket: "< 2^k us") and the door/memcached ratios, and writes OUT/report.md.
# Kills only the processes it started (by PID).
#
#   scripts/bench-door-vs-memcached.sh                    # 3 rounds x 5 s per cell
#   ROUNDS=5 SECS=10 CONNECTIONS=32 scripts/bench-door-vs-memcached.sh
#
# GENERATOR=1 (the default) then also drives both over UDP with `cradle bench --protocol
# memcache-udp` (IN_FLIGHT requests in flight, busy-polling): a generator that outruns one
# memaslap thread, with exact percentiles (HdrHistogram).
#
# Settings (env): ROUNDS SECS CONNECTIONS VALUE_BYTES SERVER_CPU CLIENT_CPU MEMCACHED_PORT
# DOOR_PORT CRADLE_PORT DURABILITY (cradle's class, default memory: memcached never syncs)
# MEMASLAP (1: the memaslap runs; 0: keep the last ones) GENERATOR IN_FLIGHT OUT (report
# directory). `scripts/bench-door-vs-memcached.sh report` only rebuilds OUT/report.md.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
CONNECTIONS=${CONNECTIONS:-16}
VALUE_BYTES=${VALUE_BYTES:-32}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
MEMCACHED_PORT=${MEMCACHED_PORT:-17311}
DOOR_PORT=${DOOR_PORT:-17312}
CRADLE_PORT=${CRADLE_PORT:-17300}
GENERATOR=${GENERATOR:-1}
MEMASLAP=${MEMASLAP:-1}
[[ ${1:-} == report ]] && MEMASLAP=0 && GENERATOR=0
IN_FLIGHT=${IN_FLIGHT:-32}

cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-door}
CRADLE=target/release/cradle
source scripts/bench-common.sh

need=()
command -v memcached >/dev/null || need+=(memcached)
command -v memcaslap >/dev/null || command -v memaslap >/dev/null || need+=(libmemcached-tools)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "installing ${need[*]}" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >&2
fi
TOOL=$(command -v memaslap || command -v memcaslap)
[[ -x $CRADLE ]] || cargo build --release --bin cradle
mkdir -p "$OUT/runs"
[[ $MEMASLAP == 1 ]] && rm -f "$OUT"/runs/*.txt
[[ $GENERATOR == 1 ]] && rm -f "$OUT"/runs/*.json
{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores"
    echo "memcached: $(memcached -V)"
    echo "tool: $TOOL ($(dpkg-query -W -f '${Version}' libmemcached-tools 2>/dev/null || echo '?'))"
    echo "cradle: $(git rev-parse --short HEAD 2>/dev/null || echo '?'), durability ${DURABILITY:-memory}"
    echo "server cpu $SERVER_CPU, client cpu $CLIENT_CPU, $CONNECTIONS connections, 1 thread," \
        "16-byte keys, $VALUE_BYTES-byte values, $SECS s per run, $ROUNDS rounds"
} >"$TMP/machine.txt"
[[ $MEMASLAP == 1 ]] && rm -f "$OUT/machine.txt"
if [[ $MEMASLAP$GENERATOR != 00 ]]; then
    echo "runs: memaslap $MEMASLAP, cradle bench $GENERATOR" >>"$TMP/machine.txt"
    cat "$TMP/machine.txt" >>"$OUT/machine.txt"
fi
cat "$OUT/machine.txt"

# memaslap's workload files: all gets (it first sets its window of keys), or all sets.
printf 'key\n16 16 1\nvalue\n%s %s 1\ncmd\n0 0.0\n1 1.0\n' "$VALUE_BYTES" "$VALUE_BYTES" >"$TMP/get.cfg"
printf 'key\n16 16 1\nvalue\n%s %s 1\ncmd\n0 1.0\n1 0.0\n' "$VALUE_BYTES" "$VALUE_BYTES" >"$TMP/set.cfg"

start_memcached() {
    local user=()
    [[ $(id -u) == 0 ]] && user=(-u root)
    taskset -c "$SERVER_CPU" memcached -U "$MEMCACHED_PORT" -p "$MEMCACHED_PORT" -t 1 -m 1024 \
        -l 127.0.0.1 "${user[@]}" >"$TMP/memcached.log" 2>&1 &
    PIDS+=($!)
    sleep 0.3
    kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$TMP/memcached.log" >&2; exit 1; }
}

start_door() {
    rm -rf "$TMP/data"
    taskset -c "$SERVER_CPU" "$CRADLE" node --cores 1 --listen "127.0.0.1:$CRADLE_PORT" \
        --memcache-port "$DOOR_PORT" --durability "${DURABILITY:-memory}" \
        --data-dir "$TMP/data" >"$TMP/cradle.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        grep -q "cradle ready" "$TMP/cradle.log" && return 0
        sleep 0.05
    done
    cat "$TMP/cradle.log" >&2
    exit 1
}

# measure SYSTEM PROTO OP ROUND
measure() {
    local system=$1 proto=$2 op=$3 round=$4 port udp=()
    if [[ $system == memcached ]]; then start_memcached; port=$MEMCACHED_PORT; else start_door; port=$DOOR_PORT; fi
    [[ $proto == udp ]] && udp=(--udp)
    local cmd=(taskset -c "$CLIENT_CPU" "$TOOL" -s "127.0.0.1:$port" "${udp[@]}" -T 1
        -c "$CONNECTIONS" -t "${SECS}s" -S 1s -F "$TMP/$op.cfg")
    grep -qxF -- "${cmd[*]}" "$OUT/commands.txt" 2>/dev/null || echo "${cmd[*]}" >>"$OUT/commands.txt"
    "${cmd[@]}" >"$OUT/runs/${system}__${proto}-${op}__r${round}.txt" 2>&1 || true
    stop_server
}

[[ $MEMASLAP == 1 ]] && rm -f "$OUT/commands.txt"
for round in $( [[ $MEMASLAP == 1 ]] && seq "$ROUNDS"); do
    for cell in udp-get tcp-get udp-set tcp-set; do
        for system in memcached door; do
            measure "$system" "${cell%-*}" "${cell#*-}" "$round"
            echo "  round $round $cell $system done"
        done
    done
done

# generate SYSTEM OP ROUND: cradle bench's memcached UDP codec against one server.
generate() {
    local system=$1 op=$2 round=$3 port
    if [[ $system == memcached ]]; then start_memcached; port=$MEMCACHED_PORT; else start_door; port=$DOOR_PORT; fi
    local cmd=(taskset -c "$CLIENT_CPU" "$CRADLE" bench --server "127.0.0.1:$port"
        --protocol memcache-udp --op "$op" --in-flight "$IN_FLIGHT" --keys 10000
        --value-bytes "$VALUE_BYTES" --duration "$SECS" --warmup 1 --busy-poll --json --quiet)
    grep -qxF -- "${cmd[*]}" "$OUT/commands.txt" 2>/dev/null || echo "${cmd[*]}" >>"$OUT/commands.txt"
    "${cmd[@]}" >"$OUT/runs/${system}__gen-udp-${op}__r${round}.json" || true
    stop_server
}
if [[ $GENERATOR == 1 ]]; then
    for round in $(seq "$ROUNDS"); do
        order=(memcached door)
        ((round % 2 == 0)) && order=(door memcached)
        for op in get set; do
            for system in "${order[@]}"; do
                generate "$system" "$op" "$round"
                echo "  round $round cradle-bench udp-$op $system done"
            done
        done
    done
fi

python3 - "$OUT" <<'PY'
import glob, os, re, statistics, sys
out = sys.argv[1]

def parse(path):
    """Steady ops/s (median of the per-second Period lines of the command's block, the
    first second left out: memaslap's preload) and p99 as the upper end of its log2 bucket."""
    text = open(path, errors="replace").read()
    kind = "Get" if "__" in path and "-get__" in path else "Set"
    rates = [int(m.group(1)) for m in re.finditer(
        rf"{kind} Statistics\nType.*\nPeriod\s+\d+\s+\d+\s+(\d+)", text)]
    steady = rates[1:] or rates
    final = text.rfind(f"{kind} Statistics (")
    if final < 0 or not steady:
        return None
    block = text[final:].split("\n\n")[0]
    buckets = {}
    for line in block.split("Log2 Dist:")[1].splitlines():
        m = re.match(r"\s*(\d+):\s+(.*)", line)
        if m:
            for i, count in enumerate(m.group(2).split()):
                buckets[int(m.group(1)) + i] = int(count)
    total = sum(buckets.values())
    seen, p99 = 0, None
    for k in sorted(buckets):
        seen += buckets[k]
        if p99 is None and total and seen >= 0.99 * total:
            p99 = 2 ** (k + 1)
    return statistics.median(steady), p99

cells = {}
for path in sorted(glob.glob(os.path.join(out, "runs", "*.txt"))):
    system, cell, _ = os.path.basename(path)[:-4].split("__")
    r = parse(path)
    if r:
        cells.setdefault(cell, {}).setdefault(system, []).append(r)
lines = ["# memcached vs cradle's memcached door (memaslap, one server core each)", "", "```",
         open(os.path.join(out, "machine.txt")).read().strip(), "```", "",
         "| run | memcached ops/s | door ops/s | door / memcached | memcached p99 | door p99 | rounds |",
         "|---|---:|---:|---:|---:|---:|---:|"]
for cell in ["udp-get", "tcp-get", "udp-set", "tcp-set"]:
    s = cells.get(cell, {})
    if "memcached" not in s or "door" not in s:
        lines.append(f"| {cell} | ? | ? | ? | ? | ? | 0 |")
        continue
    m_ops = statistics.median(r[0] for r in s["memcached"])
    d_ops = statistics.median(r[0] for r in s["door"])
    m_p99 = statistics.median(r[1] for r in s["memcached"] if r[1])
    d_p99 = statistics.median(r[1] for r in s["door"] if r[1])
    n = min(len(s["memcached"]), len(s["door"]))
    lines.append(f"| {cell} | {m_ops:,.0f} | {d_ops:,.0f} | {d_ops / m_ops:.2f} | "
                 f"< {m_p99:,.0f} µs | < {d_p99:,.0f} µs | {n} |")
import json
gen = {}
for path in sorted(glob.glob(os.path.join(out, "runs", "*.json"))):
    system, cell, _ = os.path.basename(path)[:-5].split("__")
    text = open(path).read().strip()
    if text:
        gen.setdefault(cell, {}).setdefault(system, []).append(json.loads(text.splitlines()[-1]))
if gen:
    lines += ["", "Same, driven by `cradle bench --protocol memcache-udp` (exact percentiles):", "",
              "| run | memcached ops/s | door ops/s | door / memcached | memcached p50 / p99 µs | door p50 / p99 µs | rounds |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for cell in sorted(gen):
        s = gen[cell]
        if "memcached" not in s or "door" not in s:
            continue
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        m, d = s["memcached"], s["door"]
        lines.append(f"| {cell} | {med(m, 'ops_per_sec'):,.0f} | {med(d, 'ops_per_sec'):,.0f} | "
                     f"{med(d, 'ops_per_sec') / med(m, 'ops_per_sec'):.2f} | "
                     f"{med(m, 'p50_us'):.0f} / {med(m, 'p99_us'):.0f} | "
                     f"{med(d, 'p50_us'):.0f} / {med(d, 'p99_us'):.0f} | {min(len(m), len(d))} |")
lines += ["", "Commands:", "```", open(os.path.join(out, "commands.txt")).read().strip(), "```"]
report = "\n".join(lines) + "\n"
open(os.path.join(out, "report.md"), "w").write(report)
print(report)
PY
