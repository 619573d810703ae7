//! `rumi pack new <id>`: a working pack skeleton under `ecosystem/<id>/` of the home — the first
//! five minutes of a pack author. The pack is written beside its place and renamed into it, so a
//! failure leaves no half-written pack for the kernel to find.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The files of a new pack, relative to `ecosystem/<id>/`.
pub fn files(id: &str) -> Vec<(String, String)> {
    let manifest = serde_json::json!({
        "pack_id": id,
        "pack_identity": format!("local:{id}"),
        "version": "0.1.0",
        "description": format!("{id}: greets someone (written by `rumi pack new`)"),
        "connectivity": {"provides": [], "requires": []},
    });
    vec![
        (
            "backend/ecosystem.json".into(),
            serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n",
        ),
        ("backend/blocks/greet.py".into(), BLOCK.into()),
        (
            format!("backend/flows/{id}.hello.flow.yaml"),
            FLOW.replace("{id}", id),
        ),
        (
            "backend/tests/hello.test.json".into(),
            TEST.replace("{id}", id),
        ),
        ("README.md".into(), README.replace("{id}", id)),
    ]
}

/// Writes the pack; returns its directory.
pub fn new_pack(home: &Path, id: &str) -> Result<PathBuf> {
    if !rumi_domain::pack::valid_pack_id(id) {
        bail!("{id:?} is not a valid pack id: use up to 64 letters, digits, `_` and `-`, starting with a letter or digit (e.g. my_pack)");
    }
    let eco = home.join("ecosystem");
    let dest = eco.join(id);
    if dest.symlink_metadata().is_ok() {
        bail!(
            "{} already exists: choose another id, or remove it first",
            dest.display()
        );
    }
    std::fs::create_dir_all(&eco).with_context(|| format!("cannot create {}", eco.display()))?;
    let staging = eco.join(format!(".{id}.new-{}", std::process::id()));
    let written = write_all(&staging, id).and_then(|_| {
        std::fs::rename(&staging, &dest)
            .with_context(|| format!("cannot move the new pack to {}", dest.display()))?;
        // The rename is on disk before the command says the pack is written.
        std::fs::File::open(&eco)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", eco.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written.map(|_| dest)
}

/// Each file written and synced (with its directory) in the staging directory.
fn write_all(root: &Path, id: &str) -> Result<()> {
    for (rel, text) in files(id) {
        let path = root.join(&rel);
        rumi_actors::fsutil::write_atomic(&path, text.as_bytes(), 0o644)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// What to do next, printed after the pack is written.
pub fn next_steps(id: &str, dir: &Path) -> String {
    format!(
        "wrote the pack {id} in {}\n\
         next:\n  \
         rumi pack test {id}            # run its flows in a throw-away kernel (no approval needed)\n  \
         rumi pack approve {id}         # on your kernel, after reading its files\n  \
         rumi flow run {id}.hello -i name=Ada",
        dir.display()
    )
}

const BLOCK: &str = r#""""Greets someone. The block a new pack starts from.

The kernel calls ``run(input_data, context)``: ``input_data`` is the step's resolved ``input`` and
the return value (JSON-compatible) is stored under the step's ``output``. What the block prints
goes to the run's log, never into its result.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import rumi_capability
import rumi_syscall


def run(input_data: Dict[str, Any], context: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    name = str(input_data.get("name") or "world")
    print(f"greeting {name} in run {(context or {}).get('run_id')}")

    # The network is reachable only through the pack's egress proxy, and only to hosts an
    # operator granted (`rumi network grant <pack> --domain example.com --port 443`).
    # Asking first costs nothing and says why a request would be refused.
    network = rumi_syscall.network_check("example.com", 443)

    # Host capabilities (stores, secrets, third-party handlers) pass the kernel's Trust + Grant
    # check; every answer has `success`, `output`, `error` and `error_type`.
    visits = rumi_capability.call("store.get", args={"store_id": "greetings", "key": name})

    return {
        "greeting": f"Hello, {name}!",
        "network_allowed": network["allowed"],
        "store_answered": bool(visits.get("success")),
    }
"#;

const FLOW: &str = r#"# A flow of the pack {id}: steps run in phase order, then by priority, then by id.
flow_id: {id}.hello
description: Greets someone.
inputs: {name: string}
outputs: {greeting: object}
phases: [main]

steps:
  - id: greet
    phase: main
    type: python_file_call
    file: greet.py
    input: {name: "${ctx.name}"}
    output: greeting
"#;

const TEST: &str = r#"{
  "flow": "{id}.hello",
  "inputs": {"name": "Ada"},
  "expect": {"greeting": {"greeting": "Hello, Ada!", "network_allowed": false, "store_answered": false}}
}
"#;

const README: &str = r#"# {id}

A Rumi pack written by `rumi pack new {id}`.

* `backend/ecosystem.json` — the pack's identity and version.
* `backend/blocks/greet.py` — a block (`run(input_data, context)`), using `rumi_syscall` and
  `rumi_capability`.
* `backend/flows/{id}.hello.flow.yaml` — a flow that calls the block.
* `backend/tests/*.test.json` — cases for `rumi pack test {id}`: `{"flow", "inputs", "expect"}`;
  `expect` lists keys of the run's result and the values they must have. Flows without a case run
  once with no inputs.

Any change to these files after approval stops the pack until it is approved again
(`rumi pack diff {id}` shows what changed).
"#;
