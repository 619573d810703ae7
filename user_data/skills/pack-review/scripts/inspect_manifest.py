#!/usr/bin/env python3
"""Mechanical checks of a Rumi pack for the pack-review skill (Python standard library only).

stdin: JSON {"manifest": {...ecosystem.json...}, "files": ["backend/ecosystem.json", ...],
             "dir_name": "my_pack" (optional), "contents": {"<path>": "<text>", ...} (optional)}
stdout: JSON {"findings": [{"severity": "error|warning|info", "check": ..., "message": ...}],
              "summary": {...}}

Exit 0 whenever the input is usable, whatever the findings. Exit 2 with one line on stderr (and
nothing on stdout) only when stdin is not such a JSON object. The rules mirror what the kernel
enforces (docs/pack-authors.md): a finding marked "error" is something the kernel refuses or a
reviewer must not approve.
"""

import json
import re
import sys

# Caps: the input comes from outside, so every loop and every echoed string is bounded.
MAX_INPUT_BYTES = 8 * 1024 * 1024
MAX_FILES = 20000  # the kernel's own limit on files per pack
MAX_FINDINGS = 200
MAX_SHOWN = 120  # characters of a path or line echoed in a message

PACK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # what the kernel accepts
PACK_ID_STRICT = re.compile(r"^[a-z0-9_]{1,64}$")  # the house style for new packs
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
PIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9.+!_-]+$")
KNOWN_KEYS = {
    "pack_id", "pack_identity", "version", "description",
    "pack_identity_vocabulary", "connectivity", "load_order",
}
SECRET_NAMES = {"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".netrc", ".pypirc", ".npmrc",
                "credentials", "credentials.json", "secrets.json", "secrets.yaml", "secrets.yml"}
