//! The Docker target: instances are containers on one engine (see
//! `instances`), attached to the environment's network `<scope>-net`; the
//! public endpoint is the HAProxy balancer container `<scope>-balancer` on
//! the same network (see `crate::haproxy`), whose server slots point at the
//! instances' addresses. Traffic is the slots' weights (see `traffic`), set
//! and read through `docker exec`, so everything goes through the Docker API
//! and any HTTP image works. The history and lock are named volumes in the
//! same engine (see `records`). It moves traffic itself, so it has no
//! native rollout and undoes by converging with the shared code.
mod instances;
mod prune;
mod records;
mod repair;
mod reslot;
pub(crate) mod traffic;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use bollard::Docker;
use futures_util::future::join_all;

pub use instances::Instance;
use instances::{list_scoped, remove_forced};
pub use prune::{prune_images, Pruned};

use super::{Caps, Check, InstanceState, InstanceView, Observation, Seen, Split, Target};
use crate::{
    deploy::{records::Ledger, release::Release},
    engine,
    environment::{BalancerConfig, Environment, HealthConfig},
    gate::{Gate, ProbeResult},
    haproxy::{
        self, AdminState, Command, HaproxyBalancer, HaproxySettings, ServerSpec, ServerStat,
        ServerStatus,
    },
    progress::Step,
};

pub mod labels {
    pub const SCOPE: &str = "xtask.scope";
    pub const ROLE: &str = "xtask.role";
    pub const SEQ: &str = "xtask.seq";
    pub const DATA: &str = "xtask.data";
    pub const APP: &str = "xtask.app";
    pub const ENV: &str = "xtask.env";
    pub const RELEASE: &str = "xtask.release";
    pub const COLOR: &str = "xtask.color";
    /// The container port the instance listens on.
    pub const PORT: &str = "xtask.port";
}

/// The swarm target's tasks create their socket in a mounted folder as this user.
pub(crate) const APP_UID: u32 = 65532;
/// Server slots in the balancer: blue-green runs two releases side by side
/// (deploy.replicas is at most 50), plus a rolling surge.
const MAX_SERVERS: u16 = 128;

pub struct DockerTarget {
    docker: Docker,
    /// `<app>--<env>`: prefixes every container and record of this environment.
    scope: String,
    app: String,
    /// image.repo: the images `prune` may remove.
    repo: String,
    env_name: String,
    drain_seconds: f64,
    health: HealthConfig,
    app_port: u16,
    network: String,
    balancer_config: BalancerConfig,
    /// The balancer's certificate and key live here, so every later command
    /// on this machine (status, the tests' clients) trusts the same one.
    runtime_dir: PathBuf,
    public_url: String,
    ledger: Ledger<records::VolumeStore>,
}

/// The balancer's TLS files live on the deploying machine, outside any
/// checkout, so every runner on it finds the same ones.
pub(crate) fn runtime_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/xtask")
    } else if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(dir).join("xtask")
    } else {
        PathBuf::from(format!("/tmp/xtask-{}", nix::unistd::geteuid()))
    }
}

/// A slot's row in `show stat` as evidence for the gate: plain UP (HAProxy
/// checked this address since it became ready; `fall` >= 2 keeps "UP 1/2"
/// apart) is ready, DOWN is a failed check with its status and code,
/// anything else (UP 1/2 before the first check, DOWN 1/2 coming back) is
/// not ready yet. A DOWN row whose next check is under way may have lost
/// the last check's HTTP code (a fresh-clone run reported "L7STS, HTTP 0"):
/// it waits one more look rather than fail without its evidence.
pub(crate) fn check_of(row: &ServerStat) -> Check {
    match row.status {
        ServerStatus::Up => Check::Reported { ready: true },
        ServerStatus::Down if row.check_running && row.check_code.is_none() => {
            Check::Reported { ready: false }
        }
        ServerStatus::Down => Check::Failed {
            reason: format!(
                "balancer health check on {} failed: {}{}{}",
                row.addr,
                row.check_status,
                row.check_code
                    .map(|c| format!(", HTTP {c}"))
                    .unwrap_or_default(),
                if row.check_desc.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", row.check_desc)
                }
            ),
        },
        _ => Check::Reported { ready: false },
    }
}

