#!/usr/bin/env bash
# AF_XDP on a veth pair between two network namespaces this test creates (and removes):
# cradle on one end with --io af-xdp (its XDP program steers every frame of the queue to the
# socket; ARP answered by cradle itself), `cradle bench` over kernel sockets in the other.
# GETs must be answered byte-exact; the node's AF_XDP counters must move.
source "$(dirname "$0")/lib.sh"
need_root "network namespaces and AF_XDP"
need_feature af-xdp
command -v ip >/dev/null || skip "no ip (iproute2)"

ns_a="cradle-xdp-a-$$"
ns_b="cradle-xdp-b-$$"
ip netns add "$ns_a" || skip "cannot create a network namespace"
CLEANUPS+=("ip netns del $ns_a")
ip netns add "$ns_b"
CLEANUPS+=("ip netns del $ns_b")
ip link add cxa$$ type veth peer name cxb$$
ip link set cxa$$ netns "$ns_a"
ip link set cxb$$ netns "$ns_b"
ip -n "$ns_a" link set lo up
ip -n "$ns_a" link set cxa$$ up
ip -n "$ns_b" link set lo up
ip -n "$ns_b" addr add 10.77.0.2/24 dev cxb$$
ip -n "$ns_b" link set cxb$$ up
# The kernel leaves UDP checksums to a veth's "hardware" (CHECKSUM_PARTIAL); XDP sees the
# frame before anyone fills them in, so have the sender's stack compute them.
ip netns exec "$ns_b" ethtool -K cxb$$ tx off >/dev/null 2>&1 \
    || skip "ethtool cannot turn off checksum offload on the veth (install ethtool)"

ip netns exec "$ns_a" "$CRADLE" node --io af-xdp --xdp-ifname cxa$$ --listen 10.77.0.1:7000 \
    --data-dir "$HW_TMP/data" --durability memory --no-pin >"$HW_TMP/node.log" 2>&1 &
node=$!
PIDS+=("$node")
wait_for "$HW_TMP/node.log" "cradle ready" 20
if grep -q "falling back" "$HW_TMP/node.log"; then
    reason=$(grep "falling back" "$HW_TMP/node.log")
    stop_pid "$node"
    skip "the kernel refused AF_XDP here: $reason"
fi
timeout 60 ip netns exec "$ns_b" "$CRADLE" bench --server 10.77.0.1:7000 --keys 2000 \
    --duration 2 --warmup 0.2 --json --quiet >"$HW_TMP/bench.json" 2>"$HW_TMP/bench.err" || {
    cat "$HW_TMP/bench.err" >&2
    fail "cradle bench over the veth failed"
}
echo "  $(json_field "$HW_TMP/bench.json" ops) GETs answered, errors $(json_field "$HW_TMP/bench.json" errors)"
[[ $(json_field "$HW_TMP/bench.json" errors) == 0 ]] || fail "GETs answered wrongly"
(($(json_field "$HW_TMP/bench.json" ops) > 1000)) || fail "too few GETs answered"
stop_pid "$node"
line=$(grep "af-xdp cxa$$ queue 0" "$HW_TMP/node.log" | tail -1)
echo "$line"
grep -q "arp_answered [1-9]" <<<"$line" || fail "cradle answered no ARP request"
echo "passed: cradle over AF_XDP on a veth served byte-exact GETs"
