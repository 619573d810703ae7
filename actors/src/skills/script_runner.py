# The job runner of a warm script container (script_container.rs): PID 1 of the container,
# started as `python3 -I -S -B -c <this file>`; it reads one job per line on stdin (the kernel's
# attach stream) and answers one line on stdout per job. Every module is imported before the
# first job; -I keeps the script's directories and variables off sys.path.
import base64, ctypes, io, json, os, resource, runpy, select, signal, subprocess, sys, time
import atexit, site, threading, traceback

# No handler for any signal: the kernel delivers no signal sent from inside the container to its
# PID 1 unless a handler is installed (Python installs one for SIGINT).
signal.signal(signal.SIGINT, signal.SIG_DFL)
# Not dumpable: a script (same uid) cannot ptrace this process, read its memory or open its
# descriptors (the attach stream) through /proc/1.
if ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE, 0
    sys.exit(3)

MAX_STDOUT = int(sys.argv[1])
MAX_STDERR = int(sys.argv[2])
out = os.fdopen(1, "wb", buffering=0)
inp = os.fdopen(0, "rb", buffering=0)


def reply(obj):
    out.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_all(limit):
    """SIGKILL to every process but this one, until none is left (zombies reaped)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            reap()
            return True
        reap()
        time.sleep(0.0005)
    return False


SCRATCH = ("/tmp", "/dev/shm", "/dev/mqueue")


def remove_tree(top):
    """Removes everything below `top` without recursion (a tree thousands of levels deep is no
    RecursionError) and whatever the modes (a directory a script made 0500 is opened up
    first); never raises."""
    stack = [top]
    seen = 0
    while stack and seen < 2_000_000:
        seen += 1
        d = stack[-1]
        try:
            os.chmod(d, 0o700)
        except OSError:
            pass
        try:
            names = os.listdir(d)
        except OSError:
            names = []
        pushed = False
        for n in names:
            p = os.path.join(d, n)
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    stack.append(p)  # each directory is listed at most twice
                    pushed = True
                else:
                    os.unlink(p)
            except OSError:
                pass
        if not pushed:
            stack.pop()
            if d != top:
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def scratch():
    """Empties /tmp, /dev/shm and /dev/mqueue: like a host script's HOME, scratch that no
    script leaves to the next (and that escapes the disk budget). Answers whether the container
    is clean: those empty and no System V shared memory, semaphore or message queue left (they
    would outlive the script and hold the container's memory) — if not, the kernel removes the
    container and the next script gets a fresh one. Never raises."""
    for top in SCRATCH:
        try:
            remove_tree(top)
        except BaseException:
            pass
    try:
        for top in SCRATCH:
            if os.path.isdir(top) and os.listdir(top):
                return False
        for kind in ("shm", "sem", "msg"):
            with open("/proc/sysvipc/" + kind) as f:
                if len(f.read().splitlines()) > 1:
                    return False
    except BaseException:
        return False
    return True


class Forked:
    """A Python script run in a fork of this runner instead of a new interpreter: the fork
    starts with the modules already imported, so a warm script costs a fork, not an
    interpreter's start-up (tens of ms under the container's CPU share). The runner never runs
    script code itself, so every script starts from the same clean state; the child gets the
    search path a `python3 script.py` would have (the script's directory, PYTHONPATH, the site
    directories), the job's argv, stdin, limits and working directory, and only fds 0-2."""

    def __init__(self, argv, stdin, limits):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 127
            try:
                os.dup2(stdin, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.closerange(3, 1 << 16)
                # Dumpable again, as an exec'd interpreter would be (its /proc/self is its
                # own: /dev/stdin, /proc/self/fd); the runner itself stays not dumpable.
                ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)
                limits()
                os.chdir("/skill")
                code = child(argv)
            finally:
                os._exit(code)
        os.close(out_w)
        os.close(err_w)
        self.pid = pid
        self.stdout = os.fdopen(out_r, "rb", buffering=0)
        self.stderr = os.fdopen(err_r, "rb", buffering=0)