/// The certificate blocks of a PEM that also holds the key.
fn certificate_of(pem: &[u8]) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).ok()?;
    let last = text.rfind(END)? + END.len();
    Some(format!("{}\n", &text[..last]))
}

/// The runtime commands that bring the balancer from `rows` to `split` over
/// `instances` (those with a slot), and the weight each instance gets.
/// Pure, so a caller that already read both (`route`) reads them once.
fn shift_commands(
    split: &Split,
    rows: &[ServerStat],
    instances: &[(Instance, InstanceState)],
) -> Result<(Vec<Command>, BTreeMap<String, u16>)> {
    let mut running: BTreeMap<String, Vec<traffic::Candidate>> = BTreeMap::new();
    let mut slot_of_instance = BTreeMap::new();
    for (instance, state) in instances {
        let Some(row) = slot_of(rows, instance.addr) else {
            continue;
        };
        slot_of_instance.insert(instance.name.clone(), row);
        if *state == (InstanceState::Running { restarts: 0 }) {
            running
                .entry(instance.release.clone())
                .or_default()
                .push(traffic::Candidate {
                    instance: instance.name.clone(),
                    serving: row.user_weight > 0,
                });
        }
    }
    let weights = traffic::weights(split, &running)?;
    // HAProxy runs the commands of one exec in order and may serve
    // requests between two of them: raise weights before lowering any,
    // so there is never a moment with no server in traffic.
    let (mut raise, mut lower) = (Vec::new(), Vec::new());
    for (name, row) in &slot_of_instance {
        let slot = row.slot.expect("slot_of finds slots only");
        let weight = weights.get(name).copied().unwrap_or(0);
        match u32::from(weight).cmp(&row.user_weight) {
            std::cmp::Ordering::Greater => raise.push(Command::set_weight(slot, weight)?),
            std::cmp::Ordering::Less => lower.push(Command::set_weight(slot, weight)?),
            std::cmp::Ordering::Equal => {}
        }
    }
    let mut commands = raise;
    commands.append(&mut lower);
    // A slot whose instance is gone (removed by hand, crashed away) leaves.
    let known: Vec<&str> = slot_of_instance.values().map(|r| r.name.as_str()).collect();
    for row in rows.iter().filter(|r| r.status != ServerStatus::Maint) {
        if let Some(slot) = row.slot.filter(|_| !known.contains(&row.name.as_str())) {
            commands.push(Command::set_state(slot, AdminState::Maint));
        }
    }
    Ok((commands, weights))
}

/// The slot serving `addr`: not in MAINT (a free slot keeps its last address).
pub(crate) fn slot_of(rows: &[ServerStat], addr: Option<SocketAddr>) -> Option<&ServerStat> {
    let addr = addr?.to_string();
    rows.iter()
        .find(|r| r.slot.is_some() && r.status != ServerStatus::Maint && r.addr == addr)
}

