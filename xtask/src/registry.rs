//! `cargo xtask push`: images to a registry with bollard. Credentials come
//! from REGISTRY_USERNAME/REGISTRY_PASSWORD, the engine's own registry, or the
//! Docker config file, and go to the engine in the API's auth header only:
//! never in argv, logs or errors.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use bollard::{auth::DockerCredentials, query_parameters::PushImageOptionsBuilder, Docker};
use futures_util::StreamExt;
use serde::Serialize;

use crate::{engine, image, progress::Step};

pub struct Credentials {
    pub username: String,
    password: String,
    /// Where they came from, for messages: never the password itself.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials({} from {}, password: ***)",
            self.username, self.source
        )
    }
}

impl Credentials {
    /// For the engine's X-Registry-Auth header (push, or a swarm service update that pulls).
    pub fn docker_auth(&self, registry: &str) -> DockerCredentials {
        DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.clone()),
            serveraddress: Some(registry.to_owned()),
            ..Default::default()
        }
    }

    pub fn new(username: &str, password: &str, source: &str) -> Self {
        Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
            source: source.to_owned(),
        }
    }
}

/// The registry to push to: `--registry`, else XTASK_REGISTRY, else the engine's private one.
pub fn choose(flag: Option<String>, engine: Option<&engine::EngineState>) -> Result<String> {
    if let Some(registry) = flag.or_else(|| {
        std::env::var("XTASK_REGISTRY")
            .ok()
            .filter(|r| !r.is_empty())
    }) {
        return Ok(registry);
    }
    engine.map(|e| e.registry.address.clone()).context(
        "no registry: pass --registry HOST[:PORT], set XTASK_REGISTRY, or run `cargo xtask engine start` for a local one",
    )
}

/// The registry part of an image reference (`127.0.0.1:5000/app:v1` -> `127.0.0.1:5000`), if it names one.
pub fn registry_of(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// `host[:port]` as written in a registry setting or an image reference,
/// for comparing two of them.
fn host_of(registry: &str) -> String {
    registry
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_ascii_lowercase()
}

/// Credentials for `registry`: REGISTRY_USERNAME/REGISTRY_PASSWORD only when
/// it is the registry they are for (XTASK_REGISTRY, or the engine's own), so
/// an image naming some other registry never receives them; then the
/// engine's registry credentials; then the Docker config's entry for it.
pub fn credentials_for(
    registry: &str,
    engine: Option<&engine::EngineState>,
) -> Result<Option<Credentials>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let engine_registry = engine.map(|e| e.registry.address.as_str());
    if let Some(c) = from_environment(registry, engine_registry, &env)? {
        return Ok(Some(c));
    }
    if let Some(state) = engine.filter(|e| host_of(&e.registry.address) == host_of(registry)) {
        let c = state.registry_credentials()?;
        return Ok(Some(Credentials::new(
            &c.username,
            &c.password,
            "the engine's registry credentials",
        )));
    }
    from_docker_config(registry)
}

/// The engine's auth header for pulling `image`: credentials for the
/// registry it names (see `credentials_for`), none for an image that names no registry.
pub fn auth_for_image(
    image: &str,
    engine: Option<&engine::EngineState>,
) -> Result<Option<DockerCredentials>> {
    let Some(registry) = registry_of(image) else {
        return Ok(None);
    };
    Ok(credentials_for(registry, engine)?.map(|c| c.docker_auth(registry)))
}

