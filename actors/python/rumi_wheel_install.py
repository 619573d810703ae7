"""Installs wheels into a site-packages directory without pip and without running package code.

Usage: python3 -I -S -B rumi_wheel_install.py <wheels_dir> <target_dir>

A wheel is a zip archive: its files go into the target as they are, its `<name>.data/purelib/`
and `.data/platlib/` trees too (`.data/scripts`, `headers` and `data` are skipped: a pack's
blocks import packages, they run no console scripts). Every wheel is checked whole before
anything is written: an entry that is absolute, holds `..`, a backslash, a drive or a NUL, a
symlink entry, two entries writing one path, or more than the caps, refuses the install. Files
are created with O_EXCL | O_NOFOLLOW in a directory the kernel created empty, so nothing can be
written outside it. Prints {"installed": [{"name", "version"}]} on success; on refusal prints
the reason on stderr and exits 2.

Stdlib only: it runs in the pack runtime image, which has python3 and no pip.
"""

import base64
import hashlib
import json
import os
import stat
import sys
import zipfile

MAX_WHEELS = 500
MAX_ENTRIES = 50_000
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_WHEEL_FILE_BYTES = 512 * 1024 * 1024
MAX_META_BYTES = 1024 * 1024
SKIPPED_DATA = ("scripts", "headers", "data")


class Refused(Exception):
    pass


def safe_parts(name):
    if not name or "\x00" in name or "\\" in name:
        raise Refused(f"entry {name[:120]!r} has a NUL or a backslash")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise Refused(f"entry {name[:120]!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Refused(f"entry {name[:120]!r} escapes the target (..)")
    return parts


def plan_wheel(path):
    """[(target parts, ZipInfo, executable)], (name, version), the dist-info dir name."""
    if os.path.getsize(path) > MAX_WHEEL_FILE_BYTES:
        raise Refused(f"{os.path.basename(path)} is larger than {MAX_WHEEL_FILE_BYTES} bytes")
    # The entry count is read from the end record before zipfile builds its list, so a central
    # directory claiming millions of entries is refused without the memory for them.
    with open(path, "rb") as f:
        end = getattr(zipfile, "_EndRecData", lambda _f: None)(f)
    if end is not None and end[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)] > MAX_ENTRIES:
        raise Refused(f"{os.path.basename(path)} has more than {MAX_ENTRIES} entries")
    zf = zipfile.ZipFile(path)
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise Refused(f"{os.path.basename(path)} has more than {MAX_ENTRIES} entries")
    dist_infos = {n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info")}
    if len(dist_infos) != 1:
        raise Refused(f"{os.path.basename(path)} must hold exactly one .dist-info directory")
    dist_info = dist_infos.pop()
    data_dir = dist_info[: -len(".dist-info")] + ".data"
    for meta in ("/WHEEL", "/METADATA"):
        try:
            if zf.getinfo(dist_info + meta).file_size > MAX_META_BYTES:
                raise Refused(f"{os.path.basename(path)}: {dist_info}{meta} is larger than {MAX_META_BYTES} bytes")
        except KeyError:
            pass
    try:
        wheel_meta = zf.read(dist_info + "/WHEEL").decode("utf-8", "replace")
        metadata = zf.read(dist_info + "/METADATA").decode("utf-8", "replace")
    except KeyError:
        raise Refused(f"{os.path.basename(path)} lacks {dist_info}/WHEEL or METADATA")
    version_line = [l for l in wheel_meta.splitlines() if l.startswith("Wheel-Version:")]
    if not version_line or not version_line[0].split(":", 1)[1].strip().startswith("1."):
        raise Refused(f"{os.path.basename(path)}: unsupported Wheel-Version")
    fields = {}
    for line in metadata.splitlines():
        if not line.strip():
            break
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip().lower(), v.strip())
    name, version = fields.get("name", ""), fields.get("version", "")
    if not name or not version:
        raise Refused(f"{os.path.basename(path)}: METADATA has no Name or Version")
    plan = []
    for info in infos:
        parts = safe_parts(info.filename)
        if info.is_dir() or not parts:
            continue
        mode = (info.external_attr >> 16) & 0xFFFF
        if mode and not (stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0):
            raise Refused(f"entry {info.filename[:120]!r} is not a regular file (a link or device)")
        if parts[0] == data_dir:
            if len(parts) < 3:
                continue
            if parts[1] in ("purelib", "platlib"):
                parts = parts[2:]
            elif parts[1] in SKIPPED_DATA:
                continue
            else:
                raise Refused(f"entry {info.filename[:120]!r}: unknown .data scheme")
        if parts[-1] in ("RECORD", "INSTALLER") and parts[0] == dist_info and len(parts) == 2:
            continue  # written by us
        plan.append((parts, info, bool(mode & 0o111)))
    return zf, plan, (name, version), dist_info