impl DockerTarget {
    pub async fn connect(env: &Environment) -> Result<DockerTarget> {
        let docker = match env.engine_host() {
            Some(host) => engine::connect(host).await?,
            None => engine::require().await?.0,
        };
        let app = env.app_name();
        let scope = env.scope();
        let runtime_dir = runtime_root().join(&scope);
        let target = DockerTarget {
            ledger: Ledger::new(records::VolumeStore {
                docker: docker.clone(),
                scope: scope.clone(),
            }),
            docker,
            network: format!("{scope}-net"),
            balancer_config: env.balancer().clone(),
            runtime_dir,
            scope,
            app,
            repo: env.file.image.repo.clone(),
            env_name: env.name.clone(),
            drain_seconds: env.file.health.drain_seconds,
            health: env.file.health.clone(),
            app_port: env.file.app.port,
            public_url: env.public_url(),
        };
        target.adopt_served_pem().await?;
        Ok(target)
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// This machine's folder for the environment (the balancer's certificate).
    pub fn runtime_dir(&self) -> &std::path::Path {
        &self.runtime_dir
    }

    fn cert_path(&self) -> PathBuf {
        self.runtime_dir.join("tls").join("cert.pem")
    }

    /// The certificate and the PEM (certificate and key) the balancer serves:
    /// the running balancer's (see `adopt_served_pem`), else made once per
    /// environment on this machine and read back, so the balancer's
    /// fingerprint stays the same from one command to the next.
    fn pem(&self) -> Result<Vec<u8>> {
        let pem_path = self.pem_path();
        if let (Ok(pem), true) = (std::fs::read(&pem_path), self.cert_path().is_file()) {
            return Ok(pem);
        }
        let (_, pem) = haproxy::dev_pem()?;
        self.store_pem(&pem)?;
        Ok(pem)
    }

    fn pem_path(&self) -> PathBuf {
        self.runtime_dir.join("tls").join("balancer.pem")
    }

    /// The target is the truth, not this machine: a fresh CI runner (or one
    /// whose runtime folder was cleared) takes the certificate the running
    /// balancer serves, so it trusts it and a deploy keeps the balancer
    /// rather than replacing it for a certificate of its own.
    async fn adopt_served_pem(&self) -> Result<()> {
        let Some(served) = haproxy::served_pem(&self.docker, &self.scope).await? else {
            return Ok(());
        };
        if std::fs::read(self.pem_path()).ok().as_deref() == Some(served.as_slice())
            && self.cert_path().is_file()
        {
            return Ok(());
        }
        self.store_pem(&served)
    }

    /// Writes the PEM (mode 0600: it holds the key) and its certificate
    /// alone, for clients to trust.
    fn store_pem(&self, pem: &[u8]) -> Result<()> {
        let dir = self.runtime_dir.join("tls");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pem_path = self.pem_path();
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&pem_path)
                .with_context(|| format!("writing {}", pem_path.display()))?;
            std::io::Write::write_all(&mut file, pem)
                .with_context(|| format!("writing {}", pem_path.display()))?;
        }
        let cert = certificate_of(pem).with_context(|| {
            format!(
                "the balancer's PEM has no certificate ({})",
                pem_path.display()
            )
        })?;
        std::fs::write(self.cert_path(), cert)
            .with_context(|| format!("writing {}", self.cert_path().display()))
    }

    fn haproxy_settings(&self) -> HaproxySettings {
        let h = &self.health;
        HaproxySettings {
            https_public_port: self.balancer_config.https_port,
            api_rate: self.balancer_config.api_rate,
            max_servers: MAX_SERVERS,
            health_path: h.path.clone(),
            check_interval_ms: h.interval_ms.clamp(100, u64::from(u32::MAX)) as u32,
            check_rise: h.success_threshold.max(1),
            // "UP 1/2" (no check yet) and plain "UP" differ only with fall >= 2.
            check_fall: h.failure_threshold.max(2),
            ..HaproxySettings::default()
        }
    }

    /// The balancer container, created or started as needed (never built:
    /// the image comes from `engine start`).
    pub(crate) async fn ensure_balancer(&self) -> Result<HaproxyBalancer> {
        let image = haproxy::image::find(&self.docker).await?;
        let settings = haproxy::Settings {
            scope: self.scope.clone(),
            image,
            network: self.network.clone(),
            https_port: self.balancer_config.https_port,
            http_port: self.balancer_config.http_port,
            exporter_port: self.balancer_config.metrics_port.unwrap_or(0),
            haproxy: self.haproxy_settings(),
            pem: self.pem()?,
            labels: HashMap::from([
                (labels::APP.to_owned(), self.app.clone()),
                (labels::ENV.to_owned(), self.env_name.clone()),
            ]),
        };
        HaproxyBalancer::ensure(&self.docker, &settings).await
    }

    /// The running balancer, if there is one.
    pub(crate) async fn balancer(&self) -> Option<HaproxyBalancer> {
        let balancer = HaproxyBalancer::open(&self.docker, &self.scope)
            .await
            .ok()?;
        let inspect = self
            .docker
            .inspect_container(balancer.container(), None)
            .await
            .ok()?;
        inspect
            .state
            .and_then(|s| s.running)
            .unwrap_or(false)
            .then_some(balancer)
    }

    /// Every slot as `show stat` reports it; none without a running balancer.
    pub(crate) async fn slots(&self) -> Result<Vec<ServerStat>> {
        match self.balancer().await {
            Some(balancer) => balancer.servers().await,
            None => Ok(Vec::new()),
        }
    }

    /// Removes every trace of the environment: instances, the balancer and
    /// its network, history and lock records, the TLS folder. For throwaway
    /// environments (tests, benchmarks), never for real ones.
    pub async fn destroy(&self) -> Result<()> {
        for c in list_scoped(&self.docker, &self.scope, None).await? {
            remove_forced(&self.docker, &c.id.unwrap_or_default()).await?;
        }
        haproxy::engine::remove_network(&self.docker, &self.network).await?;
        self.ledger.remove_all().await?;
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        Ok(())
    }

    async fn running(&self) -> Result<Vec<(Instance, InstanceState)>> {
        let containers = self.containers().await?;
        let states = join_all(containers.iter().map(|c| self.instance_state(c))).await;
        containers
            .into_iter()
            .zip(states)
            .map(|(c, s)| Ok((c, s?)))
            .collect()
    }

    /// Gives every running instance of `release` without a slot a free one,
    /// at weight 0 and `ready`, all in one exec: HAProxy starts checking it
    /// and the gate waits for plain UP before any weight is given.
    async fn attach(&self, release: &str) -> Result<()> {
        let wanted = self
            .running()
            .await?
            .into_iter()
            .filter(|(i, _)| i.release == release)
            .filter_map(|(i, _)| Some((i.name, i.addr?)))
            .collect();
        self.attach_addrs(wanted).await
    }

    /// A free slot at weight 0 and `ready` for each `(name, address)` that has
    /// none yet, in one exec. The swarm target's tasks come in here too.
    pub(crate) async fn attach_addrs(&self, wanted: Vec<(String, SocketAddr)>) -> Result<()> {
        let balancer = HaproxyBalancer::open(&self.docker, &self.scope).await?;
        let rows = balancer.servers().await?;
        let mut free = rows
            .iter()
            .filter(|r| r.status == ServerStatus::Maint)
            .filter_map(|r| r.slot)
            .collect::<Vec<_>>();
        free.sort();
        free.reverse();
        let mut specs = Vec::new();
        for (name, addr) in wanted {
            if slot_of(&rows, Some(addr)).is_some() {
                continue;
            }
            let slot = free.pop().with_context(|| {
                format!("the balancer has no free slot left (of {MAX_SERVERS}) for {name}")
            })?;
            specs.push(ServerSpec {
                slot,
                addr: addr.ip(),
                port: addr.port(),
                weight: 0,
                state: AdminState::Ready,
            });
        }
        if specs.is_empty() {
            return Ok(());
        }
        balancer.set_servers(&specs).await
    }
}

