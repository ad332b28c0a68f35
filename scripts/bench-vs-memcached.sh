#!/usr/bin/env bash
# cradle vs memcached (UDP) on this machine, same generator (`cradle bench`), same run.
# Also the kernel's own limit for this traffic: a bare UDP echo (dataplane/examples/echo.rs:
# the same per-core loop, recvmmsg/sendmmsg batches of 32 and GSO/GRO, no cradle logic) driven
# with `--protocol echo` in the GET rounds, so the report shows cradle GET as a fraction of it.
#
# Server (cradle or memcached, one thread/core) pinned to SERVER_CPU, generator to CLIENT_CPU.
# Each server runs only during its own measurement; the two alternate for ROUNDS rounds of
# GET and SET (closed loop), then an open-loop GET run at OPEN_SHARE of memcached's median
# peak for cradle, memcached and the echo. Prints a table of medians and writes
# target/bench-report/report.md plus a latency-percentile SVG. Kills only the processes it started.
#
#   scripts/bench-vs-memcached.sh                 # 5 rounds x 10 s
#   ROUNDS=3 SECS=5 scripts/bench-vs-memcached.sh
#   ROUNDS=10 OPEN_RATE=80000 MEMASLAP=0 scripts/bench-vs-memcached.sh   # open loop only
#   scripts/bench-vs-memcached.sh report DIR      # only rebuild the report from DIR/*.json
#
# Settings (env): ROUNDS SECS WARMUP IN_FLIGHT VALUE_BYTES KEYS SERVER_CPU CLIENT_CPU
# CRADLE_PORT MEMCACHED_PORT OPEN_SHARE OPEN_CAP OPEN_RATE (only the open loop, at this rate)
# BUSY_POLL(1: the generator spins when idle,
# for both servers, so its own wake-ups do not limit either; 0: it blocks in poll)
# OFFLOAD(1: cradle and the generator coalesce datagrams with UDP GSO/GRO; 0: one per message)
# MEMASLAP(1: also run memaslap) OUT (report directory) DURABILITY (cradle's class, default
# memory: memcached never syncs) SPIN_US (how long cradle's loop and the echo's busy-poll before
# they block; both get the same, default 200 µs, the node's own default: a loop that blocks
# pays a wake-up when traffic resumes, so an echo that never blocks would not be the same path).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
WARMUP=${WARMUP:-1}
IN_FLIGHT=${IN_FLIGHT:-32}
VALUE_BYTES=${VALUE_BYTES:-32}
KEYS=${KEYS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CRADLE_PORT=${CRADLE_PORT:-17000}
MEMCACHED_PORT=${MEMCACHED_PORT:-17211}
OPEN_SHARE=${OPEN_SHARE:-0.5}
OPEN_CAP=${OPEN_CAP:-1024}
SPIN_US=${SPIN_US:-200} # = the node's default (`spin_us` in src/config.rs)
BUSY_POLL=${BUSY_POLL:-1}
MEMASLAP=${MEMASLAP:-1}

cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-report}
CRADLE=target/release/cradle
ECHO=target/release/examples/echo
ECHO_PORT=${ECHO_PORT:-17100}

