#!/usr/bin/env python3
"""Checks Rumi's OpenAPI document against a running kernel (run by tests/openapi.rs).

Usage: openapi_check.py BASE_URL TOKEN

1. Fetches GET /api/openapi.json without a token and validates it as OpenAPI 3.1
   (openapi-spec-validator).
2. Calls real endpoints, successes and refusals, and validates each answer's body against the
   schema the document declares for that operation and status (jsonschema, Draft 2020-12, refs
   resolved against the document). A status the document does not declare for the operation
   fails, and so does a key the answer carries that its schema does not declare (every object
   schema with `properties` is checked with `unevaluatedProperties: false`): the document must
   describe the real JSON, not a subset of it.
3. Fails when an operation of the document was not called at all.

Needs the example packs of a fresh home (my_pack, text_tools, the shared `hello` flow), the
shared flow `openapi_strict` that tests/openapi.rs writes, and a permissive kernel. Exits non-zero naming every mismatch.
"""

import copy
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:rumi:openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

BASE, TOKEN = sys.argv[1].rstrip("/"), sys.argv[2]
failures = []
called = set()


def request(method, path, body=None, raw=None, token=TOKEN, ctype="application/json"):
    """One request; answers (status, JSON body)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def strict(schema, part_of_all=False):
    """Adds `unevaluatedProperties: false` to every object schema that lists its properties. The
    parts of an `allOf` (a flattened struct: the pack and its `warnings`) are checked together:
    the schema holding the `allOf` gets the flag, its parts do not (each would refuse the other's
    properties), and a part that is a reference points at the loose copy of that component."""
    if isinstance(schema, list):
        for s in schema:
            strict(s, part_of_all)
        return
    if not isinstance(schema, dict):
        return
    props = schema.get("properties")
    if isinstance(props, dict):
        for s in props.values():
            strict(s)
    parts = schema.get("allOf")
    if isinstance(parts, list):
        for part in parts:
            ref = part.get("$ref", "") if isinstance(part, dict) else ""
            if ref.startswith(SCHEMAS):
                part["$ref"] = LOOSE + ref[len(SCHEMAS):]
            else:
                strict(part, part_of_all=True)
    if (isinstance(props, dict) or isinstance(parts, list)) and not part_of_all:
        if "additionalProperties" not in schema and "unevaluatedProperties" not in schema:
            schema["unevaluatedProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        strict(schema.get(key))
    for key in ("oneOf", "anyOf", "prefixItems"):
        strict(schema.get(key))


SCHEMAS = "#/components/schemas/"
LOOSE = "#/components/loose/"


def pointer(*parts):
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


# ---- the document -------------------------------------------------------------------------------

status, doc = request("GET", "/api/openapi.json", token=None)
if status != 200:
    sys.exit(f"GET /api/openapi.json without a token answered {status}: {doc}")
validate(doc, cls=OpenAPIV31SpecValidator)
print(f"the document is valid OpenAPI {doc['openapi']} ({len(doc['paths'])} paths)")

checked = copy.deepcopy(doc)
# The components as the document has them, for the parts of an `allOf` (see `strict`).
checked.setdefault("components", {})["loose"] = copy.deepcopy(doc.get("components", {}).get("schemas", {}))
for s in checked.get("components", {}).get("schemas", {}).values():
    strict(s)
for item in checked["paths"].values():
    for method in METHODS:
        for resp in item.get(method, {}).get("responses", {}).values():
            for content in resp.get("content", {}).values():
                strict(content.get("schema"))
registry = Registry().with_resource(
    DOC_URI, Resource.from_contents(checked, default_specification=DRAFT202012)
)


def check(method, template, path=None, body=None, raw=None, token=TOKEN, expect=200,
          ctype="application/json"):
    """Calls `path` (default: the template itself) and validates the answer against the
    document's schema for (`method`, `template`) and the status; answers the body."""
    path = path or template
    status, answer = request(method, path, body=body, raw=raw, token=token, ctype=ctype)
    called.add((method.lower(), template))
    where = f"{method} {path} -> {status}"
    if status != expect:
        failures.append(f"{where}: expected {expect}: {answer}")
        return answer
    op = doc["paths"].get(template, {}).get(method.lower())
    if op is None:
        failures.append(f"{where}: the document has no operation {method} {template}")
        return answer
    resp = op["responses"].get(str(status)) or op["responses"].get("default")
    if resp is None:
        failures.append(f"{where}: status {status} is not declared (declared: {sorted(op['responses'])})")
        return answer
    if "application/json" not in resp.get("content", {}):
        failures.append(f"{where}: the document declares no JSON body for {status}")
        return answer
    ref = DOC_URI + "#" + urllib.parse.quote(
        pointer("paths", template, method.lower(), "responses", str(status), "content",
                "application/json", "schema"),
        safe="/~",
    )
    errors = sorted(
        Draft202012Validator({"$ref": ref}, registry=registry).iter_errors(answer),
        key=lambda e: list(e.absolute_path),
    )
    for e in errors[:5]:
        at = "/".join(str(p) for p in e.absolute_path) or "(the body)"
        failures.append(f"{where}: at {at}: {e.message[:300]}")
    if not errors:
        print(f"ok  {where}")
    return answer


