//! The lab for real: a 3-host swarm lab shared by the tests of this binary
//! (up once, down by the last test to finish), and a 1-host lab of its own
//! for the teardown scenarios, a 2-host one for a host lost mid-deploy, and a
//! 2-host one with small disks for the disk-full and partition faults. Needs root, like `cargo xtask ci`; a missing
//! tool or root is a failure, never a skip.
mod disk;
mod env;
mod faults;
mod fleet;
mod lost;
mod partition;
#[path = "../support/mod.rs"]
mod support;
mod swarm;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use bollard::{
    models::{ContainerCreateBody, HostConfig, PortBinding},
    query_parameters::CreateImageOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use xtask::{engine, image, lab, setup, workspace};

/// Names and folders no developer's own `cargo xtask lab up` uses.
const SHARED_PREFIX: &str = "xlt";
const TEARDOWN_PREFIX: &str = "xltd";

fn shared_dir() -> PathBuf {
    workspace::target_dir().join("lab-test")
}

/// The tests below that take a `Lease`: the last one to drop its lease
/// takes the shared lab down. Keep it equal to the number of such tests.
const SHARED_TESTS: usize = 8;
static REMAINING: AtomicUsize = AtomicUsize::new(SHARED_TESTS);
static SHARED: OnceCell<lab::Lab> = OnceCell::const_new();

/// The shared lab for one test; dropping it (also in a panic) counts the
/// test as done.
struct Lease(&'static lab::Lab);

impl Drop for Lease {
    fn drop(&mut self) {
        if REMAINING.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Drop cannot await, and may run inside the test's runtime.
            std::thread::spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for lab down");
                let started = Instant::now();
                runtime
                    .block_on(lab::down(SHARED_PREFIX, &shared_dir()))
                    .expect("taking the shared lab down");
                eprintln!("shared lab down in {:?}", started.elapsed());
            })
            .join()
            .expect("lab down thread");
        }
    }
}