crate::deploy::records::ledger_records!(DockerTarget);

impl Target for DockerTarget {
    fn caps(&self) -> Caps {
        Caps {
            native_rollout: false,
        }
    }

    fn public_url(&self) -> String {
        self.public_url.clone()
    }

    fn public_client(&self) -> Result<reqwest::Client> {
        let pem = std::fs::read(self.cert_path()).with_context(|| {
            format!(
                "reading the balancer's certificate {} (made by the first deploy from this machine)",
                self.cert_path().display()
            )
        })?;
        let cert =
            reqwest::Certificate::from_pem(&pem).context("parsing the balancer's certificate")?;
        reqwest::Client::builder()
            .add_root_certificate(cert)
            .build()
            .context("building the public client")
    }

    /// On a single host the image must already be in the engine: a rollback needs no registry.
    async fn admit(&self, release: &mut Release) -> Result<()> {
        let found = match self.docker.inspect_image(&release.image).await {
            Ok(inspect) => inspect.id,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(e) => return Err(e).with_context(|| format!("inspecting image {}", release.image)),
        };
        match (found, &release.restores) {
            (Some(id), _) => release.image_id = id,
            (None, Some(restores)) => bail!(
                "release {restores}: its image {} is no longer in the engine; it cannot be restored without a registry",
                release.image
            ),
            (None, None) => bail!("image {} is not in the engine: build or pull it first", release.image),
        }
        Ok(())
    }

