//! In-process benchmarks of the runtime's pieces, without HTTP: the manifest check that runs before
//! every block call, and one `ExecuteBlock` message to a pack's `PackContainer` (actor hop, worker
//! pipe round trip, Python block) — the parts a 1-step flow is made of. `cargo bench --bench actors`.

use actix::prelude::*;
use criterion::Criterion;
use rumi_actors::approval::{compute_manifest, ManifestVerifier};
use rumi_actors::audit::AuditWriter;
use rumi_actors::pack_container::worker::WorkerSpec;
use rumi_actors::pack_container::{Backend, ExecuteBlock, PackContainer, PackModified};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<PackModified> for Sink {
    type Result = ();
    fn handle(&mut self, _: PackModified, _: &mut Self::Context) {}
}

fn python() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pack_dir = repo.join("ecosystem/my_pack");

    let manifest = compute_manifest(&pack_dir).unwrap();
    let mut verifier = ManifestVerifier::new(pack_dir.clone(), manifest.clone());
    verifier.verify().unwrap();
    c.bench_function("manifest_verify_cached", |b| {
        b.iter(|| verifier.verify().unwrap())
    });
    c.bench_function("manifest_full_hash", |b| {
        b.iter(|| compute_manifest(&pack_dir).unwrap())
    });

    let tmp = tempfile::tempdir().unwrap();
    let host = rumi_actors::blockhost::install(&tmp.path().join("py")).unwrap();
    let sys = System::new();
    let (container, rt_handle) = sys.block_on(async {
        let writer = AuditWriter::new(tmp.path().join("audit"), Duration::from_secs(1));
        let audit = writer.queue();
        writer.start();
        let spec = WorkerSpec {
            pack_id: "my_pack".into(),
            python: python(),
            host_script: host.clone(),
            modules_dir: tmp.path().join("py"),
            pack_root: pack_dir.join("backend"),
            data_dir: tmp.path().join("data"),
            max_frame: 4 << 20,
            egress_socket: None,
            capability_socket: None,
            processes: None,
            redactor: None,
        };
        let arbiter = Arbiter::new();
        let verifier = ManifestVerifier::new(pack_dir.clone(), manifest.clone());
        let sink = Sink.start().recipient();
        let root = pack_dir.join("backend");
        let addr = PackContainer::start_in_arbiter(&arbiter.handle(), move |_| {
            PackContainer::new(
                "my_pack".into(),
                root,
                Backend::HostWorkers {
                    spec,
                    pool: 1,
                    spill: None,
                },
                verifier,
                100,
                sink,
                audit,
            )
        });
        (addr, arbiter)
    });
    let inputs = Arc::new(serde_json::json!({"name": "bench"}));
    let msg = || ExecuteBlock {
        run_id: "r".into(),
        flow_id: "f".into(),
        step_id: "s".into(),
        phase: "main".into(),
        file: "blocks/hello.py".into(),
        input: serde_json::json!({"name": "bench"}),
        inputs: inputs.clone(),
        timeout: Duration::from_secs(10),
        run_deadline_bound: false,
        span: tracing::Span::none(),
        entry: Default::default(),
    };
    sys.block_on(async {
        for _ in 0..20 {
            container.send(msg()).await.unwrap().unwrap();
        }
    });
    c.bench_function("execute_block_message_roundtrip", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    container.send(msg()).await.unwrap().unwrap();
                }
                t.elapsed()
            })
        })
    });
    drop(rt_handle);
    c.final_summary();
}
