"""Host capabilities for blocks (stores, secrets, third-party handlers), through the pack's
capability socket (``RUMI_CAPABILITY_SOCKET``). Each call passes the kernel's Trust + Grant
check. When the socket is not there, every call answers ``success: False`` with
``error_type: "capability_unavailable"``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import uuid
from typing import Any, Dict, Optional, TypedDict

MAX_RESPONSE_FRAME = 8 * 1024 * 1024


class CapabilityResponse(TypedDict, total=False):
    success: bool
    output: Any
    error: Optional[str]
    error_type: Optional[str]
    latency_ms: float


def call(permission_id: str, args: Optional[Dict[str, Any]] = None, timeout_seconds: float = 30.0, request_id: Optional[str] = None) -> CapabilityResponse:
    """Calls the capability ``permission_id`` (e.g. ``"store.get"``) with ``args``."""
    path = os.environ.get("RUMI_CAPABILITY_SOCKET")
    if not path or not os.path.exists(path):
        return {"success": False, "output": None, "error": "capabilities not available: this kernel has no capability socket for the pack", "error_type": "capability_unavailable"}
    payload = {"permission_id": permission_id, "args": args or {}, "timeout_seconds": timeout_seconds, "request_id": request_id or uuid.uuid4().hex}
    body = json.dumps(payload).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(float(timeout_seconds) + 5.0)
            s.connect(path)
            s.sendall(struct.pack(">I", len(body)) + body)
            header = _recv_exact(s, 4)
            (length,) = struct.unpack(">I", header)
            if length > MAX_RESPONSE_FRAME:
                raise ValueError("response_too_large")
            return json.loads(_recv_exact(s, length).decode("utf-8"))
    except (OSError, ValueError) as exc:
        return {"success": False, "output": None, "error": f"capability error: {exc}", "error_type": "capability_error"}


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("capability socket closed")
        buf.extend(chunk)
    return bytes(buf)
