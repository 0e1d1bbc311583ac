//! A tag moves in the registry (a version pushed again): releases run the
//! digest they were admitted with, and so do their rollbacks and every task
//! swarm starts later, never whatever the tag names by then.
use std::time::Duration;

use serde_json::Value;

use super::*;

/// Tags `source` as `xtask-test-app:<tag>` and pushes it to the engine's
/// registry: (the registry reference, its manifest digest).
async fn push_as(docker: &bollard::Docker, source: &str, tag: &str) -> (String, String) {
    let local = format!("xtask-test-app:{tag}");
    xtask::image::tag(docker, source, &local).await.unwrap();
    let pushed = support::xtask(&["push", &local, "--json"]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let pushed: Value = serde_json::from_slice(&pushed.stdout).unwrap();
    let text = |k: &str| pushed[k].as_str().unwrap().to_owned();
    (text("reference"), text("digest"))
}

async fn image_id(docker: &bollard::Docker, reference: &str) -> String {
    docker.inspect_image(reference).await.unwrap().id.unwrap()
}

/// The image the blue service's spec runs.
async fn spec_image(target: &SwarmTarget) -> String {
    let service = target
        .inspect_service(&target.service_name("blue"))
        .await
        .unwrap()
        .unwrap();
    let spec = serde_json::to_value(service.spec.unwrap()).unwrap();
    spec["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The image ids of the blue service's running containers (one node: the
/// manager runs them all).
async fn task_images(docker: &bollard::Docker, target: &SwarmTarget) -> Vec<String> {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!(
            "com.docker.swarm.service.name={}",
            target.service_name("blue")
        )],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    let containers = docker.list_containers(Some(options)).await.unwrap();
    let mut ids: Vec<String> = containers.into_iter().filter_map(|c| c.image_id).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Waits (up to 30 s) until three blue tasks run, none of them `gone`,
/// and every blue container runs image `wanted`; panics with what ran instead.
async fn settles_on(docker: &bollard::Docker, target: &SwarmTarget, wanted: &str, gone: &str) {
    let (mut images, mut live) = (vec![], vec![]);
    for _ in 0..300 {
        images = task_images(docker, target).await;
        live = target
            .tasks(&target.service_name("blue"))
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.wanted() && t.running())
            .map(|t| t.id)
            .collect();
        if images == [wanted] && live.len() == 3 && !live.iter().any(|t| t == gone) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the blue tasks {live:?} never all ran {wanted} only: their containers ran {images:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_and_a_rescheduled_task_run_the_digest_their_release_ran_after_the_tag_moved() {
    let (_serial, v1, v2, env) = setup("sw-pin", "rolling", "").await;
    let docker = support::swarm().await;
    let (first, second) = (image_id(&docker, &v1).await, image_id(&docker, &v2).await);
    assert_ne!(first, second);
    let (moving, d1) = push_as(&docker, &v1, "pinned").await;
    let (ok, r1, stderr) = env.xtask_json(&["deploy", "--image", &moving]);
    assert!(ok, "{r1} {stderr}");
    let pin1 = format!("{moving}@{d1}");
    assert_eq!(r1["release"]["image_id"], pin1.as_str(), "{r1}");
    let target = env.swarm_target().await;
    assert_eq!(spec_image(&target).await, pin1);

    // The same tag pushed again with other content, which the next release ships.
    let (again, d2) = push_as(&docker, &v2, "pinned").await;
    assert_eq!(again, moving);
    assert_ne!(d1, d2);
    let (ok, r2, stderr) = env.xtask_json(&["deploy", "--image", &moving]);
    assert!(ok, "{r2} {stderr}");
    assert_eq!(r2["release"]["image_id"], format!("{moving}@{d2}").as_str());
    settles_on(&docker, &target, &second, "").await;

    let (ok, back, stderr) = env.xtask_json(&["rollback"]);
    assert!(ok, "{back} {stderr}");
    assert_eq!(back["release"]["restores"], "r1");
    assert_eq!(back["release"]["image_id"], pin1.as_str(), "{back}");
    assert_eq!(
        spec_image(&target).await,
        pin1,
        "the spec carries r1's digest"
    );
    // r1's content, not what the tag names now.
    settles_on(&docker, &target, &first, "").await;
    let (_, history, _) = env.xtask_json(&["history"]);
    let shown: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["image"].as_str())
        .collect();
    assert_eq!(shown, [moving.as_str(); 3], "people see the tag: {history}");

    // A crash no xtask sees: swarm's replacement pulls by the pinned digest too.
    let victim = target.routed().await.unwrap().into_iter().next().unwrap();
    assert!(kill_task(&docker, &victim).await);
    settles_on(&docker, &target, &first, &victim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_no_registry_has_runs_the_managers_image_id() {
    let (_serial, v1, _, env) = setup("sw-local", "rolling", "").await;
    let docker = support::swarm().await;
    let (ok, r1, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "{r1} {stderr}");
    let id = image_id(&docker, &v1).await;
    assert_eq!(r1["release"]["image_id"], id.as_str(), "{r1}");
    assert_eq!(spec_image(&env.swarm_target().await).await, id);

    let nowhere = "127.0.0.1:1/xtask-test-app:gone";
    let refused = env.xtask(&["deploy", "--image", nowhere]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("resolving 127.0.0.1:1/xtask-test-app:gone to a digest"),
        "{stderr}"
    );
}