SECRET_SUFFIXES = (".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".ppk")
JUNK_PARTS = {".git", "__pycache__", ".venv", "venv", "node_modules", ".idea", ".vscode", ".DS_Store"}
# Direct network use a block cannot rely on: strict-mode containers have no network.
NET_IMPORT = re.compile(
    r"^\s*(import|from)\s+(socket|requests|httpx|aiohttp|urllib3|urllib\.request|http\.client)\b",
    re.M,
)
SECRET_TEXT = re.compile(
    r"(-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{36}|sk-[A-Za-z0-9]{20,}"
    r"|xox[baprs]-[A-Za-z0-9-]{10,})"
)
FLOW_FILE = re.compile(r"^\s*(?:-\s+)?file:\s*[\"']?([^\"'#\s]+)", re.M)
FLOW_OWNER = re.compile(r"^\s*(?:-\s+)?owner_pack:\s*[\"']?([^\"'#\s]+)", re.M)


def shown(s):
    """A value safe to echo into a Markdown table: bounded, one line, no pipes or backticks, and
    no `](` or `{{` (the runtime's validation would read them as a link or a placeholder)."""
    s = str(s).replace("\n", " ").replace("|", "/").replace("`", "'")
    s = s.replace("](", "] (").replace("{{", "{ {").replace("}}", "} }")
    return s if len(s) <= MAX_SHOWN else s[:MAX_SHOWN] + "…"


class Report:
    def __init__(self):
        self.findings = []
        self.dropped = 0

    def add(self, severity, check, message):
        if len(self.findings) >= MAX_FINDINGS:
            self.dropped += 1
            return
        self.findings.append({"severity": severity, "check": check, "message": message})


def fail(message):
    print(f"inspect_manifest: {message}", file=sys.stderr)
    sys.exit(2)


def load_input():
    raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    if len(raw) > MAX_INPUT_BYTES:
        fail(f"input is over {MAX_INPUT_BYTES} bytes; send the manifest and the file list only")
    if not raw.strip():
        fail('no input: send JSON {"manifest": {...}, "files": [...]} on stdin')
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        fail(f"input is not JSON ({e}); send {{\"manifest\": {{...}}, \"files\": [...]}}")
    if not isinstance(data, dict):
        fail('input must be a JSON object {"manifest": {...}, "files": [...]}')
    manifest = data.get("manifest")
    if not isinstance(manifest, dict):
        fail('"manifest" must be the ecosystem.json object')
    files = data.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        fail('"files" must be a list of paths relative to the pack directory')
    if len(files) > MAX_FILES:
        fail(f"more than {MAX_FILES} files: the kernel refuses such a pack anyway")
    contents = data.get("contents", {})
    if not isinstance(contents, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in contents.items()
    ):
        fail('"contents" must map paths to their text')
    dir_name = data.get("dir_name")
    if dir_name is not None and not isinstance(dir_name, str):
        fail('"dir_name" must be a string')
    files = [rel(f) for f in files]
    contents = {rel(k): v for k, v in contents.items()}
    return manifest, files, contents, dir_name


def rel(path):
    """A path as the pack lists it: surrounding spaces and leading `./` removed."""
    path = path.strip()
    while path.startswith("./"):
        path = path[2:]
    return path


def subdir_prefix(files):
    """The pack subdir as the kernel picks it: backend/ when it exists, else the top."""
    return "backend/" if any(f.startswith("backend/") for f in files) else ""


def check_manifest(m, dir_name, r):
    for key in ("pack_id", "pack_identity"):
        v = m.get(key)
        if not isinstance(v, str) or not v.strip():
            r.add("error", "required_keys", f"ecosystem.json needs a non-empty string `{key}`")
    for key in ("version", "description"):
        if key not in m:
            r.add("warning", "recommended_keys",
                  f"ecosystem.json has no `{key}`: operators see it when they approve")
        elif not isinstance(m[key], str):
            r.add("error", "types", f"`{key}` must be a string")
    pid = m.get("pack_id")
    if isinstance(pid, str) and pid:
        if not PACK_ID.match(pid):
            r.add("error", "pack_id", f"pack_id `{shown(pid)}` is not `^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$`: the kernel refuses it")
        elif not PACK_ID_STRICT.match(pid):
            r.add("warning", "pack_id", f"pack_id `{shown(pid)}` is accepted, but new packs use `^[a-z0-9_]{{1,64}}$` (lowercase, digits, _)")
        if dir_name is not None and dir_name != pid:
            r.add("error", "pack_id", f"pack_id `{shown(pid)}` differs from the directory name `{shown(dir_name)}`")
    ver = m.get("version")
    if isinstance(ver, str) and not SEMVER.match(ver):
        r.add("warning", "version", f"version `{shown(ver)}` is not semantic versioning (MAJOR.MINOR.PATCH)")
    vocab = m.get("pack_identity_vocabulary")
    if vocab is not None and not (isinstance(vocab, list) and all(isinstance(x, str) for x in vocab)):
        r.add("error", "types", "`pack_identity_vocabulary` must be a list of strings")
    conn = m.get("connectivity")
    if conn is not None:
        ok = isinstance(conn, dict) and all(
            isinstance(conn.get(k, []), list) and len(conn.get(k, [])) <= 64
            and all(isinstance(s, str) and 1 <= len(s) <= 128 for s in conn.get(k, []))
            for k in ("provides", "requires")
        )
        if not ok:
            r.add("error", "types", "`connectivity` must be {provides: [..], requires: [..]}, at most 64 names of 1-128 characters each")
    lo = m.get("load_order")
    if lo is not None and (not isinstance(lo, int) or isinstance(lo, bool)):
        r.add("error", "types", "`load_order` must be an integer")
    unknown = sorted(k for k in m if k not in KNOWN_KEYS)
    if unknown:
        r.add("info", "unknown_keys",
              "the kernel ignores these keys: " + ", ".join(f"`{shown(k)}`" for k in unknown[:20]))


def check_files(files, pre, r):
    names = set(files)
    if pre + "ecosystem.json" not in names and files:
        r.add("error", "layout", f"no `{pre}ecosystem.json` in the file list: the pack would be in state error")
    for f in files:
        parts = f.split("/")
        base = parts[-1].lower()
        if (base == ".env" or base.startswith(".env.") or base in SECRET_NAMES
                or base.endswith(SECRET_SUFFIXES)) and not base.endswith(".example"):
            r.add("error", "secrets", f"`{shown(f)}` looks like a secret or private key: remove it, use the secrets store (secrets.get)")
        if any(p in JUNK_PARTS for p in parts):
            r.add("warning", "layout", f"`{shown(f)}` is build or editor output: approval hashes it, every change forces re-approval")
        if ".." in parts or f.startswith("/") or "\\" in f:
            r.add("error", "layout", f"`{shown(f)}` is not a clean relative path: import refuses it")
        if base == "requirements.txt":
            r.add("warning", "pip", f"`{shown(f)}` is not read by the kernel: third-party packages go in requirements.lock")
    if not any(f.endswith("permissions.json") for f in files):
        r.add("info", "permissions", "no permissions.json: the operator is not told which grants (network, store, secrets) the pack needs")


def check_lock(path, text, r):
    pins = 0
    for n, line in enumerate(text.splitlines()[:2000], start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        where = f"`{shown(path)}` line {n}"
        if s.startswith("-") or " --" in s:
            r.add("error", "pip", f"{where}: option lines and --hash/--index-url are refused by the kernel; the operator approves exact pins only")
        elif "#" in s:
            r.add("error", "pip", f"{where}: inline comments are refused; put the comment on its own line")
        elif ";" in s:
            r.add("error", "pip", f"{where}: environment markers are refused; the lock serves the sandbox's one interpreter")
        elif "://" in s or s.startswith(("git+", "file:")) or "@" in s:
            r.add("error", "pip", f"{where}: URLs, VCS and direct references are refused; pin NAME==VERSION from the index")
        elif s.endswith("\\") or "/" in s or "\\" in s:
            r.add("error", "pip", f"{where}: paths and line continuations are refused; one NAME==VERSION per line")
        elif "===" in s or not PIN.match(compact_pin(s)) or "*" in s:
            r.add("error", "pip", f"{where}: `{shown(s)}` is not an exact pin NAME==VERSION (ranges and wildcards are refused)")
        else:
            pins += 1
    return pins


def compact_pin(s):
    """A pin with the spaces the kernel tolerates (around `==`, inside `[extras]`) removed."""
    s = re.sub(r"\s*==\s*", "==", s)
    return re.sub(r"\[([^\]]*)\]", lambda m: "[" + m.group(1).replace(" ", "") + "]", s).replace(" [", "[")


def block_exists(ref, pre, names):
    """A flow's `file:` as the kernel looks it up: blocks/<file>, backend/blocks/<file>, <file>."""
    ref = rel(ref)
    cands = [pre + ref] if ref.startswith("blocks/") else [pre + "blocks/" + ref, pre + "backend/blocks/" + ref, pre + ref]
    return any(c in names for c in cands)


def check_contents(contents, files, pre, pack_id, r):
    names = set(files)
    pins = 0
    for path, text in list(contents.items())[:MAX_FILES]:
        base = path.rsplit("/", 1)[-1]
        if SECRET_TEXT.search(text):
            r.add("error", "secrets", f"`{shown(path)}` contains what looks like a key or token: remove it and rotate it")
        if base == "requirements.lock":
            pins += check_lock(path, text, r)
        elif path.endswith(".flow.yaml") and "/modifiers/" not in "/" + path:
            owners = set(FLOW_OWNER.findall(text))
            foreign = sorted(o for o in owners if o != pack_id)
            if foreign:
                r.add("info", "flows", f"`{shown(path)}` calls blocks of other packs ({', '.join(shown(o) for o in foreign[:5])}): they run under those packs' approval")
            elif files:
                for ref in FLOW_FILE.findall(text):
                    if not ref.endswith(".py"):
                        r.add("error", "flows", f"`{shown(path)}` step file `{shown(ref)}` is not a .py block")
                    elif not block_exists(ref, pre, names):
                        r.add("error", "flows", f"`{shown(path)}` calls `{shown(ref)}`, which the pack does not ship")
        elif path.endswith(".py"):
            m = NET_IMPORT.search(text)
            if m:
                r.add("warning", "network", f"`{shown(path)}` imports {m.group(2)}: blocks have no network of their own; use rumi_syscall through the egress proxy with a grant")
            if "rumi_syscall" in text and not any(f.endswith("permissions.json") for f in files):
                r.add("warning", "permissions", f"`{shown(path)}` uses rumi_syscall but no permissions.json says which domains it needs")
    return pins


def main():
    manifest, files, contents, dir_name = load_input()
    r = Report()
    pre = subdir_prefix(files)
    check_manifest(manifest, dir_name, r)
    check_files(files, pre, r)
    pid = manifest.get("pack_id") if isinstance(manifest.get("pack_id"), str) else ""
    pins = check_contents(contents, files, pre, pid, r)
    locks = [f for f in files if f.rsplit("/", 1)[-1] == "requirements.lock"]
    for f in locks:
        if f not in contents:
            r.add("info", "pip", f"`{shown(f)}` was not inspected: pass its text in contents to check its pins")
    counts = {s: sum(1 for f in r.findings if f["severity"] == s) for s in ("error", "warning", "info")}
    verdict = "reject" if counts["error"] else ("approve_with_notes" if counts["warning"] else "approve")
    summary = {
        "pack_id": shown(pid) if pid else None,
        "version": shown(manifest["version"]) if isinstance(manifest.get("version"), str) else None,
        "files": len(files),
        "inspected": len(contents),
        "pins": pins,
        "errors": counts["error"],
        "warnings": counts["warning"],
        "infos": counts["info"],
        "findings_dropped": r.dropped,
        "verdict": verdict,
    }
    json.dump({"findings": r.findings, "summary": summary}, sys.stdout, ensure_ascii=True, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
