//! Flow loading for the [`Registry`](super::Registry): which files of the three sources are read,
//! how an approved pack's flow files are checked against its approved manifest, and the
//! bookkeeping that runs one load at a time off the Registry's thread.
//!
//! A load reads and parses hostile YAML, so it runs on a thread of its own and reports back with
//! a message ([`FlowsRead`]); the Registry keeps answering meanwhile. Loads run one at a time
//! ([`Reloads`]): a reload asked for while one runs is served by the next load, which takes its
//! snapshot of the packs when it starts, so a reload is never answered with files read before it
//! was asked for, and an older result can never replace a newer table.
//!
//! Attacks stopped here:
//! * a flow file added to, or edited in, an approved pack after its approval (invariant 1): the
//!   pack is verified against its approved manifest before anything of it is read, then each flow
//!   file is read once, its bytes hashed and compared with the manifest, and exactly those bytes
//!   parsed — a file swapped between the check and the parse is never the one parsed. A pack
//!   found changed loads nothing and is reported `modified`;
//! * a flow file that keeps the parser busy for minutes: nesting is refused by a linear pre-scan
//!   (`rumi_domain::yaml`), the parse runs off the Registry's thread, and the loading thread is
//!   detached, so a shutdown never waits for it and a load that overruns [`LOAD_DEADLINE`] is
//!   given up;
//! * a flow file swapped for a symlink or a FIFO after it was listed: it is opened without
//!   following links and without blocking, and read only if the opened file is a regular file.

use super::{FlowsReloaded, Registry};
use crate::approval::{ManifestVerifier, VerifyFailure};
use actix::prelude::*;
use rumi_domain::catalog::modifier::{ModifierFile, ModifierOrigin};
use rumi_domain::catalog::routes::RoutesFile;
use rumi_domain::catalog::{Catalog, Environment, Sources};
use rumi_domain::flow::{declared_flow_id, parse_flow, FlowOrigin, SourceRank};
use rumi_domain::manifest::{Manifest, ManifestDiff};
use rumi_domain::{Flow, FlowError};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;

/// Most flow files read from one source tree.
const MAX_FLOW_FILES: usize = 5000;
/// How long a load may take before its result is given up (the thread is left to finish alone).
pub(super) const LOAD_DEADLINE: Duration = Duration::from_secs(60);

// ---- messages ---------------------------------------------------------------------------------

/// The kernel is stopping: every request waiting for a flow load is answered now, with the table
/// as it is (a load in progress is not waited for; its thread dies with the process).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stopping;

/// A load finished (`None`: its thread died or overran [`LOAD_DEADLINE`]); sent by the task that
/// waits for the loading thread.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct FlowsRead {
    pub generation: u64,
    pub loaded: Option<LoadedFlows>,
}

// ---- what a load reads and finds ----------------------------------------------------------------

/// An approved pack as a load sees it: where it is and what was approved.
pub(super) struct PackSource {
    pub pack_id: String,
    /// The pack directory: manifest paths are relative to it.
    pub dir: PathBuf,
    /// Where `flows/` lives (the pack's `backend/` when it has one).
    pub subdir: PathBuf,
    pub manifest: Manifest,
    pub manifest_hash: String,
}

/// Everything a load needs, taken from the Registry when the load starts.
pub(super) struct FlowSources {
    pub home: PathBuf,
    pub official: PathBuf,
    pub shared: PathBuf,
    pub packs: Vec<PackSource>,
    /// Installed packs that are not approved (id, the folder of their `routes.json`): their
    /// routes are read only to answer 403 naming the pack.
    pub unapproved: Vec<(String, PathBuf)>,
    /// What modifiers may require, as the load starts: the catalog is built on the loading
    /// thread with it (see [`LoadedFlows::prebuilt`]).
    pub environment: Environment,
}

/// One flow file's outcome, with the pack it came from.
#[derive(Clone)]
pub(super) struct LoadedFile {
    pub pack_id: Option<String>,
    pub result: Result<Flow, FlowError>,
}

