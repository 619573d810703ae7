"""Unpacks npm tarballs into a node_modules tree without npm and without running package code.

Usage: python3 -I -S -B rumi_npm_install.py <input_dir> <target_dir>

<input_dir> holds the tarballs and `plan.json`: [{"file": "<tarball>", "name": "<package>"}],
written by the kernel, which chose each tarball and checked each name. Every tarball's entries
lie under one top-level directory (`package/` for `npm pack`); it is stripped and the rest goes
to <target>/node_modules/<name>/. This is what `npm install --ignore-scripts` would leave: no
lifecycle script (preinstall, install, postinstall, prepare) ever runs, no binary is linked.

Refused (the whole install): an entry that is absolute, holds `..`, a backslash or a NUL; a
symbolic or hard link, a device or a FIFO; two top-level directories in one tarball; more than
the caps. Each tarball's tar headers are read first, before `tarfile` sees it: `tarfile` reads a
GNU long-name/long-link record and a pax record whole, at the size its header declares, so a
record over MAX_META_RECORD bytes, a size in base-256, a pax `size` or sparse keyword, a damaged
header, or more than MAX_STREAM_BYTES decompressed (all tarballs) is refused there. Files are created with O_EXCL | O_NOFOLLOW under directories opened with O_NOFOLLOW in
a target the kernel created empty, so nothing is written outside it. Modes: directories 0755,
files 0644 (0755 when the archive marks them executable). Prints
{"installed": [{"name", "version"}]}; on refusal prints the reason on stderr and exits 2.

Stdlib only: it runs in the pack runtime image, which has python3 and node but no npm.
"""

import gzip
import json
import os
import re
import sys
import tarfile
import zlib

MAX_TARBALLS = 200
MAX_ENTRIES = 50_000
MAX_TOTAL_BYTES = 512 * 1024 * 1024
MAX_TARBALL_BYTES = 128 * 1024 * 1024
MAX_PLAN_BYTES = 1024 * 1024
# A GNU long-name/long-link or pax record (read whole into memory by tarfile).
MAX_META_RECORD = 64 * 1024
# Decompressed bytes of all tarballs: the files, their headers and padding.
MAX_STREAM_BYTES = MAX_TOTAL_BYTES + 128 * 1024 * 1024
BLOCK = 512
# Typeflags whose data tarfile reads whole: GNU long name, GNU long link, pax, pax global.
META_TYPES = {b"L": "a GNU long-name", b"K": "a GNU long-link", b"x": "a pax", b"g": "a global pax"}
NAME = re.compile(r"^(@[a-z0-9~][a-z0-9._~-]*/)?[a-z0-9~][a-z0-9._~-]*$")
FILE = re.compile(r"^[A-Za-z0-9._~+-]+\.tgz$")


class Refused(Exception):
    pass