def record_line(rel, digest, size):
    return f"{rel},sha256={digest},{size}"


def install(wheels_dir, target):
    wheels = sorted(n for n in os.listdir(wheels_dir) if n.endswith(".whl"))
    others = sorted(n for n in os.listdir(wheels_dir) if not n.endswith(".whl"))
    if others:
        raise Refused(f"the download holds files that are not wheels ({others[0][:120]!r}); sdists are never built")
    if len(wheels) > MAX_WHEELS:
        raise Refused(f"more than {MAX_WHEELS} wheels")
    plans = []
    claimed = {}
    for w in wheels:
        zf, plan, dist, dist_info = plan_wheel(os.path.join(wheels_dir, w))
        for parts, _info, _x in plan:
            key = "/".join(parts)
            if key in claimed:
                raise Refused(f"{key[:120]!r} is shipped twice ({claimed[key]} and {w})")
            claimed[key] = w
        plans.append((zf, plan, dist, dist_info))
    # Nothing was written yet: every wheel passed its checks.
    total = 0
    installed = []
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    for zf, plan, dist, dist_info in plans:
        records = []
        for parts, info, executable in plan:
            dir_fd = os.dup(root_fd)
            try:
                for d in parts[:-1]:
                    try:
                        os.mkdir(d, 0o755, dir_fd=dir_fd)
                    except FileExistsError:
                        pass
                    nxt = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                    os.close(dir_fd)
                    dir_fd = nxt
                fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             0o755 if executable else 0o644, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                while True:
                    chunk = src.read(1 << 16)
                    if not chunk:
                        break
                    size += len(chunk)
                    total += len(chunk)
                    if total > MAX_TOTAL_BYTES:
                        raise Refused(f"the wheels unpack to more than {MAX_TOTAL_BYTES} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            b64 = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
            records.append(record_line("/".join(parts), b64, size))
        di_fd = os.open(dist_info, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
        try:
            for name, text in (("INSTALLER", "rumi\n"),):
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=di_fd)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
            records.append(f"{dist_info}/INSTALLER,,")
            records.append(f"{dist_info}/RECORD,,")
            fd = os.open("RECORD", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=di_fd)
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(records) + "\n")
        finally:
            os.close(di_fd)
        installed.append({"name": dist[0], "version": dist[1]})
    os.close(root_fd)
    return installed


def main(argv):
    if len(argv) != 3:
        print("usage: rumi_wheel_install.py <wheels_dir> <target_dir>", file=sys.stderr)
        return 2
    os.umask(0o022)
    try:
        installed = install(argv[1], argv[2])
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # strerror only: the message never carries a host path.
        print(f"refused: a file could not be read or written ({exc.strerror})", file=sys.stderr)
        return 2
    except (zipfile.BadZipFile, UnicodeError, ValueError, KeyError) as exc:
        print(f"refused: a wheel cannot be read ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
        return 2
    print(json.dumps({"installed": installed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
