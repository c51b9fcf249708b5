//! The store suite: the `Store` trait driven directly, the same tests on
//! SQLite and PostgreSQL.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, DurationRound};
use knowton_common::health::HealthStatus;
use knowton_common::ratelimit;
use knowton_common::{Branding, Plan, TenantStatus, Usage};
use knowton_coordinator::credentials::KeyKind;
use knowton_coordinator::credentials::generate_api_key;
use knowton_coordinator::store::{
    Backend, ConfigChange, Fence, NewApiKey, NewTenant, OutboxMessage, Rollup, Store, StoreError,
    Tenant, Unique, now,
};
use knowton_coordinator::store::{BackupKind, BackupRun, RunProgress, RunStatus, RunTrigger};
use knowton_coordinator::store::{CommittedConfig, StoredChannels};
use knowton_tests::{Db, TestDb, eventually, on_every_backend};
use uuid::Uuid;

on_every_backend!(with given_store:
    migrations_are_idempotent_and_meta_is_set_once,
    a_tenant_round_trips,
    slug_and_domain_conflicts_are_named,
    listing_pages_by_id_and_filters_by_status,
    config_changes_append_versions,
    keys_authenticate_until_rotated_or_deprovisioned,
    usage_is_recorded,
    deprovision_then_expiry_then_purge,
    a_deployment_request_reopens_only_what_started_before_it,
    a_provisioning_request_is_served_by_any_attempt_since_creation,
    a_health_summary_counts_critical_and_down_minutes_as_bad,
    the_lease_has_one_holder_and_fences_a_deposed_leaders_writes,
    a_renewed_term_is_not_news_to_its_subscribers,
    the_shared_rate_budget_computes_what_the_gcra_arithmetic_does,
    one_backup_run_at_a_time_and_a_stale_one_is_marked_interrupted,
    configuration_versions_queue_for_backup_with_what_they_committed,
);

/// Runs `test` on a store opened directly on a database of its own, and
/// closes it afterwards.
async fn given_store<F, Fut>(kind: Db, test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = TestDb::new(kind).await;
    let store = Backend::from_url(&db.url).unwrap().open().await.unwrap();
    test(store.clone()).await;
    store.close().await;
    drop(db);
}

struct Fixture {
    new: NewTenant,
    production: String,
}

fn tenant(slug: &str) -> Fixture {
    let id = Uuid::now_v7();
    let at = now();
    let production = generate_api_key(KeyKind::Production);
    let development = generate_api_key(KeyKind::Development);
    let key = |kind, k: &knowton_coordinator::credentials::GeneratedKey| NewApiKey {
        id: Uuid::now_v7(),
        kind,
        hash: k.hash.clone(),
        display_prefix: k.display_prefix.clone(),
    };
    Fixture {
        production: production.plaintext.clone(),
        new: NewTenant {
            tenant: Tenant {
                id,
                name: format!("{slug} Inc"),
                slug: slug.to_owned(),
                plan: Plan::Professional,
                domain: format!("{slug}.example.com"),
                status: TenantStatus::Active,
                admin_email: format!("admin@{slug}.example.com"),
                branding: Branding::default_for(slug),
                features: Plan::Professional.features(),
                usage: Usage::initial(),
                api_keys: Vec::new(),
                config_version: 1,
                created_at: at,
                updated_at: at,
                deprovisioned_at: None,
                retain_until: None,
            },
            admin_user_id: Uuid::now_v7(),
            admin_password_hash: "$argon2id$v=19$m=19456,t=2,p=1$fixture".into(),
            api_keys: vec![
                key(KeyKind::Production, &production),
                key(KeyKind::Development, &development),
            ],
            secrets: vec![
                ("database_password".into(), "v1.sealed-a".into()),
                ("jwt_secret".into(), "v1.sealed-b".into()),
            ],
            welcome: OutboxMessage {
                id: Uuid::now_v7(),
                channel: knowton_common::health::Channel::Email,
                recipient: format!("admin@{slug}.example.com"),
                subject: "Welcome".into(),
                sealed_body: "v1.sealed-c".into(),
                idempotency_key: format!("welcome:{id}"),
                caused_at: None,
            },
            actor: "test".into(),
        },
    }
}