/// REGISTRY_USERNAME/REGISTRY_PASSWORD, when `registry` is the one they are
/// for: the one XTASK_REGISTRY names, or the engine's own registry.
fn from_environment(
    registry: &str,
    engine_registry: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>> {
    let (user, password) = match (env("REGISTRY_USERNAME"), env("REGISTRY_PASSWORD")) {
        (Some(user), Some(password)) => (user, password),
        (Some(_), None) => {
            bail!("REGISTRY_USERNAME is set but REGISTRY_PASSWORD is not: set both, or neither")
        }
        (None, Some(_)) => {
            bail!("REGISTRY_PASSWORD is set but REGISTRY_USERNAME is not: set both, or neither")
        }
        (None, None) => return Ok(None),
    };
    let named = env("XTASK_REGISTRY");
    let meant = named
        .as_deref()
        .into_iter()
        .chain(engine_registry)
        .any(|r| host_of(r) == host_of(registry));
    if !meant {
        eprintln!(
            "note: REGISTRY_USERNAME/REGISTRY_PASSWORD are sent only to {}, not to {registry}; using the Docker config's credentials for it, if any",
            match (&named, engine_registry) {
                (Some(n), Some(e)) => format!("XTASK_REGISTRY ({n}) and the engine's registry ({e})"),
                (Some(n), None) => format!("XTASK_REGISTRY ({n})"),
                (None, Some(e)) => format!("the engine's registry ({e}); set XTASK_REGISTRY to name another"),
                (None, None) => "the registry XTASK_REGISTRY names, and it is not set".to_owned(),
            }
        );
        return Ok(None);
    }
    Ok(Some(Credentials::new(
        &user,
        &password,
        "REGISTRY_USERNAME/REGISTRY_PASSWORD",
    )))
}

fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Reads `auths` (base64 `user:password`) or asks the configured credential
/// helper, which gets the host on stdin, as `docker login` does.
fn from_docker_config(registry: &str) -> Result<Option<Credentials>> {
    let Some(path) = docker_config_path().filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: DockerConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let source = format!("{}", path.display());
    let entry = config.auths.iter().find(|(host, _)| {
        host.trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            == registry
    });
    if let Some((_, entry)) = entry {
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials::new(u, p, &source)));
        }
        if let Some(auth) = &entry.auth {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .with_context(|| {
                    format!(
                        "{}: auths.\"{registry}\".auth is not base64 of USER:PASSWORD",
                        path.display()
                    )
                })?;
            let (u, p) = decoded.split_once(':').with_context(|| {
                format!(
                    "{}: auths.\"{registry}\".auth is not base64 of USER:PASSWORD",
                    path.display()
                )
            })?;
            return Ok(Some(Credentials::new(u, p, &source)));
        }
    }
    match config
        .cred_helpers
        .get(registry)
        .or(config.creds_store.as_ref())
    {
        Some(helper) => credential_helper(helper, registry).map(Some),
        None => Ok(None),
    }
}

fn credential_helper(helper: &str, registry: &str) -> Result<Credentials> {
    let program = format!("docker-credential-{helper}");
    let output = duct::cmd!(&program, "get")
        .stdin_bytes(registry.as_bytes())
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
        .with_context(|| {
            format!("running {program} (named by the Docker config's credential helpers)")
        })?;
    if !output.status.success() {
        bail!("{program} has no credentials for {registry}: run `docker login {registry}`");
    }
    #[derive(serde::Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("parsing the answer of {program}"))?;
    Ok(Credentials::new(&answer.username, &answer.secret, &program))
}

#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub reference: String,
    pub digest: String,
    pub seconds: f64,
}

/// A refused connection should fail in a second, not after the engine's retries.
async fn ensure_reachable(registry: &str) -> Result<()> {
    let address = if registry.contains(':') {
        registry.to_owned()
    } else {
        format!("{registry}:443")
    };
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&address),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!(
            "registry {registry} is not reachable ({e}): is it running, and is the address right?"
        ),
        Err(_) => bail!("registry {registry} did not accept a connection within 5s"),
    }
}