# ---------------------------------------------------------------------------- report
# report DIR TITLE: reads DIR/results/SYSTEM__LABEL__rN.json (cradle bench --json, or any
# JSON with the same fields), prints a table of medians and writes DIR/report.md and
# DIR/latency.svg. Shared with bench-vs-redis.sh.
report() {
    python3 - "$1" "$2" <<'PY'
import glob, json, math, os, statistics, sys
out, title = sys.argv[1], sys.argv[2]
runs = {}
for path in sorted(glob.glob(os.path.join(out, "results", "*.json"))):
    system, label, _ = os.path.basename(path)[:-5].split("__")
    with open(path) as f:
        text = f.read().strip()
    if not text:
        continue
    runs.setdefault(label, {}).setdefault(system, []).append(json.loads(text.splitlines()[-1]))
fields = [("ops_per_sec", "ops/s"), ("p50_us", "p50 µs"), ("p99_us", "p99 µs"),
          ("p999_us", "p99.9 µs"), ("p9999_us", "p99.99 µs"), ("max_us", "max µs")]
def med(rs, k):
    vals = [r[k] for r in rs if r.get(k) is not None]
    return statistics.median(vals) if vals else float("nan")
lines = [f"# {title}", ""]
meta = os.path.join(out, "machine.txt")
if os.path.exists(meta):
    lines += ["```", open(meta).read().strip(), "```", ""]
header = "| run | system | rounds | " + " | ".join(n for _, n in fields) + " | errors | timeouts |"
lines += [header, "|" + "---|" * (header.count("|") - 1)]
ratios = []
for label, systems in runs.items():
    names = list(systems)
    for system in names:
        rs = systems[system]
        cells = [f"{med(rs, k):,.0f}" if k == "ops_per_sec" else f"{med(rs, k):.1f}" for k, _ in fields]
        errs = sum(r.get("errors", 0) for r in rs); tos = sum(r.get("timeouts", 0) for r in rs)
        lines.append(f"| {label} | {system} | {len(rs)} | " + " | ".join(cells) + f" | {errs} | {tos} |")
    for peer in [n for n in names if n != "cradle"] if "cradle" in systems else []:
        a, b = systems["cradle"], systems[peer]
        ops = med(a, "ops_per_sec") / med(b, "ops_per_sec") if med(b, "ops_per_sec") else float("nan")
        tail = ", ".join(f"{n} **{med(a, k) / med(b, k):.2f}x**" if med(b, k) else f"{n} n/a"
                         for k, n in [("p99_us", "p99"), ("p999_us", "p99.9"), ("p9999_us", "p99.99")])
        what = " (the kernel path's limit)" if peer == "echo" else ""
        ratios.append(f"- **{label}**: cradle/{peer}{what} throughput **{ops:.2f}x**, {tail}")
lines += ["", "Ratios of medians:", ""] + ratios + ["", "![latency percentiles](latency.svg)", ""]
cmds = os.path.join(out, "commands.txt")
if os.path.exists(cmds):
    lines += ["Commands:", "", "```", open(cmds).read().strip(), "```", ""]
with open(os.path.join(out, "report.md"), "w") as f:
    f.write("\n".join(lines))
print("\n".join(l for l in lines if l.startswith("|") or l.startswith("- ")))

# Latency-percentile plot: x = percentile on a log(1/(1-p)) axis, y = latency on a log axis.
pct = [("p50_us", 0.5), ("p90_us", 0.9), ("p99_us", 0.99), ("p999_us", 0.999), ("p9999_us", 0.9999)]
# One colour per run (op), one stroke per system: cradle solid, a peer dashed, the bare echo
# dotted; the legend's column is as wide as its longest name (about 7 px a character).
colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
def stroke(system):
    return "" if system == "cradle" else ' stroke-dasharray="2,3"' if system == "echo" else ' stroke-dasharray="7,4"'
series = []
for i, (label, systems) in enumerate(runs.items()):
    for system, rs in systems.items():
        pts = [(q, med(rs, k)) for k, q in pct if not math.isnan(med(rs, k)) and med(rs, k) > 0]
        if pts:
            series.append((f"{system} {label}", pts, colors[i % len(colors)], stroke(system)))
W, H, L, T, B = 760, 440, 70, 40, 50
R = 60 + 7 * max([len(name) for name, *_ in series] or [10])
W += max(0, R - 200)
H = max(H, T + B + 18 * len(series))
ys = [y for _, pts, *_ in series for _, y in pts] or [1.0]
ylo = 10 ** math.floor(math.log10(min(ys))); yhi = 10 ** math.ceil(math.log10(max(ys)))
if yhi <= ylo: yhi = ylo * 10
xmax = math.log10(1 / (1 - 0.9999))
def sx(q): return L + (math.log10(1 / (1 - q)) - math.log10(2)) / (xmax - math.log10(2)) * (W - L - R)
def sy(v): return T + (1 - (math.log10(v) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo))) * (H - T - B)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{L}" y="22" font-size="14">{title}: latency by percentile (medians of rounds)</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>']
for _, q in pct:
    x = sx(q)
    svg.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H-B}" stroke="#ddd"/>')
    svg.append(f'<text x="{x:.1f}" y="{H-B+16}" text-anchor="middle">p{q*100:g}</text>')