async fn migrations_are_idempotent_and_meta_is_set_once(store: Arc<dyn Store>) {
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(store.get_meta("k").await.unwrap(), None);
    assert_eq!(store.init_meta("k", "first").await.unwrap(), "first");
    assert_eq!(store.init_meta("k", "second").await.unwrap(), "first");
}

async fn a_tenant_round_trips(store: Arc<dyn Store>) {
    let f = tenant("acme");
    store.create_tenant(&f.new).await.unwrap();
    let got = store.get_tenant(f.new.tenant.id).await.unwrap().unwrap();
    let mut want = f.new.tenant.clone();
    assert_eq!(got.api_keys.len(), 2);
    assert_eq!(got.api_keys[0].kind, KeyKind::Production);
    want.api_keys = got.api_keys.clone();
    assert_eq!(got, want);
    assert_eq!(
        store.find_tenant_id("acme").await.unwrap(),
        Some(f.new.tenant.id)
    );
    assert_eq!(store.find_tenant_id("nope").await.unwrap(), None);
    assert_eq!(store.get_tenant(Uuid::now_v7()).await.unwrap(), None);
    let secrets = store.sealed_secrets(f.new.tenant.id).await.unwrap();
    assert_eq!(secrets, f.new.secrets);
    let history = store.config_history(f.new.tenant.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].version, history[0].change.as_str()),
        (1, "provisioned")
    );
    assert_eq!(history[0].snapshot["plan"], "professional");
}

async fn slug_and_domain_conflicts_are_named(store: Arc<dyn Store>) {
    store.create_tenant(&tenant("acme").new).await.unwrap();
    let mut same_slug = tenant("acme").new;
    same_slug.tenant.domain = "other.example.com".into();
    assert!(matches!(
        store.create_tenant(&same_slug).await,
        Err(StoreError::Conflict(Unique::TenantSlug))
    ));
    let mut same_domain = tenant("globex").new;
    same_domain.tenant.domain = "acme.example.com".into();
    assert!(matches!(
        store.create_tenant(&same_domain).await,
        Err(StoreError::Conflict(Unique::TenantDomain))
    ));
    assert_eq!(
        store.list_tenants(10, None, None).await.unwrap().len(),
        1,
        "failed creates left nothing"
    );
}

async fn listing_pages_by_id_and_filters_by_status(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let f = tenant(&format!("t-{i}"));
        ids.push(f.new.tenant.id);
        store.create_tenant(&f.new).await.unwrap();
    }
    let first = store.list_tenants(2, None, None).await.unwrap();
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), ids[..2]);
    assert!(first.iter().all(|t| t.api_keys.len() == 2));
    let rest = store.list_tenants(10, Some(ids[1]), None).await.unwrap();
    assert_eq!(rest.iter().map(|t| t.id).collect::<Vec<_>>(), ids[2..]);
    store
        .deprovision(ids[3], now() + Duration::days(1))
        .await
        .unwrap();
    let gone = store
        .list_tenants(10, None, Some(TenantStatus::Deprovisioned))
        .await
        .unwrap();
    assert_eq!(gone.iter().map(|t| t.id).collect::<Vec<_>>(), [ids[3]]);
    assert!(gone[0].api_keys.is_empty());
    assert_eq!(
        store
            .list_tenants(10, None, Some(TenantStatus::Active))
            .await
            .unwrap()
            .len(),
        4
    );
}

async fn config_changes_append_versions(store: Arc<dyn Store>) {
    let f = tenant("acme");
    let id = f.new.tenant.id;
    store.create_tenant(&f.new).await.unwrap();
    let mut branding = f.new.tenant.branding.clone();
    branding.primary_color = "#000000".into();
    let change = ConfigChange {
        base_version: 1,
        plan: Plan::Enterprise,
        features: Plan::Enterprise.features(),
        branding,
        domain: "portal.acme.com".into(),
        actor: "admin".into(),
        summary: "plan professional -> enterprise".into(),
    };
    assert_eq!(store.update_config(id, &change).await.unwrap(), 2);
    // The same change again was computed from version 1: refused, as any
    // write computed from a version that is no longer current.
    assert!(matches!(
        store.update_config(id, &change).await,
        Err(StoreError::Stale)
    ));
    let got = store.get_tenant(id).await.unwrap().unwrap();
    assert_eq!(
        (got.plan, got.domain.as_str(), got.config_version),
        (Plan::Enterprise, "portal.acme.com", 2)
    );
    assert_eq!(got.branding.primary_color, "#000000");
    assert!(got.features.custom_development);
    assert!(got.updated_at >= got.created_at);
    let history = store.config_history(id).await.unwrap();
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(history[1].actor, "admin");
    assert_eq!(history[1].snapshot["domain"], "portal.acme.com");
    assert!(matches!(
        store.update_config(Uuid::now_v7(), &change).await,
        Err(StoreError::NotFound)
    ));

    // A domain owned by another tenant is a named conflict and changes nothing.
    store.create_tenant(&tenant("globex").new).await.unwrap();
    let steal = ConfigChange {
        base_version: 2,
        domain: "globex.example.com".into(),
        ..change
    };
    assert!(matches!(
        store.update_config(id, &steal).await,
        Err(StoreError::Conflict(Unique::TenantDomain))
    ));
    assert_eq!(store.config_history(id).await.unwrap().len(), 2);
}