# ---- real answers -------------------------------------------------------------------------------

check("GET", "/api/health", token=None)
proved = check("GET", "/api/health", "/api/health?challenge=" + "ab" * 16, token=None)
if not (isinstance(proved.get("data"), dict) and len(proved["data"].get("proof", "")) == 64):
    failures.append(f"GET /api/health?challenge=: no proof in {proved}")
check("GET", "/api/health", "/api/health?challenge=xyz", token=None, expect=400)
check("GET", "/api/openapi.json", token=None)
check("GET", "/api/packs")
check("GET", "/api/packs/pending")
check("GET", "/api/packs/{id}", "/api/packs/my_pack")
check("GET", "/api/packs/{id}/status", "/api/packs/my_pack/status")
check("POST", "/api/packs/scan")
check("GET", "/api/flows")
check("GET", "/api/flows/{id}", "/api/flows/hello")
# The test's own flow: set, handler and block steps; not fail-soft.
check("GET", "/api/flows/{id}", "/api/flows/openapi_strict")
# Before approval its block step fails (approval_rejected), so the run fails: 200 with success
# false and the reason in `error`.
failed = check("POST", "/api/flows/{id}/run", "/api/flows/openapi_strict/run",
               body={"inputs": {"name": "Ann"}})
if failed.get("success") is not False or not failed.get("error"):
    failures.append(f"a run whose block is refused should fail with a reason: {failed}")
check("POST", "/api/packs/{id}/approve", "/api/packs/my_pack/approve")
check("POST", "/api/packs/{id}/reject", "/api/packs/text_tools/reject", body={"reason": "openapi check"})
# my_pack carries a lib script, a component, a vocab.txt and a converter in this test.
check("POST", "/api/packs/{id}/lib/run", "/api/packs/my_pack/lib/run")
check("POST", "/api/packs/{id}/lib/run", "/api/packs/text_tools/lib/run", expect=409)
check("POST", "/api/packs/{id}/lib/run", "/api/packs/openapi_nope/lib/run", expect=404)
check("GET", "/api/vocab")
# Its `lib` (and, once set up, `components`) against the PackInfo schema.
for _ in range(50):
    mine = check("GET", "/api/packs/{id}", "/api/packs/my_pack")
    if (mine.get("data") or {}).get("components"):
        break
    time.sleep(0.1)
else:
    failures.append(f"my_pack's component was not set up: {mine}")
check("POST", "/api/flows/reload")
run = check("POST", "/api/flows/{id}/run", "/api/flows/hello/run",
            body={"inputs": {"name": "Ann"}, "timeout": 30})
