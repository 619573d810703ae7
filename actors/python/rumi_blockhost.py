"""Rumi block host: runs one pack's blocks inside its worker (a host process or a container).

The kernel talks to this process over a private channel with frames of a 4-byte big-endian length
followed by UTF-8 JSON: duplicates of stdin/stdout for a host worker, or, in a pack's container
(`--connect /run/rumi/host.sock`), a Unix socket the kernel listens on. One request at a time:

    {"id": 7, "op": "call", "file": "blocks/hello.py", "input": ..., "context": {...}}
    {"id": 8, "op": "ping"}

A call may name its `entry` (default "run"): "run" calls `run(input, context)` (a block),
"setup" calls `setup(context)` (a component's setup.py), "convert" calls `convert(input,
context)` (a converter), "lib" calls `run(context)` (a lib script, in a throw-away worker).

and one answer each:

    {"id": 7, "ok": true, "result": ..., "log": "what the block printed"}
    {"id": 7, "ok": false, "error": "ValueError: bad", "error_type": "block_error", "log": "..."}

In a container a reply also carries `"strays": n` when the block left n processes running; the
kernel then replaces the container. In a host worker (which the kernel makes the child subreaper
of everything it starts) the host kills and reaps whatever the block left running before it
answers, and says so in the log. A child forked by a block loses the channel at fork time and
exits when it returns into the host, so it can never answer in the host's name.

Why the descriptors are moved: a block that prints (or writes to fd 1 directly) must never corrupt
the protocol, and a block that reads stdin must not steal the kernel's next request. So the
protocol runs on duplicates of fds 0 and 1, fd 0 becomes /dev/null, fd 1 becomes the process's
stderr (which the kernel logs), and sys.stdout / sys.stderr are swapped for a bounded buffer
during each call, whose text goes to the run log and never into the result.
"""

from __future__ import annotations

# Imports are kept few and cheap on purpose: a worker's cold start is on the path of a pack's
# first call (and of the kernel's start-up target), so `inspect`, `importlib.util`, `traceback`
# and `typing` are avoided or imported only where needed.
import io
import json
import os
import sys
import time
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Tuple

HOST_DIR = os.path.dirname(os.path.abspath(__file__))
# Under `python -I` the script's directory is not on sys.path; the pack-facing modules live here.
if HOST_DIR not in sys.path:
    sys.path.insert(0, HOST_DIR)

import rumi_wire  # noqa: E402 (after the path above)

MAX_FRAME = 64 * 1024 * 1024
MAX_LOG_CHARS = 16 * 1024
MAX_RESULT_BYTES = int(os.environ.get("RUMI_MAX_RESULT_BYTES", str(4 * 1024 * 1024)))
# The deepest result a block may return (a list or dict is one level). The kernel's JSON parser
# stops at 128 levels and the reply adds one, so a deeper result would read as a broken reply and
# cost the pack its worker; it is refused here as `invalid_result` instead, with room to spare.
MAX_RESULT_DEPTH = 100
# The kernel reads numbers as 64-bit integers or doubles: a larger integer would not parse.
_MAX_NUMBER = 10**308