/// Tags `source` as `<registry>/<repo>:<tag>` and pushes it; returns the registry's digest.
pub async fn push(
    docker: &Docker,
    source: &str,
    registry: &str,
    credentials: Option<&Credentials>,
    quiet: bool,
) -> Result<Pushed> {
    ensure_reachable(registry).await?;
    let (repo, tag) = image::split_reference(source);
    let name = repo.rsplit('/').next().unwrap_or(repo);
    let target = format!("{registry}/{name}:{tag}");
    image::tag(docker, source, &target).await?;
    let auth = credentials.map(|c| c.docker_auth(registry));
    let step = Step::start(&format!("push {target}"), quiet);
    let options = PushImageOptionsBuilder::default().tag(tag).build();
    let mut stream = docker.push_image(&format!("{registry}/{name}"), Some(options), auth);
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(e) => {
                step.finish("FAILED");
                return Err(explain(&e.to_string(), &target, credentials));
            }
        };
        if let Some(message) = info.error_detail.and_then(|d| d.message) {
            step.finish("FAILED");
            return Err(explain(&message, &target, credentials));
        }
        let status = info.status.unwrap_or_default();
        // The engine retries a failed upload five times over about 50 s;
        // a registry that stopped answering fails the push now instead.
        if status.starts_with("Retrying in") {
            if let Err(e) = ensure_reachable(registry).await {
                step.finish("FAILED");
                return Err(e.context(format!(
                    "pushing {target}: the registry stopped answering mid-push (the engine was retrying: {status}); nothing was tagged there, push again once it is back"
                )));
            }
        }
        if let Some(found) = status
            .split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
        {
            digest = Some(found.to_owned());
        }
        // The API model drops the layer id; bytes per layer still show progress.
        match info.progress_detail.and_then(|p| p.current.zip(p.total)) {
            Some((current, total)) => step.line(&format!("{status}: {current}/{total} bytes")),
            None => step.line(&status),
        }
    }
    let seconds = step.finish("done").as_secs_f64();
    let digest =
        digest.with_context(|| format!("pushing {target}: the engine reported no digest"))?;
    Ok(Pushed {
        reference: target,
        digest,
        seconds,
    })
}

/// The engine's words, plus what to do about them; never the password.
fn explain(message: &str, target: &str, credentials: Option<&Credentials>) -> anyhow::Error {
    let mut text = format!("pushing {target}: {message}");
    if let Some(c) = credentials {
        text = text.replace(&c.password, "***");
    }
    if message.contains("unauthorized") || message.contains("authentication required") {
        let source = credentials.map_or("no credentials were found".to_owned(), |c| {
            format!("user {} from {}", c.username, c.source)
        });
        text.push_str(&format!("\nthe registry refused the credentials ({source}): check REGISTRY_USERNAME/REGISTRY_PASSWORD or `docker login`"));
    }
    // The engine passes on only the status of the registry's failed upload:
    // a registry whose storage is full answers 500 to every blob written.
    if message.contains("unexpected HTTP status: 5") {
        text.push_str("\nthe registry could not store the image (it failed the upload with a server error; a full or failing storage answers so: see the registry's log and free space); nothing was tagged there, push again once it is mended");
    }
    anyhow::anyhow!(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    const USER: (&str, &str) = ("REGISTRY_USERNAME", "ci");
    const PASSWORD: (&str, &str) = ("REGISTRY_PASSWORD", "pw");

    #[test]
    fn environment_credentials_go_only_to_xtask_registry_or_the_engines_registry() {
        let env = vars(&[USER, PASSWORD, ("XTASK_REGISTRY", "registry.example.com")]);
        let given = |registry: &str, engine: Option<&str>| {
            from_environment(registry, engine, &env)
                .unwrap()
                .map(|c| c.username)
        };
        assert_eq!(given("registry.example.com", None).as_deref(), Some("ci"));
        assert_eq!(
            given("https://Registry.example.com/", None).as_deref(),
            Some("ci")
        );
        assert_eq!(
            given("127.0.0.1:5000", Some("127.0.0.1:5000")).as_deref(),
            Some("ci")
        );
        // An image naming another registry gets nothing from the environment.
        assert_eq!(given("evil.example.net", None), None);
        assert_eq!(given("evil.example.net", Some("127.0.0.1:5000")), None);
        let without = vars(&[USER, PASSWORD]);
        assert!(from_environment("registry.example.com", None, &without)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_server_error_from_the_registry_says_it_could_not_store_the_image() {
        let said = explain(
            "received unexpected HTTP status: 500 Internal Server Error",
            "r.example/app:v1",
            None,
        )
        .to_string();
        assert!(
            said.contains("pushing r.example/app:v1: received"),
            "{said}"
        );
        assert!(said.contains("could not store the image"), "{said}");
        let refused = explain("unauthorized: authentication required", "r/a:v", None);
        assert!(!refused.to_string().contains("could not store"));
    }

    #[test]
    fn half_given_environment_credentials_name_the_missing_variable() {
        let err = from_environment("r.example", None, &vars(&[USER]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("REGISTRY_PASSWORD is not"), "{err}");
        assert!(from_environment("r.example", None, &vars(&[]))
            .unwrap()
            .is_none());
    }
}
