#!/usr/bin/env bash
# The hardware tests (hwtests/*.sh): DPDK on net_null and between two processes over
# net_memif, AF_XDP on a veth pair in namespaces of their own. As root it installs what they
# need (Debian's DPDK and the bindgen toolchain, iproute2, ethtool) and builds cradle with
# `--features dpdk,af-xdp`; a test that still cannot run prints `skipped: <reason>` and is
# counted as skipped, never as passed. Ends with `hwtests: N passed, N failed, N skipped`
# and exits non-zero if any failed.
#
#   scripts/hwtests.sh                 # all of them
#   scripts/hwtests.sh dpdk_memif      # the ones whose names match
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) == 0 ]]; then
    need=()
    pkg-config --exists libdpdk 2>/dev/null || need+=(dpdk dpdk-dev libdpdk-dev pkg-config)
    # (libclang itself: libclang-cpp, which llvm packages bring, is not what bindgen loads.)
    compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
        || compgen -G '/usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so*' >/dev/null \
        || need+=(libclang-dev)
    command -v ip >/dev/null || need+=(iproute2)
    command -v ethtool >/dev/null || need+=(ethtool)
    if ((${#need[@]})); then
        echo "hwtests: installing ${need[*]}" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") \
            >/dev/null 2>&1 || echo "hwtests: could not install ${need[*]}" >&2
    fi
fi

features=dpdk,af-xdp
pkg-config --exists libdpdk 2>/dev/null || features=af-xdp
build_log=$(mktemp)
if cargo build --release --quiet --features "$features" --bin cradle >"$build_log" 2>&1 &&
    { [[ $features != *dpdk* ]] ||
        cargo build --release --quiet -p dataplane --features dpdk --example dpdk_tool >>"$build_log" 2>&1; }; then
    target=${CARGO_TARGET_DIR:-$PWD/target}
    export CRADLE=$target/release/cradle
    [[ $features == *dpdk* ]] && export DPDK_TOOL=$target/release/examples/dpdk_tool
    echo "hwtests: cradle built with --features $features"
else
    tail -20 "$build_log" >&2
    echo "hwtests: cannot build cradle with --features $features; the tests will skip" >&2
fi
rm -f "$build_log"

passed=0 failed=0 skipped=0
for test in hwtests/*.sh; do
    name=$(basename "$test" .sh)
    [[ $name == lib ]] && continue
    [[ $# -gt 0 && ! " $* " =~ " $name " ]] && continue
    echo "--- $name"
    started=$SECONDS
    output=$(timeout 300 bash "$test" 2>&1)
    status=$?
    echo "$output" | sed 's/^/    /'
    if [[ $status == 0 ]]; then
        passed=$((passed + 1))
        echo "--- $name: passed ($((SECONDS - started)) s)"
    elif [[ $status == 77 ]]; then
        skipped=$((skipped + 1))
        echo "--- $name: $(grep -m1 '^skipped:' <<<"$output" || echo 'skipped')"
    else
        failed=$((failed + 1))
        echo "--- $name: FAILED (status $status)"
    fi
done
echo "hwtests: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
