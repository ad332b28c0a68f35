#!/usr/bin/env bash
# Installs cradle on a bare-metal host: release build, binary, config, the `cradle` system
# user, systemd unit (unprivileged and sandboxed), and optionally hugepages for the DPDK
# backend. Every step is printed; --dry-run prints without doing.
#
#   scripts/install.sh [--dry-run] [--hugepages N] [--no-start]
#       --hugepages N reserves N 2 MiB hugepages for `io.backend = "dpdk"` (a build with
#       --features dpdk): DPDK takes about 19 MiB of mbufs per core from them. The socket and
#       AF_XDP backends use none: leave it out for them.
#   scripts/install.sh --uninstall [--dry-run] [--purge]   (--purge also removes data and config)
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0 uninstall=0 purge=0 start=1 hugepages=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --uninstall) uninstall=1 ;;
        --purge) purge=1 ;;
        --no-start) start=0 ;;
        --hugepages) hugepages="${2:?--hugepages needs a count}"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

step() {
    echo "+ $*"
    if [ "$dry_run" = 0 ]; then "$@"; fi
}

if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or use --dry-run to see the steps)" >&2
    exit 1
fi

have_systemd=0
command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] && have_systemd=1

if [ "$uninstall" = 1 ]; then
    if [ "$have_systemd" = 1 ]; then
        step systemctl disable --now cradle.service || true
    fi
    step rm -f /etc/systemd/system/cradle.service /usr/local/bin/cradle /etc/sysctl.d/80-cradle-hugepages.conf
    [ "$have_systemd" = 1 ] && step systemctl daemon-reload
    if [ "$purge" = 1 ]; then
        step rm -rf /etc/cradle /var/lib/cradle
        if getent passwd cradle >/dev/null 2>&1; then step userdel cradle; fi
    else
        echo "kept /etc/cradle and /var/lib/cradle (use --purge to remove them)"
    fi
    exit 0
fi

step cargo build --release --locked
step install -m 0755 target/release/cradle /usr/local/bin/cradle
if getent passwd cradle >/dev/null 2>&1; then
    echo "kept the existing cradle user"
else
    step useradd --system --user-group --home-dir /var/lib/cradle --no-create-home \
        --shell /usr/sbin/nologin --comment "cradle key-value node" cradle
fi
step install -d -m 0755 /etc/cradle
# The node writes only its data directory; the config (and any --auth-keys file) stays root's,
# readable by the cradle group.
step install -d -m 0750 -o cradle -g cradle /var/lib/cradle
if [ -e /etc/cradle/cradle.toml ]; then
    echo "kept the existing /etc/cradle/cradle.toml"
else
    step install -m 0640 -g cradle packaging/cradle.toml /etc/cradle/cradle.toml
fi
if [ "$hugepages" -gt 0 ]; then
    echo "hugepages are for io.backend = \"dpdk\" (a build with --features dpdk); the socket and AF_XDP backends use none"
    echo "+ echo vm.nr_hugepages = $hugepages > /etc/sysctl.d/80-cradle-hugepages.conf"
    [ "$dry_run" = 0 ] && echo "vm.nr_hugepages = $hugepages" > /etc/sysctl.d/80-cradle-hugepages.conf
    step sysctl -w "vm.nr_hugepages=$hugepages"
fi
if [ "$have_systemd" = 1 ]; then
    step install -m 0644 packaging/cradle.service /etc/systemd/system/cradle.service
    step systemctl daemon-reload
    if [ "$start" = 1 ]; then
        step systemctl enable --now cradle.service
    fi
else
    echo "no systemd here: start it as the cradle user: runuser -u cradle -- /usr/local/bin/cradle node --config /etc/cradle/cradle.toml"
fi
echo "installed; check with: cradle status --server 127.0.0.1:7000"
