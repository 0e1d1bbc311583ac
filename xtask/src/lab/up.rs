//! `lab up`: the sequence that runs `plan`'s commands. The state file is
//! written before anything is made and after every daemon starts, so a
//! failure at any step leaves a record `down` removes; `up` itself runs
//! that `down` before it returns the error.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{
    down, net,
    plan::{self, Cmd, DockerdPaths},
    processes, registry, swarm, Host, Lab, SshClient,
};
use crate::engine;

#[derive(Debug, Clone)]
pub struct Options {
    pub hosts: usize,
    pub swarm: bool,
    /// Prefix of every namespace, link and swarm name (default `xlab`).
    pub prefix: String,
    /// Folder of the state, daemons' data, keys and logs (default `target/lab/`).
    pub dir: PathBuf,
    /// Tests only: fail just before the named step (`registry`, `hosts`,
    /// `sshd`, `swarm`), to prove a failed `up` leaves nothing behind.
    pub fail_before: Option<String>,
    /// Tests only: on failure keep what was made (for `down` to remove).
    pub keep_on_failure: bool,
    /// Each host's data-root and the registry's storage on a filesystem of
    /// this many MB of their own, for tests that fill one (disk full).
    pub disk_mb: Option<u64>,
}

impl Options {
    pub fn new(hosts: usize, swarm: bool) -> Self {
        Options {
            hosts,
            swarm,
            prefix: super::DEFAULT_PREFIX.to_owned(),
            dir: super::default_dir(),
            fail_before: None,
            keep_on_failure: false,
            disk_mb: None,
        }
    }

    fn check(&self, step: &str) -> Result<()> {
        if self.fail_before.as_deref() == Some(step) {
            bail!("injected failure before step `{step}` (Options::fail_before)");
        }
        Ok(())
    }
}

/// The lab, and whether this call made it (false: it was already up).
pub async fn up(options: &Options) -> Result<(Lab, bool)> {
    super::preflight()?;
    plan::check_prefix(&options.prefix)?;
    if options.hosts == 0 || options.hosts > plan::MAX_HOSTS {
        bail!(
            "--hosts {}: a lab has 1 to {} hosts",
            options.hosts,
            plan::MAX_HOSTS
        );
    }
    // One `up` at a time on the machine: two labs choosing a subnet at once
    // would both take the first free one.
    let _lock = super::machine_lock()?;
    if let Some(mut lab) = Lab::load_from(&options.dir)? {
        if lab.complete && super::status::all_alive(&lab).await {
            if lab.hosts.len() != options.hosts || lab.prefix != options.prefix {
                bail!(
                    "a lab with {} hosts (prefix {}) is already up in {}: run `cargo xtask lab down` first",
                    lab.hosts.len(),
                    lab.prefix,
                    options.dir.display()
                );
            }
            if options.swarm && !lab.swarm {
                swarm::form(&mut lab.hosts).await?;
                lab.swarm = true;
                lab.save()?;
            }
            return Ok((lab, false));
        }
        eprintln!(
            "the lab in {} is incomplete or partly down; removing it before starting again",
            options.dir.display()
        );
    }
    // Whatever a lost or stale state left behind goes first, found by name.
    down::down_locked(&options.prefix, &options.dir).await?;

    let mut lab = plan_lab(options)?;
    lab.save()?;
    match make(&mut lab, options).await {
        Ok(()) => Ok((lab, true)),
        Err(e) if options.keep_on_failure => Err(e),
        Err(e) => {
            let cleanup = down::down_locked(&options.prefix, &options.dir).await;
            match cleanup {
                Ok(_) => Err(e.context("lab up failed; removed what it had made")),
                Err(c) => Err(e.context(format!(
                    "lab up failed, and so did removing what it made ({c:#}): run `cargo xtask lab down`"
                ))),
            }
        }
    }
}

/// Names, addresses and paths of everything `up` will make; nothing made yet.
fn plan_lab(options: &Options) -> Result<Lab> {
    let net = plan::choose_subnet(&net::routes_and_addresses()?)?;
    let dir = &options.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let hosts = (1..=options.hosts)
        .map(|i| {
            let host_dir = dir.join(plan::host_name(i));
            Host {
                name: plan::host_name(i),
                netns: plan::netns_name(&options.prefix, i),
                veth: plan::veth_name(&options.prefix, i),
                address: plan::host_address(net, i),
                docker_socket: host_dir.join("docker.sock"),
                dir: host_dir,
                dockerd: None,
                sshd: None,
                swarm: None,
            }
        })
        .collect::<Vec<_>>();
    // containerd's socket is the longest path under a host's folder; unix
    // socket paths stop at 108 bytes.
    let longest = hosts[0].dir.join("exec/containerd/containerd.sock.ttrpc");
    if longest.as_os_str().len() >= 108 {
        bail!(
            "{} is too deep for unix sockets (108 bytes at most): use a shorter checkout path",
            dir.display()
        );
    }
    let ssh = dir.join("ssh");
    Ok(Lab {
        prefix: options.prefix.clone(),
        subnet: format!("{}.{}.{}.0/24", net[0], net[1], net[2]),
        bridge: plan::bridge_name(&options.prefix),
        bridge_address: plan::bridge_address(net),
        swarm: options.swarm,
        hosts,
        registry: None,
        ssh: SshClient {
            key: ssh.join("id_ed25519"),
            known_hosts: ssh.join("known_hosts"),
            config: ssh.join("config"),
            bin_dir: dir.join("bin"),
        },
        complete: false,
        dir,
    })
}