d = ylo
while d <= yhi * 1.0001:
    y = sy(d)
    svg.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W-R}" y2="{y:.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{L-6}" y="{y+4:.1f}" text-anchor="end">{d:g} µs</text>')
    d *= 10
for i, (name, pts, c, dash) in enumerate(series):
    path = " ".join(f"{sx(q):.1f},{sy(v):.1f}" for q, v in pts)
    svg.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
    for q, v in pts:
        svg.append(f'<circle cx="{sx(q):.1f}" cy="{sy(v):.1f}" r="3" fill="{c}"/>')
    y = T + 14 + i * 18
    svg.append(f'<line x1="{W-R+12}" y1="{y-4}" x2="{W-R+36}" y2="{y-4}" stroke="{c}" stroke-width="2"{dash}/>')
    svg.append(f'<text x="{W-R+42}" y="{y}">{name}</text>')
svg.append("</svg>")
with open(os.path.join(out, "latency.svg"), "w") as f:
    f.write("\n".join(svg))
print(f"report: {os.path.join(out, 'report.md')} and latency.svg")
PY
}

if [[ "${1:-}" == report ]]; then
    report "${2:?report DIR}" "${3:-cradle vs memcached (UDP)}"
    exit 0
fi

# ---------------------------------------------------------------------------- processes
source scripts/bench-common.sh # (the script runs from the repository root)

start_echo() {
    taskset -c "$SERVER_CPU" "$ECHO" socket "127.0.0.1:$ECHO_PORT" 3600 --spin-us "$SPIN_US" >"$TMP/echo.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        grep -q "echo ready" "$TMP/echo.log" && return 0
        sleep 0.05
    done
    cat "$TMP/echo.log" >&2
    exit 1
}

# bench SYSTEM LABEL ROUND ARGS...: one measurement into $OUT/results.
bench() {
    local system=$1 label=$2 round=$3
    shift 3
    local server=("--server" "127.0.0.1:$CRADLE_PORT" "--protocol" "cradle")
    if [[ $system == memcached ]]; then
        server=("--server" "127.0.0.1:$MEMCACHED_PORT" "--protocol" "memcache-udp")
        start_memcached
    elif [[ $system == echo ]]; then
        server=("--server" "127.0.0.1:$ECHO_PORT" "--protocol" "echo")
        start_echo
    else
        start_cradle
    fi
    local poll=()
    [[ $BUSY_POLL == 1 ]] && poll=(--busy-poll)
    local cmd=(taskset -c "$CLIENT_CPU" "$CRADLE" bench "${server[@]}" --keys "$KEYS"
        --value-bytes "$VALUE_BYTES" --duration "$SECS" --warmup "$WARMUP" --json --quiet
        "${poll[@]}" "${GENERATOR_FLAGS[@]}" "$@")
    grep -qxF -- "${cmd[*]}" "$OUT/commands.txt" 2>/dev/null || echo "${cmd[*]}" >>"$OUT/commands.txt"
    "${cmd[@]}" >"$OUT/results/${system}__${label}__r${round}.json"
    stop_server
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); a=sys.argv; print("  %-9s %-14s r%s: %9.0f ops/s  p50 %7.1f  p99 %7.1f us  errors %d timeouts %d" % (a[2], a[3], a[4], r["ops_per_sec"], r["p50_us"], r["p99_us"], r["errors"], r["timeouts"]))' \
        "$OUT/results/${system}__${label}__r${round}.json" "$system" "$label" "$round"
}

median_ops() { # median_ops SYSTEM LABEL
    python3 -c 'import glob,json,statistics,sys; print(int(statistics.median(json.load(open(p))["ops_per_sec"] for p in glob.glob(sys.argv[1]))))' \
        "$OUT/results/${1}__${2}__r*.json"
}

# ---------------------------------------------------------------------------- setup
if ! command -v memcached >/dev/null; then
    echo "installing memcached" >&2
    apt-get update -qq && apt-get install -y -qq memcached >/dev/null