if run.get("success") is not True:
    failures.append(f"the hello run should succeed once my_pack is approved: {run}")
check("GET", "/api/runs")
check("GET", "/api/runs", "/api/runs?limit=5&flow_id=hello")
run_id = (run.get("data") or {}).get("run_id", "missing")
check("GET", "/api/runs/{run_id}", f"/api/runs/{run_id}")
schedules = check("GET", "/api/schedules")
if len((schedules.get("data") or {}).get("schedules", [])) != 3:
    failures.append(f"GET /api/schedules should list the test's 3 schedules: {schedules}")
check("GET", "/api/audit")
check("GET", "/api/audit", "/api/audit?category=approval&limit=5")
check("GET", "/api/diagnostics")
check("GET", "/api/routes")
check("POST", "/api/routes/reload")
check("POST", "/api/network/grant", body={
    "pack_id": "my_pack", "allowed_domains": ["localhost", "*.example.com"],
    "allowed_ports": [80, 443], "notes": "openapi check"})
# Granted: the address step resolves the name (an internal address: refused, with the reason).
check("POST", "/api/network/check", body={"pack_id": "my_pack", "domain": "localhost", "port": 80})
# Not granted: the grant step refuses and `address` is null.
check("POST", "/api/network/check", body={"pack_id": "my_pack", "domain": "other.test", "port": 80})
check("GET", "/api/network/list")
check("POST", "/api/network/revoke", body={"pack_id": "my_pack", "reason": "done"})
check("POST", "/api/capability/grants/grant", body={
    "principal_id": "my_pack", "permission_id": "store.get", "config": {"allowed_store_ids": ["notes"]}})
check("GET", "/api/capability/grants")
check("GET", "/api/capability/grants", "/api/capability/grants?principal_id=my_pack")
check("POST", "/api/capability/grants/revoke", body={"principal_id": "my_pack", "permission_id": "store.get"})
check("POST", "/api/secrets/set", body={"key": "OPENAPI_KEY", "value": "not shown"})
check("GET", "/api/secrets")
check("POST", "/api/secrets/delete", body={"key": "OPENAPI_KEY"})
check("POST", "/api/stores/create", body={"store_id": "notes", "root_path": "user_data/stores/notes"})
check("GET", "/api/stores")
check("GET", "/api/docker/status")
# Permissive mode has no containers: 409 for each container endpoint.
check("GET", "/api/containers", expect=409)
check("POST", "/api/containers/{id}/start", "/api/containers/my_pack/start", expect=409)
check("POST", "/api/containers/{id}/stop", "/api/containers/my_pack/stop", expect=409)
check("DELETE", "/api/containers/{id}", "/api/containers/my_pack", expect=409)
check("POST", "/api/capability/candidates/scan")
check("GET", "/api/capability/requests")
check("GET", "/api/capability/requests", "/api/capability/requests?status=pending")
check("GET", "/api/capability/blocked")
UNKNOWN_CANDIDATE = "my_pack%3Aslug%3Ah%3A" + "0" * 64
check("POST", "/api/capability/requests/{candidate_key}/approve",
      "/api/capability/requests/" + UNKNOWN_CANDIDATE + "/approve", body={}, expect=404)
check("POST", "/api/capability/requests/{candidate_key}/reject",
      "/api/capability/requests/not-a-key/reject", body={"reason": "x"}, expect=400)
check("POST", "/api/capability/blocked/{candidate_key}/unblock",
      "/api/capability/blocked/" + UNKNOWN_CANDIDATE + "/unblock", body={}, expect=404)
# pip: tests/openapi.rs ships pack openapi_pip with a valid lock and an invalid one.
pip_scan = check("POST", "/api/pip/candidates/scan")
pip_keys = [c["candidate_key"] for c in ((pip_scan or {}).get("data") or {}).get("candidates", [])]
if not ((pip_scan or {}).get("data") or {}).get("invalid"):
    failures.append("the pip scan listed no invalid lock (tests/openapi.rs writes one)")