/// What a load found.
#[derive(Default)]
pub(super) struct LoadedFlows {
    pub files: Vec<LoadedFile>,
    pub modifiers: Vec<ModifierFile>,
    /// Approved packs' `routes.json`, in the order the packs were given (load order).
    pub routes: Vec<RoutesFile>,
    /// Not-approved packs' `routes.json` (see [`FlowSources::unapproved`]).
    pub unapproved_routes: Vec<RoutesFile>,
    /// Packs whose files were all as approved, with the manifest hash they were checked against.
    pub verified: BTreeMap<String, String>,
    /// Packs whose files differ from their approved manifest (with that manifest's hash).
    pub modified: Vec<(String, String, ManifestDiff)>,
    /// The catalog of everything read, built on the loading thread with the environment the
    /// load started with: the Registry publishes it when nothing changed meanwhile (no pack lost
    /// its approval, the environment is the same), so the build's CPU stays off its thread.
    pub prebuilt: Option<(Catalog, Environment)>,
}

/// The sources of the published catalog, kept so that a pack that stops being approved leaves
/// the catalog at once, without reading any file.
#[derive(Clone, Default)]
pub(super) struct KeptSources {
    pub flows: Vec<LoadedFile>,
    pub modifiers: Vec<ModifierFile>,
    pub routes: Vec<RoutesFile>,
    pub unapproved_routes: Vec<RoutesFile>,
}

impl KeptSources {
    /// The catalog's sources, with `environment`.
    pub fn sources(&self, environment: Environment) -> Sources {
        Sources {
            flows: self.flows.iter().map(|f| f.result.clone()).collect(),
            modifiers: self.modifiers.clone(),
            routes: self.routes.clone(),
            unapproved_routes: self.unapproved_routes.clone(),
            environment,
        }
    }
}

