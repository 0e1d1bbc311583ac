//! A release whose probes answer while its real routes fail (every request
//! but the probes answers 500: `APP_ERROR_RATE=1`).
//!
//! Expected: with `health.verify_paths = ["/version"]`, a rolling and a
//! blue-green deploy of it each exit 1 with a reason naming the route and
//! the 500, are recorded failed, and traffic is back on the previous release
//! (every public `/version` answers 200 again, all instances are the
//! previous release's). Requests to real routes fail only while the bad
//! release held traffic (the figure is printed). Without `verify_paths` the
//! same release passes a health-only verification and stays: the field is
//! what catches it.
use xtask::targets::Target;

use crate::support::deploy_env::outcome_of;
use crate::{figure, load_against, public_status, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_failing_its_real_routes_is_rolled_back_when_verify_paths_names_one() {
    let (_serial, v1, v2, env) = setup("routes", 0).await;
    env.edit("[app.env]", "[app]\ndebug_knobs = true\n[app.env]");
    env.edit(
        "verify_seconds = 1",
        "verify_seconds = 1\nverify_paths = [\"/version\"]",
    );
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    let client = env.target().await.public_client().unwrap();

    for (id, strategy) in [("r2", "rolling"), ("r3", "blue-green")] {
        let load = load_against(&env).await;
        let (ok, out, stderr) = env.xtask_json(&[
            "deploy",
            "--image",
            &v2,
            "--strategy",
            strategy,
            "--env",
            "APP_DEBUG_ROUTES=true",
            "--env",
            "APP_ERROR_RATE=1",
        ]);
        let report = load.stop().await;
        assert!(
            !ok,
            "{strategy}: a release failing /version must not stay: {out}\n{stderr}"
        );
        let reason = out["release"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("/version answered HTTP 500")
                && reason.contains("rounds in a row) during verification"),
            "{strategy}: {out}"
        );
        assert_eq!(outcome_of(&env.xtask_json(&["history"]).1, id).0, "failed");
        for _ in 0..20 {
            assert_eq!(public_status(&env, &client, "/version").await, Some(200));
        }
        let serving = env.target().await.instances().await.unwrap();
        assert!(
            serving.len() == 3 && serving.iter().all(|i| i.release == "r1"),
            "{strategy}: back on r1 only: {serving:?}"
        );
        figure(
            "routes",
            &format!("{strategy} failed requests while it held traffic"),
            report.failed,
        );
        figure("routes", &format!("{strategy} ok requests"), report.ok);
    }

    // The hole the field closes: health-only verification passes the same release.
    env.edit("verify_paths = [\"/version\"]", "");
    let (ok, out, stderr) = env.xtask_json(&[
        "deploy",
        "--image",
        &v2,
        "--env",
        "APP_DEBUG_ROUTES=true",
        "--env",
        "APP_ERROR_RATE=1",
    ]);
    assert!(
        ok,
        "without verify_paths only /ready is verified: {out}\n{stderr}"
    );
    assert_eq!(public_status(&env, &client, "/version").await, Some(500));
}