def safe_parts(name):
    if not name or "\x00" in name or "\\" in name:
        raise Refused(f"entry {name[:120]!r} has a NUL or a backslash")
    if name.startswith("/"):
        raise Refused(f"entry {name[:120]!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Refused(f"entry {name[:120]!r} escapes the target (..)")
    return parts


def open_dirs(root_fd, parts):
    """A descriptor of root/parts..., each created (0755) if missing, never through a link."""
    fd = os.dup(root_fd)
    try:
        for d in parts:
            try:
                os.mkdir(d, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            nxt = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_full(f, n, budget, shown):
    """n bytes of the decompressed stream (fewer at its end), counted against the budget."""
    data = f.read(n)
    budget["stream"] += len(data)
    if budget["stream"] > MAX_STREAM_BYTES:
        raise Refused(f"the tarballs decompress to more than {MAX_STREAM_BYTES} bytes ({shown})")
    return data


def pax_keywords(buf, shown):
    """The keywords of a pax record ("<len> <keyword>=<value>\n"...), as tarfile reads them."""
    keywords = []
    pos = 0
    while pos < len(buf) and buf[pos] != 0:
        sp = buf.find(b" ", pos, pos + 24)
        if sp < 0 or not buf[pos:sp].isdigit():
            raise Refused(f"{shown} has a damaged pax record")
        length = int(buf[pos:sp])
        rec = buf[sp + 1:pos + length]
        if length <= sp - pos or pos + length > len(buf) or b"=" not in rec:
            raise Refused(f"{shown} has a damaged pax record")
        keywords.append(rec.split(b"=", 1)[0])
        pos += length
    return keywords


def check_headers(path, budget):
    """Reads the tar headers of a .tgz (skipping file data in 64 KiB chunks) and refuses what
    tarfile would read whole or could be misled by: see the module's description."""
    shown = os.path.basename(path)
    with gzip.open(path, "rb") as f:
        entry = 0
        while True:
            block = read_full(f, BLOCK, budget, shown)
            if len(block) < BLOCK or block == b"\0" * BLOCK:
                return  # where tarfile stops too
            entry += 1
            stored = block[148:156].split(b"\0", 1)[0].strip()
            sums = (256 + sum(block[:148]) + sum(block[156:]),
                    256 + sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]))
            try:
                ok = int(stored or b"x", 8) in sums
            except ValueError:
                ok = False
            if not ok:
                raise Refused(f"{shown}: header {entry} is damaged (its checksum does not match)")
            if block[124] in (0x80, 0xFF):
                raise Refused(f"{shown}: header {entry} declares a size in base-256 (8 GiB or more)")
            try:
                size = int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            except ValueError:
                raise Refused(f"{shown}: header {entry} has a bad size field") from None
            kind = block[156:157]
            if kind == b"S":
                raise Refused(f"{shown}: entry {entry} is a sparse file")
            padded = -(-size // BLOCK) * BLOCK
            if kind in META_TYPES:
                if size > MAX_META_RECORD:
                    raise Refused(f"{shown}: header {entry} is {META_TYPES[kind]} record of {size} bytes "
                                  f"(at most {MAX_META_RECORD})")
                data = read_full(f, padded, budget, shown)
                if len(data) < padded:
                    raise Refused(f"{shown} ends inside {META_TYPES[kind]} record")
                if kind in (b"x", b"g"):
                    for k in pax_keywords(data[:size], shown):
                        if k == b"size" or k.startswith(b"GNU.sparse"):
                            raise Refused(f"{shown}: a pax record sets {k.decode('ascii', 'replace')[:40]!r}, "
                                          "which is not accepted")
                continue
            left = padded
            while left > 0:
                got = read_full(f, min(left, 1 << 16), budget, shown)
                if not got:
                    raise Refused(f"{shown} ends inside an entry")
                left -= len(got)


def unpack(path, name, root_fd, budget):
    if os.path.getsize(path) > MAX_TARBALL_BYTES:
        raise Refused(f"{os.path.basename(path)} is larger than {MAX_TARBALL_BYTES} bytes")
    check_headers(path, budget)
    pkg_dir = open_dirs(root_fd, ["node_modules"] + name.split("/"))
    top = None
    version = ""
    entries = 0
    try:
        with tarfile.open(path, mode="r|gz") as tf:
            for m in tf:
                entries += 1
                budget["entries"] += 1
                if budget["entries"] > MAX_ENTRIES:
                    raise Refused(f"the tarballs hold more than {MAX_ENTRIES} entries")
                parts = safe_parts(m.name)
                if not parts:
                    continue
                if top is None:
                    top = parts[0]
                elif parts[0] != top:
                    raise Refused(f"{os.path.basename(path)} has more than one top-level directory")
                rest = parts[1:]
                if m.isdir():
                    if rest:
                        os.close(open_dirs(pkg_dir, rest))
                    continue
                if not m.isfile():
                    raise Refused(f"entry {m.name[:120]!r} is not a regular file (a link or a device)")
                if not rest:
                    raise Refused(f"entry {m.name[:120]!r} is a file at the top level")
                budget["bytes"] += m.size
                if budget["bytes"] > MAX_TOTAL_BYTES:
                    raise Refused(f"the tarballs unpack to more than {MAX_TOTAL_BYTES} bytes")
                dir_fd = open_dirs(pkg_dir, rest[:-1])
                try:
                    mode = 0o755 if m.mode & 0o111 else 0o644
                    fd = os.open(rest[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 mode, dir_fd=dir_fd)
                finally:
                    os.close(dir_fd)
                src = tf.extractfile(m)
                data_len = 0
                with os.fdopen(fd, "wb") as out:
                    while True:
                        chunk = src.read(1 << 16)
                        if not chunk:
                            break
                        data_len += len(chunk)
                        if data_len > m.size:
                            raise Refused(f"entry {m.name[:120]!r} is longer than it says")
                        out.write(chunk)
                if rest == ["package.json"] and m.size <= MAX_PLAN_BYTES:
                    try:
                        fd2 = os.open("package.json", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=pkg_dir)
                        with os.fdopen(fd2, "rb") as f:
                            meta = json.loads(f.read(MAX_PLAN_BYTES).decode("utf-8", "replace"))
                        version = str(meta.get("version", ""))[:64] if isinstance(meta, dict) else ""
                    except (ValueError, OSError):
                        version = ""
    finally:
        os.close(pkg_dir)
    if entries == 0:
        raise Refused(f"{os.path.basename(path)} is empty")
    return {"name": name, "version": version}


def install(input_dir, target):
    plan_path = os.path.join(input_dir, "plan.json")
    if os.path.getsize(plan_path) > MAX_PLAN_BYTES:
        raise Refused("the plan is too large")
    with open(plan_path, "rb") as f:
        plan = json.loads(f.read().decode("utf-8"))
    if not isinstance(plan, list) or len(plan) > MAX_TARBALLS:
        raise Refused(f"the plan is not a list of at most {MAX_TARBALLS} tarballs")
    seen = set()
    for item in plan:
        name, file = item.get("name", ""), item.get("file", "")
        if not NAME.match(name) or len(name) > 214:
            raise Refused(f"{name[:120]!r} is not a package name")
        if not FILE.match(file):
            raise Refused(f"{file[:120]!r} is not a tarball name")
        if name in seen:
            raise Refused(f"{name} is planned twice")
        seen.add(name)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    budget = {"entries": 0, "bytes": 0, "stream": 0}
    installed = []
    try:
        for item in plan:
            installed.append(unpack(os.path.join(input_dir, item["file"]), item["name"], root_fd, budget))
    finally:
        os.close(root_fd)
    return installed


def main(argv):
    if len(argv) != 3:
        print("usage: rumi_npm_install.py <input_dir> <target_dir>", file=sys.stderr)
        return 2
    os.umask(0o022)
    try:
        installed = install(argv[1], argv[2])
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except gzip.BadGzipFile as exc:
        print(f"refused: a tarball cannot be read (BadGzipFile: {str(exc)[:200]})", file=sys.stderr)
        return 2
    except OSError as exc:
        # strerror only: the message never carries a host path.
        print(f"refused: a file could not be read or written ({exc.strerror})", file=sys.stderr)
        return 2
    except (tarfile.TarError, EOFError, UnicodeError, ValueError, KeyError, AttributeError,
            zlib.error) as exc:
        print(f"refused: a tarball cannot be read ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
        return 2
    except MemoryError:
        print("refused: a tarball needs more memory than the unpacker may use", file=sys.stderr)
        return 2
    print(json.dumps({"installed": installed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
