"""Network access for blocks, through the pack's egress socket (the only way out).

Blocks have no network of their own. Every request goes as one frame (4-byte big-endian length +
UTF-8 JSON) to the pack's egress socket, whose path is in ``RUMI_EGRESS_SOCKET``; the kernel
checks the pack's grant and the destination on every hop. When the socket is not there (no
egress configured for this kernel yet), every call answers ``success: False`` with
``error_type: "egress_unavailable"`` and ``network_check`` answers ``allowed: False``: nothing
here ever claims access it does not have.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, TypedDict, Union

import rumi_wire


class ProxyResponse(TypedDict, total=False):
    success: bool
    status_code: int
    headers: Dict[str, str]
    body: str
    error: Optional[str]
    error_type: Optional[str]
    latency_ms: float
    redirect_hops: int
    bytes_read: int
    final_url: str


class NetworkCheck(TypedDict):
    allowed: bool
    reason: str


def _socket_path() -> Optional[str]:
    path = os.environ.get("RUMI_EGRESS_SOCKET")
    if path and os.path.exists(path):
        return path
    return None


def _unavailable(reason: str) -> ProxyResponse:
    return {"success": False, "status_code": 0, "headers": {}, "body": "", "error": reason, "error_type": "egress_unavailable"}


def http_request(
    method: str,
    url: str,
    headers: Optional[Mapping[str, str]] = None,
    body: Union[str, bytes, None] = None,
    timeout_seconds: float = 30.0,
) -> ProxyResponse:
    """Sends one HTTP request through the egress proxy and returns its response dict."""
    path = _socket_path()
    if path is None:
        return _unavailable("egress not available: this kernel has no egress socket for the pack")
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    payload = {"method": method, "url": url, "headers": dict(headers or {}), "body": body, "timeout_seconds": timeout_seconds}
    try:
        return rumi_wire.exchange(path, payload, float(timeout_seconds) + 5.0)  # type: ignore[return-value]
    except (OSError, ValueError) as exc:
        return {"success": False, "status_code": 0, "headers": {}, "body": "", "error": f"egress error: {exc}", "error_type": "egress_error"}


def network_check(domain: str, port: int = 443) -> NetworkCheck:
    """Asks the kernel whether this pack may reach ``domain:port`` (the real grant check)."""
    path = _socket_path()
    if path is None:
        return {"allowed": False, "reason": "egress not available: this kernel has no egress socket for the pack"}
    try:
        reply = rumi_wire.exchange(path, {"op": "network_check", "domain": domain, "port": int(port)}, 10.0)
        return {"allowed": bool(reply.get("allowed")), "reason": str(reply.get("reason", ""))}
    except (OSError, ValueError) as exc:
        return {"allowed": False, "reason": f"egress error: {exc}"}


def get(url: str, headers: Optional[Mapping[str, str]] = None, timeout_seconds: float = 30.0) -> ProxyResponse:
    """GET ``url``."""
    return http_request("GET", url, headers=headers, timeout_seconds=timeout_seconds)


def head(url: str, headers: Optional[Mapping[str, str]] = None, timeout_seconds: float = 30.0) -> ProxyResponse:
    """HEAD ``url``."""
    return http_request("HEAD", url, headers=headers, timeout_seconds=timeout_seconds)


def delete(url: str, headers: Optional[Mapping[str, str]] = None, timeout_seconds: float = 30.0) -> ProxyResponse:
    """DELETE ``url``."""
    return http_request("DELETE", url, headers=headers, timeout_seconds=timeout_seconds)


def post(url: str, body: Union[str, bytes, None] = None, headers: Optional[Mapping[str, str]] = None, timeout_seconds: float = 30.0) -> ProxyResponse:
    """POST ``body`` to ``url``."""
    return http_request("POST", url, headers=headers, body=body, timeout_seconds=timeout_seconds)


def put(url: str, body: Union[str, bytes, None] = None, headers: Optional[Mapping[str, str]] = None, timeout_seconds: float = 30.0) -> ProxyResponse:
    """PUT ``body`` to ``url``."""
    return http_request("PUT", url, headers=headers, body=body, timeout_seconds=timeout_seconds)


def patch(url: str, body: Union[str, bytes, None] = None, headers: Optional[Mapping[str, str]] = None, timeout_seconds: float = 30.0) -> ProxyResponse:
    """PATCH ``body`` to ``url``."""
    return http_request("PATCH", url, headers=headers, body=body, timeout_seconds=timeout_seconds)


def post_json(url: str, data: Any, headers: Optional[Mapping[str, str]] = None, timeout_seconds: float = 30.0) -> ProxyResponse:
    """POST ``data`` as JSON to ``url`` (sets Content-Type)."""
    merged = {"Content-Type": "application/json", **dict(headers or {})}
    return http_request("POST", url, headers=merged, body=json.dumps(data), timeout_seconds=timeout_seconds)