/// Reads and parses every flow file of `sources`, and reads every modifier file and every
/// approved pack's `routes.json` (blocking: run it on its own thread).
pub(super) fn load(sources: &FlowSources) -> LoadedFlows {
    let mut out = LoadedFlows::default();
    let display = |p: &Path| {
        p.strip_prefix(&sources.home)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    for (root, rank, recursive) in [
        (&sources.official, SourceRank::Official, false),
        (&sources.shared, SourceRank::Shared, true),
    ] {
        for path in flow_files(root, recursive) {
            let origin = FlowOrigin {
                rank,
                path: display(&path),
                pack_id: None,
            };
            let result = read_flow_file(&path).and_then(|bytes| parse(&bytes, origin.clone()));
            out.files.push(LoadedFile {
                pack_id: None,
                result: result.map_err(|e| e.at(&origin)),
            });
        }
    }
    for path in modifier_files(&sources.shared.join("modifiers")) {
        let origin = ModifierOrigin {
            rank: SourceRank::Shared,
            path: display(&path),
            pack_id: None,
        };
        out.modifiers.push(ModifierFile {
            origin,
            bytes: read_flow_file(&path).map_err(FileError::into_message),
        });
    }
    for pack in &sources.packs {
        load_pack(pack, &display, &mut out);
    }
    // Untrusted and unapproved: read bounded, without following links, never run; the domain
    // only learns which paths they declare, to answer 403 there.
    for (pack_id, subdir) in &sources.unapproved {
        let path = subdir.join("routes.json");
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        out.unapproved_routes.push(RoutesFile {
            pack_id: pack_id.clone(),
            file: display(&path),
            bytes: read_flow_file(&path).map_err(FileError::into_message),
        });
    }
    out
}

/// Loads an approved pack's flows, modifiers and routes only if every file of the pack is as
/// approved, and each file from the very bytes whose hash matched.
fn load_pack(pack: &PackSource, display: &dyn Fn(&Path) -> String, out: &mut LoadedFlows) {
    let flows_dir = pack.subdir.join("flows");
    let mut verifier = ManifestVerifier::new(pack.dir.clone(), pack.manifest.clone());
    match verifier.verify() {
        Ok(()) => {}
        Err(VerifyFailure::Changed(diff)) => {
            out.modified
                .push((pack.pack_id.clone(), pack.manifest_hash.clone(), diff));
            return;
        }
        Err(VerifyFailure::Unreadable(why)) => {
            out.files.push(LoadedFile {
                pack_id: Some(pack.pack_id.clone()),
                result: Err(FlowError::new(
                    display(&flows_dir),
                    None,
                    format!(
                        "pack {:?} could not be verified ({why}); none of its flows is loaded — make every file of the pack readable by the kernel",
                        pack.pack_id
                    ),
                )),
            });
            return;
        }
    }
    // Reads a file of the pack once and checks those bytes against the manifest.
    let read_checked = |path: &Path| -> Result<Vec<u8>, Unchecked> {
        let bytes = read_flow_file(path).map_err(Unchecked::Unreadable)?;
        match pack
            .manifest
            .check_file(&manifest_path(&pack.dir, path), &bytes)
        {
            Some(diff) => Err(Unchecked::Changed(diff)),
            None => Ok(bytes),
        }
    };
    // The pack is changing under us: nothing of it loads.
    let changed = |out: &mut LoadedFlows, diff: ManifestDiff| {
        out.modified
            .push((pack.pack_id.clone(), pack.manifest_hash.clone(), diff));
    };
    let mut files = Vec::new();
    for path in flow_files(&flows_dir, true) {
        let origin = FlowOrigin {
            rank: SourceRank::Pack,
            path: display(&path),
            pack_id: Some(pack.pack_id.clone()),
        };
        let result = match read_checked(&path) {
            Ok(bytes) => parse(&bytes, origin.clone()).map_err(|e| e.at(&origin)),
            Err(Unchecked::Unreadable(e)) => Err(e.at(&origin)),
            Err(Unchecked::Changed(diff)) => return changed(out, diff),
        };
        files.push(LoadedFile {
            pack_id: Some(pack.pack_id.clone()),
            result,
        });
    }
    let mut modifiers = Vec::new();
    for path in modifier_files(&flows_dir.join("modifiers")) {
        let bytes = match read_checked(&path) {
            Ok(bytes) => Ok(bytes),
            Err(Unchecked::Unreadable(e)) => Err(e.into_message()),
            Err(Unchecked::Changed(diff)) => return changed(out, diff),
        };
        modifiers.push(ModifierFile {
            origin: ModifierOrigin {
                rank: SourceRank::Pack,
                path: display(&path),
                pack_id: Some(pack.pack_id.clone()),
            },
            bytes,
        });
    }
    let routes_path = pack.subdir.join("routes.json");
    let routes = match fs::symlink_metadata(&routes_path) {
        Err(_) => None,
        Ok(_) => match read_checked(&routes_path) {
            Ok(bytes) => Some(RoutesFile {
                pack_id: pack.pack_id.clone(),
                file: display(&routes_path),
                bytes: Ok(bytes),
            }),
            Err(Unchecked::Unreadable(e)) => Some(RoutesFile {
                pack_id: pack.pack_id.clone(),
                file: display(&routes_path),
                bytes: Err(e.into_message()),
            }),
            Err(Unchecked::Changed(diff)) => return changed(out, diff),
        },
    };
    out.files.extend(files);
    out.modifiers.extend(modifiers);
    out.routes.extend(routes);
    out.verified
        .insert(pack.pack_id.clone(), pack.manifest_hash.clone());
}

/// A file's path as the manifest names it: relative to the pack directory, `/`-separated.
fn manifest_path(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .map(|rel| {
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

/// Why a pack's file was not taken.
enum Unchecked {
    Unreadable(FileError),
    /// Its bytes are not the approved ones.
    Changed(ManifestDiff),
}

/// Why a file could not be read or parsed, before it is given its origin.
enum FileError {
    /// Not read at all: there is no line to point at.
    Read(String),
    Flow(FlowError),
}

impl FileError {
    /// The reason alone, for a file that is not a flow.
    fn into_message(self) -> String {
        match self {
            FileError::Read(message) => message,
            FileError::Flow(e) => e.message,
        }
    }

    fn at(self, origin: &FlowOrigin) -> FlowError {
        match self {
            FileError::Read(message) => FlowError::new(origin.path.clone(), None, message),
            FileError::Flow(e) => e,
        }
    }
}

fn parse(bytes: &[u8], origin: FlowOrigin) -> Result<Flow, FileError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let before = &bytes[..e.valid_up_to()];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let declared = declared_flow_id(&String::from_utf8_lossy(bytes));
            return Err(FileError::Flow(
                FlowError::new(
                    origin.path,
                    Some(line),
                    "the file is not UTF-8 — save it as UTF-8",
                )
                .of_flow(declared),
            ));
        }
    };
    parse_flow(text, origin).map_err(FileError::Flow)
}

/// `*.flow.yaml` files under `root` (recursively when asked), never under a `modifiers/`
/// directory, never through a symlink (a link could pull in files from outside the tree).
fn flow_files(root: &Path, recursive: bool) -> Vec<PathBuf> {
    files_named(root, ".flow.yaml", |name| recursive && name != "modifiers")
}

/// `*.modifier.yaml` files anywhere under `root` (a `modifiers/` directory), never through a
/// symlink.
fn modifier_files(root: &Path) -> Vec<PathBuf> {
    files_named(root, ".modifier.yaml", |_| true)
}

/// The regular files under `root` whose names end with `suffix`, descending into the
/// directories `descend` accepts (by name), never through a symlink; at most [`MAX_FLOW_FILES`],
/// sorted.
fn files_named(root: &Path, suffix: &str, descend: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if ft.is_dir() {
                if descend(&name) {
                    stack.push(e.path());
                }
            } else if ft.is_file() && name.ends_with(suffix) {
                out.push(e.path());
                if out.len() >= MAX_FLOW_FILES {
                    return out;
                }
            }
        }
    }
    out.sort();
    out
}

