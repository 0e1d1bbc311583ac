//! `prune` against the real engine: after eight deploys with
//! `keep_releases = 3`, only the images of the releases history keeps are
//! left, and `rollback --to` each of them still works.
mod support;

use support::deploy_env::TestEnv;
use xtask::image;

const REPO: &str = "xtask-prune-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_deploys_leave_only_the_kept_releases_images_and_each_rolls_back() {
    let _serial = support::SERIAL.lock().await;
    let (docker, _) = support::docker().await;
    let base = support::built_image(&docker).await.tags[0].clone();
    // Eight distinct images, oldest first (one second apart: image times are in seconds).
    let mut images = vec![];
    for n in 1..=8 {
        let reference = format!("{REPO}:{n}");
        let tar = image::context::tar(&format!("FROM {base}\nLABEL xtask.test.prune={n}\n"), &[])
            .unwrap();
        image::build_context(&docker, tar, std::slice::from_ref(&reference), true)
            .await
            .unwrap();
        images.push(reference);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let env = TestEnv::new("prune", "rolling", 0);
    env.edit("repo = \"xtask-test-app\"", &format!("repo = \"{REPO}\""));
    env.edit("replicas = 3", "replicas = 1");
    env.edit("keep_releases = 5", "keep_releases = 3");
    env.edit("prune = false", "prune = true");
    for image in &images {
        let (ok, report, stderr) = env.xtask_json(&["deploy", "--image", image]);
        assert!(ok, "{report} {stderr}");
    }
    let present = |reference: &str| {
        let docker = docker.clone();
        let reference = reference.to_owned();
        async move { docker.inspect_image(&reference).await.is_ok() }
    };
    for (n, image) in images.iter().enumerate() {
        let kept = n >= 5;
        assert_eq!(present(image).await, kept, "{image}: kept {kept}");
    }
    let (ok, dry, _) = env.xtask_json(&["prune", "--dry-run"]);
    assert!(
        ok && dry["pruned"]["removed"].as_array().unwrap().is_empty(),
        "{dry}"
    );
    for release in ["r6", "r7", "r8"] {
        let (ok, back, stderr) = env.xtask_json(&["rollback", "--to", release]);
        assert!(ok, "rollback --to {release}: {back} {stderr}");
    }
    for image in &images {
        let _ = docker
            .remove_image(
                image,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
}
