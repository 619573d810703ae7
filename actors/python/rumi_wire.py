"""The kernel's socket framing, shared by rumi_syscall and rumi_capability: one request and one
response per connection, each a 4-byte big-endian length followed by UTF-8 JSON."""

from __future__ import annotations

import json
import socket
import struct

MAX_RESPONSE_FRAME = 8 * 1024 * 1024


def exchange(path, payload, timeout):
    """Sends `payload` to the Unix socket at `path` and returns the decoded response."""
    body = json.dumps(payload).encode("utf-8")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(struct.pack(">I", len(body)) + body)
        (length,) = struct.unpack(">I", _recv_exact(s, 4))
        if length > MAX_RESPONSE_FRAME:
            raise ValueError("response_too_large")
        return json.loads(_recv_exact(s, length).decode("utf-8"))


def _recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the kernel closed the socket")
        buf.extend(chunk)
    return bytes(buf)
