//! A throwaway PostgreSQL cluster from Debian's packages, on 127.0.0.1 only.
//! Shared by the app's tests and xtask's (`#[path]`-included there): it
//! needs only std, nix and tempfile.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails loudly when a tool the test needs is absent: `cargo xtask ci` installs them.
pub fn require(program: &str) -> PathBuf {
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
    /// Also listening there (a Docker network's gateway), password login only.
    also_on: Option<String>,
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_also_on(None)
    }

    /// Also on `address` (a Docker network's gateway, so the project's own
    /// containers reach it), where clients from `cidr` log in with a password.
    pub fn start_reachable_from(address: &str, cidr: &str) -> Postgres {
        Self::start_also_on(Some((address, cidr)))
    }

    fn start_also_on(also: Option<(&str, &str)>) -> Postgres {
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
        if let Some((_, cidr)) = also {
            use std::io::Write;
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))
                .unwrap();
            writeln!(hba, "host all all {cidr} scram-sha-256").unwrap();
        }
        let mut pg = Postgres {
            child: None,
            port: free_port(),
            dir,
            also_on: also.map(|(address, _)| address.to_owned()),
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
                &match &self.also_on {
                    Some(address) => format!("127.0.0.1,{address}"),
                    None => "127.0.0.1".to_owned(),
                },
            ])
            .args(["-k", self.dir.path().to_str().unwrap(), "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.wait_until_accepting(&mut child);
        self.child = Some(child);
    }

    /// Until a query is answered: an open port can still say "the database
    /// system is starting up".
    fn wait_until_accepting(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(require("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("postgres exited before accepting connections: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections on 127.0.0.1:{} within 30s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
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
