//! The lab half of issue #14's faults (docs/RELIABILITY.md): a disk that
//! fills up and a host cut off the network. They run on a 2-host lab of
//! their own (prefix `xltf`) whose hosts' data-roots and registry storage
//! are each a 256 MB tmpfs (`lab::Options::disk_mb`), so filling one
//! touches nothing else on the machine. Its tests take turns (each breaks
//! h2 or the registry in its own way and mends it before the next) and the
//! last one to finish takes the lab down, so run them together
//! (`-- faults::`, `disk::`, `partition::`): a filtered run leaves the lab
//! up until the next run's first test removes it.
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use bollard::query_parameters::ListContainersOptionsBuilder;
use tokio::sync::{Mutex, OnceCell};
use xtask::{engine, lab, workspace};

use super::env::push_images;

const PREFIX: &str = "xltf";
/// The tests below that run `on_fault_lab`: keep it equal to their number.
const TESTS: usize = 3;
/// Big enough for the balancer and app images of two releases; small
/// enough to fill in a moment.
const DISK_MB: u64 = 256;

/// How many tests have had their turn; held for the whole turn.
static TURN: Mutex<usize> = Mutex::const_new(0);
static LAB: OnceCell<(&'static lab::Lab, (String, String))> = OnceCell::const_new();

fn dir() -> PathBuf {
    workspace::target_dir().join("lab-test-faults")
}

/// Runs `scenario` on the fault lab (made by the first test, v1 and v2 of
/// the app pushed to its registry), one test at a time; the last takes it down.
pub async fn on_fault_lab<F, Fut>(scenario: F)
where
    F: FnOnce(&'static lab::Lab, (String, String)) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut done = TURN.lock().await;
    let made = std::panic::AssertUnwindSafe(LAB.get_or_try_init(|| async {
        let mut options = lab::Options::new(2, false);
        options.prefix = PREFIX.into();
        options.dir = dir();
        options.disk_mb = Some(DISK_MB);
        lab::down(PREFIX, &dir()).await?;
        let (made, _) = lab::up(&options).await?;
        let lab: &'static lab::Lab = Box::leak(Box::new(made));
        anyhow::Ok((lab, push_images(lab).await))
    }));
    let result = match futures_util::FutureExt::catch_unwind(made).await {
        Ok(Ok((lab, images))) => {
            let run = std::panic::AssertUnwindSafe(scenario(lab, images.clone()));
            futures_util::FutureExt::catch_unwind(run).await
        }
        Ok(Err(e)) => Err(Box::new(format!("the fault lab did not come up: {e:#}")) as _),
        Err(panic) => Err(panic),
    };
    *done += 1;
    if *done == TESTS {
        lab::down(PREFIX, &dir())
            .await
            .expect("taking the fault lab down");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A file taking every byte left on the filesystem at `dir`; removed when
/// dropped (also when the test fails), which frees the space again.
pub struct Filler {
    path: PathBuf,
}

impl Filler {
    pub fn fill(dir: &Path) -> Filler {
        let path = dir.join("xtask-test-filler");
        let mut file = std::fs::File::create(&path).unwrap();
        // Big writes first, then small ones for the last partial blocks.
        for size in [1 << 20, 4096, 1] {
            let chunk = vec![0u8; size];
            while file.write_all(&chunk).is_ok() {}
        }
        let error = file.write_all(b"x").and_then(|_| file.sync_all());
        assert_eq!(
            error.map_err(|e| e.raw_os_error()),
            Err(Some(nix::libc::ENOSPC)),
            "{} is full",
            dir.display()
        );
        Filler { path }
    }

    pub fn free(self) {}
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Every container of `scope` on `host`, stopped ones too, by release and
/// state: what a failed run may have orphaned.
pub async fn containers_of(host: &lab::Host, scope: &str) -> BTreeMap<String, Vec<String>> {
    let docker = engine::connect(&host.docker_host()).await.unwrap();
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("xtask.scope={scope}")],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in docker.list_containers(Some(options)).await.unwrap() {
        let labels = c.labels.unwrap_or_default();
        let role = labels.get("xtask.role").cloned().unwrap_or_default();
        let release = labels.get("xtask.release").cloned().unwrap_or(role);
        let state = c.state.map(|s| s.to_string()).unwrap_or_default();
        seen.entry(release).or_default().push(state);
    }
    seen
}

/// Waits until `host` runs an instance of a release other than `active`.
pub async fn until_new_instance(env: &super::env::LabEnv, host: &lab::Host, active: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !env.running_on(host).await.keys().any(|r| r != active) {
        assert!(
            std::time::Instant::now() < deadline,
            "no new instance on {}",
            host.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The report and stderr of a finished child run, as one text to search.
pub fn outcome(out: &std::process::Output) -> (serde_json::Value, String) {
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let text = format!("{report}\n{}", String::from_utf8_lossy(&out.stderr));
    (report, text)
}
