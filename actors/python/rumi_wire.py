"""The kernel's framing, shared by everything Python that talks to the kernel: each message is a
4-byte big-endian length followed by UTF-8 JSON. `exchange` is one request on a socket
(rumi_syscall, rumi_capability); `read_frame` / `write_frame` are the stream side the block host
and the capability handler host speak on their channel."""

from __future__ import annotations

import json
import os
import socket
import struct

# Largest response frame accepted: the body limit (RUMI_MAX_RESULT_BYTES) as the kernel encodes it
# (JSON text escapes at most double a body; bodies that would grow more, and binary ones, travel as
# base64, a third larger), plus headers. A larger frame is refused here too, whatever the kernel sent.
MAX_RESPONSE_BYTES = int(os.environ.get("RUMI_MAX_RESULT_BYTES", str(4 * 1024 * 1024)))
MAX_RESPONSE_FRAME = MAX_RESPONSE_BYTES * 2 + 1024 * 1024
# sun_path holds 108 bytes with its NUL.
_MAX_SOCKET_PATH = 107


def exchange(path, payload, timeout):
    """Sends `payload` to the Unix socket at `path` and returns the decoded response."""
    body = json.dumps(payload).encode("utf-8")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        _connect(s, path)
        try:
            s.sendall(struct.pack(">I", len(body)) + body)
        except (BrokenPipeError, ConnectionResetError):
            # Refused before the kernel read the request (`busy`, a refused peer): its answer,
            # written before it closed, is still there to read.
            pass
        (length,) = struct.unpack(">I", _recv_exact(s, 4))
        if length > MAX_RESPONSE_FRAME:
            raise ValueError("response_too_large")
        return json.loads(_recv_exact(s, length).decode("utf-8"))


def read_exact(stream, n):
    """`n` bytes from a binary stream, or None when it ends first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf.extend(chunk)
    return bytes(buf)


def _read(stream, n):
    """`n` bytes from a binary stream, or None when it ends first: a buffered stream's `read(n)`
    returns all `n` unless the stream ends, so the loop is only for unbuffered ones."""
    chunk = stream.read(n)
    if chunk is not None and len(chunk) == n:
        return chunk
    if not chunk:
        return None
    rest = read_exact(stream, n - len(chunk))
    return None if rest is None else chunk + rest


_UNPACK_LENGTH = struct.Struct(">I").unpack


def _json_scanner():
    """The C scanner json.loads ends in, made once: (value, end) of the JSON value at an index.
    json.loads goes through two Python layers to reach it, a sizeable share of a small frame."""
    make = getattr(json.scanner, "c_make_scanner", None)
    return make(json.JSONDecoder()) if make is not None else None


_scan = _json_scanner()


def decode(text):
    """`json.loads(text)` for a str: the same values and the same errors (a ValueError), through
    the C scanner directly when the text is exactly one JSON value."""
    if _scan is not None:
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            value, end = None, -1
        if end == len(text):
            return value
    return json.loads(text)


def read_frame(stream, max_frame):
    """One decoded frame from a binary stream; None when the stream ends. A declared length over
    `max_frame` raises ValueError before the body is read."""
    header = _read(stream, 4)
    if header is None:
        return None
    (length,) = _UNPACK_LENGTH(header)
    if length > max_frame:
        raise ValueError("frame too large")
    body = _read(stream, length)
    if body is None:
        return None
    return decode(body.decode("utf-8"))


def _not_json(value):
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _strict_encoder():
    """A compact, strict (no NaN), non-ASCII-escaping JSON encoder made once: `json.dumps` with
    any non-default option builds a new encoder on every call, a sizeable share of a block call's
    cost. It checks for cycles as json.dumps does (a value that contains itself raises
    ValueError), with one table of markers emptied after every use, so an encoding that failed
    half-way leaves nothing behind for the next."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    markers = {}
    encode = make(markers, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, False)

    def encode_strict(value):
        try:
            return "".join(encode(value, 0))
        finally:
            if markers:
                markers.clear()

    return encode_strict


# encode_strict(value) -> str, as json.dumps(value, ensure_ascii=False, allow_nan=False,
# separators=(",", ":")).
encode_strict = _strict_encoder() or (lambda value: json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")))


def write_frame(stream, message):
    """Encodes `message` (strict JSON: no NaN) and writes it as one frame."""
    write_body(stream, encode_strict(message).encode("utf-8"))


_PACK_LENGTH = struct.Struct(">I").pack


def write_body(stream, body):
    """Writes `body` (encoded JSON bytes) as one frame."""
    stream.write(_PACK_LENGTH(len(body)) + body)
    stream.flush()


def _connect(s, path):
    if len(path.encode()) <= _MAX_SOCKET_PATH:
        s.connect(path)
        return
    # A deep directory: connect through /proc/self/fd/<dir>/<name>, which names it in few bytes.
    fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        s.connect(f"/proc/self/fd/{fd}/{os.path.basename(path)}")
    finally:
        os.close(fd)


def _recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("the kernel closed the socket")
        buf.extend(chunk)
    return bytes(buf)