async fn shared_lab() -> Lease {
    let lab = SHARED
        .get_or_init(|| async {
            let mut options = lab::Options::new(3, true);
            options.prefix = SHARED_PREFIX.into();
            options.dir = shared_dir();
            // Fresh each run: whatever an earlier, filtered run left goes first.
            lab::down(&options.prefix, &options.dir)
                .await
                .expect("removing an earlier test lab");
            let started = Instant::now();
            let (lab, made) = lab::up(&options).await.expect("lab up --hosts 3 --swarm");
            assert!(made);
            eprintln!("shared lab up in {:?}", started.elapsed());
            lab
        })
        .await;
    Lease(lab)
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/var/run/netns").join(name).exists()
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// A FROM-scratch image around this machine's static busybox serving
/// /www/index.html on port 9000, built on `docker`.
async fn busybox_image(docker: &bollard::Docker, tag: &str) -> String {
    setup::ensure(setup::BUSYBOX).expect("installing busybox-static");
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let reference = format!("xtask-test-lab-busybox:{tag}");
    let tar = image::context::tar(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nUSER 65532:65532\nEXPOSE 9000\n\
         CMD [\"/bin/busybox\",\"httpd\",\"-f\",\"-p\",\"9000\",\"-h\",\"/www\"]\n",
        &[
            image::context::File {
                path: "busybox".into(),
                contents: busybox,
                mode: 0o755,
            },
            image::context::File {
                path: "www/index.html".into(),
                contents: b"from the lab registry\n".to_vec(),
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
async fn every_host_has_its_namespace_daemons_hostname_and_no_default_route() {
    let lease = shared_lab().await;
    let lab = lease.0;
    assert_eq!(lab.hosts.len(), 3);
    assert!(link_exists(&lab.bridge), "bridge {}", lab.bridge);
    let status = lab::status(lab).await;
    assert!(status.up, "{status:#?}");
    for (host, seen) in lab.hosts.iter().zip(&status.hosts) {
        assert!(netns_exists(&host.netns), "{}", host.netns);
        assert!(
            seen.dockerd_alive && seen.docker_answers && seen.sshd_alive,
            "{seen:?}"
        );
        let routes = host.routes().expect("ip -n NS route");
        assert!(!routes.contains("default"), "{}: {routes}", host.name);
        assert!(routes.contains(&lab.subnet), "{}: {routes}", host.name);
        let docker = engine::connect(&host.docker_host()).await.unwrap();
        let info = docker.info().await.unwrap();
        // Its own UTS namespace: the swarm tells nodes apart by hostname too.
        assert_eq!(info.name.as_deref(), Some(host.name.as_str()));
        assert_eq!(
            info.docker_root_dir.map(PathBuf::from),
            Some(host.dir.join("data"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_over_ssh_reaches_every_host_through_the_project_ssh_config() {
    let lease = shared_lab().await;
    let lab = lease.0;
    setup::ensure(&[setup::Tool {
        program: "docker",
        package: "docker.io",
    }])
    .unwrap();
    for host in &lab.hosts {
        let output = duct::cmd!(
            "docker",
            "-H",
            host.ssh_docker_host(),
            "info",
            "--format",
            "{{.Name}} {{.Swarm.NodeID}}"
        )
        .env("PATH", lab.ssh.path_env())
        // Keep the user's docker config (contexts, credentials) out of it.
        .env("DOCKER_CONFIG", lab.dir.join("docker-config"))
        .env_remove("DOCKER_HOST")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}: {text}", host.name);
        let node_id = &host.swarm.as_ref().expect("a swarm member").node_id;
        assert_eq!(text.trim(), format!("{} {node_id}", host.name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_has_three_ready_nodes_and_one_manager() {
    let lease = shared_lab().await;
    let lab = lease.0;
    let status = lab::status(lab).await;
    let nodes = &status.swarm_nodes;
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert_eq!(nodes.iter().filter(|n| n[2] == "manager").count(), 1);
    assert!(nodes.iter().all(|n| n[3] == "ready"), "{nodes:?}");
    let mut hostnames: Vec<&str> = nodes.iter().map(|n| n[0].as_str()).collect();
    hostnames.sort();
    assert_eq!(hostnames, ["h1", "h2", "h3"]);
    assert_eq!(lab.manager().map(|h| h.name.as_str()), Some("h1"));
    for host in &lab.hosts {
        let recorded = host.swarm.as_ref().expect("recorded by up");
        assert!(
            nodes.iter().any(|n| n[1] == recorded.node_id),
            "{recorded:?}"
        );
    }
}

/// Built on the machine's engine, pushed to the lab registry over TLS with
/// its credentials, pulled by lab host h2 with them (and refused without),
/// run there and reached from the machine at h2's lab address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_to_the_lab_registry_is_pulled_with_auth_and_served_on_a_host() {
    let lease = shared_lab().await;
    let lab = lease.0;
    let (machine, _) = support::docker().await;
    let registry = lab.registry.as_ref().expect("the lab registry");
    let credentials = registry.credentials().unwrap();
    let auth = xtask::registry::Credentials::new(
        &credentials.username,
        &credentials.password,
        "the lab registry",
    );

    let source = busybox_image(&machine, "one").await;
    let pushed = xtask::registry::push(&machine, &source, &registry.address, Some(&auth), true)
        .await
        .expect("pushing to the lab registry (TLS trusted through certs.d, htpasswd auth)");
    let _ = machine
        .remove_image(
            &pushed.reference,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;

    let host = lab.host("h2").unwrap();
    let docker = engine::connect(&host.docker_host()).await.unwrap();
    let pull = |credentials: Option<bollard::auth::DockerCredentials>| {
        let docker = docker.clone();
        let reference = pushed.reference.clone();
        async move {
            let options = CreateImageOptionsBuilder::default()
                .from_image(&reference)
                .build();
            let mut stream = docker.create_image(Some(options), None, credentials);
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    return Err(e.to_string());
                }
            }
            Ok(())
        }
    };
    let refused = pull(None).await.expect_err("a pull without credentials");
    assert!(
        refused.contains("no basic auth credentials") || refused.contains("unauthorized"),
        "{refused}"
    );
    pull(Some(auth.docker_auth(&registry.address)))
        .await
        .expect("pulling with the lab registry's credentials");

    let port = "9000/tcp".to_owned();
    let body = ContainerCreateBody {
        image: Some(pushed.reference.clone()),
        host_config: Some(HostConfig {
            port_bindings: Some(
                [(
                    port,
                    Some(vec![PortBinding {
                        host_ip: Some(host.address.to_string()),
                        host_port: Some("9000".into()),
                    }]),
                )]
                .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker.create_container(None, body).await.unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    let url = format!("http://{}:9000/", host.address);
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        match reqwest::get(&url).await {
            Ok(r) if r.status() == 200 => break r.text().await.unwrap(),
            _ if Instant::now() > deadline => {
                let state = docker.inspect_container(&created.id, None).await.ok();
                panic!("{url} did not answer within 10s; container: {state:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(page, "from the lab registry\n");
}

/// A second, 1-host lab of its own: a failed `up` removes what it made; a
/// failed `up` told to keep it leaves state `down` removes; a full `up` then
/// `down` leaves no namespace, link, process, folder or CA; `down` twice is harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_removes_everything_up_made_even_after_a_failed_up() {
    let dir = workspace::target_dir().join("lab-test-down");
    let mut options = lab::Options::new(1, false);
    options.prefix = TEARDOWN_PREFIX.into();
    options.dir = dir.clone();
    let netns = format!("{TEARDOWN_PREFIX}-h1");
    let bridge = format!("{TEARDOWN_PREFIX}0");
    let nothing_left = |when: &str| {
        assert!(!netns_exists(&netns), "{when}: netns {netns} left");
        assert!(!link_exists(&bridge), "{when}: bridge {bridge} left");
        assert!(!link_exists(&netns), "{when}: veth {netns} left");
        assert!(!dir.exists(), "{when}: {} left", dir.display());
        let marker = format!("{}/", dir.display());
        let procs: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&marker))
            .collect();
        assert!(procs.is_empty(), "{when}: processes left: {procs:?}");
    };
    lab::down(TEARDOWN_PREFIX, &dir).await.unwrap();

    options.fail_before = Some("sshd".into());
    let failed = lab::up(&options).await.expect_err("the injected failure");
    assert!(
        format!("{failed:#}").contains("removed what it had made"),
        "{failed:#}"
    );
    nothing_left("after a failed up");

    options.keep_on_failure = true;
    lab::up(&options).await.expect_err("the injected failure");
    let partial = lab::Lab::load_from(&dir)
        .unwrap()
        .expect("the state of the partial up");
    let dockerd = partial.hosts[0]
        .dockerd
        .clone()
        .expect("dockerd was started");
    assert!(dockerd.is_running() && netns_exists(&netns) && !partial.complete);
    let removed = lab::down(TEARDOWN_PREFIX, &dir).await.unwrap();
    assert!(
        !dockerd.is_running(),
        "dockerd pid {} survived down",
        dockerd.pid
    );
    assert!(
        removed.items.iter().any(|i| i.starts_with("dockerd of h1")),
        "{removed:?}"
    );
    nothing_left("after down of a partial up");

    options.fail_before = None;
    options.keep_on_failure = false;
    let started = Instant::now();
    let (full, made) = lab::up(&options).await.expect("lab up --hosts 1");
    assert!(made && full.complete);
    let again = lab::up(&options).await.expect("lab up on a lab that is up");
    assert!(
        !again.1,
        "a second up must find the lab up, not make another"
    );
    let certs_d = full.registry.as_ref().unwrap().certs_d.clone();
    assert!(certs_d.join("ca.crt").exists());
    eprintln!("1-host lab up in {:?}", started.elapsed());
    // A container whose dockerd is SIGKILLed outlives it (and its shim):
    // down must still find it, by the cgroup the lab named.
    let host = &full.hosts[0];
    let docker = engine::connect(&host.docker_host()).await.unwrap();
    let reference = busybox_image(&docker, "teardown").await;
    let created = docker
        .create_container(
            None,
            ContainerCreateBody {
                image: Some(reference),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    let pid = docker
        .inspect_container(&created.id, None)
        .await
        .unwrap()
        .state
        .and_then(|s| s.pid)
        .expect("the container's pid") as i32;
    let dockerd = host.dockerd.as_ref().unwrap().pid as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dockerd),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container outlives its killed dockerd"
    );
    let started = Instant::now();
    lab::down(TEARDOWN_PREFIX, &dir).await.unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "container process {pid} survived down"
    );
    eprintln!("1-host lab down in {:?}", started.elapsed());
    nothing_left("after down");
    assert!(!certs_d.exists(), "{} left", certs_d.display());
    let twice = lab::down(TEARDOWN_PREFIX, &dir).await.unwrap();
    assert!(twice.items.is_empty(), "{twice:?}");
}