    async fn prepare(&self, _release: &Release) -> Result<()> {
        self.ensure_balancer().await.map(drop)
    }

    async fn start(&self, release: &Release, count: usize) -> Result<()> {
        let alive = self
            .running()
            .await?
            .into_iter()
            .filter(|(i, s)| {
                i.release == release.id && matches!(s, InstanceState::Running { restarts: 0 })
            })
            .count();
        let env = crate::deploy::resolve_env(release)?;
        let started = join_all((alive..count).map(|_| self.start_instance(release, &env))).await;
        started.into_iter().try_for_each(|s| s.map(|_| ()))?;
        self.attach(&release.id).await
    }

    async fn replace(&self, release: &Release) -> Result<()> {
        bail!(
            "the Docker target has no native rollout (asked to replace with {})",
            release.id
        )
    }

    async fn observe(&self, release: &Release) -> Result<Observation> {
        let ours: Vec<(Instance, InstanceState)> = self
            .running()
            .await?
            .into_iter()
            .filter(|(i, _)| i.release == release.id)
            .collect();
        let rows = self.slots().await?;
        Ok(Observation {
            instances: ours
                .into_iter()
                .map(|(i, state)| {
                    let row = slot_of(&rows, i.addr);
                    let check = match (&state, row) {
                        (InstanceState::Running { .. }, Some(row)) => Some(check_of(row)),
                        (InstanceState::Running { .. }, None) => {
                            Some(Check::Reported { ready: false })
                        }
                        _ => None,
                    };
                    Seen {
                        detail: Some(match row {
                            Some(row) => format!(
                                "balancer slot {}: {:?}, last check {}",
                                row.name, row.status, row.check_status
                            ),
                            None => "no balancer slot".into(),
                        }),
                        id: i.id,
                        name: i.name,
                        state,
                        check,
                    }
                })
                .collect(),
            verdict: None,
            settled: true,
        })
    }

    async fn follow(&self, _release: &Release, _ready: &[String]) -> Result<()> {
        Ok(())
    }

    async fn shift(&self, split: &Split) -> Result<()> {
        let balancer = HaproxyBalancer::open(&self.docker, &self.scope).await?;
        let rows = balancer.servers().await?;
        let instances = self.running().await?;
        let (commands, _) = shift_commands(split, &rows, &instances)?;
        balancer.exec(&commands).await.map(drop)
    }

    async fn split(&self) -> Result<Split> {
        let rows = self.slots().await?;
        let mut weights: BTreeMap<String, u32> = BTreeMap::new();
        for instance in self.containers().await? {
            if let Some(row) = slot_of(&rows, instance.addr) {
                *weights.entry(instance.release).or_default() += row.user_weight;
            }
        }
        Ok(traffic::shares(&weights))
    }

    async fn undo(&self, to: Option<&Release>, gate: &Gate<'_>, step: &Step) -> Result<()> {
        reslot::before_undo(self, to).await;
        crate::strategy::converge(self, to, gate, step).await
    }