check("GET", "/api/pip/requests")
check("GET", "/api/pip/requests", "/api/pip/requests?status=pending")
if pip_keys:
    pip_key = urllib.parse.quote(pip_keys[0], safe="")
    check("POST", "/api/pip/requests/{candidate_key}/reject",
          "/api/pip/requests/" + pip_key + "/reject", body={"reason": "x"})
    # The pack is not approved: 409, nothing downloaded.
    check("POST", "/api/pip/requests/{candidate_key}/approve",
          "/api/pip/requests/" + pip_key + "/approve", body={}, expect=409)
else:
    failures.append("the pip scan found no candidate (tests/openapi.rs writes one)")
check("GET", "/api/pip/blocked")
check("POST", "/api/pip/blocked/{candidate_key}/unblock",
      "/api/pip/blocked/my_pack%3Arequirements.lock%3A" + "0" * 64 + "/unblock", body={}, expect=404)

# Refusals.
check("GET", "/api/packs", token=None, expect=401)
check("GET", "/api/flows/{id}", "/api/flows/no_such_flow", expect=404)
check("POST", "/api/flows/{id}/run", "/api/flows/no_such_flow/run", body={}, expect=404)
check("POST", "/api/flows/{id}/run", "/api/flows/hello/run", body={"inputs": 5}, expect=400)
check("POST", "/api/flows/{id}/run", "/api/flows/hello/run", raw=b"{not json", expect=400)
check("GET", "/api/packs/{id}", "/api/packs/no_such_pack", expect=404)
check("GET", "/api/packs/{id}", "/api/packs/bad%20id", expect=400)
check("POST", "/api/packs/{id}/reject", "/api/packs/my_pack/reject",
      raw=b'{"reason": "' + b"x" * (1024 * 1024) + b'"}', expect=413)
check("GET", "/api/runs/{run_id}", "/api/runs/no-such-run", expect=404)
check("GET", "/api/runs", "/api/runs?limit=many", expect=400)
check("GET", "/api/audit", "/api/audit?category=nope", expect=400)
check("POST", "/api/network/revoke", body={"pack_id": "no_such_pack"}, expect=404)
check("POST", "/api/network/grant", body={"pack_id": "my_pack"}, expect=400)
check("POST", "/api/capability/grants/grant", body={"principal_id": "my_pack", "permission_id": "secrets.get"}, expect=400)
check("POST", "/api/capability/grants/revoke", body={"principal_id": "my_pack", "permission_id": "store.get"}, expect=404)
check("GET", "/api/capability/grants", "/api/capability/grants?principal_id=../x", expect=400)
check("POST", "/api/secrets/set", body={"key": "lower", "value": "x"}, expect=400)
check("POST", "/api/secrets/delete", body={"key": "NEVER_SET"}, expect=404)
check("POST", "/api/stores/create", body={"store_id": "notes", "root_path": "user_data/stores/again"}, expect=409)
check("POST", "/api/stores/create", body={"store_id": "esc", "root_path": "user_data/stores/../../etc"}, expect=400)
check("DELETE", "/api/packs/{id}", "/api/packs/no_such_pack", expect=404)
check("DELETE", "/api/packs/{id}", "/api/packs/text_tools?purge=maybe", expect=400)
check("DELETE", "/api/packs/{id}", "/api/packs/text_tools")


