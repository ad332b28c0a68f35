#!/usr/bin/env bash
# cradle and `cradle bench` as two DPDK processes over net_memif:
#  1. GETs answered byte-exact (the generator checks every value) with loss and reordering
#     injected on the generator's receive side;
#  2. the node outlives six generator restarts (the memif peer coming and going) and three
#     generators killed with SIGKILL in the middle of their load;
#  3. 10^6 malformed frames (13 kinds: short, other MAC, IPv6, bad IPv4 version/IHL/checksum/
#     length, fragments, TCP, bad UDP length/checksum, another port): the node stays up,
#     counts exactly 10^6 dropped, and serves valid requests afterwards with no error.
source "$(dirname "$0")/lib.sh"
need_root "DPDK's EAL and memif's socket"
need_feature dpdk
[[ -x ${DPDK_TOOL:-} ]] || skip "no dpdk_tool example (DPDK_TOOL unset; run scripts/hwtests.sh)"

sock="$HW_TMP/memif.sock"
CLEANUPS+=("rm -rf /var/run/dpdk/cradle-hw-*-$$")
node_eal="-l 0 --no-huge -m 512 --no-pci --file-prefix cradle-hw-node-$$ --vdev net_memif0,role=server,socket=$sock"
client_eal() { echo "-l 1 --no-huge -m 512 --no-pci --file-prefix cradle-hw-$1-$$ --vdev net_memif0,role=client,socket=$sock"; }

"$CRADLE" node --io dpdk --dpdk-eal "$node_eal" --listen 127.0.0.1:7710 --data-dir "$HW_TMP/data" \
    --durability memory >"$HW_TMP/node.log" 2>&1 &
node=$!
PIDS+=("$node")
wait_for "$HW_TMP/node.log" "cradle ready" 20
grep -q "falling back" "$HW_TMP/node.log" && fail "the node fell back to sockets"

# bench NAME ARGS...: one generator run over memif into $HW_TMP/NAME.json, bounded in time.
# Requests wait up to 2 s for an answer (this shared machine stalls processes for 100 ms and
# more), except where loss is injected on purpose.
bench() {
    local name=$1
    shift
    timeout 60 "$CRADLE" bench --io dpdk --dpdk-eal "$(client_eal "$name")" \
        --server 127.0.0.1:7710 --keys 2000 --json --quiet "$@" \
        >"$HW_TMP/$name.json" 2>"$HW_TMP/$name.err" || {
        cat "$HW_TMP/$name.err" >&2
        fail "cradle bench ($name) failed"
    }
    kill -0 "$node" 2>/dev/null || fail "the node died during $name"
    echo "  $name: $(json_field "$HW_TMP/$name.json" ops) answered, errors $(json_field "$HW_TMP/$name.json" errors), timeouts $(json_field "$HW_TMP/$name.json" timeouts)"
}

echo "1. byte-exact GETs with 2% loss and 5% reordering injected"
bench faults --op get --duration 3 --warmup 0.2 --inject-loss 0.02 --inject-reorder 0.05 --seed 7 \
    --timeout-ms 500
[[ $(json_field "$HW_TMP/faults.json" errors) == 0 ]] || fail "GETs answered wrongly: $(cat "$HW_TMP/faults.json")"
(($(json_field "$HW_TMP/faults.json" ops) > 1000)) || fail "too few GETs answered"
(($(json_field "$HW_TMP/faults.json" timeouts) > 0)) || fail "the injected loss left no trace (timeouts 0)"

echo "2. six generator restarts, three generators killed mid-load"
for round in 1 2 3 4 5 6; do
    bench "restart$round" --op mix --duration 0.3 --warmup 0 --no-preload --timeout-ms 2000
done
for round in 1 2 3; do
    # SIGKILL while requests are in flight: no clean memif disconnect from this peer.
    (timeout -s KILL 3 "$CRADLE" bench --io dpdk --dpdk-eal "$(client_eal "kill$round")" \
        --server 127.0.0.1:7710 --keys 2000 --op mix --no-preload --duration 10 --warmup 0 \
        --quiet >/dev/null 2>&1 || true) 2>/dev/null
    kill -0 "$node" 2>/dev/null || fail "the node died when killed generator $round went away"
    echo "  kill$round: the node is still up"
done

echo "3. 10^6 malformed frames"
timeout 60 "$DPDK_TOOL" flood "$(client_eal flood)" 127.0.0.1:7710 1000000 >"$HW_TMP/flood.log" 2>&1 || {
    cat "$HW_TMP/flood.log" >&2
    fail "the flood did not send all its frames"
}
grep "^sent" "$HW_TMP/flood.log"
kill -0 "$node" 2>/dev/null || fail "the node died under the flood"
bench after --op get --duration 1 --warmup 0.2 --timeout-ms 2000
[[ $(json_field "$HW_TMP/after.json" errors) == 0 ]] || fail "errors after the flood"
[[ $(json_field "$HW_TMP/after.json" timeouts) == 0 ]] || fail "timeouts after the flood"
stop_pid "$node"
line=$(grep "dpdk net_memif0 queue 0" "$HW_TMP/node.log") || fail "no counters from the node"
echo "$line"
dropped=$(sed -E 's/.*dropped ([0-9]+):.*/\1/' <<<"$line")
[[ $dropped == 1000000 ]] || fail "the node counted $dropped dropped frames, not 1000000"
if grep -q "Segmentation\|panicked" "$HW_TMP/node.log"; then fail "the node crashed"; fi
echo "passed: byte-exact under faults, 6 restarts survived, 10^6 malformed frames each counted"