class BoundedLog(io.TextIOBase):
    """A text sink that keeps at most MAX_LOG_CHARS characters and notes the truncation."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0
        self.truncated = False

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            s = str(s)
        room = MAX_LOG_CHARS - self._size
        if room <= 0:
            self.truncated = self.truncated or bool(s)
            return len(s)
        if len(s) > room:
            self._parts.append(s[:room])
            self._size += room
            self.truncated = True
        else:
            self._parts.append(s)
            self._size += len(s)
        return len(s)

    def text(self) -> str:
        out = "".join(self._parts)
        return out + ("\n[log truncated]" if self.truncated else "")


def read_frame(stream) -> Optional[Any]:
    return rumi_wire.read_frame(stream, MAX_FRAME)


write_frame = rumi_wire.write_frame

# The key under which a successful call's reply holds its result already encoded (UTF-8 JSON).
RESULT_BYTES = "_result_bytes"
# The kernel reads a reply of at most the result limit plus 64 KiB: everything but the result (the
# log above all, whose control characters are escaped six-fold) must fit in less.
MAX_ENVELOPE_BYTES = 48 * 1024


def reply_body(reply: Dict[str, Any]) -> bytes:
    """The frame body of `reply`: the encoded result spliced in as `"result"`, the rest (flat:
    ok, log, error, id, strays) encoded here and cut to MAX_ENVELOPE_BYTES. Raises ValueError for
    a log no UTF-8 can carry."""
    encoded = reply.pop(RESULT_BYTES, None)
    if encoded is not None and len(reply) == 3 and reply.get("ok") is True and reply.get("log") == "" and type(reply.get("id")) is int:
        # The common reply (ok, no log, the kernel's integer id): the envelope written directly.
        return b'{"result":' + encoded + b',"ok":true,"log":"","id":' + str(reply["id"]).encode() + b"}"
    rest = rumi_wire.encode_strict(reply).encode("utf-8")
    if len(rest) > MAX_ENVELOPE_BYTES:
        rest = _shrunk(reply)
    if encoded is None:
        return rest
    return b'{"result":' + encoded + b"," + rest[1:]


def _shrunk(reply: Dict[str, Any]) -> bytes:
    """`reply` encoded within MAX_ENVELOPE_BYTES: its log (then its error) halved until it fits."""
    for key in ("log", "error"):
        text = reply.get(key)
        if not isinstance(text, str):
            continue
        keep = len(text)
        while keep > 0:
            keep //= 2
            reply[key] = text[:keep] + f"\n[{key} truncated]"
            rest = rumi_wire.encode_strict(reply).encode("utf-8")
            if len(rest) <= MAX_ENVELOPE_BYTES:
                return rest
    return rumi_wire.encode_strict(reply).encode("utf-8")


# entry → (the function called, its signature for error messages)
ENTRIES = {
    "run": ("run", "run(input_data, context=None)"),
    "setup": ("setup", "setup(context=None)"),
    "convert": ("convert", "convert(data, context=None)"),
    "lib": ("run", "run(context)"),
}


class BlockHost:
    """Loads block files (cached by path, size and mtime) and calls their `run`."""

    def __init__(self, pack_root: str) -> None:
        self.pack_root = os.path.realpath(pack_root)
        # Put back after every call: a block that raised it must not let a deep (or hidden
        # self-referencing) result overflow the C stack while the host encodes it.
        self.recursion_limit = sys.getrecursionlimit()
        self._cache: Dict[str, Tuple[Tuple[int, int], Callable[..., Any], int, str]] = {}
        # Appended, not prepended: a pack file named like a kernel module (rumi_syscall.py) must
        # not shadow it; the pack's own modules stay importable.
        if self.pack_root not in sys.path:
            sys.path.append(self.pack_root)

    def _load(self, rel: str, entry: str = "run") -> Tuple[Callable[..., Any], int]:
        cache_key = entry + "\0" + rel
        cached = self._cache.get(cache_key)
        # The file is looked at on every call (a changed one is loaded again); its path is kept.
        path = cached[3] if cached is not None else os.path.join(self.pack_root, rel)
        st = os.stat(path)
        key = (st.st_size, st.st_mtime_ns)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        name = "rumi_block_" + "".join(c if c.isalnum() else "_" for c in rel)
        with open(path, "rb") as f:
            source = f.read()
        module = types.ModuleType(name)
        module.__file__ = path
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
        name, signature = ENTRIES[entry]
        run = getattr(module, name, None)
        if not callable(run):
            raise AttributeError(f"{rel} defines no {signature} function")
        arity = _positional_arity(run)
        self._cache[cache_key] = (key, run, arity, path)
        return run, arity

    def call(self, request: Dict[str, Any]) -> Dict[str, Any]:
        log = BoundedLog()
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        try:
            entry = request.get("entry") or "run"
            if entry not in ENTRIES:
                raise ValueError(f"unknown entry {entry!r}")
            run, arity = self._load(request["file"], entry)
            context = _make_context(request.get("context") or {})
            if entry in ("setup", "lib"):
                # setup(context=None) / run(context): the context is the only argument.
                result = run(context) if arity >= 1 else run()
            elif arity >= 2:
                result = run(request.get("input"), context)
            else:
                result = run(request.get("input"))
        except BaseException as exc:  # noqa: BLE001 - a block may raise anything, SystemExit included
            sys.stdout, sys.stderr = saved
            log.write(_relative_traceback(self.pack_root))
            if isinstance(exc, KeyboardInterrupt):
                raise
            return {"ok": False, "error": _describe(exc), "error_type": "block_error", "log": log.text()}
        finally:
            sys.stdout, sys.stderr = saved
            sys.setrecursionlimit(self.recursion_limit)
        problem = _unreadable(result)
        if problem is not None:
            return {"ok": False, "error": f"the entry returned a value the kernel cannot read: {problem}", "error_type": "invalid_result", "log": log.text()}
        try:
            # Encoded once (its depth was just bounded): the reply carries these very bytes.
            encoded = rumi_wire.encode_strict(result).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            return {"ok": False, "error": f"the entry returned a value that is not JSON: {exc}", "error_type": "invalid_result", "log": log.text()}
        if len(encoded) > MAX_RESULT_BYTES:
            return {"ok": False, "error": f"run() returned {len(encoded)} bytes; the limit is {MAX_RESULT_BYTES}", "error_type": "invalid_result", "log": log.text()}
        return {"ok": True, RESULT_BYTES: encoded, "log": log.text()}


def _unreadable(value: Any) -> Optional[str]:
    """Why the kernel could not read `value` as JSON (nesting past MAX_RESULT_DEPTH, an integer
    past the range of a double), or None. Iterative, so a deep value cannot exhaust the host's own
    stack, and it stops at the limit, so a value that contains itself ends here too."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, (list, tuple)):
            children = v
        else:
            if isinstance(v, int) and not -_MAX_NUMBER < v < _MAX_NUMBER:
                return "an integer with more than 308 digits; return it as a string"
            continue
        if depth > MAX_RESULT_DEPTH:
            return f"it is nested deeper than {MAX_RESULT_DEPTH} levels; return flatter data"
        for child in children:
            if isinstance(child, (dict, list, tuple, int)):
                stack.append((child, depth + 1))
    return None


