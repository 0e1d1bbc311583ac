//! Tags move (`<commit>-dirty`, `latest`, a version rebuilt): a release
//! runs the image id it admitted, and a rollback restores that id, not
//! whatever the tag names by then.
mod support;

use support::deploy_env::TestEnv;

async fn tag(docker: &bollard::Docker, source: &str, tag: &str) {
    let (repo, tag) = tag.rsplit_once(':').unwrap();
    docker
        .tag_image(
            source,
            Some(
                bollard::query_parameters::TagImageOptionsBuilder::default()
                    .repo(repo)
                    .tag(tag)
                    .build(),
            ),
        )
        .await
        .unwrap();
}

async fn image_id(docker: &bollard::Docker, reference: &str) -> String {
    docker.inspect_image(reference).await.unwrap().id.unwrap()
}

/// The image ids the environment's instances run.
async fn running_ids(docker: &bollard::Docker, env: &TestEnv) -> Vec<String> {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![
            format!("xtask.scope=xtask-test-app--{}", env.name),
            "xtask.role=instance".to_owned(),
        ],
    )]);
    let mut ids: Vec<String> = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.image_id)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_restores_the_image_id_its_release_ran_after_the_tag_moved() {
    let _serial = support::SERIAL.lock().await;
    let (docker, _) = support::docker().await;
    support::balancer_image(&docker).await;
    let v1 = support::built_image(&docker).await.tags[0].clone();
    let v2 = support::second_image(&docker).await;
    let moving = "xtask-test-app:moving";
    tag(&docker, &v1, moving).await;
    let (first, second) = (image_id(&docker, &v1).await, image_id(&docker, &v2).await);
    assert_ne!(first, second);

    let env = TestEnv::new("moved", "rolling", 0);
    let (ok, r1, stderr) = env.xtask_json(&["deploy", "--image", moving]);
    assert!(ok, "{r1}\n{stderr}");
    assert_eq!(r1["release"]["image_id"], first.as_str());
    // The tag moves to another image, which the next release ships.
    tag(&docker, &v2, moving).await;
    let (ok, r2, stderr) = env.xtask_json(&["deploy", "--image", moving]);
    assert!(ok, "{r2}\n{stderr}");
    assert_eq!(r2["release"]["image_id"], second.as_str());
    assert_eq!(running_ids(&docker, &env).await, vec![second.clone()]);

    let (ok, back, stderr) = env.xtask_json(&["rollback"]);
    assert!(ok, "{back}\n{stderr}");
    assert_eq!(back["release"]["restores"], r1["release"]["id"]);
    assert_eq!(back["release"]["image_id"], first.as_str(), "{back}");
    assert_eq!(
        running_ids(&docker, &env).await,
        vec![first.clone()],
        "the rollback runs r1's image, not what `moving` names now"
    );
}
