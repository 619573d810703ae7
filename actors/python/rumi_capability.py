"""Host capabilities for blocks (stores, secrets, third-party handlers), through the pack's
capability socket (``RUMI_CAPABILITY_SOCKET``). Each call passes the kernel's Trust + Grant
check. When the socket is not there, every call answers ``success: False`` with
``error_type: "capability_unavailable"``.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Dict, Optional, TypedDict

import rumi_wire


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
    try:
        return rumi_wire.exchange(path, payload, float(timeout_seconds) + 5.0)  # type: ignore[return-value]
    except (OSError, ValueError) as exc:
        return {"success": False, "output": None, "error": f"capability error: {exc}", "error_type": "capability_error"}