def _positional_arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments `run` takes (2 when it accepts *args or is not a plain
    function)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return 2
    if code.co_flags & 0x04:  # CO_VARARGS
        return 2
    count = code.co_argcount
    return count - 1 if isinstance(fn, types.MethodType) else count


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}"[:2000] if text else name


def _relative_traceback(root: str) -> str:
    """The block's part of the traceback, with the pack root removed, so no host path travels
    with it (the host's own frames are dropped)."""
    import traceback

    _, exc, tb = sys.exc_info()
    frames = [f for f in traceback.extract_tb(tb, limit=30) if not f.filename.startswith(HOST_DIR)]
    text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    text += "".join(traceback.format_exception_only(type(exc), exc)) if exc is not None else ""
    return text.replace(root + os.sep, "").replace(root, ".")


def _network_check(domain: str, port: int = 443) -> Dict[str, Any]:
    """context["network_check"]: the real grant check (see rumi_syscall.network_check)."""
    import rumi_syscall

    return dict(rumi_syscall.network_check(domain, port))


def _http_request(method: str, url: str, headers: Optional[Dict[str, str]] = None, body: Any = None, timeout_seconds: float = 30.0) -> Dict[str, Any]:
    """context["http_request"]: one request through the egress proxy (see rumi_syscall)."""
    import rumi_syscall

    return dict(rumi_syscall.http_request(method, url, headers=headers, body=body, timeout_seconds=timeout_seconds))


def _make_context(fields: Dict[str, Any]) -> Dict[str, Any]:
    context = dict(fields)
    context["network_check"] = _network_check
    context["http_request"] = _http_request
    return context


class _SocketWriter:
    """A socket's sending side with the file interface write_frame uses (sendall: never short)."""

    def __init__(self, sock) -> None:
        self._sock = sock

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def flush(self) -> None:
        pass


def _count_strays() -> int:
    """Processes in the container besides init (pid 1) and this host: whatever a block forked and
    left running. Only meaningful in a container, whose pid namespace holds nothing else."""
    me = os.getpid()
    try:
        return sum(1 for name in os.listdir("/proc") if name.isdigit() and int(name) not in (1, me))
    except OSError:
        return 0


def _become_subreaper() -> bool:
    """Makes this host the reaper of every orphan below it (PR_SET_CHILD_SUBREAPER), so whatever a
    block starts stays its descendant, however detached. False where that cannot be done."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except Exception:  # noqa: BLE001 - no ctypes, no prctl: the slow check stays
        return False


def _strays_in_container(subreaper: bool) -> int:
    """What _count_strays counts, without listing /proc when it cannot be anything: nothing in the
    container but init and this host's descendants runs (the kernel never execs into it), and as
    a subreaper this host has every descendant as a child, so a host with no child at all (asked
    without reaping: a zombie still counts) has no stray. The listing costs ~14 µs a call."""
    if subreaper:
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return 0
        except OSError:
            pass
    return _count_strays()


def _processes() -> list:
    """(pid, ppid, state) of every process, from /proc. The command name may hold spaces and
    parentheses, so fields are counted from the last ')'."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/" + name + "/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2 :].split(b" ", 2)
            out.append((int(name), int(fields[1]), fields[0]))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _kill_leftovers(me: int) -> int:
    """Kills and reaps every process under this host worker; returns how many were running.

    Stops: processes a block leaves running past its call (a forked child that never returns, a
    `start_new_session=True` child outside the worker's process group, a double fork's
    grandchild). The kernel makes the worker their child subreaper before Python starts, so all of
    them are under it, however detached. Each is sent SIGKILL as soon as a walk finds it (its own
    children then come to the host, their reaper, and the next walk finds them), and walks repeat
    until nothing new appears and all found are dead, so nothing forks past the walk; the host
    reaps them, so none is left even as a zombie. Killing at once, rather than stopping all and
    killing at the end, means a host killed in the middle of this (its kernel gone) never leaves a
    process stopped forever. A host with no child at all (every call that started nothing) costs
    one waitpid."""
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break  # a child still runs
    except ChildProcessError:
        return 0
    import signal

    deadline = time.monotonic() + 1.0
    found: Dict[int, bool] = {}
    unkillable = set()
    while True:
        procs = _processes()
        children: Dict[int, list] = {}
        state = {}
        for pid, ppid, st in procs:
            children.setdefault(ppid, []).append(pid)
            state[pid] = st
        tree, todo = [], list(children.get(me, ()))
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        new = [pid for pid in tree if pid not in found]
        for pid in new:
            found[pid] = state.get(pid) not in (b"Z", b"X")
            try:
                os.kill(pid, signal.SIGKILL)
            except PermissionError:
                unkillable.add(pid)  # another user's process: it will not die, do not wait
            except OSError:
                pass
        if not new and all(state.get(pid) in (b"Z", b"X") or pid in unkillable for pid in tree):
            break
        if time.monotonic() > deadline:
            break
        if not new:
            time.sleep(0.0002)  # killed processes die when next scheduled
    # The killed children, and grandchildren re-parented here as their parents died.
    while time.monotonic() < deadline + 1.0:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            # Only processes that cannot be killed may remain: do not wait for them.
            if all(p in unkillable or not os.path.exists("/proc/%d" % p) for p in found):
                break
            time.sleep(0.0005)
    return sum(found.values())


