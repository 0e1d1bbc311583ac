//! Real processes for the app's integration tests: the app binary itself,
//! PostgreSQL and Redis from Debian's packages, all on 127.0.0.1 only.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::{
    net::TcpListener,
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

mod postgres;
#[allow(unused_imports)] // not every test binary starts PostgreSQL
pub use postgres::{require, Postgres};

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
