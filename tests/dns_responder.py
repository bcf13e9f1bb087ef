"""A tiny authoritative DNS server for tests: answers A queries for the names it is given, NXDOMAIN otherwise.

    python3 dns_responder.py --bind 198.51.100.2 --port 53 outside.test=198.51.100.2 ...

Prints `ready PORT` once its UDP and TCP sockets are bound, then serves until killed.
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading


def answer(query: bytes, names: dict[str, str]) -> bytes:
    ident, _flags, qdcount = struct.unpack(">HHH", query[:6])
    offset, labels = 12, []
    while query[offset]:
        length = query[offset]
        labels.append(query[offset + 1 : offset + 1 + length].decode().lower())
        offset += length + 1
    qtype = struct.unpack(">H", query[offset + 1 : offset + 3])[0]
    question = query[12 : offset + 5]
    address = names.get(".".join(labels))
    if address is None:
        return struct.pack(">HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
    if qtype != 1:
        return struct.pack(">HHHHHH", ident, 0x8180, 1, 0, 0, 0) + question  # the name exists, no such record
    record = struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(address)
    return struct.pack(">HHHHHH", ident, 0x8180, qdcount, 1, 0, 0) + question + record


def serve_tcp(sock: socket.socket, names: dict[str, str]) -> None:
    while True:
        conn, _ = sock.accept()
        with conn:
            size = struct.unpack(">H", conn.recv(2))[0]
            data = b""
            while len(data) < size:
                chunk = conn.recv(size - len(data))
                if not chunk:
                    break
                data += chunk
            reply = answer(data, names)
            conn.sendall(struct.pack(">H", len(reply)) + reply)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("records", nargs="*", help="name=address")
    args = parser.parse_args()
    names = dict(r.lower().split("=", 1) for r in args.records)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((args.bind, args.port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((args.bind, udp.getsockname()[1]))
    tcp.listen(8)
    threading.Thread(target=serve_tcp, args=(tcp, names), daemon=True).start()
    print(f"ready {udp.getsockname()[1]}", flush=True)
    while True:
        data, peer = udp.recvfrom(4096)
        try:
            udp.sendto(answer(data, names), peer)
        except (IndexError, struct.error):
            continue


if __name__ == "__main__":
    main()
