#!/usr/bin/env python3
"""Asks a Kafka broker for cluster metadata (Metadata v4, all topics) and exits 0
when it answers with at least one broker; prints the topics it knows.

Used by the stack scripts as the readiness probe, so "ready" means the broker
serves the Kafka protocol, not merely that its port is open.

    kafka_ready.py [HOST:PORT] [-v] [--partitions] [--brokers N] [--in-sync]

--brokers N asks for at least N live brokers (a KRaft broker is listed once the
controller unfenced it); --in-sync for a leader and a full ISR on every
partition; --partitions prints each partition's leader, replicas and ISR."""

import argparse
import socket
import struct
import sys


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def metadata(host, port, timeout):
    client_id = b"stack-probe"
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body = struct.pack(">i?", -1, False)
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", read_exact(sock, 4))
        payload = read_exact(sock, size)
    pos = 4 + 4  # correlation id, throttle time

    def i16():
        nonlocal pos
        (v,) = struct.unpack_from(">h", payload, pos)
        pos += 2
        return v

    def i32():
        nonlocal pos
        (v,) = struct.unpack_from(">i", payload, pos)
        pos += 4
        return v

    def string():
        nonlocal pos
        n = i16()
        if n < 0:
            return None
        v = payload[pos:pos + n].decode()
        pos += n
        return v

    brokers = []
    for _ in range(i32()):
        node, host_, port_, _rack = i32(), string(), i32(), string()
        brokers.append((node, host_, port_))
    string()  # cluster id
    i32()  # controller id
    topics = []
    for _ in range(i32()):
        error, name, _internal = i16(), string(), payload[pos]
        pos += 1
        partitions = i32()
        parts = []
        for _ in range(partitions):
            _error, index, leader = i16(), i32(), i32()
            replicas = [i32() for _ in range(i32())]
            isr = [i32() for _ in range(i32())]
            parts.append((index, leader, replicas, isr))
        topics.append((name, partitions, error, parts))
    return brokers, topics


def ids(nodes):
    return ",".join(map(str, sorted(nodes)))


def main():
    parser = argparse.ArgumentParser(description="Kafka readiness probe")
    parser.add_argument("addr", nargs="?", default="127.0.0.1:9092")
    parser.add_argument("-v", action="store_true", help="print the topics")
    parser.add_argument("--partitions", action="store_true", help="print every partition (implies -v)")
    parser.add_argument("--brokers", type=int, default=1, help="live brokers needed")
    parser.add_argument("--in-sync", action="store_true", help="every partition led, ISR full")
    args = parser.parse_args()
    addr = args.addr
    host, port = addr.rsplit(":", 1)
    try:
        brokers, topics = metadata(host, int(port), timeout=3)
    except (OSError, struct.error, ConnectionError) as err:
        print(f"kafka at {addr} not answering: {err}", file=sys.stderr)
        return 1
    if not brokers:
        print(f"kafka at {addr} answered with no brokers", file=sys.stderr)
        return 1
    if len(brokers) < args.brokers:
        print(f"kafka at {addr} knows {len(brokers)} brokers, not {args.brokers}", file=sys.stderr)
        return 1
    if args.v or args.partitions:
        for name, partitions, error, parts in sorted(topics):
            print(f"  topic {name}: {partitions} partitions" + (f" (error {error})" if error else ""))
            if args.partitions:
                for index, leader, replicas, isr in sorted(parts):
                    print(f"    partition {index}: leader {leader}, replicas {ids(replicas)}, isr {ids(isr)}")
    lagging = [f"{name}-{index}" for name, _, _, parts in topics
               for index, leader, replicas, isr in parts if leader < 0 or len(isr) < len(replicas)]
    if args.in_sync and lagging:
        print(f"kafka at {addr}: partitions without a leader or a full ISR: {' '.join(sorted(lagging))}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
