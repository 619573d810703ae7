"""Rumi capability handler host: one warm worker per trusted third-party handler (contract §7.2).

The kernel starts `python3 -I -S -B rumi_handlerhost.py <handler dir>` with a scrubbed environment
and talks to it over stdin/stdout with the kernel's frames (a 4-byte big-endian length, then UTF-8
JSON). One request at a time:

    {"id": 1, "op": "load", "source": "<handler.py text>", "function": "execute"}
    {"id": 2, "op": "execute", "context": {...}, "args": {...}}

and one answer each:

    {"id": 2, "ok": true, "result": ...}
    {"id": 2, "ok": false, "error": "ValueError: bad", "error_type": "handler_error"}

Why the source comes in a frame instead of being read from disk here: the kernel hashed exactly
those bytes against the trusted SHA-256, so what runs is what was approved, even if the file is
swapped between the kernel's check and this process's start. The handler is compiled once; each
call is one function call (no module reload).

Why the descriptors are moved: a handler that prints must never corrupt the protocol, so the
protocol runs on duplicates of fds 0 and 1, fd 0 becomes /dev/null and fd 1 the process's stderr
(which the kernel logs in bounded lines).
"""

import json
import os
import struct
import sys
import types

# Under `python -I` the script's directory is not on sys.path; the shared framing lives there.
_HOST_DIR = os.path.dirname(os.path.abspath(__file__))
if _HOST_DIR not in sys.path:
    sys.path.insert(0, _HOST_DIR)

import rumi_wire  # noqa: E402 (after the path above)

MAX_FRAME = 8 * 1024 * 1024
MAX_RESULT_BYTES = 4 * 1024 * 1024
MAX_ERROR_CHARS = 2000


def _read_frame(stream):
    return rumi_wire.read_frame(stream, MAX_FRAME)


_write = rumi_wire.write_frame


def _describe(exc):
    text = str(exc)
    name = type(exc).__name__
    return (f"{name}: {text}" if text else name)[:MAX_ERROR_CHARS]


def _failure(rid, error):
    return {"id": rid, "ok": False, "error": error, "error_type": "handler_error"}


def main():
    handler_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    function = None
    while True:
        try:
            request = _read_frame(proto_in)
        except (ValueError, UnicodeDecodeError):
            return 2
        if request is None:
            return 0
        rid = request.get("id")
        op = request.get("op")
        if op == "load":
            try:
                module = types.ModuleType("rumi_handler")
                path = os.path.join(handler_dir, "handler.py")
                module.__file__ = path
                exec(compile(request["source"], path, "exec", dont_inherit=True), module.__dict__)
                function = getattr(module, request.get("function") or "execute", None)
                if not callable(function):
                    _write(proto_out, _failure(rid, "handler.py defines no %s(context, args) function" % (request.get("function") or "execute")))
                    continue
            except BaseException as exc:  # noqa: BLE001 - a handler may raise anything at import
                if isinstance(exc, KeyboardInterrupt):
                    raise
                _write(proto_out, _failure(rid, "loading handler.py failed: " + _describe(exc)))
                continue
            _write(proto_out, {"id": rid, "ok": True, "result": None})
        elif op == "execute":
            if function is None:
                _write(proto_out, _failure(rid, "the handler is not loaded"))
                continue
            try:
                result = function(request.get("context") or {}, request.get("args") or {})
            except BaseException as exc:  # noqa: BLE001 - SystemExit included: the worker stays
                if isinstance(exc, KeyboardInterrupt):
                    raise
                _write(proto_out, _failure(rid, _describe(exc)))
                continue
            try:
                encoded = json.dumps(result, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
            except (TypeError, ValueError, RecursionError) as exc:
                _write(proto_out, _failure(rid, "execute() returned a value that is not JSON: " + _describe(exc)))
                continue
            if len(encoded) > MAX_RESULT_BYTES:
                _write(proto_out, _failure(rid, "execute() returned %d bytes; the limit is %d" % (len(encoded), MAX_RESULT_BYTES)))
                continue
            # The result is already encoded: splice it in rather than encoding it twice.
            body = b'{"id":' + json.dumps(rid).encode("ascii") + b',"ok":true,"result":' + encoded + b"}"
            proto_out.write(struct.pack(">I", len(body)) + body)
            proto_out.flush()
        elif op == "ping":
            _write(proto_out, {"id": rid, "ok": True, "result": None})
        else:
            _write(proto_out, _failure(rid, "unknown op"))


if __name__ == "__main__":
    sys.exit(main())
