//! The library half of a capability call's budget (p50 ≤ 0.15 ms for the whole round trip from
//! Python): what the broker's grant step and the built-ins cost once the request is parsed —
//! `CapabilityGrants::check` for a principal and for a two-level `a__b`, `Stores::get` of a flat
//! and a nested key, `Stores::set` (two fsyncs: it is the durable one), `SecretStore::get` (one
//! read, one decryption). `cargo bench --bench capability_store`.

use criterion::Criterion;
use rumi_actors::capability::grants::{CapabilityGrants, GrantCheck};
use rumi_actors::capability::secrets::SecretStore;
use rumi_actors::capability::stores::Stores;
use rumi_actors::keys::SigningKey;
use serde_json::json;
use std::time::Duration;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().canonicalize().expect("home");
    let (grants, _) = CapabilityGrants::load(
        home.join("user_data/permissions/capabilities"),
        SigningKey::from_bytes(&[5; 32]),
    );
    for p in ["pack", "pack__child"] {
        grants
            .grant(
                p,
                "store.get",
                json!({"allowed_store_ids": ["notes", "cache"], "max_value_bytes": 4096}),
            )
            .expect("grant");
    }
    let stores = Stores::open(home.join("user_data/stores"), home.clone()).expect("stores");
    stores
        .create("notes", "user_data/stores/notes")
        .expect("create");
    let value = json!({"name": "Ann", "tags": ["a", "b"], "n": 42});
    stores
        .set("notes", "greeting", &value, 1 << 20)
        .expect("set");
    stores
        .set("notes", "users/ann/profile", &value, 1 << 20)
        .expect("set");
    let secrets = SecretStore::open(home.join("user_data/secrets"), home.join("user_data/keys"))
        .expect("secrets");
    secrets
        .set("API_KEY", "a-secret-value-of-forty-characters-long")
        .expect("secret");

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    c.bench_function("grants.check (one level)", |b| {
        b.iter(|| {
            assert!(matches!(
                grants.check("pack", "store.get"),
                GrantCheck::Granted(_)
            ))
        })
    });
    c.bench_function("grants.check (a__b)", |b| {
        b.iter(|| {
            assert!(matches!(
                grants.check("pack__child", "store.get"),
                GrantCheck::Granted(_)
            ))
        })
    });
    c.bench_function("stores.get (flat key)", |b| {
        b.iter(|| stores.get("notes", "greeting").expect("get"))
    });
    c.bench_function("stores.get (users/ann/profile)", |b| {
        b.iter(|| stores.get("notes", "users/ann/profile").expect("get"))
    });
    c.bench_function("secrets.get", |b| {
        b.iter(|| assert!(secrets.get("API_KEY").is_some()))
    });
    c.bench_function("stores.set (durable: two fsyncs)", |b| {
        b.iter(|| {
            stores
                .set("notes", "counter", &value, 1 << 20)
                .expect("set")
        })
    });
    c.final_summary();
}
