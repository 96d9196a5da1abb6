#!/usr/bin/env python3
"""Asks a Kafka broker for cluster metadata (Metadata v4, all topics) and exits 0
when it answers with at least one broker; prints the topics it knows.

Used by the stack scripts as the readiness probe, so "ready" means the broker
serves the Kafka protocol, not merely that its port is open."""

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
        for _ in range(partitions):
            i16(); i32(); i32()  # error, index, leader
            # The count is read before `pos` is advanced past the ids:
            # `pos += 4 * i32()` would read `pos` before i32() moved it.
            for _ in range(2):  # replicas, isr
                count = i32()
                pos += 4 * count
        topics.append((name, partitions, error))
    return brokers, topics


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
    host, port = addr.rsplit(":", 1)
    try:
        brokers, topics = metadata(host, int(port), timeout=3)
    except (OSError, struct.error, ConnectionError) as err:
        print(f"kafka at {addr} not answering: {err}", file=sys.stderr)
        return 1
    if not brokers:
        print(f"kafka at {addr} answered with no brokers", file=sys.stderr)
        return 1
    if "-v" in sys.argv:
        for name, partitions, error in sorted(topics):
            print(f"  topic {name}: {partitions} partitions" + (f" (error {error})" if error else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