async fn keys_authenticate_until_rotated_or_deprovisioned(store: Arc<dyn Store>) {
    let f = tenant("acme");
    let id = f.new.tenant.id;
    store.create_tenant(&f.new).await.unwrap();
    let hash = knowton_coordinator::credentials::hash_api_key(&f.production);
    let owner = store.authenticate_key(&hash).await.unwrap().unwrap();
    assert_eq!(
        (
            owner.tenant.id,
            owner.tenant.slug.as_str(),
            owner.tenant.plan,
            owner.kind
        ),
        (id, "acme", Plan::Professional, KeyKind::Production)
    );
    assert_eq!(
        store
            .authenticate_key("0".repeat(64).as_str())
            .await
            .unwrap(),
        None
    );

    let next = generate_api_key(KeyKind::Production);
    store
        .rotate_key(
            id,
            &NewApiKey {
                id: Uuid::now_v7(),
                kind: KeyKind::Production,
                hash: next.hash.clone(),
                display_prefix: next.display_prefix.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(store.authenticate_key(&hash).await.unwrap(), None);
    assert!(store.authenticate_key(&next.hash).await.unwrap().is_some());
    let keys = store.get_tenant(id).await.unwrap().unwrap().api_keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].display_prefix, next.display_prefix);

    store
        .deprovision(id, now() + Duration::days(30))
        .await
        .unwrap();
    assert_eq!(store.authenticate_key(&next.hash).await.unwrap(), None);
}

