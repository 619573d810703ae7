"""Host capabilities for blocks (stores, secrets, third-party handlers), through the pack's
capability socket (``RUMI_CAPABILITY_SOCKET``). Each call passes the kernel's Trust + Grant
check; the socket, not anything in the call, says which pack is calling.

    result = rumi_capability.call("store.get", args={"store_id": "s", "key": "k"})
    if result["success"]:
        value = result["output"]["value"]

The answer is ``{success, output, error, error_type, latency_ms}``; a refusal says
``Permission denied`` with an ``error_type`` (``handler_not_found``, ``trust_denied``,
``grant_denied``, ``rate_limited``). When the socket is not there, every call answers
``success: False`` with ``error_type: "capability_unavailable"``.

One connection per process is kept open and reused (a call costs one round trip, not a
connect); calls from several threads take turns on it. When the kernel says ``busy`` (every
connection slot of the pack is taken) the call waits a little and tries again within its
timeout, so a burst of calls is slowed down, never lost.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
import uuid
from typing import Any, Dict, Optional, TypedDict

import rumi_wire


class CapabilityResponse(TypedDict, total=False):
    success: bool
    output: Any
    error: Optional[str]
    error_type: Optional[str]
    latency_ms: float


_lock = threading.Lock()
_conn: Optional[socket.socket] = None
_conn_pid = 0


def _after_fork_in_child() -> None:
    # A child starts with the lock as another thread may have held it at the fork, and with the
    # parent's connection (whose stream the parent is using): both are replaced.
    global _lock, _conn
    _lock = threading.Lock()
    _conn = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _failure(error_type: str, error: str) -> CapabilityResponse:
    return {"success": False, "output": None, "error": error, "error_type": error_type}


def _drop() -> None:
    global _conn
    if _conn is not None:
        try:
            _conn.close()
        except OSError:
            pass
    _conn = None


def _exchange(path: str, body: bytes, timeout: float) -> Any:
    """One request on the kept connection (opened when missing, or after a fork). A kept
    connection the kernel closed while it was idle fails before any byte of a reply: that one is
    opened again and the request sent once more."""
    if _conn is not None and _conn_pid == os.getpid():
        try:
            return _round_trip(body, timeout)
        except (ConnectionError, BrokenPipeError):
            _drop()
    return _round_trip(body, timeout, path)


def _round_trip(body: bytes, timeout: float, path: Optional[str] = None) -> Any:
    global _conn, _conn_pid
    if path is not None:
        _conn = None
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            rumi_wire._connect(s, path)
        except BaseException:
            s.close()
            raise
        _conn, _conn_pid = s, os.getpid()
    assert _conn is not None
    _conn.settimeout(timeout)
    try:
        _conn.sendall(struct.pack(">I", len(body)) + body)
    except (BrokenPipeError, ConnectionResetError):
        # The kernel refused the connection (and closed it) before reading: its answer, when it
        # wrote one, is still there to read.
        pass
    (length,) = struct.unpack(">I", rumi_wire._recv_exact(_conn, 4))
    if length > rumi_wire.MAX_RESPONSE_FRAME:
        raise ValueError("response_too_large")
    return json.loads(rumi_wire._recv_exact(_conn, length).decode("utf-8"))


def call(permission_id: str, args: Optional[Dict[str, Any]] = None, timeout_seconds: float = 30.0, request_id: Optional[str] = None) -> CapabilityResponse:
    """Calls the capability ``permission_id`` (e.g. ``"store.get"``) with ``args``."""
    path = os.environ.get("RUMI_CAPABILITY_SOCKET")
    if not path or not os.path.exists(path):
        return _failure("capability_unavailable", "capabilities not available: this kernel has no capability socket for the pack")
    payload = {"permission_id": permission_id, "args": args or {}, "timeout_seconds": timeout_seconds, "request_id": request_id or uuid.uuid4().hex}
    try:
        body = json.dumps(payload).encode("utf-8")
    except (TypeError, ValueError) as exc:
        return _failure("validation_error", f"args must be JSON: {exc}")
    deadline = time.monotonic() + float(timeout_seconds) + 5.0
    pause = 0.002
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return _failure("timeout", "the capability call did not get an answer in time")
        try:
            with _lock:
                try:
                    reply = _exchange(path, body, left)
                except BaseException:
                    # A half-done exchange leaves the stream out of step: never reuse it.
                    _drop()
                    raise
                if isinstance(reply, dict) and reply.get("error_type") in ("busy", "protocol_error", "peer_refused"):
                    # The kernel closes the connection after these.
                    _drop()
        except (OSError, ValueError) as exc:
            return _failure("capability_error", f"capability error: {exc}")
        if isinstance(reply, dict) and reply.get("error_type") == "busy":
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.1)
            continue
        return reply  # type: ignore[return-value]