    async fn retire(&self, release: &str, keep: usize) -> Result<()> {
        let rows = self.slots().await?;
        let idle: Vec<Instance> = self
            .containers()
            .await?
            .into_iter()
            .filter(|i| {
                i.release == release && slot_of(&rows, i.addr).is_none_or(|r| r.user_weight == 0)
            })
            .skip(keep)
            .collect();
        // Out of the balancer first (no new request, no check), then stopped:
        // the instance finishes what it serves within its drain time.
        let slots: Vec<Command> = idle
            .iter()
            .filter_map(|i| slot_of(&rows, i.addr)?.slot)
            .map(|slot| Command::set_state(slot, AdminState::Maint))
            .collect();
        if let Some(balancer) = self.balancer().await {
            balancer.exec(&slots).await?;
        }
        let stopped = join_all(idle.iter().map(|i| self.stop_instance(i))).await;
        stopped.into_iter().collect()
    }

    async fn logs(&self, _release: &Release, instance: Option<&str>, lines: usize) -> String {
        let Some(instance) = instance else {
            return String::new();
        };
        self.instance_logs(instance, lines)
            .await
            .unwrap_or_else(|e| format!("(no logs: {e:#})"))
    }

    async fn instances(&self) -> Result<Vec<InstanceView>> {
        let rows = self.slots().await?;
        let total: u32 = rows
            .iter()
            .filter(|r| r.status != ServerStatus::Maint)
            .map(|r| r.user_weight)
            .sum();
        Ok(self
            .running()
            .await?
            .into_iter()
            .map(|(i, state)| {
                let weight = slot_of(&rows, i.addr).map_or(0, |r| r.user_weight);
                InstanceView {
                    traffic: Some(if total == 0 {
                        0.0
                    } else {
                        f64::from(weight) * 100.0 / f64::from(total)
                    }),
                    id: i.id,
                    name: i.name,
                    release: i.release,
                    colour: i.color,
                    state,
                }
            })
            .collect())
    }

    /// The balancer checks the health path of every instance itself (the
    /// deploying machine may not reach the instances' network): its last
    /// check of each instance in traffic, for that path only.
    async fn probes(&self, path: &str, _timeout: Duration) -> Result<Vec<(String, ProbeResult)>> {
        if path != self.health.path {
            return Ok(Vec::new());
        }
        let rows = self.slots().await?;
        let mut results = Vec::new();
        for instance in self.containers().await? {
            let Some(row) = slot_of(&rows, instance.addr).filter(|r| r.user_weight > 0) else {
                continue;
            };
            let up = row.status == ServerStatus::Up;
            results.push((
                instance.name,
                ProbeResult {
                    url: format!("http://{}{path} (balancer check)", row.addr),
                    status: row.check_code.or(up.then_some(200)),
                    latency_ms: 0.0,
                    error: (!up).then(|| {
                        format!("{:?}: {} {}", row.status, row.check_status, row.check_desc)
                    }),
                },
            ));
        }
        Ok(results)
    }

    async fn repair(&self) -> Result<Option<serde_json::Value>> {
        let routed = repair::once(self).await?;
        Ok(Some(serde_json::to_value(routed)?))
    }

    async fn stop_all(&self) -> Result<()> {
        let all = self.containers().await?;
        if let Some(balancer) = self.balancer().await {
            let rows = balancer.servers().await?;
            let out: Vec<Command> = all
                .iter()
                .filter_map(|i| slot_of(&rows, i.addr)?.slot)
                .map(|slot| Command::set_state(slot, AdminState::Maint))
                .collect();
            balancer.exec(&out).await?;
        }
        let stopped = join_all(all.iter().map(|i| self.stop_instance(i))).await;
        stopped.into_iter().collect::<Result<()>>()?;
        match HaproxyBalancer::open(&self.docker, &self.scope).await {
            Ok(balancer) => balancer.stop().await,
            Err(_) => Ok(()),
        }
    }