async fn a_health_summary_counts_critical_and_down_minutes_as_bad(store: Arc<dyn Store>) {
    let f = tenant("acme");
    store.create_tenant(&f.new).await.unwrap();
    let start = now().duration_trunc(Duration::minutes(1)).unwrap() - Duration::hours(1);
    let rollups: Vec<Rollup> = HealthStatus::ALL
        .iter()
        .enumerate()
        .map(|(i, &status)| Rollup {
            status,
            availability: if status.is_available() { 1.0 } else { 0.0 },
            latency_p95_ms: Some(20.0 + i as f64),
            ..rollup(f.new.tenant.id, start + Duration::minutes(i as i64))
        })
        .collect();
    let fence = lead(store.as_ref(), "test").await;
    store.write_rollups(&rollups, fence).await.unwrap();
    let summaries = store
        .health_summaries(start, start + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(summaries.len(), 1);
    let summary = &summaries[0];
    assert_eq!(summary.tenant_id, f.new.tenant.id);
    assert_eq!(summary.minutes, HealthStatus::ALL.len() as i64);
    assert_eq!(
        summary.bad_minutes, 2,
        "critical and down, not unknown or warning"
    );
    assert_eq!(summary.latency_p95_ms, Some(20.0 + 4.0));
}

/// A healthy minute of `tenant`'s.
fn rollup(tenant: Uuid, minute: chrono::DateTime<chrono::Utc>) -> Rollup {
    Rollup {
        tenant_id: tenant,
        minute,
        status: HealthStatus::Healthy,
        availability: 1.0,
        latency_p50_ms: Some(10.0),
        latency_p95_ms: Some(20.0),
        latency_max_ms: Some(30.0),
        error_rate_percent: Some(0.0),
        requests_per_minute: Some(60.0),
        storage_bytes: Some(1 << 30),
        users: Some(5.0),
        samples: 12,
    }
}

/// Takes the lease for `holder`, which must get it.
async fn lead(store: &dyn Store, holder: &str) -> Fence {
    let term = store.campaign(holder, LEASE).await.unwrap();
    assert_eq!(term.holder, holder, "the lease is free");
    Fence { epoch: term.epoch }
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// A leader's subscribers hear when it starts or stops leading, not of
/// each renewal of its term: the deployer reconciled every tenant (render,
/// hash, and against a cluster a drift check) at each renewal, seconds
/// apart, as if it had just been elected.
async fn a_renewed_term_is_not_news_to_its_subscribers(store: Arc<dyn Store>) {
    use knowton_coordinator::leader::{LeaderSettings, Leadership};
    let settings = LeaderSettings {
        replica: "r0".to_owned(),
        // Renewed every 0.5 s.
        lease: StdDuration::from_millis(1500),
        advertise_ip: None,
        resync_every: StdDuration::from_secs(60),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (leadership, campaign) = Leadership::campaign(store.clone(), settings, true, stopped)
        .await
        .unwrap();
    let mut term = leadership.subscribe();
    let fence = (*term.borrow_and_update()).expect("a lone replica leads at once");
    let first = store.term().await.unwrap().unwrap();
    let mut renewed = first.renewed_ms;
    for renewal in 1..=3 {
        let last = renewed;
        renewed = eventually(
            StdDuration::from_secs(20),
            &format!("renewal {renewal}"),
            || {
                let store = store.clone();
                async move {
                    let now = store.term().await.unwrap()?;
                    (now.renewed_ms > last).then_some(now.renewed_ms)
                }
            },
        )
        .await;
    }
    assert_eq!(store.term().await.unwrap().unwrap().epoch, first.epoch);
    assert!(
        !term.has_changed().unwrap(),
        "three renewals of the same term were sent as news"
    );
    assert_eq!(*term.borrow(), Some(fence));
    stop.send(true).unwrap();
    campaign.await.unwrap();
}

async fn the_lease_has_one_holder_and_fences_a_deposed_leaders_writes(store: Arc<dyn Store>) {
    assert_eq!(store.term().await.unwrap(), None, "nobody has led yet");
    let a = store.campaign("a", LEASE).await.unwrap();
    assert_eq!((a.holder.as_str(), a.epoch), ("a", 1));
    assert!(
        a.remaining() > LEASE - std::time::Duration::from_secs(5) && a.remaining() <= LEASE,
        "{a:?}"
    );

    // Unexpired, the lease is a's: b is told who leads, a renews in the
    // same epoch.
    let seen_by_b = store.campaign("b", LEASE).await.unwrap();
    assert_eq!((seen_by_b.holder.as_str(), seen_by_b.epoch), ("a", 1));
    let renewed = store.campaign("a", LEASE).await.unwrap();
    assert_eq!((renewed.epoch, renewed.acquired_ms), (1, a.acquired_ms));
    assert!(renewed.expires_ms >= a.expires_ms);

    let f = tenant("acme");
    store.create_tenant(&f.new).await.unwrap();
    let minute = now().duration_trunc(Duration::minutes(1)).unwrap() - Duration::minutes(5);
    let written = rollup(f.new.tenant.id, minute);
    store
        .write_rollups(std::slice::from_ref(&written), Fence { epoch: 1 })
        .await
        .unwrap();

    // a's lease runs out (renewed for no time at all): b takes it over in
    // the next epoch.
    store
        .campaign("a", std::time::Duration::ZERO)
        .await
        .unwrap();
    let b = store.campaign("b", LEASE).await.unwrap();
    assert_eq!((b.holder.as_str(), b.epoch), ("b", 2));

    // a, deposed but still believing it leads, is refused and changes
    // nothing.
    let late = Rollup {
        status: HealthStatus::Down,
        ..written.clone()
    };
    let err = store
        .write_rollups(&[late], Fence { epoch: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                held: 1,
                current: Some(2)
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("epoch 1"), "{err}");
    let stored = store
        .rollups(f.new.tenant.id, minute, minute + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(stored, vec![written]);
    // Nor can it end b's term, or take the lease back.
    store.resign("a", 1).await.unwrap();
    assert_eq!(store.campaign("a", LEASE).await.unwrap().holder, "b");

    // b resigns: a takes over at once, in a new epoch.
    store.resign("b", 2).await.unwrap();
    let again = store.campaign("a", LEASE).await.unwrap();
    assert_eq!((again.holder.as_str(), again.epoch), ("a", 3));
    assert!(again.acquired_ms >= b.acquired_ms);
}

async fn usage_is_recorded(store: Arc<dyn Store>) {
    let f = tenant("acme");
    store.create_tenant(&f.new).await.unwrap();
    let usage = Usage {
        users: 42,
        storage_bytes: 5 << 40,
        api_requests: 123_456,
    };
    store.set_usage(f.new.tenant.id, usage).await.unwrap();
    assert_eq!(
        store
            .get_tenant(f.new.tenant.id)
            .await
            .unwrap()
            .unwrap()
            .usage,
        usage
    );
    assert!(matches!(
        store.set_usage(Uuid::now_v7(), usage).await,
        Err(StoreError::NotFound)
    ));
}

async fn deprovision_then_expiry_then_purge(store: Arc<dyn Store>) {
    let keep = tenant("keep");
    let gone = tenant("gone");
    store.create_tenant(&keep.new).await.unwrap();
    store.create_tenant(&gone.new).await.unwrap();
    let id = gone.new.tenant.id;
    let until = now() + Duration::days(7);
    store.deprovision(id, until).await.unwrap();
    store
        .deprovision(id, until + Duration::days(99))
        .await
        .unwrap();
    let t = store.get_tenant(id).await.unwrap().unwrap();
    assert_eq!(t.status, TenantStatus::Deprovisioned);
    assert_eq!(
        t.retain_until,
        Some(until),
        "a second deprovision keeps the first retention"
    );
    assert!(store.expired_tenants(now()).await.unwrap().is_empty());
    assert_eq!(
        store
            .expired_tenants(until + Duration::seconds(1))
            .await
            .unwrap(),
        [id]
    );

    store.purge(id).await.unwrap();
    assert_eq!(store.get_tenant(id).await.unwrap(), None);
    assert!(store.sealed_secrets(id).await.unwrap().is_empty());
    assert!(store.config_history(id).await.unwrap().is_empty());
    assert!(matches!(store.purge(id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.deprovision(id, until).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .get_tenant(keep.new.tenant.id)
            .await
            .unwrap()
            .is_some()
    );
}

/// The budget's one statement grants, grants partially, refuses and
/// refills as `knowton_common::ratelimit` says, on the database's clock
/// (each lease checked against the arithmetic from the TAT before it and
/// the clock it reports). Full budgets are deleted; a purge deletes the
/// tenant's; a tenant that does not exist has none.
async fn the_shared_rate_budget_computes_what_the_gcra_arithmetic_does(store: Arc<dyn Store>) {
    // 120 a minute: a token every 500 ms, so no refill comes between two
    // statements of a sound machine, and the refill in moments.
    const RATE: u32 = 120;
    let f = tenant("acme");
    store.create_tenant(&f.new).await.unwrap();
    let id = f.new.tenant.id;
    let tat = std::cell::Cell::new(i64::MIN);
    let lease = async |want: u32| {
        let taken = store.take_tokens(id, RATE, want).await.unwrap();
        let expected = ratelimit::take(tat.get(), taken.now_ms, RATE, want);
        assert_eq!(
            (taken.granted, taken.tat_ms),
            (expected.granted, expected.tat_ms),
            "lease of {want} after TAT {} at {}",
            tat.get(),
            taken.now_ms
        );
        tat.set(taken.tat_ms);
        taken
    };
    let first = lease(10).await;
    assert_eq!(first.granted, 10);
    assert_eq!(first.tat_ms, first.now_ms + 5_000);
    let partial = lease(RATE).await;
    assert!(
        (RATE - 10..RATE).contains(&partial.granted),
        "{}",
        partial.granted
    );
    let refused = lease(2).await;
    assert_eq!(refused.granted, 0);
    let wait = ratelimit::wait_ms(refused.tat_ms, refused.now_ms, RATE, 2);
    assert!((1..=1_000).contains(&wait), "{wait} ms");
    eventually(StdDuration::from_secs(5), "a token back", || async {
        (lease(1).await.granted == 1).then_some(())
    })
    .await;
    assert_eq!(store.forget_full_budgets().await.unwrap(), 0);

    // 60 000 a minute: full again a millisecond after a lease of one.
    let other = tenant("other");
    store.create_tenant(&other.new).await.unwrap();
    let fast = store
        .take_tokens(other.new.tenant.id, 60_000, 1)
        .await
        .unwrap();
    assert_eq!((fast.granted, fast.tat_ms), (1, fast.now_ms + 1));
    eventually(
        StdDuration::from_secs(5),
        "a full budget deleted",
        || async { (store.forget_full_budgets().await.unwrap() == 1).then_some(()) },
    )
    .await;

    store.deprovision(id, now()).await.unwrap();
    store.purge(id).await.unwrap();
    assert!(
        store.take_tokens(id, RATE, 1).await.is_err(),
        "no tenant, no budget"
    );
}

/// A request makes a finished deployment pending again, unless its attempt
/// started after the request was made (the request's statement ran late:
/// that attempt already deployed the change, and its outcome stands).
async fn a_deployment_request_reopens_only_what_started_before_it(store: Arc<dyn Store>) {
    use knowton_common::health::DeploymentTrigger;
    use knowton_coordinator::store::{DeploymentRow, Phase};
    let f = tenant("acme");
    let id = f.new.tenant.id;
    store.create_tenant(&f.new).await.unwrap();
    let requested = store
        .request_deployment(id, DeploymentTrigger::Provisioned)
        .await
        .unwrap();
    assert_eq!(requested.phase, Phase::Pending);

    let finished = |phase, started: chrono::DateTime<chrono::Utc>| DeploymentRow {
        phase,
        attempt: 1,
        reason: Some("failed to apply Namespace: 500".to_owned()),
        started_at: Some(started),
        finished_at: Some(started),
        ..requested.clone()
    };
    // Started a minute from now (after the request below): its outcome
    // stands. Started before the request: pending again, for the new
    // trigger.
    let reason = finished(Phase::Failed, now()).reason;
    let fence = lead(store.as_ref(), "deployer").await;
    for (started, phase, trigger, reason) in [
        (
            now() + Duration::minutes(1),
            Phase::Failed,
            DeploymentTrigger::Provisioned,
            reason,
        ),
        (
            now() - Duration::minutes(1),
            Phase::Pending,
            DeploymentTrigger::Updated,
            None,
        ),
    ] {
        store
            .save_deployment(&finished(Phase::Failed, started), None, fence)
            .await
            .unwrap();
        let row = store
            .request_deployment(id, DeploymentTrigger::Updated)
            .await
            .unwrap();
        assert_eq!(row.phase, phase, "{row:?}");
        assert_eq!(row.trigger, trigger);
        assert_eq!(row.reason, reason);
    }
}

/// The deployer's start-up reconcile can start a new tenant's first
/// attempt before provisioning has recorded its request. That attempt
/// deployed what the tenant was created with: the request must not reopen
/// it (a second attempt would deploy the same tenant again).
async fn a_provisioning_request_is_served_by_any_attempt_since_creation(store: Arc<dyn Store>) {
    use knowton_common::health::DeploymentTrigger;
    use knowton_coordinator::store::{DeploymentRow, Phase};
    let f = tenant("acme");
    let id = f.new.tenant.id;
    store.create_tenant(&f.new).await.unwrap();
    let created = store.get_tenant(id).await.unwrap().unwrap().created_at;
    // The reconcile's attempt: started after the creation, failed fast,
    // all before the provisioning request's statement runs.
    let started = created + Duration::microseconds(1);
    let attempt = DeploymentRow {
        phase: Phase::Failed,
        attempt: 1,
        reason: Some("failed to apply Namespace: 500".to_owned()),
        started_at: Some(started),
        finished_at: Some(started),
        ..DeploymentRow::new(id, DeploymentTrigger::Provisioned)
    };
    let fence = lead(store.as_ref(), "deployer").await;
    store.save_deployment(&attempt, None, fence).await.unwrap();
    assert!(now() > started, "the request comes after the attempt");
    let row = store
        .request_deployment(id, DeploymentTrigger::Provisioned)
        .await
        .unwrap();
    assert_eq!(row.phase, Phase::Failed, "served, not reopened: {row:?}");
    assert_eq!(row.attempt, 1);
    // Any other request made now still reopens it.
    let row = store
        .request_deployment(id, DeploymentTrigger::Updated)
        .await
        .unwrap();
    assert_eq!(row.phase, Phase::Pending, "{row:?}");
}

fn backup_run(tenant: Uuid, kind: BackupKind, started: chrono::DateTime<chrono::Utc>) -> BackupRun {
    BackupRun {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        kind,
        trigger: RunTrigger::Manual,
        actor: "admin".to_owned(),
        status: RunStatus::Running,
        started_at: started,
        updated_at: started,
        finished_at: None,
        bytes_read: 0,
        bytes_written: 0,
        new_chunks: 0,
        backup_id: None,
        error: None,
    }
}

/// A tenant has one running backup of a kind at a time; one whose
/// coordinator stopped updating it is marked failed (interrupted) when the
/// next starts; runs list newest first with their progress and outcome,
/// and the last success of each kind is what the backup-age check reads.
async fn one_backup_run_at_a_time_and_a_stale_one_is_marked_interrupted(store: Arc<dyn Store>) {
    let fixture = tenant("backed");
    store.create_tenant(&fixture.new).await.unwrap();
    let id = fixture.new.tenant.id;
    let t0 = now() - Duration::hours(1);

    let first = backup_run(id, BackupKind::Database, t0);
    store
        .start_backup_run(&first, t0 - Duration::minutes(5))
        .await
        .unwrap();
    // Another kind runs beside it.
    let files = backup_run(id, BackupKind::Storage, t0);
    store
        .start_backup_run(&files, t0 - Duration::minutes(5))
        .await
        .unwrap();
    let second = backup_run(id, BackupKind::Database, t0 + Duration::minutes(1));
    let refused = store
        .start_backup_run(&second, t0 - Duration::minutes(5))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Conflict(Unique::BackupRunning)),
        "{refused:?}"
    );

    let progress = RunProgress {
        bytes_read: 10,
        bytes_written: 4,
        new_chunks: 1,
    };
    store.touch_backup_run(files.id, progress).await.unwrap();
    let backup = Uuid::now_v7();
    store
        .finish_backup_run(files.id, progress, Some(backup), None)
        .await
        .unwrap();

    // Later: the first database run was last updated at t0, before the
    // staleness bound; it is marked interrupted and the new one starts.
    store
        .start_backup_run(&second, t0 + Duration::minutes(1))
        .await
        .unwrap();
    let runs = store.backup_runs(id, 10).await.unwrap();
    let by_id = |run: &BackupRun| runs.iter().find(|r| r.id == run.id).unwrap().clone();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0].id, second.id, "newest first");
    let interrupted = by_id(&first);
    assert_eq!(interrupted.status, RunStatus::Failed);
    assert!(
        interrupted
            .error
            .as_deref()
            .unwrap()
            .contains("interrupted")
    );
    let done = by_id(&files);
    assert_eq!(
        (
            done.status,
            done.bytes_read,
            done.bytes_written,
            done.new_chunks,
            done.backup_id
        ),
        (RunStatus::Succeeded, 10, 4, 1, Some(backup))
    );
    assert!(done.finished_at.is_some());

    let long_error = "x".repeat(10_000);
    store
        .finish_backup_run(second.id, RunProgress::default(), None, Some(&long_error))
        .await
        .unwrap();
    let failed = store.backup_runs(id, 1).await.unwrap().remove(0);
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.unwrap().len(), 2000, "the error is kept short");

    let last = store.last_backup_successes().await.unwrap();
    assert_eq!(
        last.iter()
            .map(|l| (l.tenant_id, l.slug.as_str(), l.kind, l.started_at))
            .collect::<Vec<_>>(),
        [(id, "backed", BackupKind::Storage, t0)]
    );
    store.purge(id).await.unwrap();
    assert!(store.backup_runs(id, 10).await.unwrap().is_empty());
}

/// Every configuration version, thresholds and channels included, is
/// queued for backup in its own transaction with the thresholds and the
/// sealed channels it committed; the queue lists the pending ones oldest
/// first (a tenant's alone, a bounded batch) until each is marked, and
/// marking again changes nothing.
async fn configuration_versions_queue_for_backup_with_what_they_committed(store: Arc<dyn Store>) {
    use knowton_common::thresholds::{Level, Thresholds};
    let committed = store.config_committed();
    let fixture = tenant("queued");
    let other = tenant("other");
    let id = fixture.new.tenant.id;
    store.create_tenant(&fixture.new).await.unwrap();
    tokio::time::timeout(StdDuration::from_secs(5), committed.notified())
        .await
        .expect("a committed version wakes the queue's worker");
    store.create_tenant(&other.new).await.unwrap();

    let thresholds = Thresholds {
        response_time_ms: Level {
            warning: 100.0,
            critical: 200.0,
        },
        ..Thresholds::default()
    };
    store
        .set_thresholds(id, Some(&thresholds), "admin")
        .await
        .unwrap();
    // The same again is no change: no version.
    store
        .set_thresholds(id, Some(&thresholds), "admin")
        .await
        .unwrap();
    let channels = StoredChannels {
        emails: Some(vec!["ops@queued.example.com".into()]),
        sealed_webhook: Some("sealed-webhook-value".into()),
        sealed_slack: None,
        display: serde_json::json!({"webhookUrl": "https://hooks.example.com/…"}),
        updated_at: now(),
    };
    store
        .set_notification_channels(id, &channels, "admin", "webhook")
        .await
        .unwrap();
    assert_eq!(
        store.get_tenant(id).await.unwrap().unwrap().config_version,
        3,
        "thresholds are a configuration version"
    );
    assert!(matches!(
        store
            .set_thresholds(Uuid::now_v7(), Some(&thresholds), "admin")
            .await,
        Err(StoreError::NotFound)
    ));

    let versions = |pending: &[CommittedConfig]| {
        pending
            .iter()
            .map(|p| (p.slug.clone(), p.version.version))
            .collect::<Vec<_>>()
    };
    let pending = store.pending_config_versions(Some(id), 10).await.unwrap();
    assert_eq!(
        versions(&pending),
        [
            ("queued".into(), 1),
            ("queued".into(), 2),
            ("queued".into(), 3)
        ]
    );
    let first = pending[0].settings.as_ref().unwrap();
    assert_eq!(first.thresholds, None, "the defaults");
    assert_eq!(
        pending[0].version.snapshot["thresholds"],
        serde_json::Value::Null
    );
    let second = pending[1].settings.as_ref().unwrap();
    assert_eq!(second.thresholds, Some(thresholds));
    assert_eq!(pending[1].version.change, "thresholds");
    assert_eq!(
        pending[1].version.snapshot["thresholds"]["responseTimeMs"]["warning"],
        100.0
    );
    let third = pending[2].settings.as_ref().unwrap();
    assert_eq!(third.thresholds, Some(thresholds), "kept from before");
    let sealed = third.channels.as_ref().unwrap();
    assert_eq!(
        (sealed.emails.clone(), sealed.sealed_webhook.as_deref()),
        (
            Some(vec!["ops@queued.example.com".to_owned()]),
            Some("sealed-webhook-value")
        )
    );
    assert!(
        !pending[2]
            .version
            .snapshot
            .to_string()
            .contains("sealed-webhook-value"),
        "the history shows no sealed value"
    );

    let all = store.pending_config_versions(None, 2).await.unwrap();
    assert_eq!(all.len(), 2, "a bounded batch");
    assert_eq!(
        store.pending_config_versions(None, 10).await.unwrap().len(),
        4,
        "both tenants' versions"
    );

    store.mark_config_backed_up(id, 1).await.unwrap();
    store.mark_config_backed_up(id, 2).await.unwrap();
    store.mark_config_backed_up(id, 2).await.unwrap();
    assert_eq!(
        versions(&store.pending_config_versions(Some(id), 10).await.unwrap()),
        [("queued".into(), 3)]
    );
    let latest = store.latest_config_version(id).await.unwrap().unwrap();
    assert_eq!(latest.version.version, 3);
    assert_eq!(latest.settings, pending[2].settings);

    store.set_thresholds(id, None, "admin").await.unwrap();
    let reset = store.latest_config_version(id).await.unwrap().unwrap();
    assert_eq!(
        (
            reset.version.version,
            reset.version.change.as_str(),
            reset.settings.unwrap().thresholds
        ),
        (4, "thresholds reset to the defaults", None)
    );
    store.purge(id).await.unwrap();
    assert!(
        store
            .pending_config_versions(Some(id), 10)
            .await
            .unwrap()
            .is_empty()
    );
}