def pack_zip(pack_id, identity):
    """A small pack archive: one top-level directory named after the pack."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{pack_id}/ecosystem.json",
                   json.dumps({"pack_id": pack_id, "pack_identity": identity, "version": "1.0.0"}))
        z.writestr(f"{pack_id}/blocks/b.py", "def run(input_data, context=None):\n    return {}\n")
    return buf.getvalue()


staged = check("POST", "/api/packs/import", raw=pack_zip("openapi_import", "test:openapi"),
               ctype="application/zip")
check("POST", "/api/packs/apply", body={"staging_id": (staged.get("data") or {}).get("staging_id")})
again = check("POST", "/api/packs/import", raw=pack_zip("openapi_import", "test:openapi"),
              ctype="application/zip")
check("POST", "/api/packs/apply", body={"staging_id": (again.get("data") or {}).get("staging_id")})
other = check("POST", "/api/packs/import", raw=pack_zip("openapi_import", "test:other"),
              ctype="application/zip")
check("POST", "/api/packs/apply", body={"staging_id": (other.get("data") or {}).get("staging_id")},
      expect=409)
check("POST", "/api/packs/import", body={}, expect=400)
check("POST", "/api/packs/import", raw=b"not a zip", ctype="application/zip", expect=400)
check("POST", "/api/packs/apply", body={"staging_id": "nope"}, expect=400)
check("POST", "/api/packs/apply", body={"staging_id": "0123456789abcdef"}, expect=404)

# ---- skills (the kernel replays user_data/replays/release-notes.json) ----------------------------
check("GET", "/api/skills")
act_input = {
    "skill_id": "release-notes",
    "goal": "Release notes for 0.14.0",
    "inputs": {"version": "0.14.0", "date": "2026-11-30"},
    "expected_outputs": [{"path": "build/RELEASE_NOTES.md", "kind": "markdown"}],
}
act = check("POST", "/api/skills/run", body=act_input)
run_id = (act.get("data") or {}).get("run_id", "none")
if (act.get("data") or {}).get("exit_reason") != "validated":
    failures.append(f"the replayed skill run should validate: {act}")
started = check("POST", "/api/skills/run", "/api/skills/run?async=true", body=act_input, expect=202)
check("POST", "/api/skills/run", body={"skill_id": "release-notes"}, expect=400)
check("POST", "/api/skills/run", body={"skill_id": "openapi-nope", "goal": "g"}, expect=404)
check("GET", "/api/skills/runs/{run_id}", f"/api/skills/runs/{run_id}")
check("GET", "/api/skills/runs/{run_id}", "/api/skills/runs/skr-openapi-nope", expect=404)
artifact_template = "/api/skills/runs/{run_id}/artifacts/{path}"
check("GET", artifact_template, f"/api/skills/runs/{run_id}/artifacts/build/missing.md", expect=404)
check("GET", artifact_template, f"/api/skills/runs/{run_id}/artifacts/evidence.jsonl", expect=400)
# The 200 answer is the artifact's raw bytes, not JSON: checked by hand.
raw_req = urllib.request.Request(f"{BASE}/api/skills/runs/{run_id}/artifacts/build/RELEASE_NOTES.md")
raw_req.add_header("Authorization", f"Bearer {TOKEN}")
try:
    with urllib.request.urlopen(raw_req, timeout=60) as r:
        if not r.read().startswith(b"# Rumi 0.14.0"):
            failures.append("the artifact's bytes are not the release notes")
except urllib.error.HTTPError as e:
    failures.append(f"GET the artifact -> {e.code}")
# Let the async run end before the kernel stops.
for _ in range(100):
    run_id2 = (started.get("data") or {}).get("run_id", "none")
    status, view = request("GET", f"/api/skills/runs/{run_id2}")
    if status != 200 or (view.get("data") or {}).get("exit_reason") is not None:
        break
    time.sleep(0.1)

documented = {(m, p) for p, item in doc["paths"].items() for m in METHODS if m in item}
for m, p in sorted(documented - called):
    failures.append(f"{m.upper()} {p}: documented but never called by this check; add a call")

if failures:
    print(f"\n{len(failures)} mismatch(es) between the document and the kernel's answers:")
    for f in failures:
        print(f"FAIL {f}")
    sys.exit(1)
print(f"every answer matches its schema ({len(called)} operations called)")
