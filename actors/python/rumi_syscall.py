"""Network access for blocks, through the pack's egress socket (the only way out).

Blocks have no network of their own. Every request goes as one frame (4-byte big-endian length +
UTF-8 JSON) to the pack's egress socket, whose path is in ``RUMI_EGRESS_SOCKET``; the kernel
checks the pack's grant and the destination on every hop, and answers a dict with ``success``,
``status_code``, ``headers``, ``body``, ``error``, ``error_type``, ``latency_ms``,
``redirect_hops``, ``bytes_read`` and ``final_url``. A binary body travels as base64, marked by
the header ``X-Proxy-Body-Encoding: base64`` (both ways); so does a response body that is mostly
control characters. :func:`body_bytes` decodes either; ``busy`` means the kernel's egress
buffers were full (retry later).

Errors are short (``Request blocked by security policy``, ``Network access denied: <reason>``,
``response_too_large``, ``too_many_redirects``, ``timeout``); the kernel's audit has the details.
When the socket is not there, every call answers ``success: False`` with
``error_type: "egress_unavailable"`` and ``network_check`` answers ``allowed: False``: nothing
here ever claims access it does not have.
"""

from __future__ import annotations

import base64
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


_ENCODING_HEADER = "X-Proxy-Body-Encoding"


def _failure(error_type: str, error: str) -> ProxyResponse:
    return {"success": False, "status_code": 0, "headers": {}, "body": "", "error": error, "error_type": error_type}


def _unavailable(reason: str) -> ProxyResponse:
    return _failure("egress_unavailable", reason)


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
    sent_headers = dict(headers or {})
    if isinstance(body, (bytes, bytearray)):
        body = base64.b64encode(bytes(body)).decode("ascii")
        sent_headers[_ENCODING_HEADER] = "base64"
    payload = {"method": method, "url": url, "headers": sent_headers, "body": body, "timeout_seconds": timeout_seconds}
    try:
        response: ProxyResponse = rumi_wire.exchange(path, payload, float(timeout_seconds) + 5.0)  # type: ignore[assignment]
    except ValueError as exc:
        if str(exc) == "response_too_large":
            return _failure("response_too_large", "response_too_large")
        return _failure("egress_error", f"egress error: {exc}")
    except OSError as exc:
        return _failure("egress_error", f"egress error: {exc}")
    if int(response.get("bytes_read") or 0) > rumi_wire.MAX_RESPONSE_BYTES:
        return _failure("response_too_large", "response_too_large")
    return response


def body_bytes(response: ProxyResponse) -> bytes:
    """The response body as bytes (decoding base64 when the proxy marked it so)."""
    body = response.get("body") or ""
    if (response.get("headers") or {}).get(_ENCODING_HEADER.lower()) == "base64":
        return base64.b64decode(body)
    return body.encode("utf-8")


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