def _parse_args(argv: list) -> Tuple[Optional[str], str]:
    connect = None
    rest = []
    i = 0
    while i < len(argv):
        if argv[i] == "--connect" and i + 1 < len(argv):
            connect = argv[i + 1]
            i += 2
            continue
        rest.append(argv[i])
        i += 1
    return connect, (rest[0] if rest else "/pack")


def main() -> int:
    connect, pack_root = _parse_args(sys.argv[1:])
    host_pid = os.getpid()
    if connect is None:
        # A host worker: the protocol runs on duplicates of stdin/stdout.
        # Buffered: a request's length and body arrive with one read.
        proto_in = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
        proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
        channel_fds = [proto_in.fileno(), proto_out.fileno()]
    else:
        # In a container: the kernel listens on the pack's socket directory, mounted read-only.
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(connect)
        proto_in = sock.makefile("rb", buffering=1 << 16)
        proto_out = _SocketWriter(sock)
        channel_fds = [sock.fileno()]
    subreaper = connect is not None and _become_subreaper()

    def _forked_child() -> None:
        # A block that forks must not be able to speak for the host: the child loses the channel.
        for fd in channel_fds:
            try:
                os.close(fd)
            except OSError:
                pass

    os.register_at_fork(after_in_child=_forked_child)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull, "r")
    sys.stdout = sys.stderr
    # The pack's pip packages: /pip-packages in a container, RUMI_PIP_PACKAGES in a host worker.
    for pip_dir in ("/pip-packages", os.environ.get("RUMI_PIP_PACKAGES", "")):
        if pip_dir and os.path.isdir(pip_dir) and pip_dir not in sys.path:
            sys.path.append(pip_dir)
    host = BlockHost(pack_root)
    while True:
        try:
            request = read_frame(proto_in)
        except (ValueError, UnicodeDecodeError) as exc:
            write_frame(proto_out, {"id": None, "ok": False, "error": f"protocol error: {exc}", "error_type": "protocol_error"})
            return 2
        if request is None:
            return 0
        op = request.get("op")
        if op == "ping":
            reply = {"ok": True, "result": {"pong": True, "pid": os.getpid(), "ts": time.time()}}
        elif op == "call":
            reply = host.call(request)
            if os.getpid() != host_pid:
                # A forked child returned from the block: it has no channel and must not go on.
                os._exit(0)
            if connect is not None:
                strays = _strays_in_container(subreaper)
                if strays:
                    reply["strays"] = strays
            else:
                killed = _kill_leftovers(host_pid)
                if killed:
                    reply["log"] = (reply.get("log") or "") + f"\n[rumi: killed {killed} process(es) the block left running]"
        else:
            reply = {"ok": False, "error": f"unknown op {op!r}", "error_type": "protocol_error"}
        reply["id"] = request.get("id")
        try:
            body = reply_body(reply)
        except (TypeError, ValueError, RecursionError) as exc:
            body = rumi_wire.encode_strict({"id": request.get("id"), "ok": False, "error": f"result not serialisable: {exc}", "error_type": "invalid_result"}).encode("utf-8", "backslashreplace")
        rumi_wire.write_body(proto_out, body)


if __name__ == "__main__":
    sys.exit(main())
