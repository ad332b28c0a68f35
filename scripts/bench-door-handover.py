#!/usr/bin/env python3
"""What a hand-over between cores costs the memcached door: one connection to a 2-core
node, gets of keys its own core owns against gets of keys the other core owns (found by the
door's `handed_over` counter), one request in flight, many rounds alternating; prints the
median and p99 round trip of each and the difference.

    cradle node --cores 2 --memcache-port 11311 --durability memory ... &
    scripts/bench-door-handover.py 127.0.0.1:11311 [requests per round] [rounds]
"""
import socket
import statistics
import sys
import time


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def ask(s, request, end):
    s.sendall(request)
    reply = b""
    while not reply.endswith(end):
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed")
        reply += chunk
    return reply


def handed_over(s):
    for line in ask(s, b"stats\r\n", b"END\r\n").decode().splitlines():
        if line.startswith("STAT handed_over "):
            return int(line.split()[2])
    raise SystemExit("no handed_over counter: not a cradle door?")


def main():
    addr = sys.argv[1]
    per_round = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    s = connect(addr)
    local, remote = [], []
    for i in range(400):
        key = f"handover-{i}".encode()
        ask(s, b"set " + key + b" 0 0 8\r\nvalue-32\r\n", b"\r\n")
        before = handed_over(s)
        ask(s, b"get " + key + b"\r\n", b"END\r\n")
        (remote if handed_over(s) > before else local).append(key)
    if not local or not remote:
        raise SystemExit(f"keys: {len(local)} local, {len(remote)} remote; need a 2-core node")
    samples = {"local": [], "handed over": []}
    for _ in range(rounds):
        for name, keys in (("local", local), ("handed over", remote)):
            for i in range(per_round):
                request = b"get " + keys[i % len(keys)] + b"\r\n"
                t = time.perf_counter_ns()
                ask(s, request, b"END\r\n")
                samples[name].append((time.perf_counter_ns() - t) / 1000)
    print(f"{addr}: {len(local)} local keys, {len(remote)} handed over; "
          f"{rounds} rounds x {per_round} gets each, one in flight")
    result = {}
    for name, values in samples.items():
        values.sort()
        median = statistics.median(values)
        p99 = values[int(len(values) * 0.99)]
        result[name] = (median, p99)
        print(f"  {name:12s} median {median:7.1f} us  p99 {p99:7.1f} us")
    (lm, lp), (rm, rp) = result["local"], result["handed over"]
    print(f"  hand-over cost: median +{rm - lm:.1f} us, p99 +{rp - lp:.1f} us")


if __name__ == "__main__":
    main()
