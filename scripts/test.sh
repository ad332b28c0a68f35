#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every test.
# Network-fault tests need root (network namespaces, nftables); without root they print why
# they skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v cc >/dev/null 2>&1 || need+=(gcc)   # tests/capi.rs builds the C example
# The memcached door's acceptance tests (tests/memcache.rs): libmemcached's tools, and pip
# for pymemcache.
command -v memccp >/dev/null 2>&1 || need+=(libmemcached-tools)
python3 -c "import pymemcache" >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 \
    || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing ${need[*]} for the tests that need them" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >&2 \
            || echo "could not install ${need[*]}: the tests that need them will skip and say why" >&2
    else
        echo "not root: ${need[*]} missing, the tests that need them will skip" >&2
    fi
fi

if ! python3 -c "import pymemcache" >/dev/null 2>&1; then
    echo "installing pymemcache (PyPI) for the memcached door's tests" >&2
    python3 -m pip install -q pymemcache >&2 2>/dev/null \
        || python3 -m pip install -q --break-system-packages pymemcache >&2 \
        || echo "could not install pymemcache: its test will print skipped" >&2
fi

exec cargo test --workspace --release "$@"