fi
cargo build --release --quiet
cargo build --release --quiet -p dataplane --example echo
rm -rf "$OUT"
mkdir -p "$OUT/results"
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "memcached: $(memcached -V)"
    echo "cradle: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "server CPU $SERVER_CPU, generator CPU $CLIENT_CPU; $ROUNDS rounds x ${SECS}s (+${WARMUP}s warm-up);"
    echo "$IN_FLIGHT in flight, $VALUE_BYTES-byte values, $KEYS keys, busy-poll $BUSY_POLL, UDP offload ${OFFLOAD:-1};"
    echo "cradle's and the echo's loops spin ${SPIN_US} µs before they block"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

# ---------------------------------------------------------------------------- closed loop
# (skipped when OPEN_RATE gives the open loop's rate: then only the open loop runs)
for round in $( [[ -z ${OPEN_RATE:-} ]] && seq "$ROUNDS"); do
    order=(cradle memcached)
    ((round % 2 == 0)) && order=(memcached cradle)
    for op in get set; do
        systems=("${order[@]}")
        # The bare echo answers anything: it stands for the kernel path's limit under GETs.
        [[ $op == get ]] && systems+=(echo)
        for system in "${systems[@]}"; do
            bench "$system" "$op" "$round" --op "$op" --in-flight "$IN_FLIGHT"
        done
    done
done

# ---------------------------------------------------------------------------- open loop
if [[ -n ${OPEN_RATE:-} ]]; then
    rate=$OPEN_RATE
    echo "open loop: $rate gets/s (OPEN_RATE)"
else
    peak=$(median_ops memcached get)
    rate=$(python3 -c "print(int($peak * $OPEN_SHARE))")
    echo "open loop: $rate gets/s ($OPEN_SHARE of memcached's median peak $peak)"
fi
for round in $(seq "$ROUNDS"); do
    order=(cradle memcached)
    ((round % 2 == 0)) && order=(memcached cradle)
    # The bare echo under the same offered load: what the VM's stalls cost every server.
    for system in "${order[@]}" echo; do
        bench "$system" "get-open$rate" "$round" --op get --rate "$rate" --in-flight "$OPEN_CAP"
    done
done

# ---------------------------------------------------------------------------- memaslap
# memcached's own reference load tool (libmemcached-tools; Debian names it memcaslap), UDP,
# one thread, IN_FLIGHT connections, gets only: does `cradle bench` drive memcached as hard?
if [[ $MEMASLAP == 1 ]]; then
    if ! command -v memcaslap >/dev/null && ! command -v memaslap >/dev/null; then
        apt-get install -y -qq libmemcached-tools >/dev/null 2>&1 || true
    fi
    tool=$(command -v memaslap || command -v memcaslap || true)
    if [[ -z $tool ]]; then
        echo "memaslap: not available (libmemcached-tools has none here); step skipped" |
            tee -a "$OUT/machine.txt"
    else
        cat >"$TMP/memaslap.cfg" <<CFG
key
16 16 1
value
$VALUE_BYTES $VALUE_BYTES 1
cmd
0 0.0
1 1.0
CFG
        start_memcached
        cmd=(taskset -c "$CLIENT_CPU" "$tool" -s "127.0.0.1:$MEMCACHED_PORT" --udp -T 1
            -c "$IN_FLIGHT" -t "$((SECS + 2))s" -S 1s -F "$TMP/memaslap.cfg")
        echo "${cmd[*]}" >>"$OUT/commands.txt"
        "${cmd[@]}" >"$OUT/memaslap.txt" 2>&1 || true
        stop_server
        # memaslap first SETs its window of keys; the steady GET rate is the median of its
        # per-second "Period" lines after the first two seconds.
        gets=$(awk '/Get Statistics/{g=1; next} g && /^Period/{print $4; g=0}' "$OUT/memaslap.txt" |
            tail -n +3 | sort -n | awk '{a[NR]=$1} END{print (NR ? a[int((NR+1)/2)] : "?")}')
        total=$(grep -oE 'TPS: [0-9]+' "$OUT/memaslap.txt" | tail -1 | grep -oE '[0-9]+' || echo "?")
        echo "memaslap ($tool, UDP, 1 thread, $IN_FLIGHT connections): steady gets/s $gets" \
            "(overall $total ops/s incl. its preload SETs); cradle bench on memcached:" \
            "$(median_ops memcached get) gets/s" | tee -a "$OUT/machine.txt"
    fi
fi

report "$OUT" "cradle vs memcached (UDP), generator: cradle bench"
