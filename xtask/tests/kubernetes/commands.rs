use super::*;

#[tokio::test]
async fn the_context_flag_overrides_target_context() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = environment(dir.path(), None, "staging");
    // "other" is the kubeconfig's cluster on 127.0.0.1:9, where nothing listens.
    kube_config(&mut env).context = Some("other".into());
    let wrong = KubeTarget::from_kubeconfig_file(&env, &fake.kubeconfig, None)
        .await
        .unwrap();
    assert!(
        wrong.read_history().await.is_err(),
        "target.context = other is used"
    );
    let right = KubeTarget::from_kubeconfig_file(&env, &fake.kubeconfig, Some("fake"))
        .await
        .unwrap();
    assert!(right.read_history().await.unwrap().releases.is_empty());
    assert_eq!(
        lines(&fake.take_calls()),
        calls(&[&format!("GET {HISTORY}")])
    );
}

#[tokio::test]
async fn status_history_and_lock_commands_dispatch_to_the_cluster() {
    use xtask::cli::{
        lifecycle::{lock_command, LockAction},
        observe::status,
        releases::{history_command, EnvArg, EnvJsonArgs},
    };
    let s = setup(None).await;
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    let stuck = LockInfo {
        holder: "carol".into(),
        host: "elsewhere".into(),
        pid: 1,
        since: chrono::Utc::now().timestamp(),
        ttl_seconds: 900,
        command: "deploy".into(),
        renewed: None,
    };
    s.fake.insert(LEASE, lease(&stuck));
    s.fake.take_calls();
    // The commands read KUBECONFIG, as on a runner; no other test here reads it.
    std::env::set_var("KUBECONFIG", &s.fake.kubeconfig);
    let arg = EnvArg {
        environment: s.env.path.to_string_lossy().into_owned(),
        context: Some("fake".into()),
    };
    let args = |json| EnvJsonArgs {
        env: arg.clone(),
        json,
    };
    status(args(true)).await.unwrap();
    history_command(args(true)).await.unwrap();
    lock_command(LockAction::Release(args(false)))
        .await
        .unwrap();
    assert_eq!(
        lines(&s.fake.take_calls()),
        calls(&[
            &format!("GET {HISTORY}"), // is an earlier run abandoned? carol is alive: no
            &format!("GET {LEASE}"),
            &format!("GET {HISTORY}"),
            &format!("GET {LEASE}"),
            &format!("GET {NS}/services/app"), // no colour: a rolling deploy
            &format!("GET {APPS}/deployments/app"),
            &format!("GET {HISTORY}"),
            &format!("GET {LEASE}"),
            &format!("DELETE {LEASE}"),
        ])
    );
    assert!(
        s.fake.get(LEASE).is_none(),
        "lock release removed carol's lease"
    );
    let docker = EnvArg {
        environment: "staging".into(),
        context: Some("fake".into()),
    };
    let err = history_command(EnvJsonArgs {
        env: docker,
        json: true,
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--context") && err.contains("not a kubernetes target"),
        "{err}"
    );
}

/// `deploy --dry-run` prints the target's plan: the rendered objects, whose
/// Deployment carries the release's variables. They are redacted there,
/// whoever asks for the plan (a release recorded before secrets were refused).
#[tokio::test]
async fn the_dry_run_plan_shows_the_variables_redacted() {
    use xtask::targets::Target;
    let s = setup(None).await;
    let mut release = History::default().begin_preview("xtask-app:9.9.9");
    release.env.insert("DB_PASS".into(), "hunter2-a".into());
    release.env.insert(
        "DATABASE_URL".into(),
        "postgres://app:hunter2-b@db:5432/app".into(),
    );
    release
        .env
        .insert("DSN".into(), "host=db password=hunter2-c dbname=app".into());
    release.env.insert("GREETING".into(), "hello".into());
    let plan = s.target.plan(&release).await.unwrap().to_string();
    assert!(!plan.contains("hunter2"), "{plan}");
    for shown in [
        r#"{"name":"DB_PASS","value":"***"}"#,
        "postgres://app:***@db:5432/app",
        "host=db password=*** dbname=app",
        r#"{"name":"GREETING","value":"hello"}"#,
    ] {
        assert!(plan.contains(shown), "{shown} in {plan}");
    }
    assert_eq!(
        lines(&s.fake.take_calls()),
        calls(&[&format!("GET {APPS}/deployments/app")]),
        "a plan only reads (the count an HPA runs)"
    );
}
