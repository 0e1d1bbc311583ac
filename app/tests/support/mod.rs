//! Real processes for the app's integration tests: the app binary itself,
//! PostgreSQL and Redis from Debian's packages, all on 127.0.0.1 only.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {port}: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 30s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The app under test, killed when dropped.
pub struct App {
    pub child: Child,
    pub port: u16,
}

impl App {
    pub fn start(env: &[(&str, &str)]) -> App {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_app"))
            .env_clear()
            .env("PORT", port.to_string())
            .env("BIND", "127.0.0.1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the app binary");
        wait_for_port(port, "app", &mut child);
        App { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn terminate(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("sending SIGTERM");
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn wait_until(url: &str, want: u16) -> reqwest::Response {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().as_u16() == want {
                return r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer {want} within 20s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails loudly when a tool the test needs is absent: `cargo xtask ci` installs them.
fn require(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(
            std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin")),
        )
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed: run `cargo xtask ci`, which installs the test services"
        )
    })
}

/// A throwaway PostgreSQL cluster in a temp folder, trust auth on 127.0.0.1.
pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL refuses to run as root; as root, run it as the `postgres` user.
        let run_as = nix::unistd::geteuid().is_root().then(|| {
            let user = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("a `postgres` system user");
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
            user
        });
        let data = dir.path().join("data");
        let status = as_user(&run_as, &require("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        let mut pg = Postgres {
            child: None,
            port: free_port(),
            dir,
        };
        pg.run(&run_as);
        pg
    }

    fn run(&mut self, run_as: &Option<nix::unistd::User>) {
        let data = self.dir.path().join("data");
        let mut child = as_user(run_as, &require("postgres"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
                "-h",
                "127.0.0.1",
            ])
            .args(["-k", self.dir.path().to_str().unwrap(), "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(self.port, "postgres", &mut child);
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stopped and started again on the same port and data: every client
    /// connection is gone.
    pub fn restart(&mut self) {
        self.stop();
        let run_as = nix::unistd::geteuid().is_root().then(|| {
            nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("a `postgres` system user")
        });
        self.run(&run_as);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT is PostgreSQL's fast shutdown: it disconnects clients and exits.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = child.wait();
        }
    }
}

fn as_user(run_as: &Option<nix::unistd::User>, program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    if let Some(user) = run_as {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    command
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let mut child = Command::new(require("redis-server"))
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "redis-server", &mut child);
        Redis {
            child: Some(child),
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
