//! The Docker target runs any HTTP image, not only the app: a third-party
//! server (Debian's static busybox `httpd`, FROM scratch, non-root) on its
//! own port and health path, deployed rolling and blue-green through the
//! HAProxy balancer container under keep-alive load to 127.0.0.1, with no
//! failed request.
mod support;

use support::deploy_env::{outcome_of, TestEnv};
use xtask::{image, setup, targets::Target};

const REPO: &str = "xtask-test-busybox";

/// Whether a 64-bit ELF asks for a dynamic loader (a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

/// A FROM-scratch image around the static busybox of this machine, serving
/// /www with `httpd` on port 9000; `release` is in its /version and /index.html.
async fn busybox_image(docker: &bollard::Docker, release: &str) -> String {
    setup::ensure(setup::BUSYBOX).expect("installing busybox-static");
    let busybox = std::fs::read("/bin/busybox").expect("reading /bin/busybox");
    assert!(
        !has_interpreter(&busybox),
        "/bin/busybox is dynamically linked: install busybox-static, not busybox"
    );
    let reference = format!("{REPO}:{release}");
    let dockerfile = "FROM scratch\n\
        COPY busybox /bin/busybox\n\
        COPY www /www\n\
        USER 65532:65532\n\
        EXPOSE 9000\n\
        CMD [\"/bin/busybox\",\"httpd\",\"-f\",\"-p\",\"9000\",\"-h\",\"/www\"]\n";
    let page = format!("busybox {release}\n");
    let tar = image::context::tar(
        dockerfile,
        &[
            image::context::File {
                path: "busybox".into(),
                contents: busybox,
                mode: 0o755,
            },
            image::context::File {
                path: "www/health".into(),
                contents: b"ok\n".to_vec(),
                mode: 0o644,
            },
            image::context::File {
                path: "www/index.html".into(),
                contents: page.clone().into_bytes(),
                mode: 0o644,
            },
            // The shared load generator asks for /version.
            image::context::File {
                path: "www/version".into(),
                contents: page.into_bytes(),
                mode: 0o644,
            },
        ],
    )
    .unwrap();
    image::build_context(docker, tar, std::slice::from_ref(&reference), true)
        .await
        .expect("building the busybox image");
    reference
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_image_deploys_rolling_and_blue_green_without_a_failed_request() {
    let _serial = support::SERIAL.lock().await;
    let (docker, _) = support::docker().await;
    support::balancer_image(&docker).await;
    let (one, two) = (
        busybox_image(&docker, "one").await,
        busybox_image(&docker, "two").await,
    );
    let env = TestEnv::any_image("busybox", "rolling", REPO, 9000, "/health");

    let (ok, first, stderr) = env.xtask_json(&["deploy", "--image", &one]);
    assert!(ok, "{stderr}");
    assert_eq!(first["release"]["outcome"], "active");
    let client = env.target().await.public_client().unwrap();
    let page = client
        .get(format!("{}/", env.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await.unwrap(), "busybox one\n");

    let load = env.load(client.clone()).await;
    let before = load.ok_so_far();
    let (ok, rolling, stderr) = env.xtask_json(&["deploy", "--image", &two]);
    assert!(ok, "{stderr}");
    assert_eq!(rolling["strategy"], "rolling");
    let during_rolling = load.ok_so_far() - before;
    let before = load.ok_so_far();
    let (ok, blue_green, stderr) =
        env.xtask_json(&["deploy", "--image", &one, "--strategy", "blue-green"]);
    assert!(ok, "{stderr}");
    assert_eq!(blue_green["strategy"], "blue-green");
    let during_blue_green = load.ok_so_far() - before;
    let report = load.stop().await;
    eprintln!(
        "busybox: {} requests ok ({during_rolling} during rolling, {during_blue_green} during blue-green), {} failed",
        report.ok, report.failed
    );
    assert_eq!(report.failed, 0, "failed requests: {:?}", report.errors);
    assert!(
        during_rolling > 100 && during_blue_green > 100,
        "load ran during both deploys"
    );

    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(outcome_of(&history, "r2").0, "superseded");
    assert_eq!(outcome_of(&history, "r3").0, "active");
    let target = env.target().await;
    let running = target.instances().await.unwrap();
    assert_eq!(running.len(), 3, "{running:?}");
    assert!(
        running
            .iter()
            .all(|i| i.release == "r3" && i.traffic.is_some_and(|t| t > 0.0)),
        "{running:?}"
    );
    let page = client
        .get(format!("{}/", env.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.text().await.unwrap(), "busybox one\n");
}