fn run_all(cmds: &[Cmd]) -> Result<()> {
    cmds.iter().try_for_each(processes::run)
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))
}

/// Mounted before its daemon starts; `down` unmounts every mount under the lab folder.
fn small_disk(path: &Path, megabytes: u64) -> Result<()> {
    mkdir(path)?;
    processes::run(&plan::small_disk_command(path, megabytes))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

async fn make(lab: &mut Lab, options: &Options) -> Result<()> {
    run_all(&plan::bridge_commands(&lab.bridge, lab.bridge_address))?;

    mkdir(lab.ssh.key.parent().expect("ssh folder"))?;
    processes::run(&plan::keygen_command(&lab.ssh.key, "xtask-lab"))?;

    options.check("registry")?;
    if let Some(mb) = options.disk_mb {
        small_disk(&lab.dir.join("registry/data"), mb)?;
    }
    lab.registry = Some(registry::start(&lab.dir, lab.bridge_address).await?);
    lab.save()?;

    options.check("hosts")?;
    for (i, host) in lab.hosts.iter_mut().enumerate() {
        run_all(&plan::host_net_commands(
            &host.netns,
            &host.veth,
            &lab.bridge,
            host.address,
        ))?;
        mkdir(&host.dir)?;
        if let Some(mb) = options.disk_mb {
            small_disk(&host.dir.join("data"), mb)?;
        }
        let paths = DockerdPaths {
            socket: &host.docker_socket,
            data: &host.dir.join("data"),
            exec: &host.dir.join("exec"),
            pidfile: &host.dir.join("dockerd.pid"),
        };
        let cmd = plan::dockerd_command(&host.netns, &host.name, &paths, &plan::docker_bip(i + 1));
        let marker = host.docker_host();
        host.dockerd = Some(processes::spawn(
            &cmd,
            &host.dir.join("dockerd.log"),
            &marker,
        )?);
    }
    // Recorded before waiting: the dockerds start side by side.
    lab.save()?;
    for host in &lab.hosts {
        let docker_host = host.docker_host();
        processes::wait_ready(
            &format!("dockerd of lab host {}", host.name),
            host.dockerd.as_ref().expect("spawned above"),
            Duration::from_secs(60),
            || engine::answers(&docker_host),
        )
        .await?;
    }

    options.check("sshd")?;
    // OpenSSH's privilege separation folder: made by its service unit on a
    // machine that runs one, absent on a fresh container or CI runner.
    let privsep = std::path::Path::new("/run/sshd");
    std::fs::create_dir_all(privsep)
        .with_context(|| format!("creating {} for sshd", privsep.display()))?;
    let authorized = lab.ssh.key.with_extension("pub");
    let mut host_keys = Vec::new();
    for host in lab.hosts.iter_mut() {
        let host_key = host.dir.join("ssh_host_ed25519_key");
        processes::run(&plan::keygen_command(&host_key, &host.name))?;
        let public = host_key.with_extension("pub");
        let public = std::fs::read_to_string(&public)
            .with_context(|| format!("reading {}", public.display()))?;
        host_keys.push((host.address, public));
        let config = host.dir.join("sshd_config");
        write(
            &config,
            &plan::sshd_config(
                host.address,
                &host_key,
                &authorized,
                &host.dir.join("sshd.pid"),
                &host.docker_socket,
            ),
        )?;
        let dockerd_pid = host.dockerd.as_ref().expect("started above").pid;
        let cmd = plan::sshd_command(&host.netns, dockerd_pid, &config);
        let marker = config.to_string_lossy().into_owned();
        host.sshd = Some(processes::spawn(&cmd, &host.dir.join("sshd.log"), &marker)?);
    }
    lab.save()?;
    for host in &lab.hosts {
        let address = format!("{}:22", host.address);
        processes::wait_ready(
            &format!("sshd of lab host {}", host.name),
            host.sshd.as_ref().expect("spawned above"),
            Duration::from_secs(20),
            || processes::tcp_open(&address),
        )
        .await?;
    }
    write_ssh_client(lab, &host_keys)?;

    if lab.swarm {
        options.check("swarm")?;
        swarm::form(&mut lab.hosts).await?;
    }
    lab.complete = true;
    lab.save()
}

/// known_hosts, the client config and the `ssh` wrapper (see `plan::ssh_wrapper`).
fn write_ssh_client(lab: &Lab, host_keys: &[(std::net::Ipv4Addr, String)]) -> Result<()> {
    write(&lab.ssh.known_hosts, &plan::known_hosts(host_keys))?;
    let names: Vec<(String, std::net::Ipv4Addr)> = lab
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.address))
        .collect();
    write(
        &lab.ssh.config,
        &plan::ssh_client_config(&names, &lab.ssh.key, &lab.ssh.known_hosts),
    )?;
    mkdir(&lab.ssh.bin_dir)?;
    let wrapper = lab.ssh.bin_dir.join("ssh");
    write(&wrapper, &plan::ssh_wrapper(&lab.ssh.config))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", wrapper.display()))
}