def child(argv):
    """In the fork: runs argv[1] as __main__ the way `python3 argv[1] argv[2:]` would."""
    script = argv[1]
    # Nothing of earlier jobs in this copy of the runner's memory: its last answer and input.
    for name in ("result", "line", "buf", "chunk"):
        globals()[name] = None
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "rb", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "wb", closefd=False), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "wb", closefd=False), encoding="utf-8", errors="backslashreplace",
        line_buffering=True)
    sys.argv = argv[1:]
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    sys.path[0:0] = [os.path.dirname(script)] + extra
    site.main()
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code & 0xFF
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException as e:
        # The traceback from the script's own frames on, as `python3 script.py` prints it.
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb or e.__traceback__)
        code = 1
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    return code


def run(job):
    stdin = os.memfd_create("stdin", 0)
    os.write(stdin, base64.b64decode(job["stdin"]))
    os.lseek(stdin, 0, os.SEEK_SET)
    fsize = max(1, int(job["fsize"]))

    def limits():
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    started = time.monotonic()
    argv = job["argv"]
    try:
        if job.get("fork") and argv[:1] == ["python3"] and len(argv) >= 2:
            child = Forked(argv, stdin, limits)
        else:
            child = subprocess.Popen(
                argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd="/skill", preexec_fn=limits, close_fds=True)
    finally:
        os.close(stdin)
    pidfd = os.pidfd_open(child.pid)
    fds = {child.stdout.fileno(): bytearray(), child.stderr.fileno(): bytearray()}
    stdout_fd = child.stdout.fileno()
    stderr_fd = child.stderr.fileno()
    truncated = False
    status = None
    deadline = started + job["timeout_ms"] / 1000.0
    watched = list(fds) + [pidfd]

    def take(fd):
        nonlocal truncated
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            return False
        buf = fds[fd]
        if fd == stdout_fd:
            room = MAX_STDOUT - len(buf)
            buf += data[: max(room, 0)]
            truncated |= len(data) > room
        else:
            buf += data
            if len(buf) > 2 * MAX_STDERR:
                del buf[: len(buf) - MAX_STDERR]
        return True

    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select(watched, [], [], left)
        for fd in ready:
            if fd == pidfd:
                _, st = os.waitpid(child.pid, 0)
                status = st
            elif not take(fd):
                watched.remove(fd)
    os.close(pidfd)
    timed_out = status is None
    # Nothing of the script outlives it: whatever it started (setsid, double fork, nohup) dies
    # now, before the answer; then the pipes hold what was written and end.
    clean = kill_all(2.0)
    clean = scratch() and clean
    for fd in list(fds):
        os.set_blocking(fd, False)
        while True:
            try:
                if not take(fd):
                    break
            except BlockingIOError:
                break
    child.stdout.close()
    child.stderr.close()
    if status is None:
        try:
            _, status = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            status = None
    code = None
    if status is not None and not timed_out and os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
    err = bytes(fds[stderr_fd])[-MAX_STDERR:]
    return {
        "id": job["id"],
        "exit_code": code,
        "timed_out": timed_out,
        "clean": clean,
        "duration_ms": int((time.monotonic() - started) * 1000),
        "stdout": base64.b64encode(bytes(fds[stdout_fd])).decode(),
        "stdout_truncated": truncated,
        "stderr": base64.b64encode(err).decode(),
    }


reply({"ready": True})
buf = b""
while True:
    chunk = inp.read(65536)
    if not chunk:
        break
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        try:
            job = json.loads(line)
            result = run(job)
        except Exception as e:  # a bad job or a failed spawn: answered, never fatal
            kill_all(2.0)
            result = {"id": None, "error": type(e).__name__ + ": " + str(e)[:200]}
            try:
                result["id"] = json.loads(line).get("id")
            except Exception:
                pass
        reply(result)
        # The answer leaves the runner's memory: the next script's fork cannot read it.
        result = job = line = None