    async fn prune(&self, kept: &[Release], dry_run: bool) -> Result<Option<Pruned>> {
        prune_images(&self.docker, &self.repo, kept, dry_run)
            .await
            .map(Some)
    }

    async fn servers_of(&self, release: &str) -> Result<Vec<String>> {
        let rows = self.slots().await?;
        Ok(self
            .containers()
            .await?
            .into_iter()
            .filter(|i| i.release == release)
            .filter_map(|i| Some(slot_of(&rows, i.addr)?.name.clone()))
            .collect())
    }

    async fn plan(&self, release: &Release) -> Result<serde_json::Value> {
        Ok(serde_json::json!({
            "kind": "docker",
            "scope": self.scope,
            "image_present": self.docker.inspect_image(&release.image).await.is_ok(),
            "instances": release.replicas,
            "network": self.network,
            "balancer": {
                "container": haproxy::container_name(&self.scope),
                "public_url": self.public_url,
                "instance_port": self.app_port,
                "health_path": self.health.path,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::Slot;

    fn row(status: ServerStatus, check_status: &str, code: Option<u16>) -> ServerStat {
        ServerStat {
            name: "s1".into(),
            slot: Some(Slot(1)),
            addr: "172.20.0.3:9000".into(),
            status,
            weight: 0,
            user_weight: 0,
            check_status: check_status.into(),
            check_running: false,
            check_code: code,
            check_desc: String::new(),
            check_failures: 0,
            current_sessions: 0,
            total_sessions: 0,
            selected_total: 0,
            hrsp_2xx: 0,
            hrsp_4xx: 0,
            hrsp_5xx: 0,
            connect_errors: 0,
            response_errors: 0,
            last_change_seconds: 0,
        }
    }

    #[test]
    fn only_plain_up_is_ready_and_down_is_a_failure_with_its_evidence() {
        let ready = |c: Check| matches!(c, Check::Reported { ready: true });
        assert!(ready(check_of(&row(ServerStatus::Up, "L7OK", Some(200)))));
        // Right after maint -> ready, before any check, with a stale L7OK.
        let fresh = row(ServerStatus::GoingDown("1/2".into()), "L7OK", Some(200));
        assert!(!ready(check_of(&fresh)));
        let coming_back = row(ServerStatus::GoingUp("1/2".into()), "L7OK", Some(200));
        assert!(!ready(check_of(&coming_back)));
        match check_of(&row(ServerStatus::Down, "L7STS", Some(503))) {
            Check::Failed { reason } => {
                assert!(reason.contains("L7STS, HTTP 503"), "{reason}");
                assert!(reason.contains("172.20.0.3:9000"), "{reason}");
            }
            other => panic!("DOWN must be a failure, got {other:?}"),
        }
        // The next check under way cleared the code: wait for its evidence.
        let running = ServerStat {
            check_running: true,
            ..row(ServerStatus::Down, "L7STS", None)
        };
        assert!(matches!(
            check_of(&running),
            Check::Reported { ready: false }
        ));
    }

    #[test]
    fn the_certificate_of_a_pem_leaves_the_key_out() {
        let (cert, pem) = haproxy::dev_pem().unwrap();
        let found = certificate_of(&pem).unwrap();
        assert_eq!(found.trim(), cert.trim());
        assert!(!found.contains("PRIVATE KEY"));
        assert!(certificate_of(b"-----BEGIN PRIVATE KEY-----\n").is_none());
    }

    #[test]
    fn a_free_slot_keeps_its_last_address_but_serves_no_instance() {
        let addr: SocketAddr = "172.20.0.3:9000".parse().unwrap();
        let rows = [row(ServerStatus::Maint, "", None)];
        assert!(slot_of(&rows, Some(addr)).is_none());
        let rows = [row(ServerStatus::Up, "L7OK", Some(200))];
        assert_eq!(
            slot_of(&rows, Some(addr)).map(|r| r.name.as_str()),
            Some("s1")
        );
        assert!(slot_of(&rows, None).is_none());
    }
}