/// Why a listed flow file was not read: it was swapped for a link, a FIFO or a directory.
const NOT_REGULAR: &str =
    "not a regular file — a flow must be a plain file (links and FIFOs are never opened)";

/// Reads a flow file once, bounded by the YAML size limit. Opened without following a link and
/// without blocking (a FIFO swapped in after the listing would hang the load), and read only if
/// what was opened is a regular file.
fn read_flow_file(path: &Path) -> Result<Vec<u8>, FileError> {
    let unreadable = |e: std::io::Error| {
        FileError::Read(format!(
            "the file cannot be read ({}) — check that it exists and the kernel may read it",
            e.kind()
        ))
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(FileError::Read(NOT_REGULAR.to_string()));
    }
    let limit = rumi_domain::yaml::MAX_YAML_BYTES;
    let too_large = |size: u64| {
        FileError::Read(format!(
            "file is {size} bytes; the limit is {limit} bytes — split the flow into smaller ones"
        ))
    };
    if meta.len() > limit as u64 {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

// ---- one load at a time ---------------------------------------------------------------------------

/// Which loads were asked for, which one runs, and who waits for which (see the module docs).
#[derive(Default)]
pub(super) struct Reloads {
    /// The newest generation asked for.
    requested: u64,
    /// The generation being loaded.
    running: Option<u64>,
    /// The newest generation applied (or given up).
    done: u64,
    waiters: Vec<(u64, oneshot::Sender<FlowsReloaded>)>,
    /// The answer of the newest applied load.
    last: Option<FlowsReloaded>,
}

impl Reloads {
    /// Asks for a load; returns the generation to start now, unless one is running (the next
    /// load, started when it finishes, serves this request).
    pub fn request(&mut self) -> Option<u64> {
        self.requested += 1;
        if self.running.is_some() {
            return None;
        }
        self.running = Some(self.requested);
        self.running
    }

    /// Answers once a load that started after every request so far has been applied.
    pub fn wait(&mut self) -> oneshot::Receiver<FlowsReloaded> {
        let (tx, rx) = oneshot::channel();
        match &self.last {
            Some(last) if self.done >= self.requested => {
                let _ = tx.send(last.clone());
            }
            _ => self.waiters.push((self.requested, tx)),
        }
        rx
    }

    /// Answers every waiter now with `answer` (shutdown).
    pub fn release(&mut self, answer: FlowsReloaded) {
        for (_, tx) in self.waiters.drain(..) {
            let _ = tx.send(answer.clone());
        }
    }

    /// Load `generation` finished with `answer` (the table now published); returns the next
    /// generation to start when requests came in meanwhile.
    pub fn finished(&mut self, generation: u64, answer: FlowsReloaded) -> Option<u64> {
        self.running = None;
        self.done = self.done.max(generation);
        let done = self.done;
        let (ready, waiting) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(wanted, _)| *wanted <= done);
        self.waiters = waiting;
        for (_, tx) in ready {
            let _ = tx.send(answer.clone());
        }
        self.last = Some(answer);
        if self.requested > self.done {
            self.running = Some(self.requested);
        }
        self.running
    }
}

// ---- the Registry's side -------------------------------------------------------------------------

impl Registry {
    /// Asks for the flow table to be rebuilt from the files (see [`Reloads`]); the receiver
    /// answers once a load that covers this request is applied.
    pub(super) fn request_reload(&mut self) -> oneshot::Receiver<FlowsReloaded> {
        if let Some(generation) = self.reloads.request() {
            self.start_load(generation);
        }
        self.reloads.wait()
    }

    /// Starts load `generation` on its own thread, from a snapshot of the approved packs taken
    /// now; a task on the Registry's arbiter waits for it (within [`LOAD_DEADLINE`]) and reports
    /// back with [`FlowsRead`].
    fn start_load(&mut self, generation: u64) {
        let mut sources = FlowSources {
            home: self.layout.home().to_path_buf(),
            official: self.layout.official_flows(),
            shared: self.layout.shared_flows(),
            packs: self
                .packs
                .iter()
                .filter(|(_, e)| e.state == crate::view::PackState::Approved)
                .filter_map(|(id, e)| {
                    let record = e.record.as_ref()?;
                    Some(PackSource {
                        pack_id: id.clone(),
                        dir: e.dir.clone(),
                        subdir: e.subdir.clone(),
                        manifest: record.manifest.clone(),
                        manifest_hash: record.manifest_hash.clone(),
                    })
                })
                .collect(),
            unapproved: self
                .packs
                .iter()
                .filter(|(_, e)| e.state != crate::view::PackState::Approved)
                .map(|(id, e)| (id.clone(), e.subdir.clone()))
                .collect(),
            environment: self.environment(),
        };
        // Routes are claimed in load order: the earlier pack keeps a route two packs declare.
        let ranks: HashMap<&str, usize> = self
            .load_order
            .order
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let rank = |id: &str| ranks.get(id).copied().unwrap_or(usize::MAX);
        sources.packs.sort_by(|a, b| {
            rank(&a.pack_id)
                .cmp(&rank(&b.pack_id))
                .then_with(|| a.pack_id.cmp(&b.pack_id))
        });
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("rumi-flow-load".into())
            .spawn(move || {
                crate::affinity::background_thread();
                let mut loaded = load(&sources);
                // One copy of what was read goes into the build; the load keeps the originals.
                let catalog = rumi_domain::catalog::build(Sources {
                    flows: loaded.files.iter().map(|f| f.result.clone()).collect(),
                    modifiers: loaded.modifiers.clone(),
                    routes: loaded.routes.clone(),
                    unapproved_routes: loaded.unapproved_routes.clone(),
                    environment: sources.environment.clone(),
                });
                loaded.prebuilt = Some((catalog, sources.environment.clone()));
                let _ = tx.send(loaded);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a thread to load flows");
        }
        let me = self.self_addr.clone().expect("set in started");
        actix::spawn(async move {
            let loaded = match tokio::time::timeout(LOAD_DEADLINE, rx).await {
                Ok(Ok(loaded)) => Some(loaded),
                Ok(Err(_)) | Err(_) => None,
            };
            me.do_send(FlowsRead { generation, loaded });
        });
    }

    /// The flows, modifiers and routes of packs that are no longer approved leave the catalog at
    /// once (rebuilt from the last load's sources without them); the reload that follows
    /// rebuilds it from the files.
    pub(super) fn drop_unapproved_flows(&mut self) {
        let approved = |id: &Option<String>| {
            id.as_ref().is_none_or(|id| {
                self.packs
                    .get(id)
                    .is_some_and(|e| e.state == crate::view::PackState::Approved)
            })
        };
        let last = &self.last_sources;
        let all_approved = last.flows.iter().all(|f| approved(&f.pack_id))
            && last.modifiers.iter().all(|m| approved(&m.origin.pack_id))
            && last
                .routes
                .iter()
                .all(|r| approved(&Some(r.pack_id.clone())));
        if all_approved {
            return;
        }
        let flows = last
            .flows
            .iter()
            .filter(|f| approved(&f.pack_id))
            .cloned()
            .collect();
        let modifiers = last
            .modifiers
            .iter()
            .filter(|m| approved(&m.origin.pack_id))
            .cloned()
            .collect();
        let (routes, mut unapproved_routes): (Vec<_>, Vec<_>) = last
            .routes
            .iter()
            .cloned()
            .partition(|r| approved(&Some(r.pack_id.clone())));
        // A pack that lost its approval still declares its routes: they answer 403 now.
        unapproved_routes.extend(last.unapproved_routes.iter().cloned());
        self.publish_catalog(KeptSources {
            flows,
            modifiers,
            routes,
            unapproved_routes,
        });
    }

    /// What the published table holds, as a reload answers it.
    fn current_answer(&self) -> FlowsReloaded {
        FlowsReloaded::new(self.view.flows().flows.len(), &self.flow_problems)
    }

    /// True when `pack_id` is approved now, against the manifest a load checked it with.
    fn still_approved(&self, pack_id: &str, manifest_hash: &str) -> bool {
        self.packs.get(pack_id).is_some_and(|e| {
            e.state == crate::view::PackState::Approved
                && e.record
                    .as_ref()
                    .is_some_and(|r| r.manifest_hash == manifest_hash)
        })
    }
}

impl Handler<FlowsRead> for Registry {
    type Result = ();

    /// Applies a finished load: a pack it found changed moves to `modified` (as at a block call);
    /// only files of packs still approved against the manifest they were checked with enter the
    /// table; then the next load starts if reloads were asked for meanwhile.
    fn handle(&mut self, msg: FlowsRead, _: &mut Self::Context) {
        let answer = match msg.loaded {
            Some(loaded) => {
                for (pack_id, hash, diff) in loaded.modified {
                    if self.still_approved(&pack_id, &hash) {
                        // Its own reload follows (requested, started when this one is done).
                        drop(self.pack_changed(&pack_id, diff, "flow_reload"));
                    }
                }
                // A file only from a pack verified by this load and approved against the same
                // manifest now; a load error of any pack still approved (it says what to fix).
                let verified = |id: &String| {
                    loaded
                        .verified
                        .get(id)
                        .is_some_and(|hash| self.still_approved(id, hash))
                };
                let read = (
                    loaded.files.len(),
                    loaded.modifiers.len(),
                    loaded.routes.len(),
                    loaded.unapproved_routes.len(),
                );
                let flows: Vec<LoadedFile> = loaded
                    .files
                    .into_iter()
                    .filter(|f| match (&f.pack_id, &f.result) {
                        (None, _) => true,
                        (Some(id), Ok(_)) => verified(id),
                        (Some(id), Err(_)) => self
                            .packs
                            .get(id)
                            .is_some_and(|e| e.state == crate::view::PackState::Approved),
                    })
                    .collect();
                let modifiers: Vec<ModifierFile> = loaded
                    .modifiers
                    .into_iter()
                    .filter(|m| m.origin.pack_id.as_ref().is_none_or(verified))
                    .collect();
                let routes: Vec<RoutesFile> = loaded
                    .routes
                    .into_iter()
                    .filter(|r| verified(&r.pack_id))
                    .collect();
                let unapproved_routes: Vec<RoutesFile> = loaded
                    .unapproved_routes
                    .into_iter()
                    .filter(|r| {
                        self.packs
                            .get(&r.pack_id)
                            .is_some_and(|e| e.state != crate::view::PackState::Approved)
                    })
                    .collect();
                let kept_all = read
                    == (
                        flows.len(),
                        modifiers.len(),
                        routes.len(),
                        unapproved_routes.len(),
                    );
                let kept = KeptSources {
                    flows,
                    modifiers,
                    routes,
                    unapproved_routes,
                };
                match loaded.prebuilt {
                    // Nothing was left out and the environment is the load's: the catalog built
                    // on the loading thread is this one.
                    Some((catalog, env)) if kept_all && env == self.environment() => {
                        self.publish_built(kept, catalog)
                    }
                    _ => self.publish_catalog(kept),
                }
            }
            None => {
                let reason = format!(
                    "the flow load failed or did not finish within {} s; the flow table is unchanged",
                    LOAD_DEADLINE.as_secs()
                );
                tracing::error!("{reason}");
                self.event(serde_json::json!({"event": "flow_reload_failed", "reason": reason}));
                self.drop_unapproved_flows();
                self.current_answer()
            }
        };
        if let Some(next) = self.reloads.finished(msg.generation, answer) {
            self.start_load(next);
        }
    }
}

impl Handler<Stopping> for Registry {
    type Result = ();

    /// Releases every request waiting for a flow load (see [`Stopping`]) and stops replacing
    /// sandboxes that die (those hosted on the HTTP worker stop with it).
    fn handle(&mut self, _: Stopping, _: &mut Self::Context) {
        self.stopping = true;
        let answer = self.current_answer();
        self.reloads.release(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(flows: usize) -> FlowsReloaded {
        FlowsReloaded {
            flows,
            ..Default::default()
        }
    }

    #[test]
    fn one_load_at_a_time_and_no_request_is_answered_by_an_older_load() {
        let mut r = Reloads::default();
        assert_eq!(r.request(), Some(1));
        let mut first = r.wait();
        // Asked while load 1 runs: served by load 2, which starts when 1 finishes.
        assert_eq!(r.request(), None);
        let mut second = r.wait();
        assert_eq!(r.request(), None);
        let mut third = r.wait();
        assert_eq!(r.finished(1, answer(1)), Some(3));
        assert_eq!(first.try_recv().unwrap().flows, 1);
        assert!(
            second.try_recv().is_err(),
            "load 1 read its files before this request"
        );
        assert_eq!(r.finished(3, answer(3)), None);
        assert_eq!(second.try_recv().unwrap().flows, 3);
        assert_eq!(third.try_recv().unwrap().flows, 3);
        // Nothing asked since: a waiter is answered at once with the newest table.
        assert_eq!(r.wait().try_recv().unwrap().flows, 3);
    }

    #[test]
    fn manifest_paths_are_relative_and_slash_separated() {
        assert_eq!(
            manifest_path(
                Path::new("/h/ecosystem/p"),
                Path::new("/h/ecosystem/p/backend/flows/a/x.flow.yaml")
            ),
            "backend/flows/a/x.flow.yaml"
        );
    }

    #[test]
    fn a_fifo_or_a_link_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("f.flow.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(read_flow_file(&fifo), Err(FileError::Read(m)) if m == NOT_REGULAR));
        let link = d.path().join("l.flow.yaml");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        assert!(read_flow_file(&link).is_err());
    }
}
