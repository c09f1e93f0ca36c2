#!/usr/bin/env python3
"""Save the first bytes a TLS client sends (its ClientHello) to a file.

Usage: capture.py PORT OUTFILE
Listens on 127.0.0.1:PORT, accepts one connection, reads until the first
handshake message is complete (or 2 s pass), writes the bytes, closes.
"""
import socket
import sys


def handshake_complete(data: bytes) -> bool:
    # Reassemble handshake bytes from TLS records and check the first message's length.
    hs = b""
    i = 0
    while i + 5 <= len(data):
        length = int.from_bytes(data[i + 3:i + 5], "big")
        hs += data[i + 5:i + 5 + length]
        i += 5 + length
    return len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big")


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    conn, _ = srv.accept()
    conn.settimeout(2.0)
    data = b""
    try:
        while not handshake_complete(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    with open(out, "wb") as f:
        f.write(data)
    conn.close()
    srv.close()


if __name__ == "__main__":
    main()
