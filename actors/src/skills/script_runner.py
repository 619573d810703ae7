# The job runner of a warm script container (script_container.rs): PID 1 of the container,
# started as `python3 -I -S -B -c <this file>`; it reads one job per line on stdin (the kernel's
# attach stream) and answers one line on stdout per job. Every module is imported before the
# first job; -I keeps the script's directories and variables off sys.path.
import base64, ctypes, json, os, resource, select, shutil, signal, subprocess, sys, time

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


def scratch():
    """Empties /tmp and /dev/shm: like a host script's HOME, scratch that no script leaves to
    the next (and that escapes the disk budget)."""
    for top in ("/tmp", "/dev/shm"):
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass


def run(job):
    stdin = os.memfd_create("stdin", 0)
    os.write(stdin, base64.b64decode(job["stdin"]))
    os.lseek(stdin, 0, os.SEEK_SET)
    fsize = max(1, int(job["fsize"]))

    def limits():
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    started = time.monotonic()
    try:
        child = subprocess.Popen(
            job["argv"], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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
    scratch()
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
