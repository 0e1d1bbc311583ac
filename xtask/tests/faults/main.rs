//! Fault injection (issue #14): each fault on the real engine of this
//! checkout (`cargo xtask engine start`), with keep-alive load where traffic
//! is involved, and the outcome each test expects stated above it. Every
//! test prints its figures (`FIGURE ...` lines: failed requests, time to
//! recover); docs/RELIABILITY.md collects them. Run with `--nocapture` to
//! see them.
// One file per fault family.
mod balancer;
mod dockerd;
mod ports;
mod prune;
mod registry;
mod replicas;
mod routes;
mod stopped;
#[path = "../support/mod.rs"]
mod support;
mod watch;

use std::time::{Duration, Instant};

use support::deploy_env::TestEnv;
use xtask::load::Load;
use xtask::targets::Target;

/// One fault test at a time (they share two cores and one engine), both
/// releases and the balancer image built, a fresh environment.
pub async fn setup(
    label: &str,
    initial_delay_ms: u64,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    String,
    String,
    TestEnv,
) {
    let serial = support::SERIAL.lock().await;
    let (docker, _) = support::docker().await;
    let v1 = support::built_image(&docker).await.tags[0].clone();
    let v2 = support::second_image(&docker).await;
    support::balancer_image(&docker).await;
    (
        serial,
        v1,
        v2,
        TestEnv::new(label, "rolling", initial_delay_ms),
    )
}

pub async fn load_against(env: &TestEnv) -> Load {
    env.load(env.target().await.public_client().unwrap()).await
}

/// SIGKILLs the main process of `container` from the host, as a crash or
/// the OOM killer would: the engine sees it die and applies its restart policy.
pub async fn crash(docker: &bollard::Docker, container: &str) {
    let inspect = docker.inspect_container(container, None).await.unwrap();
    let pid = inspect.state.unwrap().pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// A figure for docs/RELIABILITY.md, printed in one greppable form.
pub fn figure(test: &str, name: &str, value: impl std::fmt::Display) {
    eprintln!("FIGURE {test}: {name} = {value}");
}

/// The HTTP status of one GET of `path` on the public URL (None: no answer).
pub async fn public_status(env: &TestEnv, client: &reqwest::Client, path: &str) -> Option<u16> {
    client
        .get(format!("{}{path}", env.public_url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
}

/// Polls the public URL every 50 ms until `want(status)`; the time it took
/// and how many polls did not satisfy it. Panics after `limit`.
pub async fn wait_public(
    env: &TestEnv,
    client: &reqwest::Client,
    limit: Duration,
    want: impl Fn(Option<u16>) -> bool,
) -> (Duration, u32, Option<u16>) {
    let started = Instant::now();
    let mut misses = 0;
    loop {
        let status = public_status(env, client, "/health").await;
        if want(status) {
            return (started.elapsed(), misses, status);
        }
        misses += 1;
        assert!(
            started.elapsed() < limit,
            "the public URL never reached the wanted state within {limit:?} (last: {status:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Instances of the environment, as (release, routed) pairs.
pub async fn instances(env: &TestEnv) -> Vec<(String, bool)> {
    let target = env.target().await;
    let mut all: Vec<(String, bool)> = target
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.release.clone(), i.traffic.is_some_and(|t| t > 0.0)))
        .collect();
    all.sort();
    all
}

pub async fn lock_is_free(env: &TestEnv) -> bool {
    xtask::deploy::lock::LockStore::lock_read(&env.target().await)
        .await
        .unwrap()
        .is_none()
}

/// Waits until the environment's lock is taken (a spawned deploy is under way).
pub async fn wait_for_lock(env: &TestEnv) {
    for _ in 0..400 {
        if !lock_is_free(env).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the deploy never took the lock");
}
