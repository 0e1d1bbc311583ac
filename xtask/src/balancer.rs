//! The public endpoint of a single-host environment: nginx (rendered from
//! `infrastructure/nginx/nginx.conf.template`) in front of N traffic slots.
//! Each slot is a symlink to one instance's unix socket; nginx connects
//! through it per request. Moving a slot to another instance is an atomic
//! rename: no reload, so no client keep-alive connection is ever cut. nginx
//! reloads only when the number of slots changes.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{daemon, environment::BalancerConfig, nginx, setup};

pub struct Balancer {
    dir: PathBuf,
    slots_dir: PathBuf,
    config: BalancerConfig,
}

impl Balancer {
    /// `runtime_dir` holds everything: nginx's files and the slot links.
    pub fn new(runtime_dir: &Path, config: &BalancerConfig) -> Balancer {
        Balancer {
            dir: runtime_dir.join("nginx"),
            slots_dir: runtime_dir.join("slots"),
            config: config.clone(),
        }
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("run").join("nginx.pid")
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("tls").join("cert.pem")
    }

    pub fn slot_path(&self, slot: usize) -> PathBuf {
        self.slots_dir.join(format!("slot-{slot}.sock"))
    }

    fn settings(&self, slots: usize) -> nginx::NginxSettings {
        let upstreams = (0..slots)
            .map(|i| format!("unix:{}", self.slot_path(i).display()))
            .collect();
        let mut settings = nginx::NginxSettings::local(
            &self.dir,
            self.config.http_port,
            self.config.https_port,
            upstreams,
        );
        settings.upstream_keepalive = 0;
        settings.api_rate = self.config.api_rate;
        settings
    }

    fn running_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        daemon::is_ours(pid, &self.conf_path().to_string_lossy()).then_some(pid)
    }

    pub fn is_running(&self) -> bool {
        self.running_pid().is_some()
    }

    /// Renders the config for `slots`; starts nginx, or reloads it when the config changed.
    pub async fn ensure(&self, slots: usize) -> Result<()> {
        setup::ensure(setup::BALANCER)?;
        std::fs::create_dir_all(&self.slots_dir)
            .with_context(|| format!("creating {}", self.slots_dir.display()))?;
        let settings = self.settings(slots);
        settings.create_dirs()?;
        if !self.cert_path().is_file() {
            nginx::write_dev_certificate(&self.dir.join("tls"))?;
        }
        let rendered = nginx::render(&settings)?;
        let conf = self.conf_path();
        let unchanged = std::fs::read_to_string(&conf).is_ok_and(|old| old == rendered);
        let running = self.running_pid();
        if unchanged && running.is_some() {
            return Ok(());
        }
        let candidate = self.dir.join("nginx.conf.new");
        std::fs::write(&candidate, &rendered)
            .with_context(|| format!("writing {}", candidate.display()))?;
        self.test_config(&candidate)?;
        std::fs::rename(&candidate, &conf)
            .with_context(|| format!("installing {}", conf.display()))?;
        // Links past the new count are no longer in the config: drop them.
        for stale in slots..slots + 64 {
            let _ = std::fs::remove_file(self.slot_path(stale));
        }
        match running {
            Some(pid) => {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGHUP,
                )
                .context("reloading nginx (SIGHUP)")?;
            }
            None => self.start().await?,
        }
        Ok(())
    }

    fn test_config(&self, conf: &Path) -> Result<()> {
        let error_log = self.dir.join("logs").join("error.log");
        let output = duct::cmd!("nginx", "-t", "-q", "-c", conf, "-e", &error_log)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .context("running nginx -t")?;
        if !output.status.success() {
            bail!(
                "nginx rejected the balancer config {}:\n{}",
                conf.display(),
                String::from_utf8_lossy(&output.stdout).trim()
            );
        }
        Ok(())
    }

    async fn start(&self) -> Result<()> {
        let conf = self.conf_path();
        let conf_arg = conf.to_string_lossy().into_owned();
        let error_log = self.dir.join("logs").join("error.log");
        let log = self.dir.join("logs").join("nginx.out");
        let pid = daemon::spawn(
            "nginx",
            &[
                "-c",
                &conf_arg,
                "-e",
                &error_log.to_string_lossy(),
                "-g",
                "daemon off;",
            ],
            &log,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.config.https_port)).is_ok() {
                return Ok(());
            }
            if !daemon::is_alive(pid) {
                bail!(
                    "nginx exited at start (is 127.0.0.1:{} or :{} in use? see balancer.https_port/http_port):\n{}\n{}",
                    self.config.https_port,
                    self.config.http_port,
                    daemon::log_tail(&log, 10),
                    daemon::log_tail(&error_log, 10)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not listen on 127.0.0.1:{} within 10s",
                    self.config.https_port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Points `slot` at `socket`: a new link, renamed over the old one.
    pub fn route(&self, slot: usize, socket: &Path) -> Result<()> {
        let link = self.slot_path(slot);
        let staging = self
            .slots_dir
            .join(format!(".slot-{slot}.sock.{}", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        std::os::unix::fs::symlink(socket, &staging)
            .with_context(|| format!("linking {}", staging.display()))?;
        std::fs::rename(&staging, &link)
            .with_context(|| format!("switching {} to {}", link.display(), socket.display()))
    }

    /// How many slots the rendered config serves.
    pub fn slot_count(&self) -> usize {
        std::fs::read_to_string(self.conf_path())
            .map(|c| c.matches("slot-").count())
            .unwrap_or(0)
    }

    /// Each slot's socket, for `slots` slots.
    pub fn routes(&self, slots: usize) -> Vec<Option<PathBuf>> {
        (0..slots)
            .map(|i| std::fs::read_link(self.slot_path(i)).ok())
            .collect()
    }

    pub fn stop(&self) -> Result<()> {
        if let Some(pid) = self.running_pid() {
            // SIGQUIT is nginx's graceful stop.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGQUIT,
            )
            .context("stopping nginx")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.running_pid().is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    pub fn public_client(&self) -> Result<reqwest::Client> {
        let pem = std::fs::read(self.cert_path())
            .with_context(|| format!("reading {}", self.cert_path().display()))?;
        let cert =
            reqwest::Certificate::from_pem(&pem).context("parsing the balancer's certificate")?;
        reqwest::Client::builder()
            .add_root_certificate(cert)
            .build()
            .context("building the public client")
    }
}
