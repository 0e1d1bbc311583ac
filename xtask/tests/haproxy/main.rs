//! The balancer for real: the FROM-scratch HAProxy image built here, run on
//! the real engine, steered through `docker exec balancer-ctl`, in front of
//! real app containers on a user-defined bridge network. Traffic goes only
//! to 127.0.0.1 (published ports) and to our own containers.
// One file per concern: the public edge (TLS, headers, limits), traffic
// moved by weights and states, and what health checks report; and the
// compose stacks' rendering, run as a process (no engine needed).
mod checks;
mod compose;
mod compose_dns;
mod edge;
#[path = "../support/mod.rs"]
mod support;
mod traffic;

use std::{collections::HashMap, net::IpAddr, time::Duration};

use bollard::Docker;
use tokio::sync::OnceCell;
use xtask::haproxy::{
    self, config::HaproxySettings, engine, runtime, AdminState, HaproxyBalancer, ServerSpec,
    ServerStat, Slot,
};

static IMAGE: OnceCell<String> = OnceCell::const_new();

/// The balancer image, built (or found by its input hash) once per test binary.
pub async fn balancer_image(docker: &Docker) -> String {
    IMAGE
        .get_or_init(|| async {
            haproxy::image::ensure(docker, true)
                .await
                .expect("building the balancer image")
        })
        .await
        .clone()
}

/// A balancer container with its own network, both removed on drop.
/// Declare it before the app containers: they drop (leave the network) first.
pub struct Stack {
    pub docker: Docker,
    pub balancer: HaproxyBalancer,
    pub network: String,
    pub https: u16,
    pub http: u16,
    pub exporter: u16,
}

impl Stack {
    /// `tune` adjusts the HAProxy settings (allow list, rates, checks); it
    /// gets the network's gateway, where clients of published ports come from.
    pub async fn start(name: &str, tune: impl FnOnce(&mut HaproxySettings, IpAddr)) -> Stack {
        let (docker, _) = support::docker().await;
        let image = balancer_image(&docker).await;
        let scope = format!("xtask-test-hx-{name}");
        let (https, http, exporter) = (
            support::free_port(),
            support::free_port(),
            support::free_port(),
        );
        let mut settings = HaproxySettings {
            https_public_port: https,
            check_interval_ms: 300,
            ..Default::default()
        };
        let network = format!("{scope}-net");
        let labels = HashMap::from([("xtask.test".to_owned(), "true".to_owned())]);
        engine::ensure_network(&docker, &network, &labels)
            .await
            .unwrap();
        let gateway = engine::network_gateway(&docker, &network).await.unwrap();
        tune(&mut settings, gateway);
        let leftover = HaproxyBalancer::open(&docker, &scope).await;
        if let Ok(old) = leftover {
            old.remove().await.unwrap();
        }
        let settings = haproxy::Settings {
            scope,
            image,
            network: network.clone(),
            create_network: true,
            publish_address: [127, 0, 0, 1].into(),
            https_port: https,
            http_port: http,
            exporter_port: exporter,
            haproxy: settings,
            pem: haproxy::dev_pem().unwrap().1,
            labels,
        };
        let balancer = HaproxyBalancer::ensure(&docker, &settings)
            .await
            .unwrap_or_else(|e| panic!("starting the balancer: {e:#}"));
        Stack {
            docker,
            balancer,
            network,
            https,
            http,
            exporter,
        }
    }

    /// An app container on the stack's network; its address there.
    pub async fn app(&self, env: &[&str]) -> (support::Container, IpAddr) {
        let image = support::built_image(&self.docker).await.tags[0].clone();
        let mut vars = vec!["DRAIN_SECONDS=0", "LOG_FORMAT=json"];
        vars.extend(env);
        let container = support::Container::run(&self.docker, &image, &vars).await;
        container.wait_for("/health", Duration::from_secs(15)).await;
        engine::connect(&self.docker, &self.network, &container.id)
            .await
            .unwrap();
        let address = engine::address_on(&self.docker, &container.id, &self.network)
            .await
            .unwrap();
        (container, address)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https)
    }

    pub async fn server(&self, slot: Slot) -> ServerStat {
        self.balancer
            .servers()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.slot == Some(slot))
            .unwrap_or_else(|| panic!("no {slot} in show stat"))
    }

    /// Polls `show stat` until `slot` satisfies `ok`; panics with its last row.
    pub async fn wait_for(&self, slot: Slot, what: &str, ok: impl Fn(&ServerStat) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let server = self.server(slot).await;
            if ok(&server) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{slot} never became {what}: {server:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Responses per slot so far, from the exporter (all status classes).
    pub async fn responses(&self) -> HashMap<String, f64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.exporter))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        runtime::exporter_per_server(&text, "haproxy_server_http_responses_total")
            .into_iter()
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let (balancer, docker, network) = (
            self.balancer.clone(),
            self.docker.clone(),
            self.network.clone(),
        );
        // Drop cannot be async: clean up on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let _ = balancer.remove().await;
                    let _ = engine::remove_network(&docker, &network).await;
                })
        })
        .join();
    }
}

pub fn spec(slot: u16, addr: IpAddr, weight: u16, state: AdminState) -> ServerSpec {
    ServerSpec {
        slot: Slot(slot),
        addr,
        port: 8080,
        weight,
        state,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        // The certificate is self-signed and made for this test.
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn the_template_passes_haproxy_c_and_a_typo_is_named() {
    use xtask::lint;
    lint::haproxy::check(&haproxy::config::template_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("haproxy.cfg.template");
    let text = haproxy::config::TEMPLATE.replace("balance roundrobin", "balance round_robin");
    std::fs::write(&broken, text).unwrap();
    let error = format!("{:#}", lint::haproxy::check(&broken).unwrap_err());
    assert!(error.contains("balance only supports"), "{error}");
}

#[test]
fn a_template_edit_that_breaks_only_the_compose_rendering_is_named() {
    use xtask::lint;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("haproxy.cfg.template");
    std::fs::write(&file, haproxy::config::TEMPLATE).unwrap();
    lint::haproxy::check_compose(&file).expect("the shipped template passes");
    // Without its resolvers section the deploy targets' config is still
    // fine; compose's servers refer to one that is gone.
    let text = haproxy::config::TEMPLATE.replacen("{{resolvers}}\n", "", 1);
    assert_ne!(text, haproxy::config::TEMPLATE, "update this test");
    std::fs::write(&file, text).unwrap();
    lint::haproxy::check(&file).expect("the deploy targets' rendering needs no resolvers");
    let error = format!("{:#}", lint::haproxy::check_compose(&file).unwrap_err());
    assert!(error.contains(&file.display().to_string()), "{error}");
    assert!(
        error.contains("unable to find required resolvers 'docker'"),
        "{error}"
    );
}

/// The headers both fronts (deploy target and compose) add to every answer.
pub fn assert_security_headers(headers: &reqwest::header::HeaderMap) {
    for (name, expected) in [
        (
            "strict-transport-security",
            "max-age=63072000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(
            headers.get(name).map(|v| v.to_str().unwrap()),
            Some(expected),
            "{name}"
        );
    }
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
}
