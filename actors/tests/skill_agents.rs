//! The SkillRuntime's failure modes (issue 14 §3: "a panic or hang in one agent ends the run
//! cleanly with exit_reason and what exists"): a Supervisor and its Sub Agents started directly,
//! with a ScriptRunner that panics or never answers, against the scripted model server.

#[path = "../../tests/common/llm_server.rs"]
mod llm_server;

use actix::Actor;
use futures_util::future::BoxFuture;
use llm_server::{Flavor, Move, Policy, ScriptedModel, Turn};
use rumi_actors::skills::budget_guard::BudgetGuard;
use rumi_actors::skills::context::RunContext;
use rumi_actors::skills::llm::{LlmClient, LlmConfig, Provider};
use rumi_actors::skills::script::{ScriptJob, ScriptOutput, ScriptRunner};
use rumi_actors::skills::supervisor::Supervisor;
use rumi_actors::skills::workspace::RunFiles;
use rumi_domain::skill::act::{ActInput, ActResult, Metrics, Validation};
use rumi_domain::skill::budget::Ledger;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the test runner misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    Panic,
    Hang,
}

struct BadRunner(Fault);

impl ScriptRunner for BadRunner {
    fn isolation(&self) -> &'static str {
        "host"
    }
    fn run(&self, _: ScriptJob) -> BoxFuture<'static, Result<ScriptOutput, String>> {
        let fault = self.0;
        Box::pin(async move {
            match fault {
                Fault::Panic => panic!("the runner broke"),
                Fault::Hang => futures_util::future::pending().await,
            }
        })
    }
}

async fn run_with(fault: Fault, time_budget_ms: u64) -> (ActResult, Duration) {
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        Policy {
            supervisor: vec![
                Move::Turn(Turn::calls(&[(
                    "write_artifact",
                    json!({"path": "kept.md", "content": "# kept\n"}),
                )])),
                Move::Turn(Turn::calls(&[(
                    "run_script",
                    json!({"path": "scripts/s.py"}),
                )])),
            ],
            ..Policy::default()
        },
    );
    let t = tempfile::tempdir().unwrap();
    let skill = t.path().join("skill");
    std::fs::create_dir_all(skill.join("scripts")).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        "---\nname: skill\ndescription: d\n---\nbody\n",
    )
    .unwrap();
    std::fs::write(skill.join("scripts/s.py"), "print(1)\n").unwrap();
    let files = RunFiles::create(
        std::fs::canonicalize(&skill).unwrap(),
        &t.path().join("runs"),
        "skr-test-0001",
    )
    .unwrap();
    let (input, mut budgets) = ActInput::parse(&json!({
        "skill_id": "skill", "goal": "g", "expected_outputs": [{"path": "build/out.md"}],
    }))
    .unwrap();
    budgets.time_budget_ms = time_budget_ms;
    let started = Instant::now();
    let guard = BudgetGuard::new(budgets, started).start();
    let llm = LlmClient::new(LlmConfig {
        provider: Provider::OpenAi,
        base_url: model.base_url(),
        model: "scripted".into(),
        api_key: None,
        replay_file: None,
        call_timeout: Duration::from_secs(10),
        max_retries: 0,
    })
    .unwrap();
    let ctx = Arc::new(RunContext {
        run_id: "skr-test-0001".into(),
        skill_id: "skill".into(),
        skill: rumi_domain::skill::frontmatter::parse_skill_md(
            "---\nname: skill\ndescription: d\n---\nbody\n",
            "skill",
        )
        .unwrap(),
        files,
        blackboard: Default::default(),
        loaded: Default::default(),
        caches: rumi_actors::skills::memo::RunCaches::off(Arc::new(
            rumi_actors::skills::cache::SkillCache::new(t.path().join("cache")),
        )),
        versions: Default::default(),
        owners: Default::default(),
        build_generation: Default::default(),
        guard,
        llm: Arc::new(llm),
        scripts: Arc::new(BadRunner(fault)),
        envs: Arc::new(rumi_actors::skills::envs::SkillEnvs::new(
            &t.path().join("user_data"),
            "python3".into(),
            t.path().join("runtime"),
            None,
        )),
        input,
        budgets,
        deadline: tokio::time::Instant::from_std(started + Duration::from_millis(time_budget_ms)),
        seed: 7,
        scripts_started: Default::default(),
        last_script_failed: Default::default(),
        still_approved: Arc::new(|| true),
    });
    let base = ActResult {
        run_id: "skr-test-0001".into(),
        status: "running".into(),
        artifacts: vec![],
        validation: Validation {
            completeness: false,
            compliance: false,
            quality: false,
            details: vec![],
        },
        evidence_summary: vec![],
        metrics: Metrics::default(),
        remaining_budgets: Ledger::new(budgets).remaining(0),
        unmet: vec![],
        exit_reason: None,
        skill_id: "skill".into(),
        isolation: "host".into(),
        model: json!({}),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    Supervisor::new(ctx, base, Arc::new(|_| {}), tx).start();
    let t0 = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("the run ends")
        .expect("the supervisor answers");
    (result, t0.elapsed())
}

#[actix_rt::test]
async fn a_panicking_agent_ends_the_run_cleanly_with_what_exists() {
    let (r, _) = run_with(Fault::Panic, 60_000).await;
    assert_eq!(
        r.exit_reason.map(|e| e.as_str().to_string()).as_deref(),
        Some("no_progress")
    );
    assert_eq!(r.status, "failed");
    assert!(
        r.unmet.iter().any(|u| u.item == "agent:RunScript"),
        "{:?}",
        r.unmet
    );
    assert_eq!(r.artifacts.len(), 1, "what exists is kept");
    assert_eq!(r.artifacts[0].path, "build/kept.md");
}

#[actix_rt::test]
async fn a_hanging_agent_ends_the_run_at_its_deadline() {
    let (r, took) = run_with(Fault::Hang, 1_500).await;
    assert_eq!(
        r.exit_reason.map(|e| e.as_str().to_string()).as_deref(),
        Some("budget_exceeded:time")
    );
    assert_eq!(r.artifacts.len(), 1);
    // The deadline, plus the final listing's grace at most.
    assert!(took < Duration::from_secs(12), "{took:?}");
}
