#!/usr/bin/env bash
# DPDK with --no-huge on net_null: the port's rx/tx loop runs and its counters move (every
# net_null frame is received and counted as dropped, every datagram sent is taken by the
# device); then a whole cradle node serves on net_null for a second and stops cleanly.
source "$(dirname "$0")/lib.sh"
need_root "DPDK's EAL"
need_feature dpdk
[[ -x ${DPDK_TOOL:-} ]] || skip "no dpdk_tool example (DPDK_TOOL unset; run scripts/hwtests.sh)"

CLEANUPS+=("rm -rf /var/run/dpdk/cradle-hw-null-$$")
eal="-l 0 --no-huge -m 256 --no-pci --file-prefix cradle-hw-null-$$ --vdev net_null0"
timeout 30 "$DPDK_TOOL" null "$eal" >"$HW_TMP/tool.log" 2>&1 || {
    cat "$HW_TMP/tool.log" >&2
    fail "dpdk_tool null: the loop did not receive and send"
}
grep "dpdk net_null0" "$HW_TMP/tool.log"

"$CRADLE" node --io dpdk --dpdk-eal "$eal" --listen 127.0.0.1:7700 --data-dir "$HW_TMP/data" \
    --durability memory --no-pin >"$HW_TMP/node.log" 2>&1 &
node=$!
PIDS+=("$node")
wait_for "$HW_TMP/node.log" "cradle ready" 20
grep -q "falling back" "$HW_TMP/node.log" && fail "the node fell back to sockets"
sleep 1
stop_pid "$node"
line=$(grep "dpdk net_null0 queue 0" "$HW_TMP/node.log") || fail "no counters from the node"
echo "$line"
dropped=$(sed -E 's/.*dropped ([0-9]+):.*/\1/' <<<"$line")
((dropped > 0)) || fail "the node's loop counted no frames from net_null"
echo "passed: net_null frames received and counted ($dropped by the node)"
